"""fsck: a clean store passes; broken objects, references and indexes are found and attributed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import terra
from terra import runs as R


CORRUPT = '''
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=4)
db = env.open_db(b"objects")
key = bytes.fromhex(sys.argv[2])
with env.begin(write=True, db=db) as txn:
    v = bytearray(txn.get(key))
    v[-1] ^= 0x01  # one flipped bit, the kind of damage LMDB cannot see
    txn.put(key, bytes(v))
'''


def _flip_bit(store, oid_hex: str, tmp_path) -> None:
    # Another process, as real damage would come: opening a second LMDB
    # environment of the same file inside this process would drop its locks.
    script = tmp_path / "corrupt.py"
    script.write_text(CORRUPT)
    subprocess.run([sys.executable, str(script), store.backend.path, oid_hex], check=True)


def test_clean_store(iris):
    report = terra.fsck()
    assert report.ok and report.runs == 4 and report.objects > 10
    assert not (report.corrupt or report.missing or report.index_problems or report.interrupted)
    assert "no problems found" in str(report)


def test_corrupt_and_missing_objects_name_the_affected_runs(iris, store, tmp_path):
    _flip_bit(store, iris["weights"], tmp_path)  # output of run 3, input of run 4
    assert store.delete([bytes.fromhex(iris["test"])])[0] == 1  # output of run 2, input of run 4
    report = terra.fsck()
    assert not report.ok
    assert report.corrupt == [iris["weights"]]
    assert report.missing == [iris["test"]]
    assert report.affected_runs == {2: [iris["test"]], 3: [iris["weights"]],
                                    4: sorted([iris["test"], iris["weights"]])}
    text = str(report)
    assert f"corrupt object {iris['weights']}" in text and f"missing object {iris['test']}" in text
    assert "run 3 is damaged" in text and "PROBLEMS FOUND" in text
    assert report.index_problems == []  # the indexes themselves are intact


def test_broken_indexes(iris, store):
    def damage(txn):
        txn.put(b"tag/ghost", R.rid8(99))
        txn.put(R.k_cache(b"k" * 16), R.rid8(98) + R.pack_entry(1))
        txn.put(R.k_edge_c(4, 97, b"a" * 16), b"")  # no mirror, producer missing
        txn.put(R.k_run(96), R.pack({"status": "success", "task": "t", "record": None}))

    store.update_refs(damage)
    report = terra.fsck()
    assert not report.ok and report.corrupt == [] and report.missing == []
    problems = "\n".join(report.index_problems)
    assert "tag 'ghost' names missing run 99" in problems
    assert "names missing run 98" in problems
    assert "lineage edge run 97 -> run 4 names missing run 97" in problems
    assert "is indexed in edge/c/ but not in edge/p/" in problems
    assert "run 96 has status 'success' but no record" in problems


KILLED = '''
import sys, time
import terra
terra.configure(storage_dir=sys.argv[1], quiet=True)

@terra.task
def slow(x):
    print("started", flush=True)
    time.sleep(60)
    return x

slow(1)
'''


@pytest.mark.slow
def test_killed_run_is_interrupted_not_corruption(iris, store, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(KILLED))
    p = subprocess.Popen([sys.executable, str(script), store.root], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.stdout.readline().strip() == "started"
    assert terra.fsck().running == [5]
    p.send_signal(signal.SIGKILL)
    p.wait()
    report = terra.fsck()
    assert report.ok and report.interrupted == [5] and report.running == []
    assert "interrupted runs" in str(report) and "no problems found" in str(report)
    # gc keeps everything of the intact runs; fsck stays clean afterwards
    terra.gc(grace_period=0)
    assert terra.fsck().ok
