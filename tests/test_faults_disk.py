"""A full disk: StoreFull (typed, saying how much is needed and how to reclaim it), store intact, recovery.

Two ways to run out of room: a small tmpfs mounted for the test (needs the
right to mount; skipped with the reason otherwise), and ``RLIMIT_FSIZE`` in a
subprocess (always available).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import terra
from terra.errors import StoreFull
from terra.session import current_store

MiB = 1 << 20


@terra.task
def block(seed: int, n: int = 250_000):
    """~2 MB of incompressible floats."""
    return np.random.default_rng(seed).random(n)


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs, with a 6 MiB ballast file that can be deleted to free space."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip()}); "
                    "the RLIMIT_FSIZE test covers a full store instead")
    ballast = mnt / "ballast"
    ballast.write_bytes(os.urandom(6 * MiB))
    terra.configure(storage_dir=str(mnt / "store"), quiet=True)
    try:
        yield mnt
    finally:
        current_store().backend.close()
        terra.configure(quiet=False)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill() -> tuple[int, StoreFull]:
    """Runs until the disk is full; the number that committed and the error."""
    for i in range(100):
        try:
            block(i)
        except StoreFull as e:
            return i, e
    raise AssertionError("the disk never filled")


def test_full_disk_raises_store_full_and_recovers(small_disk):
    n, err = _fill()
    assert n >= 3
    msg = str(err)
    assert "no room" in msg and "terra gc" in msg and "terra gc --compact" in msg and "MiB" in msg
    assert err.needed > err.available >= 0
    # Intact: fsck clean, every earlier run loads.
    assert terra.fsck().ok
    for i in range(n):
        np.testing.assert_array_equal(block(i).load(), np.random.default_rng(i).random(250_000))

    # compact on a full disk: one line, a typed error, nothing replaced.
    from terra.cli import cli

    r = CliRunner().invoke(cli, ["--store", str(small_disk / "store"), "gc", "--compact"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "no room for the compacted copy" in r.output
    assert terra.fsck().ok

    # rm + gc free pages inside the file; the next writes reuse them: the file does not grow.
    data = os.path.join(current_store().backend.path, "data.mdb")
    size = os.path.getsize(data)
    terra.rm(terra.select_runs(keep_last=1))
    assert terra.gc(grace_period=0).deleted_bytes > 5 * MiB
    out = block(1000, n=3 * 250_000)  # a 6 MB value, written into freed pages
    np.testing.assert_array_equal(out.load(), np.random.default_rng(1000).random(750_000))
    assert os.path.getsize(data) == size

    # Space freed on the disk: compact now returns the store's free pages to it.
    (small_disk / "ballast").unlink()
    stats = terra.compact()
    assert stats.after_bytes < stats.before_bytes
    assert terra.fsck().ok
    np.testing.assert_array_equal(block(1000, n=750_000).load(), out.load())


# -- the file-size limit, in a subprocess ------------------------------------------------------

LIMITED = r'''
import json, resource, sys
import numpy as np
import terra
from terra.errors import StoreFull
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
terra.configure(storage_dir=sys.argv[1], quiet=True)

@terra.task
def block(seed, n=250_000):
    return np.random.default_rng(seed).random(n)

out = {}
for i in range(100):
    try:
        block(i)
    except StoreFull as e:
        out.update(committed=i, message=str(e), needed=e.needed, available=e.available)
        break
terra.rm(terra.select_runs(keep_last=1))
out["freed"] = terra.gc(grace_period=0).deleted_bytes
block(500)  # reuses the freed pages, under the same limit
out["after"] = True
print(json.dumps(out), flush=True)
'''


def test_file_size_limit_raises_store_full_and_recovers(tmp_path, subprocess_env):
    root = tmp_path / "store"
    p = subprocess.run([sys.executable, "-c", LIMITED, str(root), str(16 * MiB)], env=subprocess_env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["committed"] >= 3 and out["after"] and out["freed"] > 2 * MiB
    assert "file-size limit" in out["message"] and "terra gc" in out["message"]
    assert out["needed"] > out["available"]
    terra.configure(storage_dir=str(root), quiet=True)
    try:
        assert terra.fsck().ok
        for i in [*range(out["committed"] - 1, out["committed"]), 500]:
            np.testing.assert_array_equal(block(i).load(), np.random.default_rng(i).random(250_000))
    finally:
        terra.configure(quiet=False)


def test_pages_freed_by_gc_are_reused_by_the_very_next_write(store):
    """LMDB reuses freed pages only after a later commit: gc makes that commit, so the file does not grow."""
    for i in range(4):
        block(i)
    terra.rm(terra.select_runs(keep_last=1))
    assert terra.gc(grace_period=0).deleted_bytes > 5 * MiB
    data = os.path.join(store.backend.path, "data.mdb")
    size = os.path.getsize(data)
    block(100)
    assert os.path.getsize(data) == size
    np.testing.assert_array_equal(block(100).load(), np.random.default_rng(100).random(250_000))
