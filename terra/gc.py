"""Garbage collection: mark what live runs reach, sweep the rest, compact the file.

gc is split the way dulwich splits it: :func:`live_roots` (what must be kept)
→ :func:`reachable` (everything those roots refer to) → sweep (delete every
object neither reachable nor younger than the grace period).

Roots are the records of every run in the ``run/`` index (finished runs,
tagged runs and runs cut short alike), the outputs named by cache entries,
and what runs in progress hold: the artifacts they were given (``holds`` in
their ref) and every id they have written or are about to write
(``hold/<run><id>`` keys, put in the short-lived state by
:meth:`Store.holding` *before* the bytes are written). A run's holds stay
until its record is committed. A pull holds what it fetches or finds here the
same way, under the first run id it reserves, until its records are committed
(``terra.remote.pull``).

Runs do not depend on the grace period. The sweep runs in write
transactions, which serialize with a run's commit; inside each one it reads
the holds of live runs and the records committed since it marked, and spares
them and everything they refer to. So whatever a run wrote or relies on
survives a gc with any grace period, including 0. Objects written outside a
run (by the ``Store`` API directly, or by an older terra) have only their
write time: objects written in the last ``grace_period`` seconds are kept
with everything they refer to. :data:`MIN_GRACE` is the shortest grace the
command line accepts for them.

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
from .errors import CorruptRef, StoreError, TerraError
from .store import HOLD_PREFIX, Store

__all__ = ["CompactStats", "DiskUsage", "GCStats", "MIN_GRACE", "StoreBusy", "TaskUsage", "compact", "du", "gc",
           "live_roots", "reachable"]

#: Default grace period: an hour, far longer than any writer takes between
#: storing a run's objects and committing its record.
DEFAULT_GRACE = 3600.0
#: The shortest grace the command line accepts: runs need none (their holds
#: protect them), but objects written outside a run are only protected by it.
MIN_GRACE = 60.0

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
            elif R.live_status(ref, ref) == "running":
                roots.update(ObjectId(h) for h in ref.get("holds") or ())  # the artifacts it was given
        for _, raw in txn.scan(b"cache/"):
            entry = R.unpack_entry(raw[8:])
            if isinstance(entry, ObjectId):
                roots.add(entry)
        roots.update(ObjectId(k[-16:]) for k, live_run in _holds(txn) if live_run)
    if txn.damaged:  # a damaged run entry hides its record: collecting now could delete a live run
        raise CorruptRef(f"{len(txn.damaged)} damaged refs; gc would not see every run: "
                         "run `terra fsck --repair` first")
    return roots


def _progress_snapshot(store: Store) -> tuple[int, list[int]]:
    """The highest run id handed out or committed, and the runs in progress, before marking.

    Every run that commits after the mark is one of those in progress or has a larger id.
    """
    running = R.status_byte("running")
    with store.refs() as txn:
        ids = [txn.get(R.K_COUNTER), txn.get(R.K_COMMITTED)]
        pending = [int.from_bytes(k[-8:], "big") for k, v in txn.scan(b"task/") if v == running]
    return max(int.from_bytes(r, "big") if r else 0 for r in ids), pending


def _still_needed(live: set[ObjectId], counter: int, pending: list[int]):
    """The ``keep`` callback of the sweep: what runs hold or committed since the mark, and its closure.

    Called inside each delete transaction, where no run can commit and no
    hold can be added until it ends.
    """
    def keep(reader, refs, state) -> set[bytes]:
        roots = [k[-16:] for k, live_run in _holds(state) if live_run]
        raw = state.get(R.K_COUNTER)
        now = max(int.from_bytes(raw, "big") if raw else 0, counter)
        for rid in [*pending, *range(counter + 1, now + 1)]:
            raw = refs.get(R.k_run(rid)) or state.get(R.k_run(rid))
            if raw is None:
                continue
            ref = R.unpack(raw)
            if ref.get("record"):  # committed since the mark
                roots.append(bytes(ref["record"]))
            elif R.live_status(ref, ref) == "running":
                roots.extend(bytes(h) for h in ref.get("holds") or ())
        seen: set[bytes] = set()
        stack = [bytes(r) for r in roots]
        while stack:
            oid = stack.pop()
            if oid in seen or oid in live:  # the marked set is closed already
                continue
            seen.add(oid)
            raw = reader.get(oid)
            if raw is not None:
                stack.extend(bytes(c) for c in children(ObjectId(oid), raw))
        return seen
    return keep


def _holds(state) -> list[tuple[bytes, bool]]:
    """Every ``hold/`` key of the short-lived state, and whether the run holding it is alive and running."""
    alive: dict[bytes, bool] = {}
    out = []
    n = len(HOLD_PREFIX)
    for k, _ in state.scan(HOLD_PREFIX):
        rid8 = k[n : n + 8]
        if rid8 not in alive:
            raw = state.get(b"run/" + rid8)
            ref = R.unpack(raw) if raw is not None else {}
            alive[rid8] = R.live_status(ref, ref) == "running"
        out.append((k, alive[rid8]))
    return out


def _drop_dead_holds(txn) -> None:
    """Forget the holds of runs that were killed (a run that ends clears its own)."""
    for k in [k for k, live_run in _holds(txn) if not live_run]:
        txn.delete(k)


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

    Safe while other processes write: what runs in progress hold is kept at
    any grace period; see the module docstring.

    Args:
        grace_period: seconds (>= 0); objects written (or re-written) more recently are
            kept, which protects only objects written outside a run.
        dry_run: count what would be deleted, delete nothing.
        progress: called as ``progress(phase, done, total)`` with phases
            ``list``, ``mark`` and ``sweep`` (``total`` is None when unknown).
        store: defaults to the configured store.

    Returns:
        A :class:`GCStats`.

    Raises:
        TerraError: a negative grace period.
    """
    store = store or _store()
    grace_period = float(grace_period)
    if not grace_period >= 0:
        raise TerraError(f"gc: the grace period must be >= 0 seconds, got {grace_period!r}")
    t0 = time.time()
    # The cutoff is fixed before anything is read: an object written after it
    # is kept whatever the snapshot of refs says.
    cutoff = t0 - grace_period
    stats = GCStats(grace_period=grace_period, dry_run=dry_run)
    counter, pending = _progress_snapshot(store)
    roots = live_roots(store)
    stats.roots = len(roots)
    listing = list(_listing(store, progress))
    live, missing = reachable(store, roots, progress)
    # Recent objects protect what they refer to as well: a tree re-stored by a
    # writer keeps its old children even if the writer skipped re-storing them.
    recent = {oid for oid, _, t in listing if t >= cutoff and oid not in live}
    kept, _ = reachable(store, recent, progress, marked=set(live))
    with store.state_refs() as state:  # a hold names what a writer is about to write: its absence is no damage
        missing -= {ObjectId(k[-16:]) for k, _ in _holds(state)}
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
        keep = _still_needed(live, counter, pending)
        for i in range(0, len(doomed), step):
            n, b = store.delete(doomed[i : i + step], older_than=cutoff, keep=keep)
            stats.deleted_objects += n
            stats.deleted_bytes += b
            if progress:
                progress("sweep", min(i + step, len(doomed)), len(doomed))
        # Objects refreshed by a writer since the listing were not deleted.
        stats.recent_objects += len(doomed) - stats.deleted_objects
        store.update_state(_drop_dead_holds)
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
        StoreFull: no room on the disk for the compacted copy (the store is left as it was).
    """
    import fcntl
    import struct

    import lmdb

    from .store import LMDBBackend, disk_full

    store = store or _store()
    backend = store.backend
    t0 = time.time()
    path = getattr(backend, "path", None)
    if not isinstance(backend, LMDBBackend) or path is None:
        return CompactStats(str(path or "memory"), 0, 0, 0.0)
    data = os.path.join(path, "data.mdb")
    before = os.path.getsize(data)
    if progress:
        progress("compact", 0, 1)
    backend.close()
    if backend.is_open():  # close() keeps environments inherited across fork() open
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
        try:
            src = lmdb.open(path, readonly=True, lock=False, max_dbs=4, subdir=True)
            try:
                live = _live_bytes(src)
                src.copy(tmp, compact=True)
            finally:
                src.close()
            new = os.path.join(tmp, "data.mdb")
            with open(new, "rb+") as f:
                os.fsync(f.fileno())
        except (lmdb.Error, OSError) as e:
            # Nothing was replaced: the store is as it was.
            full = disk_full(
                path, e, live if "live" in locals() else before,
                "the compacted copy, written next to the store before it replaces it",
                "Free that much on the disk and run `terra gc --compact` again; meanwhile `terra gc` frees space "
                "inside the store that later writes reuse")
            if full is not None:
                raise full from e
            raise StoreError(f"cannot compact store {path}: {e}") from e
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


def _live_bytes(env) -> int:
    """Bytes in use by the databases of an LMDB environment (what a compacting copy writes)."""
    import lmdb

    st = env.stat()
    pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
    with env.begin() as txn:
        for name, _ in txn.cursor():
            try:
                db = env.open_db(bytes(name), txn=txn, create=False)
            except lmdb.Error:
                continue
            s = txn.stat(db)
            pages += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
    return (pages + 2) * st["psize"]


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
