"""gc beside runs that are still writing: nothing a run wrote or relies on is deleted, at any grace.

Runs hold every id they write (in the short-lived state, before the bytes
are written) until their record commits, and gc's sweep re-reads those holds
and the records committed since it marked inside each delete transaction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import terra
from _closure import closure
from terra import runs as R
from terra.errors import TerraError
from terra.gc import MIN_GRACE
from terra.io import Artifact
from terra.objects import Blob, ObjectId, Run, Tree


def _damaged_runs(store) -> list[int]:
    """Committed runs whose record, inputs or outputs do not resolve completely."""
    bad = []
    with store.refs() as txn:
        refs = [(int.from_bytes(k[4:], "big"), R.unpack(v)) for k, v in txn.scan(b"run/")]
    for rid, ref in refs:
        if not ref.get("record"):
            continue
        try:
            closure(store, ObjectId(ref["record"]))
        except TerraError:
            bad.append(rid)
    return bad


# -- one process, deterministic interleavings -----------------------------------------------


@terra.task
def scale(x, by: int):
    return x * by


def test_gc_between_storing_outputs_and_committing_the_record(store, monkeypatch):
    """10.3: objects a run stored before gc started, committed after gc marked, survive grace 0."""
    arr = np.arange(50_000, dtype=np.float64)
    commit = store.commit
    collected = []

    def gc_then_commit(objs, fn):
        time.sleep(0.01)  # the run's objects are now strictly older than gc's cutoff
        collected.append(terra.gc(grace_period=0))
        return commit(objs, fn)

    monkeypatch.setattr(store, "commit", gc_then_commit)
    out = scale(arr, 3)
    monkeypatch.undo()
    assert collected and collected[0].deleted_objects == 0
    np.testing.assert_array_equal(out.load(), arr * 3)
    np.testing.assert_array_equal(terra.inp(1)["x"].load(), arr)
    assert _damaged_runs(store) == [] and terra.fsck().ok


@terra.task
def collect_while_running(x):
    """Runs gc with no grace from inside its own body: its stored inputs must survive."""
    stats = terra.gc(grace_period=0)
    return float(np.sum(x)), stats.deleted_objects


def test_plain_inputs_of_a_run_in_progress_survive_gc(store):
    """9.7: inputs stored before the call (plain values, not Artifacts) are held while it runs."""
    arr = np.random.default_rng(3).random(20_000)
    total, deleted = collect_while_running(arr)
    assert total == pytest.approx(arr.sum()) and deleted == 0
    np.testing.assert_array_equal(terra.inp(1)["x"].load(), arr)
    report = terra.fsck()
    assert report.ok and report.missing == [] and report.affected_runs == {}, str(report)


def test_run_committed_after_the_mark_keeps_old_objects_it_refers_to(store):
    """10.3: a run that commits between gc's mark and its sweep keeps garbage it now references."""
    scale(np.arange(3.0), 2)  # run 1: something to mark
    old = store.put(Blob("raw", {}, b"reused by a late run" * 100)).id
    child = store.put(Blob("raw", {}, b"child of the tree" * 100)).id
    tree = store.put(Tree("list", (child,))).id
    time.sleep(0.01)
    done = []

    def commit_late_run(phase, n, total):
        # Once gc has marked (old, child and tree are unreachable), a run
        # commits a record naming them, without re-writing them, as a run
        # passing an Artifact along does.
        if phase == "mark" and not done:
            rid = 2
            store.update_state(lambda txn: txn.put(R.K_COUNTER, R.rid8(rid)))  # as begin() hands it out
            rec = Run({"task": "late", "identity": "t:late", "status": "success", "output": tree,
                       "inputs": old})
            rec_id = store.put(rec).id
            store.update_refs(lambda txn: txn.put(R.k_run(rid), R.pack(
                {"status": "success", "task": "late", "identity": "t:late", "record": bytes(rec_id)})))
            done.append(rid)

    stats = terra.gc(grace_period=0, progress=commit_late_run)
    assert done and stats.deleted_objects == 0
    assert store.has(old) and store.has(tree) and store.has(child)
    assert _damaged_runs(store) == []


def test_negative_grace_refused(store):
    with pytest.raises(TerraError, match="grace period must be >= 0"):
        terra.gc(grace_period=-1)


def test_cli_clamps_a_grace_below_the_safe_minimum(store):
    from terra.cli import cli

    orphan = store.put(Blob("raw", {}, b"written outside any run" * 10)).id
    r = CliRunner().invoke(cli, ["--store", store.root, "gc", "--grace", "0"])
    assert r.exit_code == 0, r.output
    assert f"below the safe minimum of {MIN_GRACE:g}s" in r.output
    assert store.has(orphan)  # younger than the minimum: kept
    assert f"grace period ({MIN_GRACE:g} s)" in r.output


# -- two processes: a writer and a collector with no grace ------------------------------------

WRITER = r'''
import sys, time
import numpy as np
import terra
terra.configure(storage_dir=sys.argv[1], quiet=True)

# scratch runs are removed by the collector; make and use runs stay. Values
# repeat across them, so kept runs keep re-writing (deduplicating against)
# objects the collector is deleting at that moment.
@terra.task
def scratch(x, i):
    return np.full(2000 + 500 * (i % 3), float(i % 7))

@terra.task
def make(i):
    return np.full(2000 + 500 * (i % 3), float(i % 7))

@terra.task
def use(a, k):
    return a * k

deadline = time.time() + float(sys.argv[2])
runs = 0
while time.time() < deadline:
    i = runs
    scratch(np.arange(1000.0) + (i % 4), i + 1, force=True)
    a = make(i, force=True)
    use(a, i % 5, force=True)
    use(np.arange(1000.0) + (i % 4), 2, force=True)  # a plain, stored input
    runs += 4
print(runs, flush=True)
'''

COLLECTOR = r'''
import json, sys, time
import terra
terra.configure(storage_dir=sys.argv[1], quiet=True)
deadline = time.time() + float(sys.argv[2])
deleted = rounds = removed = refused = 0
# Past the deadline too, until something was deleted: on a loaded machine every round can be
# refused while the writer runs; once it stops (same deadline) nothing holds the scratch runs.
while time.time() < deadline or (deleted == 0 and time.time() < deadline + 60):
    try:
        removed += len(terra.rm(terra.select_runs(task="scratch", keep_last=2)).removed)
    except terra.TerraError:  # RunInUse: a run in progress holds an equal output; next round
        refused += 1
    deleted += terra.gc(grace_period=0).deleted_objects
    rounds += 1
print(json.dumps({"deleted": deleted, "rounds": rounds, "removed": removed, "refused": refused}), flush=True)
'''


def _gc_beside_a_writer(store, tmp_path, seconds: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TERRA_CONFIG_OVERRIDES", None)
    procs = [subprocess.Popen([sys.executable, "-c", src, store.root, str(seconds)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for src in (WRITER, COLLECTOR)]
    outs = []
    try:
        outs = [p.communicate(timeout=seconds + 120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
    runs, collected = int(outs[0][0]), json.loads(outs[1][0])
    damaged = _damaged_runs(store)
    loaded = 0
    for rid in terra.select_runs():
        rec = terra.get_run(rid)
        for v in terra.inp(rid).values():
            if isinstance(v, Artifact):
                v.load()
                loaded += 1
        if rec["status"] == "success":
            terra.out(rid).load()
            loaded += 1
    report = terra.fsck()
    figures = {"runs": runs, "removed": collected["removed"], "refused": collected["refused"],
               "gc_rounds": collected["rounds"],
               "deleted_objects": collected["deleted"], "runs_checked": len(terra.select_runs()),
               "damaged": len(damaged), "loaded": loaded, "fsck_ok": report.ok}
    print("gc beside a writer:", figures)
    assert damaged == [] and report.ok, str(report)
    assert runs > 10 and collected["rounds"] > 2 and collected["deleted"] > 0 and loaded > runs // 4
    return figures


@pytest.mark.slow
def test_gc_with_no_grace_in_a_loop_beside_a_writer(store, tmp_path):
    _gc_beside_a_writer(store, tmp_path, 4.0)


@pytest.mark.soak
def test_soak_gc_with_no_grace_in_a_loop_beside_a_writer(store, tmp_path):
    _gc_beside_a_writer(store, tmp_path, float(os.environ.get("TERRA_SOAK_SECONDS", "60")))


def test_holds_of_a_killed_run_are_dropped_by_gc(store):
    from terra.store import hold_key

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    orphan = store.put(Blob("raw", {}, b"held by a run that was killed")).id

    def killed_run(txn):
        txn.put(R.k_run(5), R.pack({"status": "running", "task": "t", "identity": "m:t", "start_time": 1.0,
                                    "pid": pid, "host": R.HOST, "expires": time.time() + 60, "record": None}))
        txn.put(hold_key(5, orphan), b"")

    store.update_state(killed_run)
    assert terra.gc(grace_period=0).deleted_objects == 1  # a dead run holds nothing
    assert not store.has(orphan)
    with store.state_refs() as txn:
        assert list(txn.scan(b"hold/")) == []
