"""Finding things: runs as a table, artifacts by id prefix."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING


from . import runs as R
from .errors import CorruptRef, DamagedRefWarning, NotFound, TerraError
from .session import current_store
from .store import Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["get_artifact", "get_runs", "load"]

RUN_COLUMNS = ["run_id", "task", "module", "fn", "status", "start_time", "end_time", "duration",
               "hostname", "user", "git_commit", "git_dirty", "parents", "error"]


def _timestamp(t) -> float | None:
    if t is None:
        return None
    if isinstance(t, (int, float)):
        return float(t)
    if isinstance(t, str):
        import pandas as pd

        t = pd.Timestamp(t).to_pydatetime()  # a pandas Timestamp cannot astimezone() with no argument
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.astimezone()
        return t.timestamp()
    raise TypeError(f"not a time: {t!r}")


def get_runs(task=None, status: str | None = None, since=None, until=None, limit: int | None = None,
             store: Store | None = None) -> "pd.DataFrame":
    """Runs as a DataFrame, newest first, optionally filtered.

    Args:
        task: a Task, its name (``"split_data"``) or identity (``"module:qualname"``).
        status: ``running``, ``success``, ``failure`` or ``interrupted``.
        since, until: datetimes, ISO strings or epoch seconds bounding the start time.
        limit: at most this many runs (the newest); records beyond it are not read.

    A damaged run entry is left out with a ``DamagedRefWarning``; a run whose
    record cannot be read is listed with status ``damaged`` (``terra fsck`` says more).
    """
    import pandas as pd

    store = store or current_store()
    identity = getattr(task, "identity", None)
    name = None if identity is not None else task
    lo, hi = _timestamp(since), _timestamp(until)
    with store.refs() as txn:
        if identity is not None or (isinstance(name, str) and ":" in name):
            ident, name = identity or name, None
            prefix = R.k_task_prefix(ident)
            ids = [int.from_bytes(k[-8:], "big") for k, _ in txn.scan(prefix, reverse=True)]
            refs = [(rid, _get(txn, R.k_run(rid))) for rid in ids]
        else:
            refs = [(int.from_bytes(k[4:], "big"), v) for k, v in txn.scan(b"run/", reverse=True)]
    rows = []
    # Per-entry fault tolerance: a damaged entry is skipped (and warned about by the
    # scan), a run whose record cannot be read is listed with status "damaged".
    for rid, raw in refs:
        if limit is not None and len(rows) >= limit:
            break
        if raw is None:
            continue
        try:
            ref = R.decode_run_ref(rid, raw)
        except CorruptRef as e:
            _warn(e)
            continue
        if name is not None and ref.get("task") != name:
            continue
        start = ref.get("start_time")
        if not isinstance(start, (int, float)):
            start = None
        if (lo is not None and (start is None or start < lo)) or (hi is not None and (start is None or start > hi)):
            continue
        fields = dict(ref)
        damaged = None
        if ref.get("record") is not None:
            try:
                fields = {**R.verified_record(store, rid, ref).fields, **{k: v for k, v in ref.items() if k != "record"}}
            except TerraError as e:
                _warn(e)
                damaged = type(e).__name__
        st = "damaged" if damaged else R.live_status(fields, ref)
        if status is not None and st != status:
            continue
        git = fields.get("git") or {}
        end = fields.get("end_time")
        err = fields.get("error") or {}
        rows.append({
            "run_id": rid, "task": fields.get("task"), "module": fields.get("module"),
            "fn": fields.get("fn"), "status": st,
            "start_time": start or None, "end_time": end or None,
            "duration": (end - start) if end and start else None,
            "hostname": fields.get("host"), "user": fields.get("user"),
            "git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
            "parents": fields.get("parents") or [], "error": damaged or err.get("type"),
        })
    if any(r["parents"] for r in rows):  # records name parents by record id: local run ids, in one snapshot
        with store.refs() as txn:
            for r in rows:
                r["parents"] = R.local_parents(txn, r["parents"]) if r["parents"] else []
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    # One conversion per column, not per row (per-row Timestamps dominated the cost).
    for col in ("start_time", "end_time"):
        df[col] = pd.to_datetime(df[col].astype("float64"), unit="s", utc=True)
    return df


def _get(txn, key: bytes):
    try:
        return txn.get(key)
    except CorruptRef as e:
        _warn(e)
        return None


def _warn(e: Exception) -> None:
    import warnings

    warnings.warn(str(e), DamagedRefWarning, stacklevel=3)


def get_artifact(id_or_prefix: str, store: Store | None = None):
    """The Artifact with this id or unique id prefix (>= 4 hex characters).

    Raises:
        NotFound: nothing matches. AmbiguousPrefix: several objects match.
    """
    from .io import Artifact

    store = store or current_store()
    oid = store.resolve(id_or_prefix) if len(id_or_prefix) != 32 else store.as_id(id_or_prefix)
    if not store.has(oid):
        raise NotFound(f"no object {id_or_prefix}")
    return Artifact(oid, R.producer_of(store, oid), store.root)


def load(x, store: Store | None = None):
    """The value of ``x``: an Artifact, an id or unique id prefix, or any dict/list/tuple of them.

    Containers are rebuilt with every Artifact inside loaded (``terra.load(splits)``
    gives ``{"train": array, "test": array}``); other leaves are returned as they are.

    Raises:
        NotFound: an id or prefix matches nothing. AmbiguousPrefix: a prefix matches several objects.
    """
    from .io import Artifact

    if isinstance(x, str):
        return get_artifact(x, store).load()
    if isinstance(x, Artifact):
        return x.load()
    if isinstance(x, dict):
        return {k: _load_leaf(v, store) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        items = [_load_leaf(v, store) for v in x]
        if hasattr(x, "_fields"):  # a namedtuple
            return type(x)(*items)
        return items if isinstance(x, list) else tuple(items)
    raise TypeError(f"terra.load takes an Artifact, an id, or a dict/list/tuple of Artifacts; got {type(x).__name__}")


def _load_leaf(v, store):
    """Inside a container, strings are values, not ids: only Artifacts and containers are loaded."""
    from .io import Artifact

    if isinstance(v, (Artifact, dict, list, tuple)):
        return load(v, store)
    return v
