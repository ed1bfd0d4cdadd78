"""fsck: verify every object against its id, every reference, and every index.

LMDB keeps no checksums, so a flipped bit is only found by hashing: fsck
reads and hashes every object, follows every reference of every run record
(missing ids), and checks that the indexes agree with the runs (``run/``
entries without a record, task/cache/edge/produced/tag entries naming runs
that do not exist, edges without their mirror). Runs that a killed process
left behind (status running, holder dead) are listed as interrupted: they
are an expected outcome, not damage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import runs as R
from .gc import Progress
from .objects import ObjectId, decode, digest, references
from .store import Store, _framing

__all__ = ["FsckReport", "fsck"]


@dataclass
class FsckReport:
    """What fsck checked and found; ``ok`` is False when anything is damaged."""

    objects: int = 0
    bytes: int = 0
    runs: int = 0
    corrupt: list[str] = field(default_factory=list)  # ids whose bytes do not hash to them
    missing: list[str] = field(default_factory=list)  # ids referenced but not stored
    affected_runs: dict[int, list[str]] = field(default_factory=dict)  # run -> bad ids it depends on
    index_problems: list[str] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing or self.index_problems or self.affected_runs)

    def __str__(self) -> str:
        lines = [f"checked {self.objects} objects ({self.bytes} bytes) and {self.runs} runs "
                 f"in {self.duration:.2f} s"]
        lines += [f"corrupt object {oid}" for oid in self.corrupt]
        lines += [f"missing object {oid}" for oid in self.missing]
        for rid, ids in sorted(self.affected_runs.items()):
            lines.append(f"run {rid} is damaged: depends on {', '.join(i[:12] for i in ids)}")
        lines += self.index_problems
        if self.interrupted:
            lines.append(f"interrupted runs (cut short by a killed process, not damage): "
                         f"{', '.join(map(str, self.interrupted))}")
        if self.running:
            lines.append(f"runs in progress: {', '.join(map(str, self.running))}")
        lines.append("no problems found" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def _check(oid: bytes, raw) -> tuple[bool, list[ObjectId]]:
    """Whether a stored object hashes to its id, and the ids it refers to."""
    try:
        enc = _framing.unframe(oid, raw)
        if digest((enc,)) != oid:
            return False, []
        # Well-formed too (e.g. a Chunked's size fits its chunk count); its references come with it.
        obj = decode(enc)
    except Exception:  # noqa: BLE001 - undecodable bytes are corruption
        return False, []
    return True, list(references(obj))


def fsck(store: Store | None = None, progress: Progress | None = None) -> FsckReport:
    """Verify the whole store.

    Args:
        store: defaults to the configured store.
        progress: called as ``progress(phase, done, total)``; phases ``objects`` and ``runs``.

    Returns:
        A :class:`FsckReport`; ``report.ok`` is False when damage was found.
    """
    store = store or _store()
    t0 = time.time()
    rep = FsckReport()
    ids = [(key, size) for key, size, _ in store.backend.iter_ids(b"")]
    present = {key for key, _ in ids}
    corrupt: set[bytes] = set()
    kids: dict[bytes, list[ObjectId]] = {}
    for i in range(0, len(ids), 1024):
        with store.backend.reading() as r:  # short snapshots
            for key, size in ids[i : i + 1024]:
                raw = r.get(key)
                if raw is None:  # deleted by a concurrent gc since the listing
                    present.discard(key)
                    continue
                rep.objects += 1
                rep.bytes += size
                good, refs = _check(key, raw)
                if good:
                    if refs:
                        kids[key] = refs
                else:
                    corrupt.add(key)
        if progress:
            progress("objects", min(i + 1024, len(ids)), len(ids))

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
            if oid not in present:
                missing.add(oid)
                bad.add(oid)
            elif oid in corrupt:
                bad.add(oid)
            else:
                stack.extend(kids.get(oid, ()))
        if bad:
            affected.setdefault(rid, set()).update(bad)

    with store.refs() as txn:
        run_refs = {int.from_bytes(k[4:], "big"): R.unpack(v) for k, v in txn.scan(b"run/")}
        index = {p: list(txn.scan(p)) for p in (b"task/", b"cache/", b"edge/c/", b"edge/p/", b"produced/", b"tag/")}
    rep.runs = len(run_refs)
    for n, (rid, ref) in enumerate(sorted(run_refs.items()), 1):
        rec = ref.get("record")
        if rec:
            damage(rid, bytes(rec))
        elif ref.get("status") == "running":
            (rep.running if R._live_status(ref, ref) == "running" else rep.interrupted).append(rid)
        else:
            rep.index_problems.append(f"run {rid} has status {ref.get('status')!r} but no record")
        for held in ref.get("holds") or ():
            damage(rid, bytes(held))
        if progress and n % 1000 == 0:
            progress("runs", n, len(run_refs))

    problems = rep.index_problems
    for k, _ in index[b"task/"]:
        rid = int.from_bytes(k[-8:], "big")
        if rid not in run_refs:
            problems.append(f"task index entry {k[5:-9].decode(errors='replace')} names missing run {rid}")
    for k, v in index[b"cache/"]:
        rid = int.from_bytes(v[:8], "big")
        if rid not in run_refs:
            problems.append(f"cache entry {k[6:].hex()[:12]} names missing run {rid}")
        entry = R.unpack_entry(v[8:])
        if isinstance(entry, ObjectId):
            damage(rid, bytes(entry))
    for prefix, mirror in ((b"edge/c/", b"edge/p/"), (b"edge/p/", b"edge/c/")):
        have = {k for k, _ in index[mirror]}
        for k, _ in index[prefix]:
            a, b = int.from_bytes(k[7:15], "big"), int.from_bytes(k[15:23], "big")
            producer, consumer = (b, a) if prefix == b"edge/c/" else (a, b)
            for rid in (producer, consumer):
                if rid not in run_refs and prefix == b"edge/c/":  # reported once, not for both copies
                    problems.append(f"lineage edge run {producer} -> run {consumer} names missing run {rid}")
            if mirror + k[15:23] + k[7:15] + k[23:] not in have:
                problems.append(f"lineage edge run {producer} -> run {consumer} is indexed in {prefix.decode()} "
                                f"but not in {mirror.decode()}")
    for k, v in index[b"produced/"]:
        rid = int.from_bytes(v, "big")
        if rid not in run_refs:
            problems.append(f"produced entry {k[9:].hex()[:12]} names missing run {rid}")
    for k, v in index[b"tag/"]:
        rid = int.from_bytes(v, "big")
        if rid not in run_refs:
            problems.append(f"tag {k[4:].decode(errors='replace')!r} names missing run {rid}")

    rep.corrupt = sorted(o.hex() for o in corrupt)
    rep.missing = sorted(o.hex() for o in missing)
    rep.affected_runs = {rid: sorted(o.hex() for o in bad) for rid, bad in sorted(affected.items())}
    rep.duration = time.time() - t0
    return rep


def _store() -> Store:
    from .session import current_store

    return current_store()
