"""Leases and runs in progress: the short-lived state of a call being computed.

A miss takes a lease on its cache key in the store's short-lived state
(``Store.update_state``, no sync) together with a new run id and a
"running" ref. Identical calls elsewhere wait on the lease; a holder that
died (its pid is gone, or its lease expired on another host) is taken over.
One thread per process renews the leases of its long runs, and the expiry
in their running refs with them: on another host that expiry is all there is
to tell a live run from a dead one (``rm`` and gc go by it).
"""

from __future__ import annotations

import os
import threading
import time

from . import runs as R
from .store import Store, hold_key

__all__ = ["begin", "committed_counter", "drop_dead", "end", "leases", "wait"]


def begin(txn, t, key: bytes, use_cache: bool, lease_seconds: float, committed: int, holds=()):
    """In one transaction of the short-lived state: a lease to wait on, or a new run.

    The lease and the running run's ref live where a write costs no sync; the
    caller checks the durable cache again after taking the lease (a holder
    commits its result before it drops its lease, so one of the two is seen).
    ``holds`` (ids of the Artifacts passed in) go into the running run's ref,
    so gc keeps them until the record that refers to them is committed.
    """
    now = time.time()
    if use_cache:
        lease = txn.get(R.k_lease(key))
        if lease is not None:
            info = R.unpack(lease)
            if R.alive(info.get("host"), info.get("pid"), info.get("expires")) and info["expires"] > now:
                return "wait", info
    counter = txn.get(R.K_COUNTER)
    run_id = max(int.from_bytes(counter, "big") if counter else 0, committed) + 1
    txn.put(R.K_COUNTER, R.rid8(run_id))
    ref = {"status": "running", "task": t.name, "identity": t.identity, "start_time": now,
           "pid": os.getpid(), "host": R.HOST, "expires": now + lease_seconds, "record": None}
    if holds:
        ref["holds"] = list(holds)
    txn.put(R.k_run(run_id), R.pack(ref))
    txn.put(R.k_task(t.identity, run_id), R.status_byte("running"))
    if t.cache:
        txn.put(R.k_lease(key), R.pack({"pid": os.getpid(), "host": R.HOST, "run_id": run_id,
                                        "expires": now + lease_seconds}))
    return "run", run_id


def committed_counter(store: Store) -> int:
    """The highest run id ever committed durably (the short-lived counter may have been reset)."""
    with store.refs() as txn:
        return R.committed(txn)


def end(txn, t, run_id: int, key: bytes, give_back: bool = False) -> None:
    """Clear a run's short-lived state: its running ref and, if still ours, its lease.

    ``give_back``: the run never ran; return its id if no later run took one.
    """
    if give_back and txn.get(R.K_COUNTER) == R.rid8(run_id):
        txn.put(R.K_COUNTER, R.rid8(run_id - 1))
    txn.delete(R.k_run(run_id))
    txn.delete(R.k_task(t.identity, run_id))
    for k in [k for k, _ in txn.scan(hold_key(run_id))]:  # what it wrote is reachable from its record now
        txn.delete(k)
    raw = txn.get(R.k_lease(key))
    if raw is not None and R.unpack(raw).get("run_id") == run_id:
        txn.delete(R.k_lease(key))


def wait(store: Store, key: bytes, info: dict) -> None:
    """Sleep until the lease holder finishes, dies or lets its lease expire."""
    delay = 0.01
    while True:
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
        with store.refs() as txn:
            if txn.get(R.k_cache(key)) is not None:
                return
            raw = txn.get(R.k_lease(key))
        if raw is None:
            return
        cur = R.unpack(raw)
        if not R.alive(cur.get("host"), cur.get("pid"), cur.get("expires")) or cur["expires"] <= time.time():
            return


class _Leases:
    """One daemon thread renewing the leases and run entries of this process's runs in progress."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict[tuple, tuple[Store, float]] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, store: Store, key: bytes, run_id: int, seconds: float) -> None:
        with self._lock:
            self._held[(id(store), key, run_id)] = (store, seconds)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, daemon=True, name="terra-leases")
                self._thread.start()

    def release(self, store: Store, key: bytes, run_id: int) -> None:
        with self._lock:
            self._held.pop((id(store), key, run_id), None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                held = list(self._held.items())
            wait = min((sec for _, (_, sec) in held), default=30.0) / 3
            time.sleep(max(wait, 0.05))
            for (_, key, run_id), (store, seconds) in held:
                with self._lock:
                    if (id(store), key, run_id) not in self._held:
                        continue
                try:
                    store.update_state(lambda txn: _renew(txn, key, run_id, seconds))
                except Exception:  # noqa: BLE001 - a failed renewal only risks a duplicate run
                    pass


def _renew(txn, key: bytes, run_id: int, seconds: float) -> None:
    expires = time.time() + seconds
    raw = txn.get(R.k_run(run_id))
    if raw is not None:
        ref = R.unpack(raw)
        if ref.get("status") == "running" and not ref.get("record"):
            ref["expires"] = expires
            txn.put(R.k_run(run_id), R.pack(ref))
    raw = txn.get(R.k_lease(key))
    if raw is None:
        return
    info = R.unpack(raw)
    if info.get("run_id") == run_id:
        info["expires"] = expires
        txn.put(R.k_lease(key), R.pack(info))


leases = _Leases()


def drop_dead(store: Store, key: bytes, wait: float = 0.0) -> bool:
    """Drop the lease on ``key`` if its holder is a process of this host that is gone.

    For a driver told by its executor that a worker died: the dead run's lease goes now,
    not when the next identical call takes it over (its running ref stays, and reads as
    interrupted, as after a takeover). Executors may report a death while the process is
    still exiting: ``wait`` is how long to wait for a holder of this host to be gone.
    Returns whether a lease was dropped.
    """
    deadline = time.time() + wait
    delay = 0.01

    def holder() -> dict | None:
        with store.state_refs() as txn:
            raw = txn.get(R.k_lease(key))
        info = R.unpack(raw) if raw is not None else None
        return info if info is not None and info.get("host") == R.HOST else None

    def drop(txn) -> bool:  # the same lease, still held by the same dead process
        raw = txn.get(R.k_lease(key))
        if raw is None or R.unpack(raw) != info:
            return False
        txn.delete(R.k_lease(key))
        return True

    while True:
        info = holder()
        if info is None:
            return False
        if not R.alive(info.get("host"), info.get("pid")):
            return store.update_state(drop)
        if time.time() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
