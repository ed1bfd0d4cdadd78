"""Garbage collection: mark what live runs reach, sweep the rest, compact the file.

gc is split the way dulwich splits it: :func:`live_roots` (what must be kept)
→ :func:`reachable` (everything those roots refer to) → sweep (delete every
object neither reachable nor younger than the grace period).

Roots are the records of every run in the ``run/`` index (finished runs,
tagged runs and runs cut short alike), the outputs named by cache entries,
and the artifacts a run in progress was given, which ``task._begin`` lists
under ``holds`` in its ref when it takes the run id and the lease. Objects
written in the last ``grace_period`` seconds are roots too, with everything
they refer to: a writer stores its objects first and its record last, so an
object whose record is not committed yet is recent, and re-storing an
existing object refreshes its write time. The backend re-checks the write
time inside its delete transaction, so an object refreshed after gc listed
it is never deleted. The contract for writers is therefore: commit the
record within ``grace_period`` of storing (or re-storing) what it refers to.

:func:`compact` rewrites the LMDB file, since LMDB never shrinks it on delete.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from . import runs as R
from ._walk import children
from ._format import human_size as _size
from .objects import ObjectId
from .errors import CorruptRef, StoreError
from .store import Store

__all__ = ["CompactStats", "DiskUsage", "GCStats", "StoreBusy", "TaskUsage", "compact", "du", "gc", "live_roots",
           "reachable"]

#: Default grace period: an hour, far longer than any writer takes between
#: storing a run's objects and committing its record.
DEFAULT_GRACE = 3600.0

Progress = Callable[[str, int, "int | None"], None]
_BATCH = 4096


@dataclass
class GCStats:
    """What one gc examined, kept and deleted (``deleted_*`` = would delete when ``dry_run``)."""

    examined_objects: int = 0
    examined_bytes: int = 0
    reachable_objects: int = 0
    reachable_bytes: int = 0
    recent_objects: int = 0  # unreachable, kept because younger than the grace period
    recent_bytes: int = 0
    deleted_objects: int = 0
    deleted_bytes: int = 0
    roots: int = 0
    missing: int = 0  # referenced but absent: the store needs `terra fsck`
    grace_period: float = DEFAULT_GRACE
    dry_run: bool = False
    duration: float = 0.0

    @property
    def kept_objects(self) -> int:
        return self.examined_objects - self.deleted_objects

    @property
    def kept_bytes(self) -> int:
        return self.examined_bytes - self.deleted_bytes

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            f"examined {self.examined_objects} objects ({_size(self.examined_bytes)}) in {self.duration:.2f} s",
            f"reachable {self.reachable_objects} objects ({_size(self.reachable_bytes)}) from {self.roots} roots",
            f"kept {self.recent_objects} unreachable objects ({_size(self.recent_bytes)}) younger than the "
            f"grace period ({self.grace_period:g} s)",
            f"{verb} {self.deleted_objects} objects ({_size(self.deleted_bytes)})",
        ]
        if self.missing:
            lines.append(f"warning: {self.missing} referenced objects are missing; run `terra fsck`")
        return "\n".join(lines)


# -- marking ----------------------------------------------------------------------


def live_roots(store: Store) -> set[ObjectId]:
    """The ids gc must keep no matter what: run records, cached outputs, ids held by runs in progress."""
    roots: set[ObjectId] = set()
    with store.refs() as txn:
        for _, raw in txn.scan(b"run/"):
            ref = R.unpack(raw)
            if ref.get("record"):
                roots.add(ObjectId(ref["record"]))
            for held in ref.get("holds") or ():  # inputs a run in progress depends on
                roots.add(ObjectId(held))
        for _, raw in txn.scan(b"cache/"):
            entry = R.unpack_entry(raw[8:])
            if isinstance(entry, ObjectId):
                roots.add(entry)
    if txn.damaged:  # a damaged run entry hides its record: collecting now could delete a live run
        raise CorruptRef(f"{len(txn.damaged)} damaged refs; gc would not see every run: "
                         "run `terra fsck --repair` first")
    return roots


def reachable(store: Store, roots: Iterable[ObjectId], progress: Progress | None = None,
              marked: set[ObjectId] | None = None) -> tuple[set[ObjectId], set[ObjectId]]:
    """Every stored id reachable from ``roots``, and the referenced ids that are missing.

    Args:
        store: the store.
        roots: where to start.
        progress: called as ``progress("mark", marked_so_far, None)``.
        marked: ids already known reachable (not walked again); updated in place.

    Returns:
        ``(reachable, missing)``; ``reachable`` is ``marked`` when given.
    """
    marked = set() if marked is None else marked
    missing: set[ObjectId] = set()
    stack = [ObjectId(r) for r in roots]
    while stack:
        batch, stack = stack[-_BATCH:], stack[:-_BATCH]
        with store.backend.reading() as r:  # short snapshots: never pin pages for the whole mark
            for oid in batch:
                if oid in marked:
                    continue
                raw = r.get(oid)
                if raw is None:
                    missing.add(oid)
                    continue
                marked.add(oid)
                stack.extend(c for c in children(oid, raw) if c not in marked)
        if progress:
            progress("mark", len(marked), None)
    return marked, missing


def _listing(store: Store, progress: Progress | None) -> Iterator[tuple[ObjectId, int, float]]:
    for n, (key, size, t) in enumerate(store.backend.iter_ids(b""), 1):
        if progress and n % 10_000 == 0:
            progress("list", n, None)
        yield ObjectId(key), size, t


# -- gc -----------------------------------------------------------------------------


def gc(grace_period: float = DEFAULT_GRACE, dry_run: bool = False, progress: Progress | None = None,
       store: Store | None = None) -> GCStats:
    """Delete every object that no live run, tag, cache entry or run in progress reaches.

    Safe while other processes write: see the module docstring for the
    grace-period contract.

    Args:
        grace_period: seconds; objects written (or re-written) more recently are kept.
        dry_run: count what would be deleted, delete nothing.
        progress: called as ``progress(phase, done, total)`` with phases
            ``list``, ``mark`` and ``sweep`` (``total`` is None when unknown).
        store: defaults to the configured store.

    Returns:
        A :class:`GCStats`.
    """
    store = store or _store()
    t0 = time.time()
    # The cutoff is fixed before anything is read: an object written after it
    # is kept whatever the snapshot of refs says.
    cutoff = t0 - float(grace_period)
    stats = GCStats(grace_period=float(grace_period), dry_run=dry_run)
    roots = live_roots(store)
    stats.roots = len(roots)
    listing = list(_listing(store, progress))
    live, missing = reachable(store, roots, progress)
    # Recent objects protect what they refer to as well: a tree re-stored by a
    # writer keeps its old children even if the writer skipped re-storing them.
    recent = {oid for oid, _, t in listing if t >= cutoff and oid not in live}
    kept, _ = reachable(store, recent, progress, marked=set(live))
    stats.missing = len(missing)
    doomed: list[ObjectId] = []
    for oid, size, t in listing:
        stats.examined_objects += 1
        stats.examined_bytes += size
        if oid in live:
            stats.reachable_objects += 1
            stats.reachable_bytes += size
        elif oid in kept:
            stats.recent_objects += 1
            stats.recent_bytes += size
        else:
            doomed.append(oid)
            if dry_run:
                stats.deleted_objects += 1
                stats.deleted_bytes += size
    if not dry_run:
        step = 10_000
        for i in range(0, len(doomed), step):
            n, b = store.delete(doomed[i : i + step], older_than=cutoff)
            stats.deleted_objects += n
            stats.deleted_bytes += b
            if progress:
                progress("sweep", min(i + step, len(doomed)), len(doomed))
        # Objects refreshed by a writer since the listing were not deleted.
        stats.recent_objects += len(doomed) - stats.deleted_objects
    stats.duration = time.time() - t0
    return stats


# -- compaction -------------------------------------------------------------------------


class StoreBusy(StoreError):
    """Another process has the store open, so it cannot be rewritten now."""


@dataclass
class CompactStats:
    """File size before and after a compaction."""

    path: str
    before_bytes: int
    after_bytes: int
    duration: float

    @property
    def saved_bytes(self) -> int:
        return self.before_bytes - self.after_bytes

    def __str__(self) -> str:
        return (f"compacted {self.path}: {_size(self.before_bytes)} -> {_size(self.after_bytes)} "
                f"(returned {_size(max(self.saved_bytes, 0))}) in {self.duration:.2f} s")


# One descriptor per lock file, opened once and never closed: closing any
# descriptor of a file drops every POSIX lock this process holds on it,
# including the one LMDB itself relies on.
_LOCK_FDS: dict[str, int] = {}
_FLOCK = "hhqqi"  # struct flock on Linux/BSD: type, whence, start, len, pid


def compact(store: Store | None = None, progress: Progress | None = None) -> CompactStats:
    """Rewrite the store's LMDB file without free pages, so deleted space returns to the disk.

    How other processes are kept out: every process with an LMDB
    environment open holds a shared POSIX lock on byte 0 of ``lock.mdb``
    (taken by LMDB itself at open). compact closes this process's
    environment and takes an exclusive lock on that byte without waiting:
    if any other process has the store open this fails and nothing is
    touched. While compact holds the lock, a process opening the store
    blocks inside LMDB's open. The copy (``mdb_env_copy2`` with
    ``MDB_CP_COMPACT``) is written next to the file and renamed over it;
    reopening here re-initializes the lock file for the new data file
    before the lock is downgraded and waiting processes proceed. Threads
    of this process must not use the store meanwhile.

    Args:
        store: defaults to the configured store (an in-memory store is left as is).
        progress: called as ``progress("compact", 0 or 1, 1)``.

    Returns:
        A :class:`CompactStats`.

    Raises:
        StoreBusy: another process has the store open.
    """
    import fcntl
    import struct

    import lmdb

    from .store import _lmdb

    store = store or _store()
    backend = store.backend
    t0 = time.time()
    path = getattr(backend, "path", None)
    if not isinstance(backend, _lmdb.LMDBBackend) or path is None:
        return CompactStats(str(path or "memory"), 0, 0, 0.0)
    data = os.path.join(path, "data.mdb")
    before = os.path.getsize(data)
    if progress:
        progress("compact", 0, 1)
    backend.close()
    if path in _lmdb._ENVS:  # close() keeps environments inherited across fork() open
        raise StoreBusy(f"store {path} is still open in this process; cannot compact it")
    lock_path = os.path.join(path, "lock.mdb")
    fd = _LOCK_FDS.get(lock_path)
    if fd is None:
        fd = _LOCK_FDS[lock_path] = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
    except OSError:
        holder = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
        pid = struct.unpack(_FLOCK, holder)[4]
        who = f" (process {pid}, among others perhaps)" if pid else ""
        raise StoreBusy(f"store {path} is open in another process{who}; close it and run compact again") from None
    tmp = os.path.join(path, "compact.tmp")
    try:
        if os.path.isdir(tmp):  # left by a compaction that was killed
            for name in os.listdir(tmp):
                os.unlink(os.path.join(tmp, name))
        else:
            os.mkdir(tmp)
        # lock=False: this environment must not touch lock.mdb, or closing it
        # would drop the exclusive lock taken above.
        src = lmdb.open(path, readonly=True, lock=False, max_dbs=4, subdir=True)
        try:
            src.copy(tmp, compact=True)
        finally:
            src.close()
        new = os.path.join(tmp, "data.mdb")
        with open(new, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(new, data)
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if os.path.isdir(tmp):
            for name in os.listdir(tmp):
                os.unlink(os.path.join(tmp, name))
            os.rmdir(tmp)
        # Reopening runs LMDB's first-opener path (this process holds the
        # exclusive lock), which resets the lock file to the new data file and
        # downgrades the lock to shared; waiting openers then continue.
        backend.info()
    if progress:
        progress("compact", 1, 1)
    return CompactStats(path, before, os.path.getsize(data), time.time() - t0)


# -- disk usage ------------------------------------------------------------------------


@dataclass
class TaskUsage:
    """Storage reachable from one task's runs."""

    task: str
    runs: int
    objects: int
    bytes: int


@dataclass
class DiskUsage:
    """Where the bytes of a store go.

    ``logical_bytes`` sums, over every run, the stored size of everything it
    reaches; ``reachable_bytes`` counts each object once. Their ratio is how
    much deduplication saves.
    """

    tasks: list[TaskUsage] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    reachable_objects: int = 0
    reachable_bytes: int = 0
    logical_bytes: int = 0
    file_bytes: int | None = None

    @property
    def garbage_bytes(self) -> int:
        """Stored bytes no run reaches (what gc would reclaim, grace period aside)."""
        return self.bytes - self.reachable_bytes

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.reachable_bytes if self.reachable_bytes else 1.0


def du(store: Store | None = None, progress: Progress | None = None) -> DiskUsage:
    """Stored size by task, and how much deduplication saves.

    Returns:
        A :class:`DiskUsage`, tasks sorted by bytes, largest first.
    """
    store = store or _store()
    sizes = {oid: size for oid, size, _ in _listing(store, progress)}
    kids: dict[ObjectId, list[ObjectId]] = {}

    def closure(root: ObjectId) -> set[ObjectId]:
        seen: set[ObjectId] = set()
        stack = [root]
        with store.backend.reading() as r:
            while stack:
                oid = stack.pop()
                if oid in seen or oid not in sizes:
                    continue
                seen.add(oid)
                c = kids.get(oid)
                if c is None:
                    raw = r.get(oid)
                    c = kids[oid] = children(oid, raw) if raw is not None else []
                stack.extend(c)
        return seen

    per_task: dict[str, tuple[int, set]] = {}
    everything: set[ObjectId] = set()
    usage = DiskUsage(objects=len(sizes), bytes=sum(sizes.values()))
    with store.refs() as txn:
        refs = [R.unpack(v) for _, v in txn.scan(b"run/")]
    for ref in refs:
        reach = closure(ObjectId(ref["record"])) if ref.get("record") else set()
        usage.logical_bytes += sum(sizes[o] for o in reach)
        everything |= reach
        name = ref.get("identity") or ref.get("task") or "?"
        n, objs = per_task.get(name, (0, set()))
        objs |= reach
        per_task[name] = (n + 1, objs)
    usage.reachable_objects = len(everything)
    usage.reachable_bytes = sum(sizes[o] for o in everything)
    usage.tasks = sorted(
        (TaskUsage(name, n, len(objs), sum(sizes[o] for o in objs)) for name, (n, objs) in per_task.items()),
        key=lambda u: (-u.bytes, u.task),
    )
    path = getattr(store.backend, "path", None)
    if path and os.path.exists(os.path.join(path, "data.mdb")):
        usage.file_bytes = os.path.getsize(os.path.join(path, "data.mdb"))
    return usage



def _store() -> Store:
    from .session import current_store

    return current_store()
