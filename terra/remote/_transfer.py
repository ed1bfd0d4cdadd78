"""What push and pull share: the result they return, the per-remote index, reading stored bytes."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..errors import CorruptObject, NotFound
from ..objects import Chunk, ObjectId, decode, digest, references
from ..store import Store, unframe

__all__ = ["TransferResult"]

#: Blobs at least this large (stored size) are data: ``pull --records-only`` leaves them on the remote.
DATA_MIN = 64 << 10


@dataclass
class TransferResult:
    """What a push or pull did (``--json`` prints this).

    Attributes:
        remote, url: where. runs: runs transferred; runs_skipped: already there.
        objects, bytes: objects and bytes transferred; objects_skipped: already there.
        objects_left: payloads a records-only pull left on the remote (fetched when loaded).
        seconds: wall time. records: record ids (32 hex) transferred. run_ids: local ids (pull).
    """

    direction: str
    remote: str
    url: str
    runs: int = 0
    runs_skipped: int = 0
    objects: int = 0
    objects_skipped: int = 0
    bytes: int = 0
    objects_left: int = 0
    seconds: float = 0.0
    records: list = field(default_factory=list)
    run_ids: list = field(default_factory=list)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def done(self) -> "TransferResult":
        self.seconds = round(time.perf_counter() - self._t0, 3)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_t0")
        return d

    def summary(self) -> str:
        """One line for people."""
        verb, prep = ("pushed", "to") if self.direction == "push" else ("pulled", "from")
        if not self.runs and not self.objects:
            what = "nothing to push" if self.direction == "push" else "nothing to pull"
            return (f"{what}: {self.remote} already has all {self.runs_skipped} run(s)"
                    if self.direction == "push" else f"{what}: all {self.runs_skipped} run(s) are here already")
        mb = self.bytes / 1e6
        left = f"; {self.objects_left} payload(s) left on the remote, fetched when loaded" if self.objects_left else ""
        return (f"{verb} {self.runs} run(s), {self.objects} object(s), {mb:.1f} MB {prep} {self.remote} "
                f"in {self.seconds:.2f} s ({self.runs_skipped} run(s), {self.objects_skipped} object(s) "
                f"already there{left})")


def index_prefix(remote_uuid: str) -> bytes:
    """Refs ``remote-index/<remote uuid>/<id:16>``: objects whose whole closure the remote holds."""
    return b"remote-index/" + remote_uuid.encode() + b"/"


def read_raw(store: Store, oids) -> list[bytes | None]:
    """The stored (framed) bytes of ``oids``, copied out; None where absent."""
    out = []
    with store.backend.reading() as r:
        for oid in oids:
            raw = r.get(oid)
            out.append(None if raw is None else bytes(raw))
    return out


def check(oid: ObjectId, raw: bytes):
    """Decode stored bytes after checking they hash to ``oid``.

    Raises:
        CorruptObject: they do not.
    """
    enc = unframe(oid, raw)
    if digest((enc,)) != oid:
        raise CorruptObject(f"object {oid.hex()} is corrupt: its bytes do not match its id")
    try:
        return decode(enc)
    except (ValueError, TypeError) as e:
        raise CorruptObject(f"object {oid.hex()} cannot be decoded: {e}") from None


def closure(store: Store, root: ObjectId, known: dict) -> None:
    """Add to ``known`` (id → is_data) every object reachable from ``root``, read locally.

    Chunks are taken on their Chunked's word (never read); everything else is
    read and verified, so corruption in this store is never spread.

    Raises:
        NotFound: an object is missing locally. CorruptObject: one does not match its id.
    """
    stack = [root]
    while stack:
        oid = stack.pop()
        if oid in known:
            continue
        (raw,) = read_raw(store, [oid])
        if raw is None:
            raise NotFound(f"object {oid.hex()} not found")
        obj = check(oid, raw)
        known[oid] = _is_data(obj, len(raw))
        if obj.kind == "chunked":
            for c in obj.chunks:
                known.setdefault(ObjectId(c), True)
        else:
            stack.extend(ObjectId(r) for r in references(obj) if r not in known)


def _is_data(obj, size: int) -> bool:
    return isinstance(obj, Chunk) or (obj.kind == "blob" and size >= DATA_MIN)
