"""Object kinds and their canonical encoding.

Every object is a msgpack array whose first element names its kind, followed
by its fields in a fixed order. Maps are written with keys sorted by their
encoded bytes, floats as float64 with one NaN, ints beyond 64 bits as an
extension type, and references to other objects as extension type 0 holding
the 16 raw id bytes. The id of an object is the xxh3-128 of that encoding.

Payload bytes always come last so that a large payload is hashed (and
written) in place: the encoding is ``header + payload`` and never has to be
joined into one buffer.
"""

from __future__ import annotations

import os
import struct
from operator import is_ as _is
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import msgpack

from .ids import ObjectId, digest
from .pool import run_all

__all__ = [
    "CHUNK_SIZE",
    "Blob",
    "Chunk",
    "Chunked",
    "Object",
    "Run",
    "Tree",
    "canonical_pack",
    "INLINE_MAX",
    "decode",
    "encode",
    "is_inline",
    "object_id",
    "references",
    "split_payload",
    "chunk_header",
]

# Payloads larger than this are split into Chunk objects of this size. Part of
# the format: changing it changes the id of every large value.
CHUNK_SIZE = 4 << 20

EXT_ID = 0
EXT_BIGINT = 1

_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000000))[0]


_packb = msgpack.Packer(use_bin_type=True, strict_types=True).pack
_DOUBLE = struct.Struct(">d")
_NAN_BYTES = b"\xcb" + _DOUBLE.pack(_NAN)
_INT_MIN, _INT_MAX = -(1 << 63), 1 << 64
# Encoded map keys by key: objects reuse a few field names over and over.
_KEYS: dict = {}
# Maps with the same str keys (a run record's fields, say) in the same insertion order:
# the keys and their encodings in canonical order, so they are not sorted again.
_ORDERS: dict[tuple, tuple] = {}


# Strings and bytes up to this many encoded bytes are held inline (in Tree entries,
# run records and cache keys); bigger ones become objects, stored once. Part of
# the format: changing it changes the id of every tree that holds such a value.
INLINE_MAX = 256

_ALWAYS_INLINE = frozenset({type(None), bool, float})


def is_inline(value: Any) -> bool:
    """Whether ``value`` is held inline rather than as an object of its own.

    The one rule for Tree entries, run records and cache keys: ``None``, bools,
    floats, ints that msgpack holds natively (64 bits), UTF-8-encodable strings
    and bytes of at most :data:`INLINE_MAX` encoded bytes. Strings with lone
    surrogates are not valid msgpack text, so they become objects.
    """
    t = type(value)
    if t in _ALWAYS_INLINE:
        return True
    if t is int:
        return _INT_MIN <= value < _INT_MAX
    if t is str:
        if len(value) > INLINE_MAX:  # every character is at least one byte
            return False
        if value.isascii():
            return True
        try:
            return len(value.encode("utf-8")) <= INLINE_MAX
        except UnicodeEncodeError:
            return False
    if t is bytes:
        return len(value) <= INLINE_MAX
    return False


def canonical_pack(obj: Any) -> bytes:
    """Canonical msgpack encoding of a plain value (maps sorted by encoded key)."""
    out = bytearray()
    _pack_into(out, obj)
    return bytes(out)


def _pack_into(out: bytearray, obj: Any) -> None:
    """Append the canonical encoding of ``obj`` to ``out`` (one pass, exact types only)."""
    t = type(obj)
    if t is str or t is bytes or t is bool or obj is None:
        out += _packb(obj)
    elif t is int:
        if _INT_MIN <= obj < _INT_MAX:
            out += _packb(obj)
        else:  # beyond 64 bits: extension type, two's complement big-endian
            n = (obj.bit_length() + 8) // 8
            out += _packb(msgpack.ExtType(EXT_BIGINT, obj.to_bytes(n, "big", signed=True)))
    elif t is float:
        out += _NAN_BYTES if obj != obj else b"\xcb" + _DOUBLE.pack(obj)
    elif t is ObjectId:
        out += b"\xd8\x00"  # fixext 16, extension type 0
        out += obj
    elif t is list or t is tuple:
        out += _array_header(len(obj))
        for v in obj:
            # The common leaves inline: a call per leaf is most of the cost of a record.
            tv = type(v)
            if tv is str or tv is bytes or tv is bool or v is None:
                out += _packb(v)
            else:
                _pack_into(out, v)
    elif t is dict:
        n = len(obj)
        if n < 16:
            out.append(0x80 | n)
        elif n < 0x10000:
            out += b"\xde" + n.to_bytes(2, "big")
        else:
            out += b"\xdf" + n.to_bytes(4, "big")
        names = tuple(obj)
        known = _ORDERS.get(names)
        # The cached order serves only the very key objects it was made from (exact strs):
        # a subclass or anything merely equal to them takes the general path (and is refused there).
        if known is not None and all(map(_is, names, known[0])):
            for k, pk in known[1]:
                out += pk
                v = obj[k]
                tv = type(v)
                if tv is str or tv is bytes or tv is bool or v is None:
                    out += _packb(v)
                else:
                    _pack_into(out, v)
            return
        items = [(_packed_key(k), v) for k, v in obj.items()]
        items.sort(key=_first)
        if len(_ORDERS) < 1024 and all(type(k) is str for k in names):
            _ORDERS[names] = (names, tuple(sorted(((k, _packed_key(k)) for k in names), key=_second)))
        for k, v in items:
            out += k
            tv = type(v)
            if tv is str or tv is bytes or tv is bool or v is None:
                out += _packb(v)
            else:
                _pack_into(out, v)
    else:
        raise TypeError(f"cannot encode {t.__name__} in an object")


def _packed_key(k) -> bytes:
    if type(k) is str:
        b = _KEYS.get(k)
        if b is None:
            b = _packb(k)
            if len(_KEYS) < 4096:
                _KEYS[k] = b
        return b
    return canonical_pack(k)


def _first(item):
    return item[0]


def _second(item):
    return item[1]


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + bytes([n])
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _nbytes(buf) -> int:
    return len(buf) if type(buf) is bytes else memoryview(buf).nbytes


def byte_view(buf) -> memoryview:
    """``buf`` (any C-contiguous buffer) as a flat memoryview of bytes, without copying."""
    view = memoryview(buf)
    if view.ndim == 1 and view.itemsize == 1:
        return view
    if view.nbytes == 0:  # cast() refuses shapes with a zero
        return memoryview(b"")
    return view.cast("B")


@dataclass(frozen=True)
class Blob:
    """The encoded bytes of one value and the codec that decodes them."""

    codec: str
    meta: Mapping[str, Any]
    data: bytes | memoryview

    kind = "blob"

    def _fields(self):
        return [self.codec, self.meta]


@dataclass(frozen=True)
class Chunk:
    """One fixed-size piece of a large payload."""

    data: bytes | memoryview

    kind = "chunk"

    def _fields(self):
        return []


@dataclass(frozen=True)
class Chunked:
    """A large Blob whose payload is the concatenation of Chunk objects."""

    codec: str
    meta: Mapping[str, Any]
    size: int
    chunks: tuple[ObjectId, ...]

    kind = "chunked"

    def _fields(self):
        return [self.codec, self.meta, self.size, list(self.chunks)]


@dataclass(frozen=True)
class Tree:
    """The shape of a container; entries are child ids or inline primitives.

    ``kind`` names the container (``dict``, ``list``, ``tuple``, ``set``,
    ``dir`` ...). For mappings each entry is a ``(key, value)`` pair.
    """

    type: str
    entries: tuple
    meta: Mapping[str, Any] = field(default_factory=dict)

    kind = "tree"

    def _fields(self):
        return [self.type, self.meta, list(self.entries)]


@dataclass(frozen=True)
class Run:
    """The commit-like record of one task call (fields defined by ``terra.runs``)."""

    fields: Mapping[str, Any]

    kind = "run"

    def _fields(self):
        return [self.fields]


Object = Blob | Chunk | Chunked | Tree | Run
_WITH_PAYLOAD = frozenset({Blob, Chunk})
_KINDS = {"blob": Blob, "chunk": Chunk, "chunked": Chunked, "tree": Tree, "run": Run}


def encode(obj: Object) -> tuple[bytes, bytes | memoryview | None]:
    """Canonical encoding of ``obj`` as ``(header, payload)``; payload may be None."""
    out = bytearray()
    fields = obj._fields()
    payload = obj.data if type(obj) in _WITH_PAYLOAD else None
    out += _array_header(1 + len(fields) + (payload is not None))
    _pack_into(out, obj.kind)
    for f in fields:
        _pack_into(out, f)
    if payload is not None:
        out += _bin_header(_nbytes(payload))
    return bytes(out), payload


def object_id(obj: Object) -> ObjectId:
    """The id of ``obj``: xxh3-128 of its canonical encoding."""
    header, payload = encode(obj)
    return digest((header, payload) if payload is not None else (header,))


def _ext_hook(code: int, data: bytes):
    if code == EXT_ID:
        return ObjectId(data)
    if code == EXT_BIGINT:
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"unknown extension type {code}")


def _tuplify(v):
    return tuple(_tuplify(x) for x in v) if type(v) is list else v


def decode(buf) -> Object:
    """Decode a canonical encoding; payload is a zero-copy view of ``buf``.

    Raises:
        ValueError: ``buf`` is not a well-formed object (wrong fields or types,
            a Chunked whose size does not fit its chunk count...). Objects are
            checked against their id before this, so a ValueError here means
            bytes crafted to hash right, not a flipped bit.
    """
    try:
        view = byte_view(buf)
        if view.nbytes <= _SMALL_DECODE:
            cls, fields = _parse_small(view)
            end = view.nbytes
        else:
            cls, fields, end = _parse_large(view)
        if end != view.nbytes:
            raise ValueError("trailing bytes after object")
        _check_fields(cls, fields)
        if cls is Tree:
            t, meta, entries = fields
            return Tree(t, tuple(_tuplify(e) for e in entries), meta)
        if cls is Chunked:
            codec, meta, size, chunks = fields
            return Chunked(codec, meta, size, tuple(chunks))
        return cls(*fields)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - msgpack and malformed fields raise many kinds
        raise ValueError(f"malformed object: {type(e).__name__}: {e}") from e


# Field types per kind, payload excluded (it is checked by the parser).
_FIELD_TYPES = {Blob: (str, dict), Chunk: (), Chunked: (str, dict, int, list), Tree: (str, dict, list),
                Run: (dict,)}


def _check_fields(cls, fields: list) -> None:
    """Refuse an object whose fields do not have the kind's count and types."""
    want = _FIELD_TYPES[cls]
    has_payload = cls is Blob or cls is Chunk
    if len(fields) != len(want) + has_payload:
        raise ValueError(f"a {cls.kind} object needs {len(want) + has_payload} fields, has {len(fields)}")
    for f, t in zip(fields, want):
        if type(f) is not t:
            raise ValueError(f"a {cls.kind} object has a {type(f).__name__} where a {t.__name__} belongs")
    if cls is Chunked:
        size, chunks = fields[2], fields[3]
        # A payload is split into ceil(size / CHUNK_SIZE) chunks, each read into
        # its slice of a buffer of ``size`` bytes: any other count would leave
        # part of that buffer unwritten (or write past it).
        if not chunks or not (len(chunks) - 1) * CHUNK_SIZE < size <= len(chunks) * CHUNK_SIZE:
            raise ValueError(f"a chunked object of {size} bytes cannot have {len(chunks)} chunks")
        if any(type(c) is not ObjectId for c in chunks):
            raise ValueError("a chunked object lists something other than chunk ids")


# Encodings up to this size are parsed in one call (the payload is copied).
_SMALL_DECODE = 4096


def _parse_small(view):
    try:
        items = msgpack.unpackb(view, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True)
    except msgpack.ExtraData as e:
        raise ValueError("trailing bytes after object") from e
    if type(items) is not list or not items:
        raise ValueError("not an object")
    cls = _KINDS.get(items[0]) if type(items[0]) is str else None
    if cls is None:
        raise ValueError(f"unknown object kind {items[0]!r}")
    fields = items[1:]
    if cls is Blob or cls is Chunk:
        if not fields or type(fields[-1]) is not bytes:
            raise ValueError("payload is not binary")
        fields[-1] = memoryview(fields[-1])
    return cls, fields


def _parse_large(view):
    try:
        # Objects with a large payload: parse only the header, slice the payload.
        return _parse(view[: 1 << 16] if len(view) > (1 << 16) else view, view)
    except msgpack.OutOfData:
        return _parse(view, view)


def _parse(head, view):
    up = msgpack.Unpacker(
        raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True,
        max_buffer_size=max(len(view), 1),
    )
    up.feed(head)
    n = up.read_array_header()
    kind = up.unpack()
    cls = _KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown object kind {kind!r}")
    has_payload = cls is Blob or cls is Chunk
    fields = [up.unpack() for _ in range(n - 1 - has_payload)]
    pos = up.tell()
    if not has_payload:
        return cls, fields, pos
    tag = view[pos]
    if tag == 0xC4:
        size, pos = view[pos + 1], pos + 2
    elif tag == 0xC5:
        size, pos = int.from_bytes(view[pos + 1 : pos + 3], "big"), pos + 3
    elif tag == 0xC6:
        size, pos = int.from_bytes(view[pos + 1 : pos + 5], "big"), pos + 5
    else:
        raise ValueError("payload is not binary")
    fields.append(view[pos : pos + size])
    return cls, fields, pos + size


def references(obj: Object) -> Iterator[ObjectId]:
    """Every object id ``obj`` refers to (children, chunks, run inputs...)."""
    if isinstance(obj, Chunked):
        yield from obj.chunks
    elif isinstance(obj, (Tree, Run)):
        stack = [obj.entries if isinstance(obj, Tree) else obj.fields]
        if isinstance(obj, Tree):
            stack.append(obj.meta)
        while stack:
            v = stack.pop()
            if isinstance(v, ObjectId):
                yield v
            elif isinstance(v, (list, tuple)):
                stack.extend(v)
            elif isinstance(v, dict):
                stack.extend(v.values())
                stack.extend(v.keys())


def split_payload(codec: str, meta: Mapping[str, Any], buf) -> list[tuple[ObjectId, Object]]:
    """Objects holding one payload, with their ids; the value's own object is last.

    Payloads up to :data:`CHUNK_SIZE` become one Blob. Larger ones become
    Chunk objects of that size plus a Chunked object listing them, so equal
    regions of two large values share storage. ``buf`` is hashed in place;
    the chunks of a large payload are hashed on several cores.
    """
    view = byte_view(buf)
    n = view.nbytes
    if n <= CHUNK_SIZE:
        blob = Blob(codec, meta, view)
        return [(object_id(blob), blob)]
    chunks = [Chunk(view[off : off + CHUNK_SIZE]) for off in range(0, n, CHUNK_SIZE)]
    out: list[tuple[ObjectId, Object]] = list(zip(parallel_ids(chunks), chunks))
    top = Chunked(codec, meta, n, tuple(oid for oid, _ in out))
    out.append((object_id(top), top))
    return out


# Hashing 100 MB runs at memory speed on one core; two cores hash it ~1.6x
# faster (xxhash releases the GIL). Below this many chunks per thread a
# hand-off costs more than it saves: a 10 MB array (3 chunks of 4 MiB) hashed
# at 44-65% of raw xxh3 with a helper thread and 70-73% on one on a busy
# 2-core machine, so payloads under 24 MiB are hashed on the calling thread.
_PARALLEL_CHUNKS = 6
_CPUS = os.cpu_count() or 1  # asked once: each call reads /sys (~60 µs on a busy VM, a third of hashing 10 MB)


def parallel_ids(objs: list) -> list[ObjectId]:
    """``[object_id(o) for o in objs]``, spread over a few threads when there are many.

    Threads take objects from a shared counter and this thread works too, so
    a busy machine (no core free for a helper) costs no more than hashing
    serially.
    """
    n = len(objs)
    helpers = min(3, _CPUS - 1, n // _PARALLEL_CHUNKS)
    if helpers <= 0:
        return [object_id(o) for o in objs]
    out: list = [None] * n

    def one(i: int) -> None:
        out[i] = object_id(objs[i])

    run_all(one, [(i,) for i in range(n)], helpers)
    return out


def chunk_header(n: int) -> bytes:
    """The encoding of a Chunk of ``n`` bytes up to its payload."""
    return _array_header(2) + b"\xa5chunk" + _bin_header(n)
