"""Several processes calling one task: computed once; a killed lease holder does not block."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import terra

SCRIPT = '''
import os, sys, time
sys.path.insert(0, {dir!r})
import terra
from terra import Task

@Task
def slow(x, marker):
    with open(marker, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    time.sleep(float(os.environ.get("SLOW_SECONDS", "1")))
    return x * 2

out = slow(21, {marker!r})
print("RESULT", out, flush=True)
'''


def _env(tmp_path, lease=30.0):
    cfg = tmp_path / "terra_config.json"
    cfg.write_text(json.dumps({"storage_dir": str(tmp_path / "store"), "lease_seconds": lease}))
    env = {**os.environ, "TERRA_CONFIG_PATH": str(cfg), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TERRA_CONFIG_OVERRIDES", None)  # this process's terra.configure() calls are not theirs
    return env


@pytest.mark.slow
def test_eight_processes_compute_once(tmp_path):
    marker = tmp_path / "calls.txt"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(dir=str(tmp_path), marker=str(marker)))
    env = _env(tmp_path)
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len(marker.read_text().split()) == 1  # the body ran exactly once
    assert all("RESULT 42" in o for o in outs)
    terra.configure(storage_dir=str(tmp_path / "store"))
    runs = terra.get_runs()
    assert len(runs) == 1 and runs["status"][0] == "success"


@pytest.mark.slow
def test_killed_holder_does_not_block(tmp_path):
    marker = tmp_path / "calls.txt"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(dir=str(tmp_path), marker=str(marker)))
    env = _env(tmp_path, lease=60.0)
    holder = subprocess.Popen([sys.executable, str(script)], env={**env, "SLOW_SECONDS": "60"},
                              stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    t0 = time.time()
    r = subprocess.run([sys.executable, str(script)], env={**env, "SLOW_SECONDS": "0"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "RESULT 42" in r.stdout, r.stderr
    assert time.time() - t0 < 20  # far less than the 60 s lease: the dead holder was detected
    terra.configure(storage_dir=str(tmp_path / "store"))
    statuses = dict(zip(terra.get_runs()["run_id"], terra.get_runs()["status"]))
    assert statuses == {1: "interrupted", 2: "success"}


@pytest.mark.slow
def test_expired_lease_of_other_host_is_taken_over(tmp_path):
    """A lease from another machine is honoured only until it expires."""
    from terra import runs as R
    from terra.session import current_store

    terra.configure(storage_dir=str(tmp_path / "store"), lease_seconds=1.0, quiet=True)
    try:
        calls = []

        @terra.task
        def f(x):
            calls.append(x)
            return x

        from terra._keys import _call_key

        store = current_store()
        key = _call_key(f, f._bind((5,), {}), store)
        store.update_state(lambda txn: txn.put(R.k_lease(key), R.pack(
            {"pid": 1, "host": "elsewhere", "run_id": 999, "expires": time.time() + 1.0})))
        t0 = time.time()
        assert f(5) == 5 and calls == [5]
        assert 0.8 < time.time() - t0 < 10
    finally:
        terra.configure(lease_seconds=30.0, quiet=False)


MANY = '''
import sys
sys.path.insert(0, {dir!r})
import terra
terra.configure(quiet=True)

@terra.task
def job(worker, i):
    return worker * 1000 + i

ids = [job({worker}, i, return_run_id=True)[0] for i in range(25)]
print(" ".join(map(str, ids)), flush=True)
'''


@pytest.mark.slow
def test_run_ids_unique_and_dense_across_processes(tmp_path):
    env = _env(tmp_path)
    procs = []
    for w in range(4):
        script = tmp_path / f"many{w}.py"
        script.write_text(MANY.format(dir=str(tmp_path), worker=w))
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ids = [int(x) for o in outs for x in o.split()]
    assert sorted(ids) == list(range(1, 101))  # no id shared, none skipped
    terra.configure(storage_dir=str(tmp_path / "store"))
    runs = terra.get_runs()
    assert sorted(runs["run_id"]) == list(range(1, 101)) and set(runs["status"]) == {"success"}


@terra.task
def squares(n):
    import numpy as np

    return np.arange(n) ** 2


def _pool_work(n):
    a = squares(n)
    return a.run_id, float(a.load().sum())


@pytest.mark.slow
def test_tasks_in_a_forked_process_pool(tmp_path):
    """Workers forked after the parent opened the store reopen it and record their runs."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True)
    try:
        squares(3)  # the parent has the store (and its short-lived state) open before forking
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as pool:
            results = list(pool.map(_pool_work, range(3, 13)))
        assert [s for _, s in results] == [float(sum(i * i for i in range(n))) for n in range(3, 13)]
        assert sorted(r for r, _ in results) == list(range(1, 11))
        assert sorted(terra.get_runs()["run_id"]) == list(range(1, 11)) and terra.fsck().ok
        assert squares(3).run_id == 1 and squares(20).run_id == 11  # the parent still works
    finally:
        terra.configure(quiet=False)


@pytest.mark.slow
def test_spawned_workers_use_the_configured_store(tmp_path):
    """terra.configure() reaches workers that do not inherit memory (spawn, forkserver)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    terra.configure(storage_dir=str(tmp_path / "spawned"), quiet=True)
    try:
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(_pool_work, [3, 4, 5]))
        assert sorted(r for r, _ in results) == [1, 2, 3]
        assert sorted(terra.get_runs()["run_id"]) == [1, 2, 3]
        assert squares(4).run_id in {r for r, _ in results}  # a hit on a worker's run
    finally:
        terra.configure(quiet=False)
