"""Task.submit / Task.map on executors: in-process, spawned pools, Dask, and workers that cannot see the store."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from concurrent import futures
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import pytest

import terra
from terra import notify
from terra import runs as R
from terra.session import current_store

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the workers import the tasks by name from here too

from _parallel_tasks import REFUSED, Counting, elsewhere, produce, scale  # noqa: E402


def _runs(identity: str) -> list[dict]:
    return [terra.get_run(int(r)) for r in terra.get_runs(task=identity)["run_id"]]


def _check_parents(runs: list[dict]) -> None:
    """Every run's parents are exactly the run that produced its input ``a`` (found by the input's id)."""
    producer = {r["output"].hex(): r["run_id"] for r in _runs("_parallel_tasks:produce")}
    for r in runs:
        assert r["parents"] == [producer[terra.inp(r["run_id"])["a"].id]], r


# -- in this process ------------------------------------------------------------------


@pytest.fixture
def counted(store):
    calls = []

    @terra.task
    def double(x):
        calls.append(x)
        if x == 13:
            raise KeyError(x)
        return 2 * x

    return double, calls


def test_map_in_process_keeps_order_collapses_duplicates_and_answers_hits(counted):
    double, calls = counted
    assert double.map([3, 1, 3, 2, 1]) == [6, 2, 6, 4, 2]
    assert calls == [3, 1, 2]  # one run per distinct call, in input order
    assert double.map([1, 2, 3, 4]) == [2, 4, 6, 8]
    assert calls == [3, 1, 2, 4]  # hits ran nothing
    assert len(terra.get_runs()) == 4


def test_map_zips_one_iterable_per_argument(store):
    @terra.task
    def sub(a, b):
        return a - b

    assert sub.map([5, 6, 7], [1, 2]) == [4, 4]  # like Executor.map: the shortest wins


def test_failed_call_is_recorded_and_raised_after_the_others(counted):
    double, calls = counted
    with pytest.raises(KeyError):
        double.map([12, 13, 14])
    assert calls == [12, 13, 14]
    status = dict(zip(terra.get_runs()["run_id"], terra.get_runs()["status"]))
    assert sorted(status.values()) == ["failure", "success", "success"]


def test_as_completed_yields_every_index_once(counted):
    double, calls = counted
    it = double.map([5, 6, 5, 7], as_completed=True)
    assert calls == [5, 6, 7]  # submitted at once, as Executor.map does
    assert dict(it) == {0: 10, 1: 12, 2: 10, 3: 14}


def test_a_call_that_cannot_be_sent_fails_alone(store):
    from terra.errors import TaskError

    class Picky(Counting):
        def submit(self, fn, /, *args, **kwargs):
            if args[0].args[0] == 2:
                raise TypeError("cannot send this one")
            return super().submit(fn, *args, **kwargs)

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        f_ok, f_bad = scale.submit(3, 3, executor=Picky(pool)), scale.submit(2, 3, executor=Picky(pool))
        assert f_ok.result() == 9
    with pytest.raises(TaskError, match="scale: the executor refused the call: TypeError: cannot send"):
        f_bad.result()
    assert len(terra.get_runs()) == 1


def test_answered_executor_futures_are_released_at_once(counted):
    """Nothing keeps an answered call's executor future alive: Dask reruns a live future whose worker dies."""
    import gc
    import weakref
    from concurrent.futures import ThreadPoolExecutor

    double, calls = counted
    refs = []

    class Watched(Counting):
        def submit(self, fn, /, *args, **kwargs):
            ef = super().submit(fn, *args, **kwargs)
            refs.append(weakref.ref(ef))
            return ef

    gc.disable()  # only reference counting frees them: no cycle may hold one
    try:
        with ThreadPoolExecutor(2) as pool:
            with pytest.raises(KeyError):
                double.map([12, 13, 14], executor=Watched(pool))
        assert len(refs) == 3 and [r() for r in refs] == [None] * 3
    finally:
        gc.enable()


def test_submit_returns_futures_of_results_and_failures(counted):
    double, calls = counted
    f = double.submit(4)
    assert isinstance(f, Future) and f.result() == 8
    hit = double.submit(x=4)
    assert hit.done() and hit.result() == 8 and calls == [4]
    bad = double.submit(13)
    assert isinstance(bad.exception(), KeyError)


def test_map_sends_one_notification_per_batch(tmp_path, monkeypatch):
    from test_notify import TOKEN, FakeSlack

    monkeypatch.setattr(notify, "_sender", notify._Sender())
    fake = FakeSlack()
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True, notify=True, slack_web_client_id=TOKEN,
                    slack_channel="#runs", slack_base_url=fake.url, notify_min_seconds=0, notify_timeout=2)
    try:
        with pytest.raises(ValueError):
            scale.map([np.arange(2)] * 4, [1, 2, REFUSED, 4])
        assert notify.flush(5)
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
            with pytest.raises(ValueError):
                scale.map([np.arange(3)] * 4, [1, 2, REFUSED, 4], executor=ex)
        assert notify.flush(5)
    finally:
        terra.configure(notify=False, slack_web_client_id=None, slack_channel=None, slack_base_url=None,
                        notify_min_seconds=60, notify_timeout=3)
        fake.close()
    texts = [r["body"]["text"] for r in fake.requests]
    assert len(texts) == 2, texts  # one per batch; the workers sent nothing of their own
    assert all("batch of 4 runs" in t and "3 success" in t and "1 failure" in t for t in texts), texts


# -- executors in other processes, driven by a script (tasks in a module and in __main__) ----------


def _drive(kind: str, store_dir, python, subprocess_env) -> dict:
    env = dict(subprocess_env, PYTHONPATH=HERE + os.pathsep + subprocess_env["PYTHONPATH"])
    r = subprocess.run([python, os.path.join(HERE, "_parallel_driver.py"), kind, str(store_dir)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["spawn", "forkserver", "dask"])
def test_map_on_executor(kind, tmp_path, python, subprocess_env):
    res = _drive(kind, tmp_path / "store", python, subprocess_env)
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True)
    for name, identity in (("module", "_parallel_tasks:scale"), ("main", "main_scale")):
        got = res[name]
        assert got["values"] == [[2 * i] * 3 for i in range(20)]
        assert got["first"] == 20 and got["second"] == 0 and got["same"]  # the second map: 20 hits
        assert got["third"] == 20 and got["error"] == f"k={REFUSED} is refused" and got["remote_traceback"]
        assert got["duplicates"] == [1, [[0] * 3] * 5]
        assert got["submit"] == [15, 15, 15]
        runs = _runs(identity)
        assert len(runs) == 20 + 20 + 1 + 1, identity  # one key per call, whichever process computed it
        by_status = {}
        for r in runs:
            by_status.setdefault(r["status"], []).append(r)
        assert len(by_status["failure"]) == 1 and len(by_status["success"]) == 41
        assert by_status["failure"][0]["error"]["type"] == "builtins.ValueError"
        assert {r["pid"] for r in runs} & {r["pid"] for r in _runs("_parallel_tasks:produce")} == set()
        _check_parents(runs)
        assert "scaling by 2" in terra.get_log(by_status["success"][-1]["run_id"])
    if kind == "dask":
        assert res["died"] == "KilledWorker"
        assert res["after_death"] == [0, 1, 2, 4, 5]
        died = {int(r["run_id"]): r["status"] for r in _runs("_parallel_tasks:die")}
        assert sorted(died.values()).count("success") == 5
        assert list(died.values()).count("interrupted") == 1
        # The dead worker's lease went when Dask reported its death: no identical call had to take it over.
        with current_store().state_refs() as txn:
            held = [R.unpack(v) for _, v in txn.scan(b"lease/")]
        assert held == []


def test_ctrl_c_cancels_pending_calls_and_leaves_no_lease(tmp_path, python, subprocess_env):
    marks = tmp_path / "marks"
    marks.mkdir()
    env = dict(subprocess_env, PYTHONPATH=HERE + os.pathsep + subprocess_env["PYTHONPATH"])
    p = subprocess.Popen([python, os.path.join(HERE, "_parallel_interrupt.py"), str(tmp_path / "store"), str(marks)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not os.listdir(marks) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "KeyboardInterrupt" in err
    started = len(os.listdir(marks))
    assert 1 <= started < 12  # the calls not started were cancelled
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True)
    store = current_store()
    with store.state_refs() as txn:
        assert [k for k, _ in txn.scan(b"") if not k.startswith(b"counter/")] == []  # no lease, no running run
    statuses = list(terra.get_runs()["status"])
    assert len(statuses) == started and set(statuses) <= {"success", "interrupted"}


# -- a worker that cannot see the store (another host) ------------------------------------------


def test_worker_without_the_store_sends_runs_through_the_remote(tmp_path):
    from terra.remote import add_remote
    from terra.parallel import Call

    terra.configure(storage_dir=str(tmp_path / "driver"), quiet=True)
    add_remote("origin", f"file://{tmp_path / 'remote'}")
    arts = produce.map(range(4))

    def elsewhere_path(call):  # on the worker's host the driver's path does not exist
        assert isinstance(call, Call)
        return Call(**{**call.__dict__, "store_dir": str(tmp_path / "not-on-this-host")})

    worker_store = tmp_path / "worker-own-store"
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"), initializer=elsewhere,
                             initargs=(str(worker_store),)) as pool:
        ex = Counting(pool, rewrite=elsewhere_path)
        out = scale.map(arts, [3] * 4, executor=ex)
        assert [v.load().tolist() for v in out] == [[3 * i] * 3 for i in range(4)]
        # A call whose inputs are not on the remote yet comes back; the driver pushes them and resends it.
        assert 4 < ex.n <= 8
        n = ex.n
        assert scale.map(arts, [3] * 4, executor=ex) == out and ex.n == n  # hits in the driver's store
        with pytest.raises(ValueError, match="refused"):
            scale.map(arts[:2], [REFUSED] * 2, executor=ex)
        assert ex.n == n + 2  # their inputs are on the remote now: sent once each
    assert not worker_store.exists()  # the worker wrote no store of its own where it was configured
    runs = _runs("_parallel_tasks:scale")
    assert sorted(r["status"] for r in runs) == ["failure"] * 2 + ["success"] * 4
    _check_parents(runs)
    store = current_store()
    for r in runs:
        assert r["origin"][0] != store.uuid  # made in the worker's scratch store, recorded here
        assert r["pid"] != os.getpid()
        assert "scaling by" in terra.get_log(r["run_id"])
    ok = [r for r in runs if r["status"] == "success"]
    # why: the newest remote-made run against the closest earlier one, as for local calls.
    newest = max(ok, key=lambda r: r["run_id"])
    w = terra.why(newest["run_id"])
    assert w.baseline in {r["run_id"] for r in ok} and [a.name for a in w.args] == ["a"], str(w)
    assert not w.code_changed, str(w)  # the worker recorded the driver's fingerprint
    assert terra.load(ok[0]["output"].hex()).tolist() == out[[o.id for o in out].index(ok[0]["output"].hex())] \
        .load().tolist()
    with store.state_refs() as txn:
        assert not [k for k, _ in txn.scan(b"lease/")]


def test_worker_without_the_store_or_a_remote_is_refused(tmp_path):
    from terra._keys import _prepare
    from terra.errors import TerraError
    from terra.parallel import Call, work

    terra.configure(storage_dir=str(tmp_path / "driver"), quiet=True)
    store = current_store()
    bound, dumped, key = _prepare(scale, (np.arange(2), 2), {}, store)
    call = Call(scale, (np.arange(2), 2), {}, bound, dumped, key, scale._code_fields(),
                str(tmp_path / "elsewhere"), store.uuid)
    terra.configure(storage_dir=str(tmp_path / "worker"))  # as a worker on another host sees it
    with pytest.raises(TerraError, match="cannot see the driver's store"):
        work(call)
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "worker").exists()
    terra.configure(storage_dir=str(tmp_path / "driver"))
    assert len(terra.get_runs()) == 0


def test_workers_run_on_the_key_and_code_they_are_sent(store):
    """work() never recomputes: the run is recorded under the driver's key and code fields."""
    from terra._keys import _prepare
    from terra.parallel import Call, work

    bound, dumped, key = _prepare(scale, (np.arange(2), 5), {}, store)
    code = {**scale._code_fields(), "fingerprint": "f" * 32}  # as a driver with other code would send it
    sent_key = bytes(16 - len(b"driver")) + b"driver"
    call = Call(scale, (np.arange(2), 5), {}, bound, dumped, sent_key, code, store.root, store.uuid)
    done = work(call)
    rec = terra.get_run(done.run_id)
    assert bytes(rec["cache_key"]) == sent_key != key and rec["fingerprint"] == "f" * 32
    assert done.error is None and done.record is None  # the shared store: nothing to pull
    assert work(call).run_id == done.run_id  # the same key again: a hit, nothing ran


def test_driver_refuses_a_worker_run_that_is_not_the_call(tmp_path):
    from terra._keys import _prepare
    from terra.errors import TerraError
    from terra.parallel import Call, Done, _adopt
    from terra.remote import add_remote, push

    terra.configure(storage_dir=str(tmp_path / "driver"), quiet=True)
    add_remote("origin", f"file://{tmp_path / 'remote'}")
    store = current_store()
    rid, _ = scale(np.arange(2), 4, return_run_id=True)
    push([rid])
    bound, dumped, key = _prepare(scale, (np.arange(2), 6), {}, store)  # another call than run rid
    call = Call(scale, (np.arange(2), 6), {}, bound, dumped, key, scale._code_fields(), store.root, store.uuid,
                f"file://{tmp_path / 'remote'}")
    with store.refs() as txn:
        record = bytes(R.record_of(txn, rid)).hex()
    with pytest.raises(TerraError, match="is not the call it was sent"):
        _adopt(store, call, Done(rid, record))


def test_map_on_a_thread_pool(counted):
    from concurrent.futures import ThreadPoolExecutor

    double, calls = counted
    with ThreadPoolExecutor(3) as ex:
        assert double.map(range(6), executor=ex) == [0, 2, 4, 6, 8, 10]
        assert sorted(calls) == list(range(6))
        assert double.map(range(6), executor=ex) == [0, 2, 4, 6, 8, 10] and len(calls) == 6


def test_progress_bar_on_a_terminal_only(counted, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    double, _ = counted
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        terra.configure(quiet=False)
        double.map(range(100, 104))
        terra.configure(quiet=True)
        assert ("100%" in stream.getvalue()) == shown, stream.getvalue()


def test_uncached_task_runs_every_call(store):
    calls = []

    @terra.task(cache=False)
    def stamp(x):
        calls.append(x)
        return x

    assert stamp.map([1, 1, 2]) == [1, 1, 2] and calls == [1, 1, 2]  # no key is shared when nothing caches
    assert len(terra.get_runs()) == 3


def test_a_dying_worker_on_a_process_pool(store):
    """Python's pool breaks when a worker dies: what finished is recorded, the dead run reads interrupted."""
    from concurrent.futures.process import BrokenProcessPool

    from _parallel_tasks import die

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        assert die.map([0, 1], executor=pool) == [0, 1]
        with pytest.raises(BrokenProcessPool):
            die.map([2, 3, 4], executor=pool)
    status = {int(r): s for r, s in zip(terra.get_runs(task=die)["run_id"], terra.get_runs(task=die)["status"])}
    assert sorted(status.values()).count("interrupted") == 1 and list(status.values()).count("success") >= 2
    with store.state_refs() as txn:  # the dead worker's lease went with the pool's report of its death
        assert [R.unpack(v)["run_id"] for _, v in txn.scan(b"lease/")] == []
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        c = Counting(pool)
        assert die.map([0, 1, 2, 4], executor=c) == [0, 1, 2, 4]
        assert c.n == 4 - sum(s == "success" for s in status.values())  # only what was missing ran


def test_a_dying_worker_breaks_the_pool_and_no_lease_stays(store, tmp_path):
    """The pool terminates the other worker too, after it reports both calls failed: both leases go."""
    from concurrent.futures.process import BrokenProcessPool

    from _parallel_tasks import die_beside

    marks = tmp_path / "marks"
    marks.mkdir()
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        # Both workers started first: CPython 3.11 spawns them on demand and its manager thread
        # can be waiting on the sentinels it had before the second one came up, then misses that
        # worker's death until another result arrives (here: the other call, 60 s later).
        futures.wait([pool.submit(time.sleep, 0.3) for _ in range(2)])
        with pytest.raises(BrokenProcessPool):
            die_beside.map([3, 4], [str(marks)] * 2, executor=pool)
    assert os.listdir(marks) == ["4"]  # the other call was running when the pool broke
    assert sorted(terra.get_runs(task=die_beside)["status"]) == ["interrupted", "interrupted"]
    with store.state_refs() as txn:
        assert [R.unpack(v)["run_id"] for _, v in txn.scan(b"lease/")] == []


def test_worker_finds_the_store_at_its_own_configured_path(tmp_path):
    """The driver's path is not there (another mount point), but the worker's own storage dir is the same store."""
    from terra.parallel import Call

    terra.configure(storage_dir=str(tmp_path / "driver"), quiet=True)  # no remote: only the shared store can work
    arts = produce.map(range(2))

    def elsewhere_path(call):
        return Call(**{**call.__dict__, "store_dir": str(tmp_path / "mounted-elsewhere")})

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=elsewhere,
                             initargs=(str(tmp_path / "driver"),)) as pool:
        out = scale.map(arts, [4, 4], executor=Counting(pool, rewrite=elsewhere_path))
    assert [v.load().tolist() for v in out] == [[0] * 3, [4] * 3]
    runs = _runs("_parallel_tasks:scale")
    assert [r["origin"][0] for r in runs] == [current_store().uuid] * 2  # written here, by the worker
    _check_parents(runs)


def test_file_arguments_travel_keyed_by_content(store, tmp_path):
    from pathlib import Path

    from _parallel_tasks import size

    files = []
    for i in range(3):
        files.append(Path(tmp_path / f"f{i}"))
        files[-1].write_bytes(b"x" * i)
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        c = Counting(pool)
        assert size.map(files, executor=c) == [0, 1, 2] and c.n == 3
        assert size.map(files, executor=c) == [0, 1, 2] and c.n == 3  # keyed by the driver: hits
        files[1].write_bytes(b"changed")
        assert size.map(files, executor=c) == [0, 7, 2] and c.n == 4  # the changed file alone runs again


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="a zombie is told by /proc")
def test_a_dead_worker_not_reaped_yet_is_not_alive(python):
    """Executors report a worker's death before they reap it: its lease must read as dead already."""
    child = subprocess.Popen([python, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert R.alive(R.HOST, child.pid)
        child.stdin.close()  # it exits; nobody waits for it yet: a zombie
        deadline = time.time() + 30
        while time.time() < deadline and R.alive(R.HOST, child.pid):
            time.sleep(0.01)
        assert not R.alive(R.HOST, child.pid)
        with open(f"/proc/{child.pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "Z"  # not reaped: only the zombie rule saw it die
    finally:
        child.wait()
    assert not R.alive(R.HOST, child.pid)
