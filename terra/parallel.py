"""Calls of a task on any ``concurrent.futures`` executor: ``Task.submit`` and ``Task.map``.

The driver (the process calling ``submit``/``map``) binds every call and computes its
cache key with its own task identity and code fingerprint. Hits are answered at once
(a done future), identical calls of one batch share one future, and only misses go to
the executor, each as ONE picklable :class:`Call` given to :func:`work`, so the
executor's own keywords never meet the task's arguments. Workers never recompute the
key: they run the call through the normal run path on the key they were given.

Where a worker writes (decided in the worker, per call):

* **The driver's store**, when the worker finds it: at the driver's path carried in
  the call, else at the worker's own configured storage dir, and only if the store
  there has the driver's store uuid. The run takes its lease and run id there and
  commits once, as a local call does.
* **A scratch store** otherwise (another host: the path is absent, or holds another
  store). The worker pulls the records of its Artifact inputs from the driver's default
  remote (when they are not there, the driver pushes them and sends the call again),
  runs the call in a scratch store of its process (a temporary directory removed when
  the process exits), pushes the run and returns its record id; the driver checks the
  manifest (cache key, identity, status), pulls the run (every object verified) and
  commits it, so the driver alone writes records in its store. Without a default
  remote this is an error.

Notifications: runs computed in workers do not notify from there; their summaries come
back with the result, and ``map`` sends one batch message (:func:`terra.notify.batch`).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import itertools
import os
import pickle
import sys
import threading
import traceback
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator

from . import notify
from . import runs as R
from ._keys import _prepare
from ._lifecycle import _artifacts, _execute_keyed, _hit, _lookup
from .config import configure, get_config
from .errors import NotFound, TaskError, TerraError
from .objects import ObjectId
from .session import current_store, store_at

if TYPE_CHECKING:
    from .task import Task

__all__ = ["Call", "Done", "RemoteTraceback", "map_calls", "submit_call", "work"]


@dataclass(frozen=True)
class Call:
    """One miss as sent to a worker: everything the run needs, keyed by the driver.

    Attributes:
        task: the task (pickles by name, or by value with its identity and code sources).
        args, kwargs: the call as made. bound, dumped: its bound and recorded arguments.
        key: the cache key the driver computed. code: the driver's code fields (fingerprint).
        store_dir, store_uuid: the driver's store. remote: URL of its default remote, if any.
        inputs: record ids (hex) of the runs that produced the Artifact inputs.
        inputs_pushed: the driver pushed those runs to the remote before sending this call.
    """

    task: Task
    args: tuple
    kwargs: dict
    bound: dict
    dumped: dict
    key: bytes
    code: dict
    store_dir: str
    store_uuid: str
    remote: str | None = None
    inputs: tuple = ()
    inputs_pushed: bool = False


@dataclass(frozen=True)
class Done:
    """A worker's answer for one call.

    Attributes:
        run_id: the run in the store it ran in (None if none was made).
        record: the run's record id (hex) when it ran in a scratch store, else None.
        error: the exception the call raised (None on success); traceback: its text.
        summaries: notification summaries of the runs it computed.
        missing: nothing ran: the runs of the call's inputs are not on the remote yet.
    """

    run_id: int | None
    record: str | None = None
    error: BaseException | None = None
    traceback: str | None = None
    summaries: list = field(default_factory=list)
    missing: bool = False


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (set as its ``__cause__``)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb


# -- the worker side -----------------------------------------------------------------


def work(call: Call) -> Done:
    """Run one call in a worker (the function the executor runs).

    Raises:
        TerraError: the worker cannot see the driver's store and there is no remote.
    """
    path = _shared_store_dir(call)
    if path is not None:
        with _storage(path):
            return _attempt(call, current_store(), scratch=False)
    if call.remote is None:
        raise TerraError(f"task {call.task.name}: this worker cannot see the driver's store ({call.store_dir}, "
                         f"uuid {call.store_uuid}) and the driver's store has no default remote to send runs "
                         "through: terra remote add NAME URL")
    from .remote import RemoteError, pull, push
    from .remote.config import add_remote, remotes

    with _storage(_scratch_dir()):
        store = current_store()
        if call.remote not in remotes(store).values():
            add_remote(f"driver-{call.store_uuid[:8]}", call.remote, default=True, store=store)
        if call.inputs:  # records only: payloads are fetched from the remote when loaded
            try:
                pull(list(call.inputs), remote=call.remote, store=store, records_only=True)
            except (NotFound, RemoteError):  # not there, or no terra remote there yet
                if call.inputs_pushed:
                    raise
                return Done(None, missing=True)  # the driver pushes them and sends the call again
        done = _attempt(call, store, scratch=True)
        if done.run_id is not None:
            push([done.run_id], remote=call.remote, store=store)
        return done


def _attempt(call: Call, store, scratch: bool) -> Done:
    t = call.task
    error = tb = None
    run_id = None
    with notify.batch() as collected:
        try:
            run_id, _ = _execute_keyed(t, store, call.key, call.args, call.kwargs, call.bound, call.dumped, False,
                                       call.code)
        except Exception as e:  # noqa: BLE001 - recorded by the run path; re-raised by the driver
            # Its text travels; its frames stay here (they would hold this worker's stack and,
            # in a thread pool, the executor's future through it).
            tb = traceback.format_exc()
            error = _portable(e).with_traceback(None)
            if scratch:
                run_id = _run_of_key(t, store, call.key)
        finally:
            # The driver sends them (one batch message for a map): nothing leaves from here.
            summaries = list(collected)
            collected.clear()
    record = None
    if scratch and run_id is not None:
        with store.refs() as txn:
            rec = R.record_of(txn, run_id)
        record = bytes(rec).hex() if rec else None
    return Done(run_id, record, error, tb, summaries)


def _run_of_key(t: Task, store, key: bytes) -> int | None:
    """This task's latest finished run with cache key ``key`` (the failed call's run)."""
    for rid, status in t._runs(store, reverse=True):
        if status != "running" and R.get_run(rid, store).get("cache_key") == key:
            return rid
    return None


def _portable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - an exception that cannot travel: its type and message can
        return TaskError(f"{type(e).__module__}.{type(e).__qualname__}: {e}")


def _shared_store_dir(call: Call) -> str | None:
    """Where this worker sees the driver's store, or None (then it works in a scratch store)."""
    for path in dict.fromkeys((os.path.abspath(call.store_dir), get_config().store_path)):
        # Never create a store where the driver's should be: only an existing one is looked at.
        if os.path.exists(os.path.join(path, "objects.lmdb")) and store_at(path).uuid == call.store_uuid:
            return path
    return None


@contextlib.contextmanager
def _storage(path: str):
    """Make ``path`` this process's store for the call (one call at a time per worker process)."""
    cfg = get_config()
    if cfg.store_path == os.path.abspath(path):
        yield
        return
    configure(storage_dir=path)
    try:
        yield
    finally:
        configure(storage_dir=cfg.storage_dir)


_scratch: str | None = None


def _scratch_dir() -> str:
    global _scratch
    if _scratch is None:
        import shutil
        import tempfile

        _scratch = tempfile.mkdtemp(prefix="terra-scratch-")
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


# -- the driver side -----------------------------------------------------------------


class _Ready:
    """A call answered at once (a hit, or run in this process): a done Future without its locks."""

    __slots__ = ("value", "error")

    def __init__(self, value, error: BaseException | None = None):
        self.value, self.error = value, error

    def done(self) -> bool:
        return True

    def exception(self):
        return self.error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value

    def future(self) -> cf.Future:
        f = cf.Future()
        if self.error is not None:
            f.set_exception(self.error)
        else:
            f.set_result(self.value)
        return f


class _Driver:
    """One batch of calls of one task: keys, hits, duplicates, submission, results."""

    def __init__(self, t: Task, executor, each: bool):
        self.t, self.each = t, each
        self.store, self.cfg = current_store(), get_config()
        self.executor = _executor(executor)
        self.futures: dict[bytes, cf.Future] = {}
        # Executor futures not answered yet. Answered ones are dropped at once: a Dask future
        # kept alive is recomputed when its worker dies, and a failed call would run again.
        self.pending: set[cf.Future] = set()
        self.summaries: list = []
        self.pushed: set[int] = set()
        self.reaping: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._remote: tuple | None = None
        self._code: dict | None = None

    def submit(self, args: tuple, kwargs: dict) -> cf.Future | _Ready:
        """The call's Future, or a :class:`_Ready` when it is answered here and now."""
        t, store = self.t, self.store
        bound, dumped, key = _prepare(t, args, kwargs, store)
        if t.cache:
            f = self.futures.get(key)
            if f is not None:
                return f
            hit = _lookup(store, key)
            if hit is not None:
                f = self.futures[key] = _Ready(_hit(t, store, hit, self.cfg)[1])
                return f
        if self.executor is None:  # in this process, now; its notification goes where a call's goes
            try:
                f = _Ready(_execute_keyed(t, store, key, args, kwargs, bound, dumped, False)[1])
            except Exception as e:  # noqa: BLE001 - the future carries it
                f = _Ready(None, e)
            if t.cache:
                self.futures[key] = f
            return f
        f = cf.Future()
        if t.cache:
            self.futures[key] = f
        call = self._call(args, kwargs, bound, dumped, key)
        try:
            ef = self.executor.submit(work, call)
        except Exception as e:  # noqa: BLE001 - e.g. Dask pickles at once: this call fails, not the batch
            f.set_exception(TaskError(f"task {t.name}: the executor refused the call: {type(e).__name__}: {e}"))
            f.exception().__cause__ = e
            return f
        self.pending.add(ef)
        ef.add_done_callback(lambda ef: self._finish(call, ef, f))
        return f

    def _call(self, args, kwargs, bound, dumped, key) -> Call:
        store = self.store
        arts: list = []
        _artifacts(list(dumped.values()), arts)
        producers = {a.run_id for a in arts if a.run_id is not None}
        if self._code is None:
            self._code = self.t._code_fields()
        return Call(self.t, tuple(args), dict(kwargs), bound, dumped, key, self._code, store.root,
                    store.uuid, self.remote(), tuple(R.parent_records(store, producers)))

    def remote(self) -> str | None:
        if self._remote is None:
            from .remote.config import default_remote, get_remote

            name = default_remote(self.store)
            self._remote = (get_remote(name, self.store)[1] if name else None,)
        return self._remote[0]

    def _finish(self, call: Call, ef: cf.Future, f: cf.Future) -> None:
        self.pending.discard(ef)
        if ef.cancelled():
            f.cancel()
            return
        try:
            done = ef.result()
        except BaseException as e:  # noqa: BLE001 - the executor's own failure (a worker died, say)
            self._dead_lease(call)
            f.set_exception(e)
            return
        self._settle(call, done, f)

    def _dead_lease(self, call: Call) -> None:
        """A call that failed in the executor: drop its lease once the process of this host holding it is gone.

        On a thread of its own: the executor may report a worker's death while the process is
        still exiting, and this callback may run on the executor's own thread.
        """
        t = threading.Thread(target=_drop_dead_lease, args=(self.store, call.key), daemon=True,
                             name="terra-dead-lease")
        t.start()
        self.reaping.append(t)

    def settle(self) -> None:
        """Wait until the leases of calls that died in the executor are dropped (or found alive)."""
        for t in self.reaping:
            t.join(DEAD_LEASE_WAIT + 1)

    def _settle(self, call: Call, done: Done, f: cf.Future) -> None:
        try:
            if done.missing:  # not from this callback's thread: it may be the executor's own
                threading.Thread(target=self._resend, args=(call, f), daemon=True).start()
                return
            summaries = done.summaries
            run_id = done.run_id
            if done.record is not None:
                run_id = _adopt(self.store, call, done)
                summaries = [replace(s, run_id=run_id) for s in summaries]
            self.summaries += summaries
            if self.each:
                for s in summaries:
                    notify.run_finished(self.t.notify, s)
            if done.error is not None:
                done.error.__cause__ = RemoteTraceback(done.traceback or "")
                # Set, not raised: a traceback made here would hold this callback's whole stack,
                # the executor's future with it (and Dask recomputes a live future whose worker dies).
                f.set_exception(done.error)
                return
            f.set_result(_output(self.store, run_id))
        except BaseException as e:  # noqa: BLE001 - the future carries it
            if not f.done():
                f.set_exception(e)

    def _resend(self, call: Call, f: cf.Future) -> None:
        """Push the runs of a call's inputs to the remote (a worker elsewhere reads them there), then resend it."""
        from .remote import push

        try:
            arts: list = []
            _artifacts(list(call.dumped.values()), arts)
            with self._lock:
                todo = sorted({a.run_id for a in arts if a.run_id is not None} - self.pushed)
                if todo:
                    push(todo, remote=call.remote, store=self.store)
                    self.pushed.update(todo)
            call = replace(call, inputs_pushed=True)
            ef = self.executor.submit(work, call)
            self.pending.add(ef)
            ef.add_done_callback(lambda ef: self._finish(call, ef, f))
        except BaseException as e:  # noqa: BLE001 - the future carries it
            f.set_exception(e)

    def cancel(self) -> None:
        for ef in list(self.pending):
            ef.cancel()


#: Seconds a driver waits for a worker its executor reported dead to be gone, before it drops its lease.
DEAD_LEASE_WAIT = 5.0


def _drop_dead_lease(store, key: bytes) -> None:
    from .leases import drop_dead

    try:
        drop_dead(store, key, wait=DEAD_LEASE_WAIT)
    except Exception:  # noqa: BLE001 - the call's own failure is what its future reports
        pass


def _executor(executor):
    """The executor to submit to; a Dask ``Client`` becomes its executor with ``pure=False``."""
    if executor is not None and hasattr(executor, "get_executor") and type(executor).__module__.startswith(
            "distributed"):
        # Dask's default pure=True would merge identical payloads and keep results across batches.
        return executor.get_executor(pure=False)
    return executor


def _adopt(store, call: Call, done: Done) -> int:
    """Pull a run made in a worker's scratch store into the driver's store, after checking it."""
    from .remote import layout as L
    from .remote import pull
    from .remote.client import client

    t = call.task
    raw = client(call.remote).get(L.run_path(bytes.fromhex(done.record)))
    where = f"{call.remote}/{L.run_path(bytes.fromhex(done.record))}"
    if raw is None:
        raise TerraError(f"task {t.name}: the worker's run {done.record} is not on remote {call.remote}")
    m = L.Manifest.decode(raw, bytes.fromhex(done.record), where)
    if m.identity != t.identity or m.cache_key != bytes(call.key).hex() or (m.status == "success") != (
            done.error is None):
        raise TerraError(f"task {t.name}: the worker's run {done.record} is not the call it was sent "
                         f"(identity {m.identity}, cache key {m.cache_key}, status {m.status}); not recorded")
    pull([done.record], remote=call.remote, store=store)
    with store.refs() as txn:
        run_id = R.run_of_record(txn, bytes.fromhex(done.record))
    if run_id is None:
        raise TerraError(f"task {t.name}: run {done.record} was pulled but is not in the store")
    return run_id


def _output(store, run_id: int):
    rec = R.run_ref(store, run_id)["record"]
    return R.output_view(store, store.get(ObjectId(rec)).fields.get("output"), run_id)


# -- the public entry points (Task.submit / Task.map) ---------------------------------


def submit_call(t: Task, args: tuple, kwargs: dict, executor=None) -> cf.Future:
    """One call of ``t`` as a Future (see :meth:`terra.Task.submit`)."""
    f = _Driver(t, executor, each=True).submit(args, kwargs)
    return f.future() if isinstance(f, _Ready) else f


def map_calls(t: Task, iterables: tuple, executor=None, as_completed: bool = False):
    """Calls of ``t`` over zipped ``iterables`` (see :meth:`terra.Task.map`)."""
    it = _completed(t, list(zip(*iterables)), executor, ordered=not as_completed)
    next(it)  # every call submitted now, as Executor.map does, even if the iterator is never read
    if as_completed:
        return it
    return [v for _, v in sorted(it, key=lambda iv: iv[0])]


def _completed(t: Task, calls: list, executor, ordered: bool) -> Iterator[Any]:
    """Submit ``calls``, yield None, then ``(index, result)`` as they finish.

    ``ordered``: failures wait until every call finished, then the first by index is raised.
    """
    with notify.batch() as batch, _progress(t, len(calls)) as advance:
        d = _Driver(t, executor, each=False)
        try:
            futures = [d.submit(args, {}) for args in calls]
            index: dict[cf.Future, list[int]] = {}
            for i, f in enumerate(futures):
                index.setdefault(f, []).append(i)
            failed = None
            yield None
            done, waiting = [], []
            for f in index:  # hits and calls run here are done: no waiting machinery for them
                (done if f.done() else waiting).append(f)
            for f in itertools.chain(done, cf.as_completed(waiting)):
                for i in index[f]:
                    advance()
                    if ordered:
                        if f.exception() is not None:
                            failed = i if failed is None else min(failed, i)
                            continue
                    yield i, f.result()
        except BaseException:  # Ctrl-C or a failed call: calls not started yet never start
            d.cancel()
            raise
        finally:
            batch += d.summaries
            d.settle()
        if failed is not None:
            futures[failed].result()


@contextlib.contextmanager
def _progress(t: Task, total: int):
    """A rich progress bar on a terminal (nothing otherwise); yields ``advance()``."""
    if get_config().quiet or not sys.stderr.isatty() or total < 2:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as p:
        task_id = p.add_task(t.name, total=total)
        yield lambda: p.advance(task_id)
