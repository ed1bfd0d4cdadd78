"""Removal, retention, tags, gc (exact counts, grace period, concurrent writer) and compact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import terra
from _closure import closure
from terra import demo
from terra import runs as R
from terra.errors import NotFound, TerraError
from terra.gc import StoreBusy
from terra.io import Artifact
from terra.objects import Blob, ObjectId, Tree
from terra.retention import RemovalRefused, RunInUse, RunPinned, tags


@terra.task
def big(seed: int, n: int = 300_000):
    """~2.4 MB of incompressible floats: garbage worth compacting once removed."""
    return np.random.default_rng(seed).random(n)


@terra.task
def shift(x, by: int = 1):
    return x + by


@terra.task
def boom(x):
    raise ValueError(f"no {x}")


def _pipeline(frac):
    data = demo.download_iris(demo.IRIS_CSV)
    splits = demo.split_data(df=data, train_frac=frac)
    model = demo.train(data, splits["train"])
    return demo.evaluate(data, splits["test"], model)


def _reachable(store) -> set[ObjectId]:
    """Independently of terra.gc: verified reads from every run record and cache entry."""
    roots = []
    with store.refs() as txn:
        for _, v in txn.scan(b"run/"):
            rec = R.unpack(v).get("record")
            if rec:
                roots.append(ObjectId(rec))
        for _, v in txn.scan(b"cache/"):
            e = R.unpack_entry(v[8:])
            if isinstance(e, ObjectId):
                roots.append(e)
    return closure(store, *roots)


def _sizes(store) -> dict[ObjectId, int]:
    return {ObjectId(k): size for k, size, _ in store.backend.iter_ids(b"")}


def _leaves(v):
    if isinstance(v, dict):
        return [x for y in v.values() for x in _leaves(y)]
    if isinstance(v, (list, tuple)):
        return [x for y in v for x in _leaves(y)]
    return [v] if isinstance(v, Artifact) else []


def _all_runs(store) -> list[int]:
    with store.refs() as txn:
        return [int.from_bytes(k[4:], "big") for k, _ in txn.scan(b"run/")]


def _load_all(store) -> int:
    n = 0
    for rid in _all_runs(store):
        rec = terra.get_run(rid)
        for a in _leaves(terra.inp(rid)):
            a.load()
            n += 1
        if rec["status"] == "success":
            for a in _leaves(terra.out(rid)):
                a.load()
                n += 1
    return n


def test_gc_deletes_exactly_what_is_unreachable(store):
    _pipeline(0.7)  # runs 1-4
    _pipeline(0.5)  # runs 5-7 (download is a cache hit)
    arrays = [big(s) for s in range(3)]  # runs 8-10, ~2.4 MB each
    shift(arrays[0])  # run 11 consumes run 8
    with pytest.raises(ValueError):
        boom(1)  # run 12, failed
    assert len(_all_runs(store)) == 12
    untouched = terra.gc(grace_period=0)
    assert untouched.deleted_objects == 0 and untouched.examined_objects == len(_sizes(store))

    terra.rm([9, 10, 12])
    terra.rm(5, cascade=True)  # and 6, 7 downstream
    terra.rm(11)
    before = _sizes(store)
    keep = _reachable(store)
    doomed = set(before) - keep
    assert doomed and keep

    dry = terra.gc(grace_period=0, dry_run=True)
    assert (dry.deleted_objects, dry.deleted_bytes) == (len(doomed), sum(before[o] for o in doomed))
    assert _sizes(store) == before  # a dry run deletes nothing

    phases = set()
    stats = terra.gc(grace_period=0, progress=lambda phase, done, total: phases.add(phase))
    assert stats.deleted_objects == len(doomed)
    assert stats.deleted_bytes == sum(before[o] for o in doomed)
    assert stats.examined_objects == len(before) and stats.examined_bytes == sum(before.values())
    assert stats.reachable_objects == len(keep) and stats.kept_objects == len(keep)
    assert stats.missing == 0 and {"mark", "sweep"} <= phases
    assert set(_sizes(store)) == keep
    assert _load_all(store) > 0  # every remaining artifact loads
    assert arrays[0].load().shape == (300_000,)  # run 8 survives: only its consumer was removed
    assert terra.fsck().ok
    assert terra.gc(grace_period=0).deleted_objects == 0

    data = os.path.join(store.backend.path, "data.mdb")
    size = os.path.getsize(data)
    result = terra.compact()
    assert result.before_bytes == size and result.after_bytes == os.path.getsize(data)
    assert result.after_bytes < size - 4_000_000  # two 2.4 MB arrays went back to the disk
    assert terra.fsck().ok and _load_all(store) > 0
    # the store stays writable after the swap
    assert shift(arrays[0], by=2).load()[0] == arrays[0].load()[0] + 2


def test_grace_period_and_recent_objects(store):
    orphan = store.put(Blob("raw", {}, b"orphan" * 100)).id
    assert terra.gc(grace_period=3600).recent_objects == 1 and store.has(orphan)
    child = store.put(Blob("raw", {}, b"child" * 100)).id
    time.sleep(0.4)
    tree = store.put(Tree("list", (child,))).id
    stats = terra.gc(grace_period=0.2)
    # the old orphan goes; the old child stays because a recent tree refers to it
    assert not store.has(orphan) and store.has(child) and store.has(tree)
    assert stats.deleted_objects == 1 and stats.recent_objects == 2
    assert terra.gc(grace_period=0).deleted_objects == 2


def test_rm_consumed_runs_needs_force_or_cascade(store):
    _pipeline(0.7)
    with pytest.raises(RunInUse) as e:
        terra.rm(2)
    assert "run 2 is used by run 3 (train), run 4 (evaluate)" in str(e.value)
    assert e.value.consumers == {2: [3, 4]}
    assert list(terra.provenance(4).runs) == [1, 2, 3, 4]  # nothing changed

    dry = terra.rm(2, cascade=True, dry_run=True)
    assert dry.removed == [2, 3, 4] and dry.cascaded == [3, 4] and len(_all_runs(store)) == 4

    res = terra.rm(3, force=True)
    assert res.removed == [3] and res.detached == {4: [3]}
    assert list(terra.provenance(4).runs) == [1, 2, 4]  # run 4 keeps its record, loses the edge
    with pytest.raises(NotFound):
        terra.get_run(3)

    res = terra.rm(1, cascade=True)
    assert res.removed == [1, 2, 4] and res.cascaded == [2, 4]
    assert _all_runs(store) == []
    with store.refs() as txn:  # every index entry of the removed runs is gone
        for prefix in (b"task/", b"cache/", b"edge/", b"produced/", b"lease/", b"tag/"):
            assert list(txn.scan(prefix)) == [], prefix
    assert not os.path.exists(R.run_dir_path(store, 3))
    # with the cache entries gone, the pipeline runs again under new ids
    _pipeline(0.7)
    assert demo.evaluate.last_run_id == 8
    assert terra.fsck().ok


def test_tags_pin_runs(store):
    a = shift(1)  # run 1 (inline input, inline output)
    shift(2)  # run 2
    assert a == 2
    assert terra.tag(1, "keep") == 1
    assert tags() == {"keep": 1}
    with pytest.raises(RunPinned, match="run 1 is tagged 'keep'"):
        terra.rm(1)
    with pytest.raises(TerraError, match="already names run 1"):
        terra.tag(2, "keep")
    with pytest.raises(TerraError, match="bad tag name"):
        terra.tag(2, "no spaces")
    assert terra.select_runs(task="shift") == [2]  # retention never picks pinned runs
    res = terra.rm("keep", force=True)  # tags resolve to their run
    assert res.removed == [1] and res.tags_removed == ["keep"]
    terra.tag(2, "keep")
    assert terra.untag("keep") == 2
    with pytest.raises(NotFound):
        terra.untag("keep")
    with pytest.raises(NotFound):
        terra.tag(99, "x")


def test_retention_selections(store):
    for i in range(5):
        shift(i)  # runs 1-5
    for i in range(2):
        with pytest.raises(ValueError):
            boom(i)  # runs 6, 7
    shift(0, by=5)  # run 8
    assert terra.select_runs(task="shift", keep_last=2) == [1, 2, 3, 4]
    assert terra.select_runs(task=f"{__name__}:shift", keep_last=0) == [1, 2, 3, 4, 5, 8]
    assert terra.select_runs(keep_last=1) == [1, 2, 3, 4, 5, 6]  # the newest run of each task is spared
    assert terra.select_runs(failed=True) == [6, 7]
    assert terra.select_runs(status="success", task="boom") == []
    assert terra.select_runs(older_than="1h") == []
    assert terra.select_runs(older_than=time.time() + 1) == list(range(1, 9))
    assert terra.select_runs(task="shift", older_than="2099-01-01") == [1, 2, 3, 4, 5, 8]
    assert terra.select_runs(task="nope") == []
    res = terra.rm(terra.select_runs(failed=True))
    assert res.removed == [6, 7]
    assert terra.get_runs()["run_id"].tolist() == [8, 5, 4, 3, 2, 1]


def test_rm_refuses_a_run_in_progress(store):
    # A run ref as _begin writes it for a live process (this one).
    def begin(txn):
        txn.put(R.k_run(1), R.pack({"status": "running", "task": "t", "identity": "m:t", "start_time": time.time(),
                                    "pid": os.getpid(), "host": R.HOST, "expires": time.time() + 60,
                                    "record": None}))
        txn.put(R.k_task("m:t", 1), R.status_byte("running"))

    store.update_refs(begin)
    with pytest.raises(RemovalRefused, match="still running"):
        terra.rm(1)
    assert terra.select_runs() == []


@terra.task
def consume_while_collecting(x, producer: int):
    """Removes its own input's producer and collects while it is still running."""
    with pytest.raises(RunInUse, match=f"run {producer} is used by run {producer + 1} \\(consume_while_collecting\\)"):
        terra.rm(producer)
    terra.rm(producer, force=True)
    stats = terra.gc(grace_period=0)
    assert stats.deleted_objects > 0  # the producer's record and inputs went; its output did not
    return float(x.sum())


def test_inputs_of_a_run_in_progress_survive_gc(store):
    arr = big(7, n=1000)  # run 1
    assert consume_while_collecting(arr, 1) == pytest.approx(float(arr.load().sum()))  # run 2
    assert np.array_equal(arr.load(), np.random.default_rng(7).random(1000))
    report = terra.fsck()
    assert report.missing == [] and report.corrupt == [] and report.affected_runs == {}
    # forced removal leaves the consumer's edge to the removed run, which fsck reports
    assert all("missing run 1" in p for p in report.index_problems) and report.index_problems


COMPACT_HOLDER = '''
import sys, time
import terra
from terra.session import current_store
terra.configure(storage_dir=sys.argv[1])
current_store().has(b"0" * 16)
print("open", flush=True)
time.sleep(60)
'''


def test_compact_refuses_while_another_process_has_the_store_open(store, tmp_path):
    store.put(Blob("raw", {}, b"x" * 1000))
    script = tmp_path / "holder.py"
    script.write_text(COMPACT_HOLDER)
    p = subprocess.Popen([sys.executable, str(script), store.root], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert p.stdout.readline().strip() == "open"
        with pytest.raises(StoreBusy, match=f"open in another process \\(process {p.pid}"):
            terra.compact()
        assert store.has(object_id := store.put(Blob("raw", {}, b"y")).id)  # still usable here
    finally:
        p.kill()
        p.wait()
    assert terra.compact().after_bytes > 0
    assert store.has(object_id) and terra.fsck().ok


# -- a writer and a collector in two processes -------------------------------------------------

WRITER = '''
import os, sys, time, random
import numpy as np
import terra
from terra import runs as R
from terra.objects import Run, Tree
from terra.serialize import store_value
from terra.session import current_store

terra.configure(storage_dir=sys.argv[1], quiet=True)
store = current_store()

@terra.task
def w(x, i):
    return x * 2

def manual(i):
    """The commit protocol by hand, with a slow gap between objects and record."""
    committed = store.get_ref(R.K_COMMITTED)
    def begin(txn):  # in the short-lived state, as terra.task does
        raw = txn.get(R.K_COUNTER)
        rid = max(int.from_bytes(raw, "big") if raw else 0,
                  int.from_bytes(committed, "big") if committed else 0) + 1
        txn.put(R.K_COUNTER, R.rid8(rid))
        txn.put(R.k_run(rid), R.pack({"status": "running", "task": "m", "identity": "writer:m",
                                      "start_time": time.time(), "pid": os.getpid(), "host": R.HOST,
                                      "expires": time.time() + 60, "record": None}))
        txn.put(R.k_task("writer:m", rid), R.status_byte("running"))
        return rid
    rid = store.update_state(begin)
    value = store_value(store, b"payload %d " % (i % 5) * 200)  # repeats: dedups against garbage
    inputs = Tree("inputs", (("i", i % 5),))
    time.sleep(random.random() * 0.1)  # well inside the grace period
    rec = store.put_many([inputs, Run({"task": "m", "identity": "writer:m", "status": "success",
                                       "inputs": store.put(inputs).id, "output": value})])[-1].id
    def commit(txn):
        txn.put(R.k_run(rid), R.pack({"status": "success", "task": "m", "identity": "writer:m",
                                      "start_time": time.time(), "record": bytes(rec)}))
        txn.put(R.k_task("writer:m", rid), R.status_byte("success"))
        old = txn.get(R.K_COMMITTED)
        if old is None or int.from_bytes(old, "big") < rid:
            txn.put(R.K_COMMITTED, R.rid8(rid))
    store.update_refs(commit)
    def end(txn):
        txn.delete(R.k_run(rid))
        txn.delete(R.k_task("writer:m", rid))
    store.update_state(end)

deadline = time.time() + float(sys.argv[2])
i = 0
while time.time() < deadline:
    w(np.full(1000, i % 5), i % 5, force=True)
    manual(i)
    i += 1
print(i, flush=True)
'''

COLLECTOR = '''
import json, sys, time
import terra
terra.configure(storage_dir=sys.argv[1], quiet=True)
deadline = time.time() + float(sys.argv[2])
deleted = rounds = 0
while time.time() < deadline:
    terra.rm(terra.select_runs(keep_last=3))
    deleted += terra.gc(grace_period=0.5).deleted_objects
    rounds += 1
print(json.dumps({"deleted": deleted, "rounds": rounds}), flush=True)
'''


@pytest.mark.slow
def test_gc_concurrent_with_a_writer(store, tmp_path):
    (tmp_path / "writer.py").write_text(textwrap.dedent(WRITER))
    (tmp_path / "collector.py").write_text(textwrap.dedent(COLLECTOR))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    seconds = "4"
    procs = [subprocess.Popen([sys.executable, str(tmp_path / name), store.root, seconds], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("writer.py", "collector.py")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    writes = int(outs[0][0])
    collected = json.loads(outs[1][0])
    assert writes > 20 and collected["rounds"] > 3 and collected["deleted"] > 0
    runs = _all_runs(store)
    assert runs
    for rid in runs:  # every committed record resolves completely
        ref = R.run_ref(store, rid)
        assert ref["status"] == "success"
        closure(store, ObjectId(ref["record"]))
    assert _load_all(store) > 0
    report = terra.fsck()
    assert report.ok, str(report)
