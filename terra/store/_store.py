"""The object store: verified, compressed, chunked objects over any backend."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, NamedTuple

from ..errors import AmbiguousPrefix, CorruptObject, CorruptRef, NotFound, UnsupportedFormat
from ..objects import (
    CHUNK_SIZE,
    HASH_ALGORITHM,
    HEX_CHARS,
    MIN_PREFIX,
    Blob,
    Chunk,
    Chunked,
    Object,
    ObjectId,
    chunk_header,
    decode,
    digest,
    encode,
    object_id,
    split_payload,
)
from ..objects.ids import hasher
from ..objects.pool import run_all, shared_pool
from ..trust import signature_for
from . import _framing
from ._refs import PlainSnapshot, PlainTxn, SealedSnapshot, SealedTxn, seal_all, unseal
from .base import Backend

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FORMAT_VERSION", "HOLD_PREFIX", "PutResult", "Store", "hold_key"]

# 2: run records carry their origin and name their parents by record id (terra.runs migrates 1).
# 3: every ref value carries a checksum (``_refs``); older stores are sealed when opened writable.
FORMAT_VERSION = 3
_SEALED_SINCE = 3
_SEALED_KEY = b"meta/refs"  # set when a format-1 store was sealed before its records were migrated
_FORMAT_KEY = b"meta/format"
_HASH_KEY = b"meta/hash"
_UUID_KEY = b"meta/uuid"
_PARALLEL_MIN = 2 * CHUNK_SIZE

#: Short-lived state keys ``hold/<run_id:8><id:16>``: ids a run in progress
#: has written or is about to write. gc never deletes a held id, nor what it
#: refers to, while the run holding it is alive.
HOLD_PREFIX = b"hold/"


def hold_key(run_id: int, oid: bytes = b"") -> bytes:
    """The short-lived state key holding ``oid`` for run ``run_id`` (its prefix when ``oid`` is empty)."""
    return HOLD_PREFIX + int(run_id).to_bytes(8, "big") + bytes(oid)


class PutResult(NamedTuple):
    """The id an object is stored under and whether this put stored it."""

    id: ObjectId
    new: bool


class Store:
    """Content-addressed objects over a :class:`Backend`.

    Every read is verified against its id; writes are idempotent.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self._local = threading.local()
        #: ``{(cache key, entry): (run id, output)}``: cache entries confirmed by their records (terra.runs).
        self.confirmed_hits: dict = {}
        self._check_format()

    def _check_format(self) -> None:
        with self.backend.refs() as refs:
            raw, algo = refs.get(_FORMAT_KEY), refs.get(_HASH_KEY)
        try:
            fmt = None if raw is None else int(raw)
            algo = None if algo is None else bytes(algo).decode()
        except (ValueError, UnicodeDecodeError):
            raise UnsupportedFormat(f"store format marker {bytes(raw or b'')!r} / hash {algo!r} is unreadable: "
                                    "the store's meta entries are damaged") from None
        if fmt is not None and fmt > FORMAT_VERSION:
            raise UnsupportedFormat(
                f"store format {fmt} is newer than this terra supports ({FORMAT_VERSION}); upgrade terra"
            )
        if algo is not None and algo != HASH_ALGORITHM:
            raise UnsupportedFormat(f"store hashes with {algo}, this terra with {HASH_ALGORITHM}")
        with self.backend.refs() as refs:
            marked = refs.get(_SEALED_KEY) is not None
        self._sealed = marked or (fmt is not None and fmt >= _SEALED_SINCE)
        if self._sealed and fmt is not None and fmt >= _SEALED_SINCE:
            return
        if getattr(self.backend, "_readonly", False):
            return  # an old store is read as it is; opening it writable seals it

        def migrate(txn):
            cur = txn.get(_FORMAT_KEY)
            cur = None if cur is None else int(cur)
            if cur is not None and cur >= _SEALED_SINCE:
                return False  # another process migrated it meanwhile
            seal_all(txn)  # idempotent: an entry already sealed verifies
            txn.put(_HASH_KEY, HASH_ALGORITHM.encode())
            if cur is None or cur >= 2:
                txn.put(_FORMAT_KEY, str(FORMAT_VERSION).encode())
            else:  # format 1: terra.runs.migrate rewrites its records next, then writes FORMAT_VERSION
                txn.put(_SEALED_KEY, b"xxh3-64")
            return True
        if self.backend.update_refs(migrate):
            # Runs in progress and leases of the old format: seal them too (idempotent).
            self.backend.update_state(seal_all)
        self._sealed = True

    @property
    def uuid(self) -> str | None:
        """This store's identity (32 hex), made on first use; None for a read-only store without one."""
        u = getattr(self, "_uuid", None)
        if u is None:
            with self.backend.refs() as refs:
                raw = refs.get(_UUID_KEY)
            if raw is None and not getattr(self.backend, "_readonly", False):
                import uuid

                fresh = uuid.uuid4().hex.encode()

                def init(txn):
                    old = txn.get(_UUID_KEY)
                    if old is None:
                        txn.put(_UUID_KEY, fresh)
                    return old or fresh
                raw = self.backend.update_refs(init)
            if raw is not None:  # a meta entry carries no checksum: it must look like one
                raw = bytes(raw)
                if len(raw) != 32 or any(c not in b"0123456789abcdef" for c in raw):
                    raise CorruptRef(f"store {getattr(self.backend, 'path', '')}: its identity (meta/uuid) "
                                     f"is damaged: {raw[:40]!r}")
            u = self._uuid = raw.decode() if raw is not None else None
        return u

    # -- writing --------------------------------------------------------------

    def put(self, obj: Object) -> PutResult:
        """Store one object (small ones; use :meth:`put_payload` for large data)."""
        return self.put_many([obj])[0]

    def put_many(self, objs: Iterable[Object | tuple[ObjectId, Object]]) -> list[PutResult]:
        """Store objects, given bare or as ``(id, object)`` pairs with known ids.

        Objects are committed in the order given, so put children before the
        objects that refer to them. An id given twice is stored once; only its
        first occurrence can report ``new``.
        """
        pairs = [o if isinstance(o, tuple) else (object_id(o), o) for o in objs]
        if not pairs:
            return []
        unique: dict[ObjectId, Object] = {}
        for oid, obj in pairs:
            unique.setdefault(oid, obj)
        self._hold(unique)
        present = self.backend.has_many(list(unique))
        todo = [(oid, obj) for (oid, obj), p in zip(unique.items(), present) if not p]
        new: dict[ObjectId, bool] = {}
        if len(todo) < len(unique):
            # Refresh the write time of those already stored (gc's grace period)
            # before anything that may refer to them is written; re-store any
            # that a concurrent delete removed since has_many.
            old = [oid for oid, p in zip(unique, present) if p]
            gone = set()
            for oid, r in zip(old, self.backend.put_many([(oid, None) for oid in old], durable=False)):
                if r is None:
                    gone.add(oid)
                else:
                    new[oid] = False
            if gone:
                todo = [(oid, obj) for oid, obj in unique.items() if oid in gone or oid not in new]
        if todo:
            big = len(todo) > 1 and sum(_payload_size(o) for _, o in todo) >= _PARALLEL_MIN
            framed = list(shared_pool().map(_frame, todo)) if big else [_frame(p) for p in todo]
            durable = not getattr(self._local, "deferred", False)
            for (oid, _), r in zip(framed, self.backend.put_many(framed, durable=durable)):
                new[oid] = bool(r)
        out = []
        for oid, _ in pairs:
            out.append(PutResult(oid, new[oid]))
            new[oid] = False  # a repeated id was stored by its first occurrence
        return out

    def put_payload(self, codec: str, meta: Mapping[str, Any], buf) -> PutResult:
        """Store a value's encoded bytes, chunked if large; returns the value's id."""
        objs = split_payload(codec, meta, buf)
        return self.put_many(objs)[-1]

    # -- reading --------------------------------------------------------------

    def get(self, oid: ObjectId | str) -> Object:
        """The verified object ``oid``; payloads are copied out of the store.

        Raises:
            NotFound: no such object.
            CorruptObject: the stored bytes do not hash to ``oid``.
        """
        oid = self.as_id(oid)
        with self.backend.reading() as r:
            enc = self._verified(r, oid)
            obj = _decode(oid, enc)
            if isinstance(obj, (Blob, Chunk)) and not isinstance(obj.data, bytes):
                obj = type(obj)(*[bytes(f) if f is obj.data else f for f in _fields(obj)])
        return obj

    def read_payload(self, oid: ObjectId | str) -> tuple[Blob | Chunked, np.ndarray]:
        """A Blob's or Chunked's header object and its whole payload in a fresh writable array.

        Raises:
            NotFound: the object or one of its chunks is missing.
            CorruptObject: stored bytes do not match their id, or the object is not a payload.
        """
        oid = self.as_id(oid)
        with self.backend.reading() as r:
            jobs: list[_ReadJob] = []
            got = _plan_payload(r, oid, jobs)
            _run_reads(jobs)
            if isinstance(got, _ReadJob):
                jobs = []
                got = _finish_whole(r, got, jobs)
                _run_reads(jobs)
        return got

    def read_payloads(self, oids: Iterable[ObjectId | str],
                      check: Callable[[int, Blob | Chunked, int], None] | None = None,
                      ) -> list[tuple[Blob | Chunked, np.ndarray]]:
        """:meth:`read_payload` of several objects, read in one snapshot.

        Each payload is copied (or decompressed) out of the store into a fresh
        array and hashed as it lands there: the bytes checked against the id
        are the bytes the caller gets. With enough work (large or compressed
        payloads) the pieces of all the payloads are spread over the shared
        pool, so a DataFrame's columns decompress on every core.

        Args:
            oids: the payloads' ids.
            check: called as ``check(i, header, nbytes)`` once the ``i``-th
                payload's header is read, before its buffer is allocated;
                it raises to refuse the payload (a reader that knows what it
                needs refuses a crafted size without allocating it).

        Raises:
            NotFound: an object or one of its chunks is missing.
            CorruptObject: stored bytes do not match their id, or an object is not a payload.
        """
        oids = [self.as_id(o) for o in oids]
        checks = [None] * len(oids) if check is None else [functools.partial(check, i) for i in range(len(oids))]
        with self.backend.reading() as r:
            jobs: list[_ReadJob] = []
            plans = [_plan_payload(r, oid, jobs, c) for oid, c in zip(oids, checks)]
            _run_reads(jobs)
            # Large compressed objects were only known to be payloads once decompressed.
            late: list[_ReadJob] = []
            plans = [p if not isinstance(p, _ReadJob) else _finish_whole(r, p, late, c)
                     for p, c in zip(plans, checks)]
            _run_reads(late)
        return plans

    def has(self, oid: ObjectId | str) -> bool:
        """Whether ``oid`` is stored (not verified)."""
        return self.backend.has_many([self.as_id(oid)])[0]

    def delete(self, oids: Iterable[ObjectId], older_than: float | None = None,
               keep: Callable | None = None) -> tuple[int, int]:
        """Delete objects (only those last written before ``older_than``); returns (count, bytes).

        ``keep(reader, refs, state)`` is called inside each delete transaction
        (see :meth:`Backend.delete_many`) and returns ids to spare.
        """
        if keep is not None and self._sealed:  # it reads refs: verified like every read
            user_keep = keep

            def keep(reader, refs, state):
                sealed = SealedTxn(refs)
                return user_keep(reader, sealed, sealed if state is refs else SealedTxn(state))
        return self.backend.delete_many(oids, older_than, keep)

    def iter_ids(self, prefix: str = "") -> Iterator[ObjectId]:
        """Every stored id, in order, optionally only those starting with hex ``prefix``."""
        prefix = prefix.lower()
        raw = bytes.fromhex(prefix[: len(prefix) // 2 * 2])
        for key, _size, _t in self.backend.iter_ids(raw):
            if key.hex().startswith(prefix):
                yield ObjectId(key)

    def resolve(self, prefix: str) -> ObjectId:
        """The full id a unique hex prefix (>= 4 characters) names, like git.

        Raises:
            NotFound: nothing matches, or the prefix is not hex.
            AmbiguousPrefix: more than one object matches.
        """
        p = prefix.lower()
        if len(p) < MIN_PREFIX or len(p) > HEX_CHARS or any(c not in "0123456789abcdef" for c in p):
            raise NotFound(f"{prefix!r} is not an id or an id prefix of {MIN_PREFIX}..{HEX_CHARS} hex characters")
        found = []
        for oid in self.iter_ids(p):
            found.append(oid)
            if len(found) > 5:
                break
        if not found:
            raise NotFound(f"no object matches {prefix!r}")
        if len(found) > 1:
            shown = ", ".join(o.hex()[: len(p) + 4] for o in found[:5])
            raise AmbiguousPrefix(f"{prefix!r} is ambiguous: matches {shown}{'...' if len(found) > 5 else ''}")
        return found[0]

    # -- refs ---------------------------------------------------------------------

    def refs(self):
        """A read-only snapshot of the ref key space (values verified, see ``_refs``)."""
        return (SealedSnapshot if self._sealed else PlainSnapshot)(self.backend.refs())

    def get_ref(self, key: bytes) -> bytes | None:
        """One ref's value (a fast path for the cache lookup).

        Raises:
            CorruptRef: the entry is damaged.
        """
        raw = self.backend.get_ref(key)
        if raw is None or not self._sealed or key.startswith(b"meta/"):
            return raw
        return unseal(key, raw)

    def _txn(self, txn):
        return SealedTxn(txn) if self._sealed else PlainTxn(txn)

    def commit(self, objs: Iterable[Object | tuple], fn: Callable) -> Any:
        """Store new objects and run ``fn(txn)`` on the refs in one durable commit where possible.

        For the end of a run: its record and the refs that point at it become
        visible together, at the cost of one sync. Objects are given bare, as
        ``(id, object)`` pairs, or as ``(id, object, encode(object))`` when the
        caller hashed the encoding already (it is not made twice).
        """
        framed = [_frame(o if isinstance(o, tuple) else (object_id(o), o)) for o in objs]
        # Held only if the backend writes them ahead of the refs (one short-lived write saved per run).
        return self.backend.commit(framed, lambda txn: fn(self._txn(txn)),
                                   hold=lambda: self._hold([oid for oid, _ in framed]))

    def deferred(self):
        """Within this context, object writes skip their sync; the next durable commit covers them."""
        return _Deferred(self)

    def holding(self, run_id: int) -> "_Holding":
        """Within this context, every id this thread writes is held for run ``run_id``.

        The ids are recorded in the short-lived state before their bytes are
        written (or their existence is relied on), so a concurrent gc never
        deletes them however short its grace period. The run's end clears
        them (``hold_key(run_id)`` prefix) once its record is committed.
        """
        return _Holding(self, run_id)

    def _hold(self, oids) -> None:
        rid = getattr(self._local, "hold", None)
        if rid is None or not oids:
            return
        keys = [hold_key(rid, oid) for oid in oids]

        def put(txn):
            for k in keys:
                txn.put(k, b"")
        self.update_state(put)

    def state_refs(self):
        """A read snapshot of the short-lived state alone."""
        return (SealedSnapshot if self._sealed else PlainSnapshot)(self.backend.state_refs())

    def update_state(self, fn: Callable) -> Any:
        """Run ``fn(txn)`` on the short-lived state (leases, runs in progress); no sync."""
        return self.backend.update_state(lambda txn: fn(self._txn(txn)))

    def update_refs(self, fn: Callable, durable: bool = True) -> Any:
        """Run ``fn(txn)`` in one atomic write transaction over refs (durable unless told)."""
        return self.backend.update_refs(lambda txn: fn(self._txn(txn)), durable=durable)

    # -- helpers ------------------------------------------------------------------

    def as_id(self, oid) -> ObjectId:
        """``oid`` as an ObjectId: an ObjectId, 16 raw bytes or 32 hex characters (no prefixes).

        Raises:
            NotFound: anything else.
        """
        if isinstance(oid, ObjectId):
            return oid
        if isinstance(oid, bytes) and len(oid) == 16:
            return ObjectId(oid)
        if isinstance(oid, str) and len(oid) == HEX_CHARS:
            try:
                return ObjectId.from_hex(oid)
            except ValueError:
                pass
        raise NotFound(f"{oid!r} is not a full object id")

    def _verified(self, reader, oid: ObjectId) -> memoryview:
        raw = reader.get(oid)
        if raw is None:
            raise NotFound(f"object {oid.hex()} not found")
        enc = _framing.unframe(oid, raw)
        _verify(oid, enc)
        return enc


class _Holding:
    __slots__ = ("store", "run_id", "before")

    def __init__(self, store, run_id):
        self.store, self.run_id = store, run_id

    def __enter__(self):
        self.before = getattr(self.store._local, "hold", None)
        self.store._local.hold = self.run_id
        return self.store

    def __exit__(self, *exc):
        self.store._local.hold = self.before
        return False


class _Deferred:
    __slots__ = ("store", "before")

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        self.before = getattr(self.store._local, "deferred", False)
        self.store._local.deferred = True
        return self.store

    def __exit__(self, *exc):
        self.store._local.deferred = self.before
        return False


def _fields(obj):
    return [getattr(obj, f) for f in obj.__dataclass_fields__]


def _payload_size(obj) -> int:
    data = getattr(obj, "data", None)
    return 0 if data is None else memoryview(data).nbytes


def _frame(item):
    """``(id, stored form)`` of ``(id, object)`` or ``(id, object, its encoding)``."""
    oid, obj = item[0], item[1]
    header, payload = item[2] if len(item) == 3 else encode(obj)
    return oid, _framing.frame(header, payload, signature_for(oid, obj))


def _verify(oid: ObjectId, enc) -> None:
    if digest((enc,)) != oid:
        raise CorruptObject(f"object {oid.hex()} is corrupt: its bytes do not match its id")


def _decode(oid: ObjectId, enc) -> Object:
    """``decode(enc)``, a malformed object reported as CorruptObject naming ``oid``."""
    try:
        return decode(enc)
    except ValueError as e:
        raise CorruptObject(f"object {oid.hex()} is corrupt: {e}") from e


def _own(enc: memoryview, data: memoryview) -> np.ndarray:
    """``data`` (a view into the decompressed ``enc``) as an array, without copying."""
    import numpy as np

    base = np.frombuffer(enc, np.uint8)
    start = enc.nbytes - data.nbytes
    return base[start:]


# Reading is copying (~10 GB/s) or decompressing (~1 GB/s) plus hashing; a
# byte to decompress weighs this many bytes to copy.
_ZSTD_WEIGHT = 8
# Below this much weighed work a helper thread's hand-off and GIL handovers
# cost more than the second core saves (a 10 MB raw hit + load measured
# 1.7-3.5 ms serial vs 1.9-10 ms threaded on a busy 2-core machine, and the
# copy of a 10 MB load is bound by memory, not by one core); two compressed
# chunks (~3.5 ms each) are worth a helper.
_PARALLEL_READ_WORK = 6 * CHUNK_SIZE
# Compressed objects up to this size are decompressed and decoded at once.
_SMALL_ZSTD = 64 << 10


class _ReadJob:
    """One piece of a read: stored bytes to copy or decompress into ``dest``, hashed to ``oid``.

    ``head`` is the encoding before the payload: ``None`` when it is part of
    the compressed frame (a whole object decompressed into ``dest``), else
    the bytes the stored encoding must start with. ``checked`` says the
    stored bytes are known to start with it (a blob's header parsed from them).
    """

    __slots__ = ("oid", "flag", "body", "head", "dest", "weight", "checked")

    def __init__(self, oid, flag, body, head, dest, checked=False):
        self.oid, self.flag, self.body, self.head, self.dest = oid, flag, body, head, dest
        self.weight = dest.nbytes * (_ZSTD_WEIGHT if flag == _framing.ZSTD else 1)
        self.checked = checked

    def run(self) -> None:
        import numpy as np

        h = hasher()
        head, dest, body = self.head, self.dest, self.body
        if self.flag == _framing.RAW:
            n = len(head)
            if not self.checked and (body.nbytes != n + dest.nbytes or body[:n] != head):
                raise CorruptObject(f"object {self.oid.hex()} is corrupt: not a payload of {dest.nbytes} bytes")
            h.update(head)
            src = np.frombuffer(body, np.uint8, offset=n)
            _framing.copy_hashed(src, dest, h)
        elif head is None:
            _framing.decompress_parts(self.oid, body, [dest], h)
        else:
            got = bytearray(len(head))
            _framing.decompress_parts(self.oid, body, [got, dest], h)
            if got != head:
                raise CorruptObject(f"object {self.oid.hex()} is corrupt: not a payload of {dest.nbytes} bytes")
        # Verify the bytes the caller gets, not the store's copy of them.
        if h.digest() != self.oid:
            raise CorruptObject(f"object {self.oid.hex()} is corrupt: its bytes do not match its id")


def _run_reads(jobs: list[_ReadJob]) -> None:
    if len(jobs) < 2 or sum(j.weight for j in jobs) < _PARALLEL_READ_WORK:
        for job in jobs:
            job.run()
        return
    jobs.sort(key=lambda j: -j.weight)  # longest first: the threads finish together
    run_all(_ReadJob.run, [(j,) for j in jobs])


def _plan_payload(reader, oid: ObjectId, jobs: list, check=None):
    """``(header, array)`` of payload ``oid`` with the array's reads appended to ``jobs``,
    or a job decompressing the whole object when only its bytes can tell what it is.

    ``check(header, nbytes)`` runs before a payload's buffer is allocated.
    """
    import numpy as np

    raw = reader.get(oid)
    if raw is None:
        raise NotFound(f"object {oid.hex()} not found")
    flag, body = _framing.split(oid, raw)
    if flag == _framing.ZSTD:
        size = _framing.content_size(oid, body)
        if size > _SMALL_ZSTD:
            if size > _framing.VERIFY_OVER:
                _framing.verify_streamed(oid, body, size)  # before a buffer of that size exists
            job = _ReadJob(oid, flag, body, None, np.empty(size, np.uint8))
            jobs.append(job)
            return job
        enc = memoryview(_framing.decompress_into(oid, body))
        _verify(oid, enc)
        obj = _decode(oid, enc)
        if isinstance(obj, Blob):
            head = Blob(obj.codec, obj.meta, b"")
            if check is not None:
                check(head, memoryview(obj.data).nbytes)
            return head, np.frombuffer(obj.data, np.uint8).copy()
    else:
        # The header is parsed before the bytes are verified (the payload is
        # verified as it is copied): a damaged header fails that check.
        obj = _decode(oid, body)
        if isinstance(obj, Blob):
            data = memoryview(obj.data)
            head = Blob(obj.codec, obj.meta, b"")
            if check is not None:
                check(head, data.nbytes)
            out = np.empty(data.nbytes, np.uint8)
            # The payload is the end of the stored body: the job copies it from there.
            jobs.append(_ReadJob(oid, flag, body, body[: body.nbytes - data.nbytes], out, checked=True))
            return head, out
        _verify(oid, body)
    return _plan_chunks(reader, oid, obj, jobs, check)


def _plan_chunks(reader, oid: ObjectId, obj, jobs: list, check=None):
    import numpy as np

    if not isinstance(obj, Chunked):
        raise CorruptObject(f"object {oid.hex()} is a {obj.kind}, not a value payload")
    if check is not None:
        check(obj, obj.size)
    # Every chunk must be present, and stored at the size its slice needs,
    # before a buffer of the claimed size is allocated.
    found = []
    for i, cid in enumerate(obj.chunks):
        raw = reader.get(cid)
        if raw is None:
            raise NotFound(f"chunk {cid.hex()} of object {oid.hex()} not found")
        flag, body = _framing.split(cid, raw)
        n = min(CHUNK_SIZE, obj.size - i * CHUNK_SIZE)
        head = chunk_header(n)
        stored = body.nbytes if flag == _framing.RAW else _framing.content_size(cid, body)
        if stored != len(head) + n:
            raise CorruptObject(f"object {cid.hex()} is corrupt: not a chunk of {n} bytes "
                                f"(chunk {i} of object {oid.hex()})")
        found.append((cid, flag, body, head))
    out = np.empty(obj.size, dtype=np.uint8)
    for i, (cid, flag, body, head) in enumerate(found):
        dest = out[i * CHUNK_SIZE : min((i + 1) * CHUNK_SIZE, obj.size)]
        jobs.append(_ReadJob(cid, flag, body, head, dest))
    return obj, out


def _finish_whole(reader, job: _ReadJob, late: list, check=None):
    """The header and payload of an object ``job`` decompressed (and verified) whole."""
    obj = _decode(job.oid, job.dest)
    if isinstance(obj, Blob):
        head = Blob(obj.codec, obj.meta, b"")
        data = memoryview(obj.data)
        if check is not None:
            check(head, data.nbytes)
        return head, _own(memoryview(job.dest), data)
    return _plan_chunks(reader, job.oid, obj, late, check)
