"""Removing runs, pinning them with tags, and choosing which runs to remove.

Removing a run deletes its refs (``run/``, the task index, cache entries and
leases that name it, its lineage edges and ``produced/`` entries) in one
transaction, and its run directory; its objects stay until the next
:func:`terra.gc`. A run that other runs consumed is only removed with
``force`` (its consumers keep their records but lose the edge) or with
``cascade`` (they are removed too). Tagged runs are pinned: removing one
needs ``force``, and retention selections never pick them.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field

from . import runs as R
from .errors import NotFound, TerraError
from ._walk import children
from .objects import ObjectId
from .store import Store, hold_key

__all__ = [
    "RemovalRefused",
    "RmResult",
    "RunInUse",
    "RunPinned",
    "resolve_run",
    "rm",
    "select_runs",
    "tag",
    "tags",
    "untag",
]

_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-+@]{0,199}$")
FAILED = ("failure", "interrupted")


class RemovalRefused(TerraError):
    """A run cannot be removed as asked."""


class RunInUse(RemovalRefused):
    """Other runs consumed the outputs of a run being removed."""

    def __init__(self, message: str, consumers: dict[int, list[int]]):
        super().__init__(message)
        self.consumers = consumers  # removed run -> runs that consumed it


class RunPinned(RemovalRefused):
    """A run being removed is tagged."""

    def __init__(self, message: str, tags: dict[str, int]):
        super().__init__(message)
        self.tags = tags


# -- tags -------------------------------------------------------------------------


def _k_tag(name: str) -> bytes:
    return b"tag/" + name.encode()


def tag(run_id, name: str, force: bool = False, store: Store | None = None) -> int:
    """Pin a run under ``name``: it survives retention and ``rm`` without force.

    Args:
        run_id: a run id (or an existing tag name).
        name: letters, digits and ``_.-+@``, starting with a letter or ``_``.
        force: move the tag if it already names another run.

    Returns:
        The run id tagged.

    Raises:
        NotFound: no such run. TerraError: a bad name, or the tag names another run.
    """
    store = store or _store()
    if not isinstance(name, str) or not _TAG_NAME.fullmatch(name) or name.isdigit():
        raise TerraError(f"bad tag name {name!r}: use letters, digits and _.-+@, starting with a letter")
    rid = resolve_run(run_id, store)

    def txn_fn(txn):
        if txn.get(R.k_run(rid)) is None:
            raise NotFound(f"no run with run_id={rid}")
        old = txn.get(_k_tag(name))
        if old is not None and int.from_bytes(old, "big") != rid and not force:
            raise TerraError(f"tag {name!r} already names run {int.from_bytes(old, 'big')}; "
                             "use force to move it")
        txn.put(_k_tag(name), R.rid8(rid))

    store.update_refs(txn_fn)
    return rid


def untag(name: str, store: Store | None = None) -> int:
    """Remove tag ``name``; the run stays.

    Returns:
        The run id the tag named.

    Raises:
        NotFound: no such tag.
    """
    store = store or _store()

    def txn_fn(txn):
        raw = txn.get(_k_tag(name))
        if raw is None:
            raise NotFound(f"no tag {name!r}")
        txn.delete(_k_tag(name))
        return int.from_bytes(raw, "big")

    return store.update_refs(txn_fn)


def tags(store: Store | None = None) -> dict[str, int]:
    """Every tag and the run it names."""
    store = store or _store()
    with store.refs() as txn:
        return {k[4:].decode(): int.from_bytes(v, "big") for k, v in txn.scan(b"tag/")}


def resolve_run(ref, store: Store | None = None) -> int:
    """The run id that ``ref`` names: a run id (int or digits) or a tag name.

    Raises:
        NotFound: no such run or tag.
    """
    store = store or _store()
    if isinstance(ref, bool):
        raise NotFound(f"not a run: {ref!r}")
    if isinstance(ref, str) and ref.strip().isdigit():
        ref = int(ref.strip())
    with store.refs() as txn:
        if isinstance(ref, int):
            if not 0 <= ref < 1 << 64 or txn.get(R.k_run(ref)) is None:  # ids are 8-byte keys
                raise NotFound(f"no run with run_id={ref}")
            return ref
        if isinstance(ref, str):
            raw = txn.get(_k_tag(ref))
            if raw is not None:
                rid = int.from_bytes(raw, "big")
                if txn.get(R.k_run(rid)) is None:
                    raise NotFound(f"tag {ref!r} names run {rid}, which no longer exists")
                return rid
    raise NotFound(f"no run or tag {ref!r}")


# -- retention ----------------------------------------------------------------------


def _task_matches(identity: str, wanted: str) -> bool:
    if identity == wanted:
        return True
    qualname = identity.split(":", 1)[-1]
    return qualname == wanted or qualname.rsplit(".", 1)[-1] == wanted


def select_runs(task: str | None = None, keep_last: int | None = None, failed: bool = False,
                older_than=None, status: str | None = None, store: Store | None = None) -> list[int]:
    """Run ids matching every given criterion, for :func:`rm`. Runs still in progress and tagged runs are never selected.

    Args:
        task: a task name (``train``), qualified name or identity (``module:qualname``), or a Task.
        keep_last: spare the ``keep_last`` newest runs of each task (any status).
        failed: only failed or interrupted runs.
        older_than: only runs started before this (datetime, ISO string, epoch seconds,
            or an age such as ``"30d"``, ``"12h"``).
        status: only runs with this status.

    Returns:
        Matching run ids, ascending.
    """
    store = store or _store()
    task = getattr(task, "identity", task)
    if keep_last is not None and keep_last < 0:
        raise TerraError(f"keep_last must be >= 0, got {keep_last}")
    cutoff = parse_time(older_than) if older_than is not None else None
    by_task: dict[str, list[int]] = {}
    with store.refs() as txn:
        for k, _ in txn.scan(b"task/"):
            identity = k[5:-9].decode()
            if task is None or _task_matches(identity, task):
                by_task.setdefault(identity, []).append(int.from_bytes(k[-8:], "big"))
        pinned = {int.from_bytes(v, "big") for _, v in txn.scan(b"tag/")}
        picked = []
        for ids in by_task.values():
            ids.sort()
            if keep_last:
                ids = ids[:-keep_last]
            for rid in ids:
                raw = txn.get(R.k_run(rid))
                if raw is None or rid in pinned:
                    continue
                ref = R.unpack(raw)
                st = R.live_status(ref, ref)
                if st == "running":
                    continue
                if failed and st not in FAILED or status is not None and st != status:
                    continue
                if cutoff is not None and not (ref.get("start_time") or 0) < cutoff:
                    continue
                picked.append(rid)
    return sorted(picked)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$")
_UNIT = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text) -> float:
    """Seconds in ``"90"``, ``"30s"``, ``"15m"``, ``"1h"``, ``"2d"``, ``"1w"``.

    Raises:
        TerraError: not a duration.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _AGE.match(str(text))
    if not m:
        raise TerraError(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h, 2d)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_time(value) -> float:
    """Epoch seconds of a datetime, an ISO string, epoch seconds, or an age (``"30d"`` = 30 days ago).

    Raises:
        TerraError: not a time.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _AGE.match(value) and not value.strip().isdigit():
        return time.time() - parse_duration(value)
    from .query import _timestamp

    try:
        return _timestamp(value)
    except (TypeError, ValueError) as e:
        raise TerraError(f"not a date or age: {value!r}") from e


# -- removal ---------------------------------------------------------------------------


@dataclass
class RmResult:
    """What :func:`rm` removed (or would remove, when ``dry_run``)."""

    removed: list[int] = field(default_factory=list)
    cascaded: list[int] = field(default_factory=list)  # removed because they consumed a removed run
    detached: dict[int, list[int]] = field(default_factory=dict)  # kept consumer -> removed producers (force)
    tags_removed: list[str] = field(default_factory=list)
    dry_run: bool = False

    def __str__(self) -> str:
        if not self.removed:
            return "no runs removed"
        verb = "would remove" if self.dry_run else "removed"
        ids = ", ".join(map(str, self.removed))
        lines = [f"{verb} {len(self.removed)} run{'s' if len(self.removed) != 1 else ''}: {ids}"]
        if self.cascaded:
            lines.append(f"  including downstream runs {', '.join(map(str, self.cascaded))} (cascade)")
        for consumer, producers in sorted(self.detached.items()):
            lines.append(f"  run {consumer} keeps its record but loses its lineage to run(s) "
                         f"{', '.join(map(str, producers))}")
        if self.tags_removed:
            lines.append(f"  tags removed: {', '.join(self.tags_removed)}")
        if not self.dry_run:
            lines.append("objects are reclaimed by the next `terra gc`")
        return "\n".join(lines)


@dataclass
class _Info:
    run_id: int
    ref: dict
    cache_key: bytes | None
    produced: list[bytes]


def _scan(txn, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """``txn.scan(prefix)`` as a list, so the caller may delete keys while going through it."""
    return list(txn.scan(prefix))


def _consumers(txn, rid: int) -> set[int]:
    return {int.from_bytes(k[15:23], "big") for k, _ in _scan(txn, b"edge/p/" + R.rid8(rid))}


def _closure(store: Store, ids: set[int]) -> set[int]:
    """``ids`` and every run downstream of them."""
    out, stack = set(ids), list(ids)
    with store.refs() as txn:
        while stack:
            for c in _consumers(txn, stack.pop()):
                if c not in out:
                    out.add(c)
                    stack.append(c)
    return out


def _info(store: Store, rid: int) -> _Info:
    """What removing a run must clean up, read before the write transaction (records are immutable)."""
    ref = R.run_ref(store, rid)
    key, produced = None, []
    if ref.get("record"):
        try:
            fields = store.get(ObjectId(ref["record"])).fields
        except TerraError:  # unreadable record: the scans below still clean the indexes
            fields = {}
        key = fields.get("cache_key")
        out = fields.get("output")
        if isinstance(out, ObjectId):
            # Every object inside the output may have a produced/ entry naming this run.
            seen, stack = set(), [out]
            with store.backend.reading() as r:
                while stack:
                    oid = stack.pop()
                    if oid in seen:
                        continue
                    seen.add(oid)
                    raw = r.get(oid)
                    if raw is not None:
                        stack.extend(children(oid, raw))
            produced = [bytes(o) for o in seen]
    return _Info(rid, ref, bytes(key) if key else None, produced)


def rm(run_ids, force: bool = False, cascade: bool = False, dry_run: bool = False,
       store: Store | None = None) -> RmResult:
    """Remove runs: their records leave every index; their objects go at the next gc.

    Args:
        run_ids: run ids or tag names (one or an iterable).
        force: remove runs that other runs consumed (those keep their records but lose
            the lineage edge) and tagged runs (their tags are removed).
        cascade: also remove every run downstream of the removed ones.
        dry_run: report what would be removed, change nothing.

    Returns:
        An :class:`RmResult`.

    Raises:
        NotFound: a run does not exist.
        RunInUse: other runs consumed a run's outputs (and neither force nor cascade).
        RunPinned: a run is tagged (and not force).
        RemovalRefused: a run is still in progress.
    """
    store = store or _store()
    if isinstance(run_ids, (int, str)):
        run_ids = [run_ids]
    wanted = {resolve_run(r, store) for r in run_ids}
    for _attempt in range(10):
        ids = _closure(store, wanted) if cascade else set(wanted)
        infos = {rid: _info(store, rid) for rid in sorted(ids)}
        for info in infos.values():
            if R.live_status(info.ref, info.ref) == "running":
                raise RemovalRefused(f"run {info.run_id} ({info.ref.get('task')}) is still running")
        counter, pending = _in_progress(store)
        try:
            result = store.update_refs(lambda txn: _remove(txn, store.state_refs, infos, wanted, force,
                                                           cascade, dry_run, counter, pending))
        except _Changed:  # a new consumer committed meanwhile: recompute the cascade
            continue
        break
    else:
        raise TerraError("runs kept being added downstream while removing; try again")
    if not dry_run:
        store.update_state(lambda txn: _clear_state(txn, infos))
    if not dry_run and getattr(store, "root", None):  # stores opened by path have run dirs
        for rid in result.removed:
            shutil.rmtree(R.run_dir_path(store, rid), ignore_errors=True)
    return result


def _clear_state(txn, infos: dict[int, _Info]) -> None:
    """Drop what removed runs left in the short-lived state (runs cut short, their leases)."""
    for rid, info in infos.items():
        txn.delete(R.k_run(rid))
        if info.ref.get("identity"):
            txn.delete(R.k_task(info.ref["identity"], rid))
        for k in [k for k, _ in txn.scan(hold_key(rid))]:
            txn.delete(k)
    for k, v in list(txn.scan(b"lease/")):
        if R.unpack(v).get("run_id") in infos:
            txn.delete(k)


class _Changed(Exception):
    pass


def _in_progress(store: Store) -> tuple[int, list[int]]:
    """The run counter and the runs in progress, from one snapshot (runs begun later have larger ids)."""
    running = R.status_byte("running")
    with store.refs() as txn:
        raw = txn.get(R.K_COUNTER)
        pending = [int.from_bytes(k[-8:], "big") for k, v in txn.scan(b"task/") if v == running]
    return (int.from_bytes(raw, "big") if raw else 0), pending


def _holders(txn, state_refs, infos: dict[int, _Info], counter: int,
             pending: list[int]) -> dict[int, set[int]]:
    """Runs in progress whose inputs include outputs of the runs being removed: ``{removed: {holders}}``.

    Runs in progress live in the store's short-lived state, read here from
    inside the durable transaction so a run begun since ``pending`` is seen.
    """
    produced = {oid: rid for rid, info in infos.items() for oid in info.produced}
    if not produced:
        return {}
    with state_refs() as state:
        return _holding(txn, state, infos, produced, counter, pending)


def _holding(txn, state, infos, produced, counter, pending) -> dict[int, set[int]]:
    raw = state.get(R.K_COUNTER)
    now = int.from_bytes(raw, "big") if raw else 0
    out: dict[int, set[int]] = {}
    for r in [*pending, *range(counter + 1, now + 1)]:
        v = None if r in infos else (txn.get(R.k_run(r)) or state.get(R.k_run(r)))
        if v is None:
            continue
        ref = R.unpack(v)
        if ref.get("record") or R.live_status(ref, ref) != "running":
            continue
        for h in ref.get("holds") or ():
            if bytes(h) in produced:
                out.setdefault(produced[bytes(h)], set()).add(r)
    return out


def _remove(txn, state_refs, infos: dict[int, _Info], wanted: set[int], force: bool, cascade: bool,
            dry_run: bool, counter: int, pending: list[int]) -> RmResult:
    ids = set(infos)
    res = RmResult(removed=sorted(ids), cascaded=sorted(ids - wanted), dry_run=dry_run)
    outside: dict[int, list[int]] = {}
    with state_refs() as state:  # a run cut short exists only in the short-lived state
        missing = [rid for rid in ids if txn.get(R.k_run(rid)) is None and state.get(R.k_run(rid)) is None]
    if missing:
        raise NotFound(f"no run with run_id={missing[0]}")
    for rid in ids:
        for c in _consumers(txn, rid):
            if c not in ids:
                outside.setdefault(rid, []).append(c)
    # Runs in progress have no edges yet; their refs list the artifacts they hold.
    holders = _holders(txn, state_refs, infos, counter, pending)
    if holders and cascade and not force:
        shown = "; ".join(f"run {rid}'s output is an input of run {', '.join(map(str, sorted(h)))}, still running"
                          for rid, h in sorted(holders.items()))
        raise RemovalRefused(f"{shown}: wait for it to finish")
    for rid, hs in holders.items():
        outside.setdefault(rid, []).extend(h for h in hs if h not in outside.get(rid, []))
    if outside and cascade and not holders:
        raise _Changed()
    if outside and not force:
        with state_refs() as state:  # a consumer still running exists only there
            names = {c: _task_name(txn, c, state) for cs in outside.values() for c in cs}
        parts = [f"run {rid} is used by " + ", ".join(f"run {c} ({names[c]})" for c in sorted(cs))
                 for rid, cs in sorted(outside.items())]
        raise RunInUse("; ".join(parts) + ": use force to remove it anyway, or cascade to remove those too",
                       {rid: sorted(cs) for rid, cs in outside.items()})
    pinned = {k[4:].decode(): int.from_bytes(v, "big") for k, v in _scan(txn, b"tag/")}
    pinned = {name: rid for name, rid in pinned.items() if rid in ids}
    if pinned and not force:
        shown = ", ".join(f"run {rid} is tagged {name!r}" for name, rid in sorted(pinned.items()))
        raise RunPinned(f"{shown}: untag it or use force", pinned)
    res.tags_removed = sorted(pinned)
    for rid, cs in outside.items():
        for c in cs:
            res.detached.setdefault(c, []).append(rid)
    if dry_run:
        return res
    for name in pinned:
        txn.delete(_k_tag(name))
    for rid, info in infos.items():
        r8 = R.rid8(rid)
        txn.delete(R.k_run(rid))
        identity = info.ref.get("identity")
        if identity:
            txn.delete(R.k_task(identity, rid))
        if info.cache_key is not None:
            raw = txn.get(R.k_cache(info.cache_key))
            if raw is not None and raw[:8] == r8:
                txn.delete(R.k_cache(info.cache_key))
        for oid in info.produced:
            if txn.get(R.k_produced(oid)) == r8:
                txn.delete(R.k_produced(oid))
        # Both copies of every edge touching the run (inputs and consumers).
        for k, _ in _scan(txn, b"edge/c/" + r8):
            producer, art = k[15:23], k[23:]
            txn.delete(k)
            txn.delete(b"edge/p/" + producer + r8 + art)
        for k, _ in _scan(txn, b"edge/p/" + r8):
            consumer, art = k[15:23], k[23:]
            txn.delete(k)
            txn.delete(b"edge/c/" + consumer + r8 + art)
    return res


def _task_name(txn, rid: int, state) -> str:
    raw = txn.get(R.k_run(rid)) or state.get(R.k_run(rid))
    return R.unpack(raw).get("task", "?") if raw else "?"


def _store() -> Store:
    from .session import current_store

    return current_store()
