"""Readers beside a writer, and writers that grow the map together: every load verified, no error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import terra
from _fault_tasks import expected, produce
from terra.store import open_store

TASKS = os.path.dirname(__file__)

WRITER = r'''
import os, sys, time
sys.path.insert(0, sys.argv[3])
import terra
from _fault_tasks import produce
terra.configure(storage_dir=sys.argv[1], quiet=True)
while len(os.listdir(sys.argv[4])) < 16:  # every reader is up
    time.sleep(0.01)
deadline = time.time() + float(sys.argv[2])
n = 1
while time.time() < deadline or n < 12:
    produce(n)
    n += 1
open(os.path.join(sys.argv[4], "done"), "w").close()
print(n - 1, flush=True)
'''

READER = r'''
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
import terra
from _fault_tasks import expected
import os
terra.configure(storage_dir=sys.argv[1], quiet=True)
open(os.path.join(sys.argv[4], str(os.getpid())), "w").close()
done = os.path.join(sys.argv[4], "done")
loads = errors = 0
first = None
while not os.path.exists(done):
    try:
        for rid in terra.select_runs(task="produce")[-8:]:  # committed runs, newest last
            i = terra.inp(int(rid))["i"]
            if not np.array_equal(terra.out(int(rid)).load(), expected(i)):
                raise AssertionError(f"run {rid}: wrong value")
            loads += 1
    except Exception as e:  # counted and reported: the test asserts there are none
        errors += 1
        first = first or f"{type(e).__name__}: {e}"
print(json.dumps({"loads": loads, "errors": errors, "first": first}), flush=True)
'''


def _spawn(src, args, env):
    return subprocess.Popen([sys.executable, "-c", src, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _one_writer_sixteen_readers(store, tmp_path, subprocess_env, seconds: float) -> dict:
    """The writer runs for ``seconds`` (and at least 11 runs) once all readers are up; they read until it is done."""
    produce(0)  # something to read from the first moment
    flags = tmp_path / "flags"
    flags.mkdir()
    args = [store.root, seconds, TASKS, flags]
    writer = _spawn(WRITER, args, subprocess_env)
    readers = [_spawn(READER, args, subprocess_env) for _ in range(16)]
    procs = [writer, *readers]
    try:
        outs = [p.communicate(timeout=seconds + 120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [json.loads(o[0]) for o in outs[1:]]
    figures = {"writes": int(outs[0][0]), "loads": sum(r["loads"] for r in results),
               "errors": sum(r["errors"] for r in results)}
    print("1 writer + 16 readers:", figures, [r["first"] for r in results if r["first"]][:3])
    assert figures["errors"] == 0 and figures["writes"] > 0 and figures["loads"] > 0
    assert terra.fsck().ok
    return figures


@pytest.mark.slow
def test_one_writer_and_sixteen_readers(store, tmp_path, subprocess_env):
    _one_writer_sixteen_readers(store, tmp_path, subprocess_env, 1.0)


@pytest.mark.soak
def test_soak_one_writer_and_sixteen_readers(store, tmp_path, subprocess_env):
    _one_writer_sixteen_readers(store, tmp_path, subprocess_env, float(os.environ.get("TERRA_SOAK_SECONDS", "60")))


GROWER = r'''
import os, sys
sys.path.insert(0, sys.argv[3])
import terra
from terra import session
from terra.store import open_store
root = os.path.abspath(sys.argv[1])
s = open_store(os.path.join(root, "objects.lmdb"), map_size=1 << 20)  # a 1 MiB map: every writer grows it
s.root = root
session._stores[root] = s
terra.configure(storage_dir=root, quiet=True)
from _fault_tasks import produce
w = int(sys.argv[2])
for k in range(12):
    produce(1000 * (w + 1) + k * 37)
print("done", flush=True)
'''


def test_four_writers_grow_the_map_together(tmp_path, subprocess_env):
    root = tmp_path / "store"
    root.mkdir()
    open_store(str(root / "objects.lmdb"), map_size=1 << 20).backend.close()
    procs = [_spawn(GROWER, [root, w, TASKS], subprocess_env) for w in range(4)]
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    terra.configure(storage_dir=str(root), quiet=True)
    try:
        runs = terra.get_runs(task="produce")
        assert len(runs) == 48 and set(runs["status"]) == {"success"}
        for rid in runs["run_id"]:
            i = terra.inp(int(rid))["i"]
            np.testing.assert_array_equal(terra.out(int(rid)).load(), expected(i))
        assert os.path.getsize(root / "objects.lmdb" / "data.mdb") > 16 << 20  # far past the 1 MiB map
        assert terra.fsck().ok
    finally:
        terra.configure(quiet=False)
