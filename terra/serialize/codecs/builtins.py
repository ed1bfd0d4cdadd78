"""Codecs for Python's own types: primitives, containers and standard-library values.

Layouts (part of the format; golden ids in the tests pin them):

- ``None``/bool/int/float: ``Blob("py", {"type"}, canonical msgpack)``; msgpack
  keeps 1, 1.0 and True apart, ints of any size, -0.0, and one NaN.
- str / bytes / bytearray: ``Blob("str"|"bytes", ...)`` of the raw bytes (chunked
  when large, so a big string is hashed in place).
- dict: ``Tree("dict", ((key, value), ...))`` sorted by the canonical encoding of
  the key entry; list/tuple in order; set/frozenset sorted. Entries are small
  primitives inline or child ids.
- OrderedDict keeps its order; defaultdict records its factory; Counter sorts.
- dataclass / namedtuple: ``Tree`` with the class path in meta and fields in order.
- Enum: ``Tree("enum", (value,), {"class", "name"})``.
- datetime family, Decimal, UUID, paths, complex, range: small Blobs of
  canonical msgpack or text.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import uuid
import zoneinfo
from operator import itemgetter
from typing import Any

import msgpack

from ...errors import CorruptObject, SerializationError
from ...objects import Blob, ObjectId, Tree, canonical_pack
from ...objects.model import EXT_BIGINT
from .. import registry
from .._encode import Encoder
from .pickle import pickle_value

__all__ = ["unpack"]


def _ext_hook(code: int, data: bytes):
    if code == EXT_BIGINT:
        return int.from_bytes(data, "big", signed=True)
    raise SerializationError(f"unknown msgpack extension {code} in a stored value")


def unpack(buf) -> Any:
    """Decode canonical msgpack written by :func:`canonical_pack` (lists stay lists)."""
    return msgpack.unpackb(buf, raw=False, strict_map_key=False, ext_hook=_ext_hook)


# -- primitives ------------------------------------------------------------------------


def _enc_py(enc: Encoder, v) -> ObjectId:
    return enc.emit(Blob("py", {"type": type(v).__name__}, canonical_pack(v)))


def _enc_str(enc: Encoder, v: str) -> ObjectId:
    # surrogatepass: identical to UTF-8 for valid text, and keeps lone surrogates.
    return enc.payload("str", {"type": "str", "len": len(v)}, v.encode("utf-8", "surrogatepass"))


def _enc_bytes(enc: Encoder, v) -> ObjectId:
    return enc.payload("bytes", {"type": type(v).__name__}, v)


def _dec_py(dec, blob, payload):
    return unpack(payload)


def _dec_str(dec, blob, payload):
    return payload.tobytes().decode("utf-8", "surrogatepass")


def _dec_bytes(dec, blob, payload):
    if blob.meta.get("type") == "bytearray":
        return bytearray(payload)
    return payload.tobytes()


def _sum_py(blob) -> dict:
    return {"type": blob.meta.get("type", "py")}


def _sum_str(blob) -> dict:
    return {"type": "str", "len": blob.meta.get("len")}


# -- containers ------------------------------------------------------------------------


_str_packer = msgpack.Packer(use_bin_type=True)


def _sort_key(e) -> bytes:
    """``canonical_pack(e)``, with a fast path for str/bytes (msgpack's encoding is already canonical)."""
    t = type(e)
    if t is str or t is bytes:
        try:
            return _str_packer.pack(e)
        except UnicodeEncodeError:
            pass
    return canonical_pack(e)


def _sorted_unique(enc: Encoder, value, keyed: list[tuple[bytes, Any]]) -> tuple:
    keyed.sort(key=itemgetter(0))
    for a, b in zip(keyed, keyed[1:]):
        if a[0] == b[0]:  # e.g. two distinct NaN keys: they would collapse on load
            raise enc.fail(value, "two of its keys/elements are indistinguishable once stored (NaN?)")
    return tuple(e for _, e in keyed)


def _dict_entries(enc: Encoder, d) -> tuple:
    keyed = []
    for k, v in d.items():
        ke = enc.entry(k, ("key", k))
        keyed.append((_sort_key(ke), (ke, enc.entry(v, ("[]", k)))))
    return _sorted_unique(enc, d, keyed)


def _enc_dict(enc: Encoder, d: dict) -> ObjectId:
    return enc.emit(Tree("dict", _dict_entries(enc, d)))


def _enc_seq(enc: Encoder, v) -> ObjectId:
    entries = tuple(enc.entry(x, ("[]", i)) for i, x in enumerate(v))
    return enc.emit(Tree(type(v).__name__, entries))


def _enc_set(enc: Encoder, v) -> ObjectId:
    keyed = []
    for x in v:
        e = enc.entry(x, ("{}", x))
        keyed.append((_sort_key(e), e))
    return enc.emit(Tree(type(v).__name__, _sorted_unique(enc, v, keyed)))


def _enc_odict(enc: Encoder, d) -> ObjectId:
    # Order is part of an OrderedDict's equality, so it is part of its id.
    entries = tuple((enc.entry(k, ("key", k)), enc.entry(v, ("[]", k))) for k, v in d.items())
    return enc.emit(Tree("OrderedDict", entries))


def _enc_counter(enc: Encoder, d) -> ObjectId:
    return enc.emit(Tree("Counter", _dict_entries(enc, d)))


# Factories a stored defaultdict may name: classes terra itself builds values of.
_FACTORIES = frozenset({list, dict, set, frozenset, tuple, int, float, complex, str, bytes, bytearray, bool,
                        collections.OrderedDict, collections.Counter, collections.defaultdict,
                        collections.deque})


def _is_factory(cls: type) -> bool:
    """Whether a defaultdict stored with factory ``cls`` may call it on load (the one rule)."""
    return cls in _FACTORIES or dataclasses.is_dataclass(cls)


def _enc_defaultdict(enc: Encoder, d) -> ObjectId:
    f = d.default_factory
    if f is None:
        path = None
    elif isinstance(f, type) and _is_factory(f) and registry.importable(f):
        path = registry.class_path(f)
    else:
        return pickle_value(enc, d)  # a lambda or another class: let pickle decide (and explain)
    return enc.emit(Tree("defaultdict", _dict_entries(enc, d), {"factory": path}))


def _dec_dict(dec, tree):
    return {dec.entry(k): dec.entry(v) for k, v in tree.entries}


def _dec_list(dec, tree):
    return [dec.entry(e) for e in tree.entries]


def _dec_tuple(dec, tree):
    return tuple(dec.entry(e) for e in tree.entries)


def _dec_set(dec, tree):
    return {dec.entry(e) for e in tree.entries}


def _dec_frozenset(dec, tree):
    return frozenset(dec.entry(e) for e in tree.entries)


def _dec_odict(dec, tree):
    return collections.OrderedDict((dec.entry(k), dec.entry(v)) for k, v in tree.entries)


def _dec_counter(dec, tree):
    return collections.Counter({dec.entry(k): dec.entry(v) for k, v in tree.entries})


def _dec_defaultdict(dec, tree):
    path = tree.meta.get("factory")
    factory = registry.resolve_class(path, "a defaultdict factory", _is_factory, dec) if path else None
    return collections.defaultdict(factory, {dec.entry(k): dec.entry(v) for k, v in tree.entries})


# -- classes: dataclasses, namedtuples, enums ------------------------------------------


def _is_namedtuple(v) -> bool:
    return isinstance(v, tuple) and hasattr(type(v), "_fields") and hasattr(v, "_asdict")


def _enc_dataclass(enc: Encoder, v) -> ObjectId | None:
    cls = type(v)
    names = [f.name for f in dataclasses.fields(v)]
    extra = getattr(v, "__dict__", None)
    if not registry.importable(cls) or (extra and set(extra) - set(names)):
        # Not findable again by path, or state beyond its fields: pickle decides.
        return None
    entries = tuple((n, enc.entry(getattr(v, n), f".{n}")) for n in names)
    return enc.emit(Tree("dataclass", entries, {"class": registry.class_path(cls)}))


def _dec_dataclass(dec, tree):
    cls = registry.resolve_class(tree.meta.get("class"), "a dataclass", dataclasses.is_dataclass, dec)
    known = {f.name for f in dataclasses.fields(cls)}
    for name, _ in tree.entries:
        if name not in known:
            raise CorruptObject(f"object {dec.oid.hex()}: {name!r} is not a field of {tree.meta['class']}")
    obj = cls.__new__(cls)
    # object.__setattr__: works for frozen dataclasses, and skips __init__ side effects.
    for name, e in tree.entries:
        object.__setattr__(obj, name, dec.entry(e))
    return obj


def _enc_namedtuple(enc: Encoder, v) -> ObjectId | None:
    cls = type(v)
    if not registry.importable(cls):
        return None
    entries = tuple(enc.entry(x, f".{n}") for n, x in zip(cls._fields, v))
    return enc.emit(Tree("namedtuple", entries, {"class": registry.class_path(cls)}))


def _is_namedtuple_type(cls: type) -> bool:
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple) and hasattr(cls, "_make")


def _dec_namedtuple(dec, tree):
    cls = registry.resolve_class(tree.meta.get("class"), "a namedtuple", _is_namedtuple_type, dec)
    if len(tree.entries) != len(cls._fields):
        raise CorruptObject(f"object {dec.oid.hex()}: {len(tree.entries)} values for the "
                            f"{len(cls._fields)} fields of {tree.meta['class']}")
    return cls._make(dec.entry(e) for e in tree.entries)


def _enc_enum(enc: Encoder, v: enum.Enum) -> ObjectId | None:
    cls = type(v)
    if not registry.importable(cls):
        return None
    meta = {"class": registry.class_path(cls), "name": v.name}
    return enc.emit(Tree("enum", (enc.entry(v.value, ".value"),), meta))


def _dec_enum(dec, tree):
    cls = registry.resolve_class(tree.meta.get("class"), "an Enum", lambda c: issubclass(c, enum.Enum), dec)
    return cls(dec.entry(tree.entries[0]))


def _sum_class_tree(store, tree) -> dict:
    return {"type": tree.meta.get("class", tree.type).replace(":", "."), "len": len(tree.entries)}


def _find_classes(enc: Encoder, v) -> ObjectId | None:
    if isinstance(v, enum.Enum):
        return _enc_enum(enc, v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _enc_dataclass(enc, v)
    if _is_namedtuple(v):
        return _enc_namedtuple(enc, v)
    return None


# -- standard-library values -----------------------------------------------------------


class _Unsupported(Exception):
    pass


def _pack_tz(tz) -> Any:
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        off = tz.utcoffset(None)
        name = tz.tzname(None)
        # Record the name only when it was given explicitly (it shows in repr).
        explicit = name if name != dt.timezone(off).tzname(None) else None
        return ["fixed", off.days, off.seconds, off.microseconds, explicit]
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return ["zoneinfo", tz.key]
    raise _Unsupported


def _unpack_tz(p):
    if p is None:
        return None
    if p[0] == "fixed":
        off = dt.timedelta(days=p[1], seconds=p[2], microseconds=p[3])
        return dt.timezone(off, p[4]) if p[4] is not None else dt.timezone(off)
    if p[0] == "zoneinfo":
        return zoneinfo.ZoneInfo(p[1])
    raise SerializationError(f"unknown stored time zone {p!r}")


def _enc_temporal(enc: Encoder, v) -> ObjectId:
    t = type(v)
    try:
        if t is dt.datetime:
            f = [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold, _pack_tz(v.tzinfo)]
        elif t is dt.date:
            f = [v.year, v.month, v.day]
        elif t is dt.time:
            f = [v.hour, v.minute, v.second, v.microsecond, v.fold, _pack_tz(v.tzinfo)]
        else:
            f = [v.days, v.seconds, v.microseconds]
    except _Unsupported:
        return pickle_value(enc, v)  # pytz, dateutil...: their own classes
    return enc.emit(Blob("datetime", {"type": "datetime." + t.__name__}, canonical_pack(f)))


def _dec_temporal(dec, blob, payload):
    f = unpack(payload)
    kind = blob.meta["type"]
    if kind == "datetime.datetime":
        return dt.datetime(*f[:7], tzinfo=_unpack_tz(f[8]), fold=f[7])
    if kind == "datetime.date":
        return dt.date(*f)
    if kind == "datetime.time":
        return dt.time(*f[:4], tzinfo=_unpack_tz(f[5]), fold=f[4])
    return dt.timedelta(days=f[0], seconds=f[1], microseconds=f[2])


_PATHS = {c.__name__: c for c in (pathlib.PurePosixPath, pathlib.PureWindowsPath,
                                   pathlib.PosixPath, pathlib.WindowsPath, pathlib.Path)}


def _enc_path(enc: Encoder, v) -> ObjectId:
    data = str(v).encode("utf-8", "surrogateescape")
    return enc.emit(Blob("path", {"type": "pathlib." + type(v).__name__}, data))


def _dec_path(dec, blob, payload):
    cls = _PATHS[blob.meta["type"].rpartition(".")[2]]
    return cls(payload.tobytes().decode("utf-8", "surrogateescape"))


def _enc_decimal(enc: Encoder, v) -> ObjectId:
    # str() is exact: sign, digits, exponent, NaN/sNaN/Infinity.
    return enc.emit(Blob("decimal", {"type": "decimal.Decimal"}, str(v).encode()))


def _dec_decimal(dec, blob, payload):
    return decimal.Decimal(payload.tobytes().decode())


def _enc_uuid(enc: Encoder, v) -> ObjectId:
    return enc.emit(Blob("uuid", {"type": "uuid.UUID"}, v.bytes))


def _dec_uuid(dec, blob, payload):
    return uuid.UUID(bytes=payload.tobytes())


def _enc_complex(enc: Encoder, v) -> ObjectId:
    return enc.emit(Blob("complex", {"type": "complex"}, canonical_pack([v.real, v.imag])))


def _dec_complex(dec, blob, payload):
    re, im = unpack(payload)
    return complex(re, im)


def _enc_range(enc: Encoder, v) -> ObjectId:
    return enc.emit(Blob("range", {"type": "range"}, canonical_pack([v.start, v.stop, v.step])))


def _dec_range(dec, blob, payload):
    return range(*unpack(payload))


# -- registration ----------------------------------------------------------------------

PROVIDES = registry.Codec(
    finder=_find_classes,
    exact={
        type(None): _enc_py, bool: _enc_py, int: _enc_py, float: _enc_py,
        str: _enc_str, bytes: _enc_bytes, bytearray: _enc_bytes,
        dt.datetime: _enc_temporal, dt.date: _enc_temporal, dt.time: _enc_temporal, dt.timedelta: _enc_temporal,
        **dict.fromkeys(set(_PATHS.values()), _enc_path),
        decimal.Decimal: _enc_decimal, uuid.UUID: _enc_uuid, complex: _enc_complex, range: _enc_range,
    },
    containers={
        dict: _enc_dict, list: _enc_seq, tuple: _enc_seq, set: _enc_set, frozenset: _enc_set,
        collections.OrderedDict: _enc_odict, collections.Counter: _enc_counter,
        collections.defaultdict: _enc_defaultdict,
    },
    blobs={
        "py": _dec_py, "str": _dec_str, "bytes": _dec_bytes, "datetime": _dec_temporal, "path": _dec_path,
        "decimal": _dec_decimal, "uuid": _dec_uuid, "complex": _dec_complex, "range": _dec_range,
    },
    trees={
        "dict": _dec_dict, "list": _dec_list, "tuple": _dec_tuple, "set": _dec_set,
        "frozenset": _dec_frozenset, "OrderedDict": _dec_odict, "Counter": _dec_counter,
        "defaultdict": _dec_defaultdict, "dataclass": _dec_dataclass, "namedtuple": _dec_namedtuple,
        "enum": _dec_enum,
    },
    summaries={"py": _sum_py, "str": _sum_str,
               **{"tree:" + t: _sum_class_tree for t in ("dataclass", "namedtuple", "enum")}},
)
