"""The life of a run: look the key up, take its lease, run, store, commit.

A miss takes a lease on the key (so concurrent identical calls compute once),
allocates the next run id, runs the function with its output captured, stores
inputs, outputs, log and run-dir snapshot, then commits the record and its
index entries in one transaction.
"""

from __future__ import annotations

import os
import time
import traceback
import types
import warnings
from typing import TYPE_CHECKING, Any

from . import runs as R
from ._keys import _entry
from .config import get_config
from .errors import CorruptRef, DamagedRefWarning, SerializationError
from .files import FileInput
from .io import Artifact
from .leases import begin, committed_counter, end, leases, wait
from .objects import ObjectId, Run, Tree, digest, encode
from .store import Store

if TYPE_CHECKING:
    from .task import Task


def _execute_keyed(t: Task, store: Store, key: bytes, args, kwargs, bound, dumped, force: bool, code=None,
                   looked_up: bool = False):
    """Answer a call whose key is known (from :func:`terra._keys._prepare`, maybe in another process).

    ``code``: the code fields the driver computed (fingerprint and parts), recorded as they are.
    ``looked_up``: the caller found no cache entry for the key just now.
    """
    cfg = get_config()
    use_cache = t.cache and not force
    if use_cache and not looked_up:
        hit = _lookup(store, key)
        if hit is not None:
            return _hit(t, store, hit, cfg)
    held: list[Artifact] = []
    _artifacts(list(dumped.values()), held)
    holds = sorted({bytes(a.__terra_ref__) for a in held})
    committed = committed_counter(store)  # read first: never take the durable lock inside the state's
    while True:
        state, value = store.update_state(
            lambda txn: begin(txn, t, key, use_cache, cfg.lease_seconds, committed, holds))
        if state == "run":
            # A call that finished between our lookup and our lease: its result stands.
            hit = _lookup(store, key) if use_cache else None
            if hit is None:
                try:
                    with store.holding(value):  # gc keeps what the run writes until its record commits
                        return _run(t, store, cfg, value, key, args, kwargs, bound, dumped, code)
                except BaseException:
                    _abandon(t, store, key, value)
                    raise
            store.update_state(lambda txn, rid=value: end(txn, t, rid, key, give_back=True))
            return _hit(t, store, hit, cfg)
        wait(store, key, value)


def _abandon(t: Task, store: Store, key: bytes, run_id: int) -> None:
    """Drop a run's lease and short-lived state whatever failed (idempotent after a normal end).

    A failure before the run's own cleanup (a damaged store while its record is
    prepared, say) must not leave a lease this process keeps renewing: the next
    identical call would wait on it forever.
    """
    leases.release(store, key, run_id)
    try:
        store.update_state(lambda txn: end(txn, t, run_id, key))
    except Exception:  # noqa: BLE001 - the original error is what the caller needs
        pass


def _lookup(store: Store, key: bytes):
    """The confirmed cache hit for ``key``, or None; a damaged entry is a miss (and a warning)."""
    try:
        return R.cached(store, key)
    except CorruptRef as e:
        return _damaged(e)


def _damaged(e: CorruptRef) -> None:
    """A damaged cache entry is a miss: warn; recomputing commits a fresh entry over it."""
    warnings.warn(f"{e}; recomputing", DamagedRefWarning, stacklevel=3)


def _hit(t: Task, store: Store, hit, cfg):
    run_id, entry = hit
    if not cfg.quiet:
        print(f"task: {t.name}, run_id={run_id} (cached)")
    if type(entry) is not ObjectId:  # an inline output is the output (output_view, one call less)
        return hit
    return run_id, R.output_view(store, entry, run_id)


def _run(t: Task, store: Store, cfg, run_id: int, key: ObjectId, args, kwargs, bound, dumped, code=None):
    start = time.time()
    if not cfg.quiet:
        print(f"task: {t.name}, run_id={run_id}")
    leases.hold(store, key, run_id, cfg.lease_seconds)  # renews the run's entry too, cached or not
    run_dir = None
    extra = {}
    if "run_dir" in t._wants:
        run_dir = R.run_dir_path(store, run_id)
        if os.path.exists(run_dir):  # left over from a store that was wiped: start clean
            import shutil

            shutil.rmtree(run_dir)
        os.makedirs(run_dir)
        extra["run_dir"] = run_dir
    if "run_id" in t._wants:
        extra["run_id"] = run_id
    fields: dict[str, Any] = {
        "task": t.name, "module": t.module, "fn": t.qualname, "identity": t.identity,
        "cache_key": key, "start_time": start, **_environment(t.fn),
    }
    fields.update(t._code_fields() if code is None else code)
    if t.version is not None:
        fields["version"] = str(t.version)
    arts: list[Artifact] = []
    _artifacts([v for k, v in dumped.items()], arts)
    # Global identity: where this run was made, and its producers by record id (not local run id).
    fields["origin"] = [store.uuid, run_id]
    fields["parents"] = R.parent_records(store, {a.run_id for a in arts if a.run_id is not None})
    if not t.cache:
        fields["cache"] = False  # fsck --repair restores cache entries only for cached runs
    status, result, error, exc = "success", None, None, None
    m = _miss_modules()
    capture = m.Capture()
    inputs_tree = Tree("inputs", ())
    try:
        # Inputs are stored before the call: a function that mutates its
        # arguments must not change what the record says it was given.
        with store.deferred():
            inputs_tree = _inputs_tree(store, t, dumped)
        call_args, call_kwargs = t._call_args(args, kwargs)
        with capture:
            result = t.fn(*call_args, **call_kwargs, **extra)
    except KeyboardInterrupt as e:
        status, exc = "interrupted", e
        error = _error_info(e)
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised unchanged
        status, exc = "failure", e
        error = _error_info(e)
    output = None
    try:
        # Objects written here need no sync of their own: the final commit covers them.
        with store.deferred():
            if status == "success":
                try:
                    output = _entry(result, False, store)
                except SerializationError as e:
                    status = "failure"
                    exc = SerializationError(f"task {t.name} (run {run_id}): cannot store its output: {e}")
                    exc.__cause__ = e
                    error = _error_info(exc)
            if capture.text:
                fields["log"] = m.store_value(store, capture.text)
            if run_dir is not None:
                fields["has_run_dir"] = True
                if os.listdir(run_dir):
                    fields["run_dir_tree"] = m.store_path(store, run_dir)
    except BaseException as e:  # noqa: BLE001 - recorded as the run's failure, then raised
        if exc is None or isinstance(exc, SerializationError):
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failure"
            exc, output, error = e, None, _error_info(e)
    inputs = _identified(inputs_tree)
    fields["inputs"] = inputs[0]
    fields.update(status=status, end_time=time.time(), error=error, output=output if status == "success" else None)
    rec = _identified(Run(fields))
    rec_id = rec[0]
    edges = [(a.run_id, bytes(a.__terra_ref__)) for a in arts if a.run_id is not None]
    view = R.output_view(store, output, run_id) if status == "success" else None
    produced: list = []
    _artifacts(view, produced)
    produced_ids = {bytes(a.__terra_ref__) for a in produced}
    if isinstance(output, ObjectId):
        produced_ids.add(bytes(output))
    try:
        store.commit([inputs, rec],
                     lambda txn: _commit(txn, t, run_id, key, rec_id, fields, output, edges, produced_ids))
    finally:
        # Also when the commit failed (disk full...): waiters must not wait on a lease nobody renews.
        leases.release(store, key, run_id)
        store.update_state(lambda txn: end(txn, t, run_id, key))
    m.run_finished(t.notify, m.RunSummary(t.name, run_id, status, fields["end_time"] - start, fields["host"], error))
    if exc is not None:
        raise exc
    return run_id, view


def _identified(obj) -> tuple:
    """``(id, obj, encoding)``: the encoding is made once, for the id and for the commit."""
    enc = encode(obj)
    return digest(enc if enc[1] is not None else enc[:1]), obj, enc


def _environment(fn) -> dict:
    return _miss_modules().environment(fn)


_miss = None


def _miss_modules():
    """What a miss needs beyond the hit path, imported by the first miss, not by ``import terra``.

    Output capture (logging), the environment (platform, git), notifications
    and value storage; kept here so later misses pay no import statement.
    """
    global _miss
    if _miss is None:
        from .capture import Capture
        from .environment import environment
        from .notify import RunSummary, run_finished
        from .serialize import store_path, store_value

        _miss = types.SimpleNamespace(Capture=Capture, environment=environment, RunSummary=RunSummary,
                                      run_finished=run_finished, store_path=store_path, store_value=store_value)
    return _miss


def _commit(txn, t: Task, run_id, key, rec_id, fields, output, edges, produced_ids) -> None:
    status = fields["status"]
    # Keep counter/committed >= every durable run entry (committed_counter trusts it): read
    # before this run's entry; a lost or damaged counter is rebuilt from the run entries.
    raw = R.get_or_damaged(txn, R.K_COMMITTED)
    committed = int.from_bytes(raw, "big") if raw is not None and len(raw) == 8 else R.committed(txn)
    ref = {"status": status, "task": t.name, "identity": t.identity, "start_time": fields["start_time"],
           "end_time": fields["end_time"], "pid": fields["pid"], "host": fields["host"], "record": bytes(rec_id)}
    txn.put(R.k_run(run_id), R.pack(ref))
    txn.put(R.k_task(t.identity, run_id), R.status_byte(status))
    txn.put(R.k_record(rec_id), R.rid8(run_id))
    if status == "success" and t.cache:
        txn.put(R.k_cache(key), R.rid8(run_id) + R.pack_entry(output, rec_id))
    for producer, art in edges:
        txn.put(R.k_edge_c(run_id, producer, art), b"")
        txn.put(R.k_edge_p(producer, run_id, art), b"")
    for oid in produced_ids:  # first producer wins: get_artifact(id) names it
        if R.get_or_damaged(txn, R.k_produced(oid)) is None:  # a damaged entry is replaced
            txn.put(R.k_produced(oid), R.rid8(run_id))
    if committed < run_id:
        txn.put(R.K_COMMITTED, R.rid8(run_id))


def _inputs_tree(store: Store, t: Task, dumped: dict) -> Tree:
    """The inputs as a Tree, storing every non-inline argument value and file input.

    Entries are ``(parameter name, entry)``; ``*args`` is one entry (a stored
    tuple) and ``**kwargs`` one (a stored dict), named in the meta as
    ``var_positional``/``var_keyword``; ``files`` maps each file input's place
    (``data``, ``args[0]``, ``kwargs['x']``) to its path.
    """
    store_value = _miss_modules().store_value
    meta: dict[str, Any] = {}
    files: dict[str, str] = {}

    def stored_files(v, where):
        if type(v) is FileInput:
            v.store(store, t.name, where)
            files[where] = os.path.abspath(v.path)

    try:
        entries = []
        for name, v in dumped.items():
            if name == t._var_pos:
                meta["var_positional"] = name
                for i, x in enumerate(v):
                    stored_files(x, f"{name}[{i}]")
                entries.append((name, store_value(store, v)))
            elif name == t._var_kw:
                meta["var_keyword"] = name
                for k, x in v.items():
                    stored_files(x, f"{name}[{k!r}]")
                entries.append((name, store_value(store, v)))
            else:
                stored_files(v, name)
                entries.append((name, _entry(v, False, store)))
    except SerializationError as e:
        raise SerializationError(f"cannot store an argument: {e}") from e
    if files:
        meta["files"] = files
    return Tree("inputs", tuple(sorted(entries)), meta)


def _error_info(e: BaseException) -> dict:
    return {"type": f"{type(e).__module__}.{type(e).__qualname__}", "message": str(e),
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))}


def _artifacts(v, out: list) -> None:
    """Append the Artifacts inside ``v`` (through dicts, lists and tuples) to ``out``."""
    t = type(v)
    if t is Artifact:
        out.append(v)
    elif t is dict:
        for x in v.values():
            _artifacts(x, out)
    elif t in (list, tuple):
        for x in v:
            _artifacts(x, out)

