"""fsck: verify every object, every ref, and every index against the records.

LMDB keeps no checksums, so damage is only found by checking: fsck hashes
every object against its id, verifies every ref's checksum (``terra.store._refs``;
each damaged entry is reported and skipped, never fatal), follows every
reference of every run record (missing ids) and cross-checks the indexes
against the verified records: a run entry must name its own record and agree
with its status, task entries with their runs, every cache entry must be
confirmed by the record of the run it names, edges need their mirror, and
the committed counter must not lag behind the runs (or run ids would be
handed out twice). Runs a killed process left behind (status running,
holder dead) are listed as interrupted: an expected outcome, not damage.

``repair=True`` (``terra fsck --repair``) rebuilds the indexes from the
verified records and reports each change; it never deletes a record or an
object, only damaged or dangling index entries. Records are found by their
kind while every object is read anyway, and name their run: a run made here
in its ``origin``, a pulled one through the ``record/`` index; a record older
than both is matched through its intact ``run/`` entry. A record is re-indexed only for a run the indexes
still know of (an intact or damaged ``run/`` key, or a task, cache, edge,
produced or tag entry naming it): a run removed with ``terra rm`` leaves its
record until gc and must not come back. Cache entries are rebuilt only under
their own (intact) key, from the newest confirmed run: a lost entry is a
miss, never a wrong value.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

from . import runs as R
from .errors import CorruptRef, StoreError
from .gc import Progress
from .objects import ObjectId, Run, decode, digest, references
from .store import Store, unframe
from .store._refs import describe, seal

__all__ = ["FsckReport", "fsck"]


@dataclass
class FsckReport:
    """What fsck checked and found; ``ok`` is False when anything is damaged."""

    objects: int = 0
    bytes: int = 0
    runs: int = 0
    refs: int = 0
    corrupt: list[str] = field(default_factory=list)  # ids whose bytes do not hash to them
    missing: list[str] = field(default_factory=list)  # ids referenced but not stored
    affected_runs: dict[int, list[str]] = field(default_factory=dict)  # run -> bad ids it depends on
    damaged_refs: list[str] = field(default_factory=list)  # ref entries failing their checksum
    index_problems: list[str] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # what ``repair=True`` changed
    # remote name -> objects missing here that it holds for this store (a records-only pull left
    # them there; loads fetch them): expected, not damage
    remote_only: dict[str, int] = field(default_factory=dict)
    remote_checked: bool = True  # remote_only was confirmed with the remotes, not only read from the records
    remote_problems: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing or self.index_problems or self.affected_runs
                    or self.damaged_refs or self.remote_problems)

    def __str__(self) -> str:
        lines = [f"checked {self.objects} objects ({self.bytes} bytes), {self.refs} refs and "
                 f"{self.runs} runs in {self.duration:.2f} s"]
        lines += [f"repaired: {r}" for r in self.repaired]
        lines += [f"corrupt object {oid}" for oid in self.corrupt]
        lines += [f"missing object {oid}" for oid in self.missing]
        lines += [f"damaged ref {r}" for r in self.damaged_refs]
        for rid, ids in sorted(self.affected_runs.items()):
            lines.append(f"run {rid} is damaged: depends on {', '.join(i[:12] for i in ids)}")
        lines += self.index_problems
        lines += self.remote_problems
        for name, n in sorted(self.remote_only.items()):
            how = "" if self.remote_checked else " (as recorded; not checked with the remote)"
            lines.append(f"{n} object(s) are on remote {name} only{how}: a records-only pull left them there, "
                         "loads fetch them (not damage)")
        if self.interrupted:
            lines.append(f"interrupted runs (cut short by a killed process, not damage): "
                         f"{', '.join(map(str, self.interrupted))}")
        if self.running:
            lines.append(f"runs in progress: {', '.join(map(str, self.running))}")
        if self.ok:
            lines.append("no problems found")
        else:
            lines.append("PROBLEMS FOUND" + ("" if self.repaired else "; `terra fsck --repair` rebuilds "
                                             "damaged indexes from the run records"))
        return "\n".join(lines)


def _inspect(oid: bytes, raw):
    """Whether a stored object hashes to its id, the ids it refers to, and its fields if it is a Run."""
    try:
        enc = unframe(oid, raw)
        if digest((enc,)) != oid:
            return False, [], None
        # Well-formed too (e.g. a Chunked's size fits its chunk count); its references come with it.
        obj = decode(enc)
    except Exception:  # noqa: BLE001 - undecodable bytes are corruption
        return False, [], None
    return True, list(references(obj)), (obj.fields if isinstance(obj, Run) else None)


@dataclass
class _Scan:
    """Everything one pass found: objects, records, and the refs parsed per kind."""

    present: set = field(default_factory=set)
    corrupt: set = field(default_factory=set)
    kids: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)  # record id -> fields (verified)
    runs: dict = field(default_factory=dict)  # rid -> run entry (dict)
    tasks: dict = field(default_factory=dict)  # rid -> (key, identity, status)
    cache: dict = field(default_factory=dict)  # cache key -> (rid, raw value)
    edges: dict = field(default_factory=dict)  # prefix -> set of keys
    produced: dict = field(default_factory=dict)  # artifact -> rid
    tags: dict = field(default_factory=dict)  # name -> rid
    record_rid: dict = field(default_factory=dict)  # record id -> rid (the record/ index)
    remote: dict = field(default_factory=dict)  # remotes, and objects pulls left on them (terra.remote.left)
    uuid: str | None = None
    committed: int | None = None
    damaged: list = field(default_factory=list)  # damaged ref keys
    unreadable: bool = False  # LMDB's own pages are damaged: some objects could not be read
    disordered: bool = False  # ref keys out of order: lookups by key may miss entries


def _read_objects(store: Store, rep: FsckReport, sc: _Scan, progress) -> None:
    try:
        ids = [(key, size) for key, size, _ in store.backend.iter_ids(b"")]
    except StoreError as e:
        rep.index_problems.append(f"listing objects failed part way: {e}")
        sc.unreadable = True
        ids = []
    sc.present = {key for key, _ in ids}
    for i in range(0, len(ids), 1024):
        batch = ids[i : i + 1024]
        try:
            with store.backend.reading() as r:  # short snapshots
                for key, size in batch:
                    raw = r.get(key)
                    if raw is None:  # deleted by a concurrent gc since the listing
                        sc.present.discard(key)
                        continue
                    rep.objects += 1
                    rep.bytes += size
                    good, refs, fields = _inspect(key, raw)
                    if not good:
                        sc.corrupt.add(key)
                        continue
                    if refs:
                        sc.kids[key] = refs
                    if fields is not None:
                        sc.records[key] = fields
        except StoreError as e:  # a damaged page: note it, go on with the next batch
            sc.unreadable = True
            rep.index_problems.append(f"objects {batch[0][0].hex()[:12]}..{batch[-1][0].hex()[:12]} "
                                      f"unreadable: {e}")
        if progress:
            progress("objects", min(i + 1024, len(ids)), len(ids))


def _read_refs(store: Store, rep: FsckReport, sc: _Scan) -> None:
    """Parse every ref; an entry that fails its checksum or its format is damaged, the rest go on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fsck reports them itself
        entries, txn = [], None
        try:
            with store.refs() as txn:
                for entry in txn.scan(b""):
                    entries.append(entry)
        except StoreError as e:  # LMDB's own pages: what was read so far is still checked
            sc.unreadable = True
            rep.index_problems.append(f"reading refs failed part way: {e}")
        if txn is not None:
            sc.damaged.extend(txn.damaged)
    rep.refs = len(entries) + len(sc.damaged)
    if any(a[0] >= b[0] for a, b in zip(entries, entries[1:])):
        sc.disordered = True
        rep.index_problems.append("ref keys are out of order (a key damaged in place): lookups may miss "
                                  "entries; `terra fsck --repair` re-inserts them")
    for k, v in entries:
        try:
            _parse(sc, k, v)
        except Exception:  # noqa: BLE001 - a sealed entry of the wrong shape is damage too
            sc.damaged.append(k)


def _rid(b: bytes) -> int:
    if len(b) != 8:
        raise ValueError("not a run id")
    return int.from_bytes(b, "big")


def _parse(sc: _Scan, k: bytes, v: bytes) -> None:
    if k.startswith(b"run/"):
        rid = _rid(k[4:])
        sc.runs[rid] = R.decode_run_ref(rid, v)
    elif k.startswith(b"task/"):
        if len(k) < 15 or k[-9:-8] != b"\0" or len(v) != 1 or R.byte_status(v) == "unknown":
            raise ValueError("bad task entry")
        sc.tasks[_rid(k[-8:])] = (k, k[5:-9].decode(), R.byte_status(v))
    elif k.startswith(b"cache/"):
        if len(k) != 22 or len(v) < 9:
            raise ValueError("bad cache entry")
        R.unpack_entry(v[8:])
        sc.cache[k[6:]] = (_rid(v[:8]), v)
    elif k.startswith(b"edge/c/") or k.startswith(b"edge/p/"):
        if len(k) != 39 or v:
            raise ValueError("bad edge")
        sc.edges.setdefault(k[:7], set()).add(k)
    elif k.startswith(b"produced/"):
        if len(k) != 25:
            raise ValueError("bad produced entry")
        sc.produced[k[9:]] = _rid(v)
    elif k.startswith(b"record/"):
        if len(k) != 23:
            raise ValueError("bad record entry")
        sc.record_rid[k[7:]] = _rid(v)
    elif k.startswith(b"tag/"):
        sc.tags[k[4:].decode()] = _rid(v)
    elif k == R.K_COMMITTED:
        sc.committed = _rid(v)
    elif k == R.K_COUNTER:
        _rid(v)
    elif k.startswith(b"lease/"):
        if not isinstance(R.unpack(v), dict):
            raise ValueError("bad lease")
    elif k.startswith(b"remote"):
        sc.remote[k] = v
    # Other kinds (meta/...) need only their checksum, already verified.


def fsck(store: Store | None = None, progress: Progress | None = None, repair: bool = False,
         check_remotes: bool = True) -> FsckReport:
    """Verify the whole store; optionally rebuild damaged indexes from the run records.

    Args:
        store: defaults to the configured store.
        progress: called as ``progress(phase, done, total)``; phases ``objects`` and ``runs``.
        repair: rebuild the indexes (run, task, cache, edge, produced entries and the
            committed counter) from the verified records, then check again. Records and
            objects are never deleted.
        check_remotes: objects missing here that a records-only pull left on a configured
            remote are not damage; confirm that the remote still has them (one LIST per
            object directory asked about). False trusts the store's records of its pulls.

    Returns:
        A :class:`FsckReport` (after repair: of the repaired store, with ``repaired``
        listing each change); ``report.ok`` is False when damage was found.
    """
    store = store or _store()
    rep, sc = _check(store, progress, check_remotes)
    if not repair or rep.ok:
        return rep
    if sc.unreadable:
        # Records may be among what could not be read: re-indexing now would drop good entries.
        rep.index_problems.append("not repaired: the store file's own structure is damaged, so not every "
                                  "record could be read; copy what loads to a new store")
        return rep
    changes = _repair(store, sc)
    after, _ = _check(store, progress, check_remotes)
    after.repaired = changes
    return after


def _check(store: Store, progress, check_remotes: bool = True) -> tuple[FsckReport, _Scan]:
    t0 = time.time()
    rep, sc = FsckReport(), _Scan()
    try:
        sc.uuid = store.uuid
    except CorruptRef as e:  # runs made here cannot be told from pulled ones: reported, checks go on
        rep.index_problems.append(str(e))
    _read_objects(store, rep, sc, progress)
    _read_refs(store, rep, sc)
    missing: set[bytes] = set()
    affected: dict[int, set[bytes]] = {}

    def damage(rid: int, root: bytes) -> None:
        """Follow ``root`` through the in-memory reference map, noting bad ids under it."""
        seen, stack, bad = set(), [root], set()
        while stack:
            oid = stack.pop()
            if oid in seen:
                continue
            seen.add(oid)
            if oid not in sc.present:
                missing.add(oid)
                bad.add(oid)
            elif oid in sc.corrupt:
                bad.add(oid)
            else:
                stack.extend(sc.kids.get(oid, ()))
        if bad:
            affected.setdefault(rid, set()).update(bad)

    problems = rep.index_problems
    rep.damaged_refs = [describe(k) for k in sc.damaged]
    rep.runs = len(sc.runs)
    for n, (rid, ref) in enumerate(sorted(sc.runs.items()), 1):
        rec = ref.get("record")
        if rec:
            damage(rid, bytes(rec))
            fields = sc.records.get(bytes(rec))
            if fields is not None and (_rid_of(sc, bytes(rec), fields) not in (rid, None)
                                       or fields.get("status") != ref.get("status")
                                       or fields.get("identity") != ref.get("identity")):
                problems.append(f"run {rid}: its entry disagrees with record {bytes(rec).hex()[:12]} "
                                "(run id, status or task)")
        elif ref.get("status") == "running":
            (rep.running if R.live_status(ref, ref) == "running" else rep.interrupted).append(rid)
        else:
            problems.append(f"run {rid} has status {ref.get('status')!r} but no record")
        for held in ref.get("holds") or ():
            damage(rid, bytes(held))
        if progress and n % 1000 == 0:
            progress("runs", n, len(sc.runs))

    for rid, (k, ident, status) in sorted(sc.tasks.items()):
        ref = sc.runs.get(rid)
        if ref is None:
            problems.append(f"task index entry {ident} names missing run {rid}")
        elif ref.get("status") != status or ref.get("identity", ident) != ident:
            problems.append(f"task index entry {ident} of run {rid} says {status!r}, the run "
                            f"{ref.get('status')!r} ({ref.get('identity')})")
    for key, (rid, raw) in sc.cache.items():
        if rid not in sc.runs:
            problems.append(f"cache entry {key.hex()[:12]} names missing run {rid}")
            continue
        entry = R.unpack_entry(raw[8:])
        if isinstance(entry, ObjectId):
            damage(rid, bytes(entry))
        if not _confirmed(sc, key, rid, raw):
            problems.append(f"cache entry {key.hex()[:12]} does not match the record of run {rid}")
    edges = sc.edges
    for prefix, mirror in ((b"edge/c/", b"edge/p/"), (b"edge/p/", b"edge/c/")):
        have = edges.get(mirror, set())
        for k in sorted(edges.get(prefix, ())):
            a, b = int.from_bytes(k[7:15], "big"), int.from_bytes(k[15:23], "big")
            producer, consumer = (b, a) if prefix == b"edge/c/" else (a, b)
            for rid in (producer, consumer):
                if rid not in sc.runs and prefix == b"edge/c/":  # reported once, not for both copies
                    problems.append(f"lineage edge run {producer} -> run {consumer} names missing run {rid}")
            if mirror + k[15:23] + k[7:15] + k[23:] not in have:
                problems.append(f"lineage edge run {producer} -> run {consumer} is indexed in {prefix.decode()} "
                                f"but not in {mirror.decode()}")
    for art, rid in sc.produced.items():
        if rid not in sc.runs:
            problems.append(f"produced entry {art.hex()[:12]} names missing run {rid}")
    for name, rid in sc.tags.items():
        if rid not in sc.runs:
            problems.append(f"tag {name!r} names missing run {rid}")
    done = [rid for rid, ref in sc.runs.items() if ref.get("record")]
    if done and (sc.committed or 0) < max(done):
        problems.append(f"committed counter {sc.committed} is behind run {max(done)}: run ids would be reused")
    for rid in sorted(set(_known(sc)) - set(sc.runs)):
        if _record_of(sc, rid) is not None:
            problems.append(f"run {rid} has a record but no run entry")

    if missing and sc.remote:
        _remote_only(rep, sc, missing, affected, check_remotes)
    rep.corrupt = sorted(o.hex() for o in sc.corrupt)
    rep.missing = sorted(o.hex() for o in missing)
    rep.affected_runs = {rid: sorted(o.hex() for o in bad) for rid, bad in sorted(affected.items())}
    rep.duration = time.time() - t0
    return rep, sc


def _remote_only(rep: FsckReport, sc: _Scan, missing: set, affected: dict, check: bool) -> None:
    """Set apart the missing objects a configured remote holds for this store (pulled records only)."""
    from .remote.left import classify

    found = classify(sc.remote, missing, check)
    rep.remote_only = {name: len(ids) for name, ids in found.held.items()}
    rep.remote_checked = check
    rep.remote_problems = found.problems
    missing -= found.excused
    for rid in list(affected):
        affected[rid] -= found.excused
        if not affected[rid]:
            del affected[rid]


def _confirmed(sc: _Scan, key: bytes, rid: int, raw: bytes, runs: dict | None = None) -> bool:
    """Whether a cache entry agrees with the verified record of the run it names (and its run entry)."""
    ref = (sc.runs if runs is None else runs).get(rid) or {}
    rec = bytes(ref.get("record") or b"")
    fields = sc.records.get(rec)
    d = R.unpack(raw[8:])
    return (fields is not None and ref.get("status") == "success" and fields.get("status") == "success"
            and _rid_of(sc, rec, fields) in (rid, None) and bytes(fields.get("cache_key") or b"") == key
            and bytes(d.get("r") or rec) == rec
            and R.pack_entry(fields.get("output")) == R.pack_entry(R.unpack_entry(raw[8:])))


def _known(sc: _Scan) -> set[int]:
    """Run ids the indexes still mention: runs a repair may rebuild (not ones removed by rm)."""
    known = set(sc.runs) | set(sc.tasks) | set(sc.produced.values()) | set(sc.tags.values())
    known |= {rid for rid, _ in sc.cache.values()}
    for keys in sc.edges.values():
        for k in keys:
            known |= {int.from_bytes(k[7:15], "big"), int.from_bytes(k[15:23], "big")}
    for k in sc.damaged:
        if k.startswith(b"run/") and len(k) == 12:
            known.add(int.from_bytes(k[4:], "big"))
        elif k.startswith(b"task/") and len(k) > 14 and k[-9:-8] == b"\0":
            known.add(int.from_bytes(k[-8:], "big"))
    return known


def _rid_of(sc: _Scan, rec: bytes, fields: dict) -> int | None:
    """The local run a verified record belongs to: its origin if made here, else the record/ index."""
    origin = fields.get("origin")
    if isinstance(origin, (list, tuple)) and len(origin) == 2 and origin[0] == sc.uuid:
        return origin[1] if isinstance(origin[1], int) else -1
    return sc.record_rid.get(rec)


def _record_of(sc: _Scan, rid: int) -> tuple[bytes, dict] | None:
    """The verified record of run ``rid``: the one its intact entry names, else the one naming it."""
    if not hasattr(sc, "_by_rid"):
        by: dict[int, list] = {}
        for oid, f in sc.records.items():
            r = _rid_of(sc, oid, f)
            if isinstance(r, int) and f.get("status") in R.STATUSES:
                by.setdefault(r, []).append((oid, f))
        sc._by_rid = by
    ref = sc.runs.get(rid)
    if ref and ref.get("record"):
        rec = bytes(ref["record"])
        if rec in sc.records and _rid_of(sc, rec, sc.records[rec]) in (rid, None):
            return rec, sc.records[rec]
    found = sc._by_rid.get(rid, [])
    return found[0] if len(found) == 1 else None


def _run_entry(rec: bytes, f: dict) -> dict:
    return {"status": f.get("status"), "task": f.get("task"), "identity": f.get("identity"),
            "start_time": f.get("start_time"), "end_time": f.get("end_time"), "pid": f.get("pid"),
            "host": f.get("host"), "record": rec}


def _repair(store: Store, sc: _Scan) -> list[str]:
    """Rebuild the indexes from the records in one transaction; return what changed."""
    changes: list[str] = []
    puts: dict[bytes, bytes] = {}
    deletes: set[bytes] = set(sc.damaged)
    for k in sc.damaged:
        changes.append(f"removed damaged ref {describe(k)}")
    known = _known(sc)
    rebuilt: dict[int, dict] = {}
    for rid in sorted(known):
        found = _record_of(sc, rid)
        ref = sc.runs.get(rid)
        if found is None:
            if ref is None:
                changes.append(f"run {rid}: no record found, its index entries are dropped")
            continue
        rec, f = found
        want = _run_entry(rec, f)
        rebuilt[rid] = want
        if ref is None or any(ref.get(x) != want[x] for x in ("status", "identity", "record")):
            puts[R.k_run(rid)] = R.pack(want)
            changes.append(f"run {rid}: entry rebuilt from record {rec.hex()[:12]}")
        if sc.record_rid.get(rec) != rid:
            puts[R.k_record(rec)] = R.rid8(rid)
            changes.append(f"run {rid}: record index entry rebuilt")
        tk = R.k_task(f.get("identity") or "", rid)
        old = sc.tasks.get(rid)
        if old is None or old[0] != tk or old[2] != want["status"]:
            if old is not None and old[0] != tk:
                deletes.add(old[0])
            puts[tk] = R.status_byte(want["status"])
            changes.append(f"run {rid}: task index entry rebuilt")
    runs = {rid: ref for rid, ref in sc.runs.items() if rid not in rebuilt or ref.get("record")}
    runs.update(rebuilt)
    alive = set(runs)
    for rid, (k, ident, _status) in sc.tasks.items():
        if rid not in alive:
            deletes.add(k)
            changes.append(f"task index entry {ident} of missing run {rid} dropped")
    # Cache: keep confirmed entries; a damaged or unconfirmed one with an intact key is
    # rebuilt from the newest successful cached run with that key, else dropped (a miss).
    newest: dict[bytes, tuple[int, dict]] = {}
    for rid, ref in runs.items():
        f = sc.records.get(bytes(ref.get("record") or b""))
        if f and f.get("status") == "success" and f.get("cache", True) and f.get("cache_key") is not None:
            ck = bytes(f["cache_key"])
            if ck not in newest or newest[ck][0] < rid:
                newest[ck] = (rid, f)
    bad_keys = [k[6:] for k in sc.damaged if k.startswith(b"cache/") and len(k) == 22]
    for ck, (rid, raw) in sc.cache.items():
        if rid not in runs or not _confirmed(sc, ck, rid, raw, runs):
            bad_keys.append(ck)
            deletes.add(R.k_cache(ck))
            changes.append(f"cache entry {ck.hex()[:12]} (run {rid}) does not match its record: dropped")
    if any(k.startswith(b"cache/") for k in sc.damaged):
        # A damaged key hides which entry it was: restore every entry missing for a cached run.
        bad_keys += [ck for ck in newest if ck not in sc.cache]
    for ck in dict.fromkeys(bad_keys):
        if ck in newest:
            rid, f = newest[ck]
            puts[R.k_cache(ck)] = R.rid8(rid) + R.pack_entry(f.get("output"), runs[rid]["record"])
            changes.append(f"cache entry {ck.hex()[:12]} rebuilt from run {rid}")
    # Edges: both copies must exist and name existing runs.
    edges = sc.edges
    for prefix, mirror in ((b"edge/c/", b"edge/p/"), (b"edge/p/", b"edge/c/")):
        for k in edges.get(prefix, ()):
            a, b = int.from_bytes(k[7:15], "big"), int.from_bytes(k[15:23], "big")
            if a not in alive or b not in alive:
                deletes.add(k)
                changes.append(f"lineage edge {describe(k)} names a missing run: dropped")
                continue
            m = mirror + k[15:23] + k[7:15] + k[23:]
            if m not in edges.get(mirror, ()):
                puts[m] = b""
                changes.append(f"lineage edge {describe(m)} restored from its mirror")
    for art, rid in sc.produced.items():
        if rid not in alive:
            deletes.add(R.k_produced(art))
            changes.append(f"produced entry {art.hex()[:12]} of missing run {rid} dropped")
    if any(k.startswith(b"produced/") for k in sc.damaged):
        for art, rid in _first_producers(store, runs, sc).items():
            if art not in sc.produced or sc.produced[art] not in alive:
                puts[R.k_produced(art)] = R.rid8(rid)
                changes.append(f"produced entry {art.hex()[:12]} rebuilt: run {rid}")
    done = [rid for rid, ref in runs.items() if ref.get("record")]
    if done and (sc.committed or 0) < max(done):
        puts[R.K_COMMITTED] = R.rid8(max(done))
        changes.append(f"committed counter set to {max(done)} (was {sc.committed})")
    for name, rid in sc.tags.items():
        if rid not in alive:
            changes.append(f"tag {name!r} names missing run {rid}: left for you to remove (terra untag)")

    def apply(txn):
        if sc.disordered and hasattr(txn.txn, "clear"):
            keep = {k: v for k, v in txn.scan_raw(b"") if k not in deletes}
            keep.update((k, seal(k, v)) for k, v in puts.items())
            txn.rewrite(keep.items())
            return
        for k in deletes - set(puts):
            txn.delete_damaged(k)
        for k, v in puts.items():
            txn.put(k, v)

    if sc.disordered:
        changes.append("ref keys re-inserted in order")
    if puts or deletes or sc.disordered:
        store.update_refs(apply)
    return changes


def _first_producers(store: Store, runs: dict, sc: _Scan) -> dict[bytes, int]:
    """Each artifact a successful run output, and the lowest run that did (what ``produced/`` holds)."""
    first: dict[bytes, int] = {}
    for rid in sorted(runs):
        f = sc.records.get(bytes(runs[rid].get("record") or b""))
        if not f or f.get("status") != "success":
            continue
        out = f.get("output")
        ids = {bytes(out)} if isinstance(out, ObjectId) else set()
        try:
            stack = [R.output_view(store, out, rid)]
            while stack:  # the returned structure: containers as they were, leaves as Artifacts
                v = stack.pop()
                if isinstance(v, dict):
                    stack.extend(v.values())
                elif isinstance(v, (list, tuple)):
                    stack.extend(v)
                elif isinstance(getattr(v, "__terra_ref__", None), ObjectId):
                    ids.add(bytes(v.__terra_ref__))
        except Exception:  # noqa: BLE001 - an unreadable output names only its root
            pass
        for art in ids:
            first.setdefault(art, rid)
    return first


def _store() -> Store:
    from .session import current_store

    return current_store()
