"""Short-lived run state (leases, runs in progress) lives in an unsynced side store.

It must be invisible once a run commits, merged beneath the durable refs while
a run is in progress, and thrown away — never trusted — after a reboot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import terra
from terra import runs as R
from terra.session import current_store


@pytest.fixture(autouse=True)
def store_dir(tmp_path):
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True)
    yield tmp_path / "store"
    terra.configure(quiet=False)


@terra.task
def double(x):
    return x * 2


def _state_keys(store) -> list[bytes]:
    with store.state_refs() as txn:
        return [k for k, _ in txn.scan(b"")]


def test_no_state_left_after_runs():
    store = current_store()
    for i in range(5):
        double(i)
    with pytest.raises(TypeError):
        double(None)  # a failed run clears its state too
    assert [k for k in _state_keys(store) if not k.startswith(b"counter/")] == []
    assert list(terra.get_runs()["run_id"]) == [6, 5, 4, 3, 2, 1]
    assert store.get_ref(R.K_COMMITTED) == R.rid8(6)


def test_running_state_is_merged_under_durable_refs():
    store = current_store()
    double(1)
    # A run in progress, as _begin writes it.
    store.update_state(lambda txn: (txn.put(R.k_run(2), R.pack({"status": "running", "task": "double",
                                                                "identity": "x:double", "start_time": 1.0,
                                                                "pid": os.getpid(), "host": R.HOST,
                                                                "record": None})),
                                    txn.put(R.k_task("x:double", 2), R.status_byte("running"))))
    runs = terra.get_runs()
    assert dict(zip(runs["run_id"], runs["status"])) == {2: "running", 1: "success"}
    # The durable ref wins where both exist (a run committed but not yet cleared).
    store.update_state(lambda txn: txn.put(R.k_run(1), R.pack({"status": "running", "record": None})))
    assert terra.get_run(1)["status"] == "success"


def test_state_from_an_earlier_boot_is_discarded(store_dir):
    store = current_store()
    double(1)
    store.update_state(lambda txn: txn.put(R.k_lease(b"k" * 16), R.pack({"pid": 1, "host": "h", "expires": 1e18})))
    state_dir = os.path.join(store.backend.path, "state")
    with open(os.path.join(state_dir, "boot_id"), "w") as f:
        f.write("an-earlier-boot")
    script = textwrap.dedent(f"""
        import terra
        from terra import runs as R
        from terra.session import current_store
        terra.configure(storage_dir={str(store_dir)!r}, quiet=True)
        store = current_store()
        with store.state_refs() as txn:
            assert txn.get(R.k_lease(b"k" * 16)) is None, "stale state survived a reboot"
        assert terra.get_run(1)["status"] == "success"

        @terra.task
        def triple(x):
            return x * 3

        rid, out = triple(2, return_run_id=True)
        assert (rid, out) == (2, 6), (rid, out)  # numbering resumes after the last committed run
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_a_run_cut_short_can_be_removed():
    store = current_store()
    double(1)
    dead = {"status": "running", "task": "double", "identity": "x:double", "start_time": 1.0,
            "pid": 2 ** 22 + 12345, "host": R.HOST, "record": None}  # no such process
    store.update_state(lambda txn: (txn.put(R.k_run(2), R.pack(dead)),
                                    txn.put(R.k_task("x:double", 2), R.status_byte("running")),
                                    txn.put(R.k_lease(b"q" * 16), R.pack({"pid": dead["pid"], "host": R.HOST,
                                                                          "run_id": 2, "expires": 1e18}))))
    assert dict(zip(terra.get_runs()["run_id"], terra.get_runs()["status"])) == {2: "interrupted", 1: "success"}
    terra.rm([2])
    assert list(terra.get_runs()["run_id"]) == [1]
    assert [k for k in _state_keys(store) if not k.startswith(b"counter/")] == []


def test_call_finished_elsewhere_while_taking_the_lease(monkeypatch):
    """The race _begin guards: the result lands between our lookup and our lease."""
    import importlib

    T = importlib.import_module("terra._lifecycle")  # where _execute_keyed looks _lookup up

    store = current_store()
    double(4)  # run 1: its result is in the cache
    real, calls = T._lookup, []

    def first_lookup_misses(store, key):
        calls.append(key)
        return None if len(calls) == 1 else real(store, key)

    monkeypatch.setattr(T, "_lookup", first_lookup_misses)
    assert double(4, return_run_id=True) == (1, 8)  # served from the cache, nothing ran
    assert len(calls) == 2  # the miss before the lease, the hit after it
    monkeypatch.undo()
    assert double(5, return_run_id=True)[0] == 2  # the id it took was given back
    assert [k for k in _state_keys(store) if not k.startswith(b"counter/")] == []


def test_failed_final_commit_leaves_no_lease(monkeypatch):
    """A store that refuses the record (disk full, say): the error surfaces, nothing waits on it."""
    from terra.errors import StoreError

    store = current_store()

    def refuse(*a, **k):
        raise StoreError("no space left on device")

    monkeypatch.setattr(store, "commit", refuse)
    with pytest.raises(StoreError, match="no space"):
        double(21)
    monkeypatch.undo()
    assert [k for k in _state_keys(store) if not k.startswith(b"counter/")] == []
    assert double(21) == 42  # computed now, without waiting out a stale lease
