"""Runs as plain rows, read without pandas: what ``terra ls`` and ``terra ui`` show.

:func:`terra.get_runs` returns a DataFrame, which costs pandas' import
(~0.3 s) before the first row. The command line and the web UI list runs
with :func:`list_runs` instead: it filters on the small ``run/`` refs and
reads full records only for the rows it returns. A damaged entry becomes a
row with status ``damaged`` (and the reason in ``error``) instead of failing
the listing.
"""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, field

from . import runs as R
from .objects import ObjectId, Run, Tree
from .store import Store

__all__ = ["RunRow", "consumers", "fill_details", "iso_time", "iter_rows", "list_runs", "page_of_runs", "run_tags", "scalars_of"]

DAMAGED = "damaged"


@dataclass
class RunRow:
    """One run as listed: the cheap ref fields, plus record details when read."""

    run_id: int
    task: str | None
    identity: str | None
    status: str
    start_time: float | None
    end_time: float | None
    host: str | None
    record: bytes | None = None
    tags: list[str] = field(default_factory=list)
    user: str | None = None
    parents: list[int] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # scalar inputs only
    outputs: dict = field(default_factory=dict)  # scalar outputs only
    error: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while running."""
        if self.start_time and self.end_time:
            return self.end_time - self.start_time
        return None

    @property
    def module(self) -> str | None:
        """The task's module (the part of its identity before ``:``)."""
        return self.identity.split(":", 1)[0] if self.identity and ":" in self.identity else None

    def to_json(self) -> dict:
        """Plain JSON types; times as ISO 8601 with zone."""
        return {
            "run_id": self.run_id, "task": self.task, "identity": self.identity, "module": self.module,
            "status": self.status, "start_time": iso_time(self.start_time), "end_time": iso_time(self.end_time),
            "duration": self.duration, "host": self.host, "user": self.user, "tags": self.tags,
            "parents": self.parents, "inputs": self.inputs, "outputs": self.outputs, "error": self.error,
        }


def iso_time(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC with its zone (``2026-01-02T03:04:05.678+00:00``)."""
    if t is None or t != t or not isinstance(t, (int, float)):
        return None
    return _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).isoformat(timespec="milliseconds")


def run_tags(store: Store) -> dict[int, list[str]]:
    """Tag names by the run they pin."""
    out: dict[int, list[str]] = {}
    with store.refs() as txn:
        for k, v in txn.scan(b"tag/"):
            try:
                out.setdefault(int.from_bytes(v, "big"), []).append(bytes(k[4:]).decode())
            except (UnicodeDecodeError, TypeError):
                continue
    return out


def consumers(store: Store, run_id: int, artifact: bytes | None = None) -> list[int]:
    """Runs that took ``run_id``'s outputs as inputs, sorted.

    Args:
        store: the store to read.
        run_id: the producing run.
        artifact: only the runs that used this output (its object id), if given.

    Returns:
        Consumer run ids, each once.
    """
    prefix = b"edge/p/" + R.rid8(run_id)  # edge/p/<producer:8><consumer:8><artifact>
    with store.refs() as txn:
        return sorted({int.from_bytes(k[15:23], "big") for k, _ in txn.scan(prefix)
                       if artifact is None or bytes(k[23:]) == bytes(artifact)})


def _is_scalar(v) -> bool:
    return v is None or type(v) in (bool, int, float) or (type(v) is str and len(v) <= 64)


def scalars_of(store: Store, entry, prefix: str = "") -> dict:
    """Scalar leaves of a record entry kept inline (never decodes a stored value).

    A dict or list output is one level deep here: ``{"loss": 0.1}`` gives
    ``{"loss": 0.1}``; values stored as objects (arrays, frames) are left out.
    """
    if _is_scalar(entry) and not isinstance(entry, ObjectId):
        return {prefix or "output": entry}
    if not isinstance(entry, ObjectId):
        return {}
    obj = store.get(entry)
    if not isinstance(obj, Tree):
        return {}
    out = {}
    if obj.type == "dict":
        for k, v in obj.entries:
            if isinstance(k, str) and _is_scalar(v) and not isinstance(v, ObjectId):
                out[f"{prefix}.{k}" if prefix else k] = v
    elif obj.type in ("list", "tuple"):
        for i, v in enumerate(obj.entries):
            if _is_scalar(v) and not isinstance(v, ObjectId):
                out[f"{prefix}[{i}]"] = v
    return out


def _inputs_of(store: Store, tree_id) -> dict:
    if tree_id is None:
        return {}
    tree = store.get(ObjectId(tree_id))
    return {name: v for name, v in tree.entries if _is_scalar(v) and not isinstance(v, ObjectId)}


def fill_details(store: Store, row: RunRow) -> RunRow:
    """Read the run's record into ``row`` (user, parents, scalar inputs/outputs, error)."""
    if row.record is None or row.status == DAMAGED:
        return row
    try:
        obj = store.get(ObjectId(row.record))
        if not isinstance(obj, Run):
            raise TypeError("record is not a run")
        f = obj.fields
        row.user = f.get("user")
        if f.get("parents"):  # records name parents by record id: the local run ids here
            with store.refs() as txn:
                row.parents = R.local_parents(txn, f["parents"])
        row.inputs = _inputs_of(store, f.get("inputs"))
        if row.status == "success":
            row.outputs = scalars_of(store, f.get("output"))
        err = f.get("error") or {}
        row.error = err.get("type") if isinstance(err, dict) else None
    except Exception as e:  # noqa: BLE001 - one damaged run must not hide the others
        row.status, row.error = DAMAGED, f"unreadable record: {type(e).__name__}: {e}"
    return row


def _row(rid: int, raw) -> RunRow:
    try:
        ref = R.unpack(raw)
        if not isinstance(ref, dict):
            raise TypeError("not a map")
        start, end = ref.get("start_time"), ref.get("end_time")
        rec = ref.get("record")
        return RunRow(rid, ref.get("task"), ref.get("identity"), R.live_status(ref, ref),
                      start if isinstance(start, (int, float)) else None,
                      end if isinstance(end, (int, float)) else None,
                      ref.get("host"), bytes(rec) if rec is not None else None)
    except Exception as e:  # noqa: BLE001 - reported as a damaged row
        return RunRow(rid, None, None, DAMAGED, None, None, None, error=f"unreadable entry: {type(e).__name__}")


def _task_match(row: RunRow, task: str) -> bool:
    return task in (row.task, row.identity) or (row.identity or "").endswith(":" + task)


def iter_rows(store: Store, task: str | None = None, status: str | None = None, since: float | None = None,
              until: float | None = None, tag: str | None = None, cache: dict | None = None):
    """Rows from the refs alone (no records read), newest first, filtered.

    Args:
        cache: a dict kept between calls (by a server): decoded entries of finished
            runs by their raw bytes, which never change while the entry stays.
    """
    tagged = run_tags(store)
    want = None
    if tag is not None:
        want = {rid for rid, names in tagged.items() if tag in names}
    with store.refs() as txn:
        entries = [(int.from_bytes(bytes(k[4:]), "big"), bytes(v)) for k, v in txn.scan(b"run/", reverse=True)]
    for rid, raw in entries:
        if want is not None and rid not in want:
            continue
        row = cache.get(raw) if cache is not None else None
        if row is None or row.run_id != rid:
            row = _row(rid, raw)
            if cache is not None and row.status not in ("running", DAMAGED):
                if len(cache) > 1_000_000:
                    cache.clear()
                cache[raw] = row
        row = copy.copy(row)
        if task is not None and not _task_match(row, task):
            continue
        if status is not None and row.status != status:
            continue
        if since is not None and (row.start_time is None or row.start_time < since):
            continue
        if until is not None and (row.start_time is None or row.start_time > until):
            continue
        row.tags = sorted(tagged.get(rid, []))
        yield row


def page_of_runs(store: Store, offset: int, count: int, newest_first: bool = True) -> tuple[list[RunRow], int]:
    """One page of all runs in id order, decoding only that page: ``(rows, total)``."""
    with store.refs() as txn:
        keys = [bytes(k) for k, _ in txn.scan(b"run/", reverse=newest_first)]
        raws = [(int.from_bytes(k[4:], "big"), txn.get(k)) for k in keys[offset: offset + count]]
    tagged = run_tags(store)
    rows = []
    for rid, raw in raws:
        if raw is None:  # removed since the scan
            continue
        row = fill_details(store, _row(rid, bytes(raw)))
        row.tags = sorted(tagged.get(rid, []))
        rows.append(row)
    return rows, len(keys)


def list_runs(task: str | None = None, status: str | None = None, since: float | None = None,
              until: float | None = None, tag: str | None = None, limit: int | None = 20,
              store: Store | None = None) -> tuple[list[RunRow], int]:
    """Runs newest first, with records read for the rows returned, and how many more match.

    Args:
        task: a task name, ``module:qualname`` identity or qualified name.
        status: ``running``, ``success``, ``failure``, ``interrupted`` or ``damaged``.
        since, until: epoch seconds bounding the start time.
        tag: only the run this tag names.
        limit: at most this many (None: all).

    Returns:
        ``(rows, more)``: the rows, and the number of further matching runs left out.
    """
    if store is None:
        from .session import current_store

        store = current_store()
    if task is None and status is None and since is None and until is None and tag is None:
        # Every run matches: read the keys, and decode only the rows shown.
        rows, total = page_of_runs(store, 0, limit if limit is not None else 1 << 62)
        return rows, total - len(rows)
    rows: list[RunRow] = []
    more = 0
    for row in iter_rows(store, task, status, since, until, tag):
        if limit is not None and len(rows) >= limit:
            more += 1
            continue
        rows.append(fill_details(store, row))
    return rows, more
