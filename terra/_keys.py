"""Cache keys: binding a call and hashing it into the key its runs are cached under.

A key is the xxh3-128 of a canonical, type-tagged msgpack structure
``[KEY_FORMAT, identity, code, named, *args, **kwargs]`` (see
:func:`_cache_key`); :func:`_plain_key` builds the same bytes without binding
for the common call, which is what a cache hit costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack
import xxhash

from .errors import SerializationError
from .files import FileInput, is_file_arg
from .objects import ObjectId, is_inline
from .store import Store

if TYPE_CHECKING:
    from .task import Task


def _entry(value, hash_only: bool, store: Store):
    """A value as a key or record holds it: itself if inline, else its ObjectId (hashed only, or stored)."""
    if is_inline(value):
        return value
    ref = getattr(value, "__terra_ref__", None)
    if isinstance(ref, ObjectId):
        return ref
    from .serialize import hash_value, store_value

    return hash_value(value) if hash_only else store_value(store, value)


#: Names the layout of the packed key below; change it whenever the layout changes.
KEY_FORMAT = "terra-call-2"


def _key_default(obj):
    if type(obj) is ObjectId:
        return msgpack.ExtType(0, bytes(obj))
    raise TypeError(f"unexpected {type(obj).__name__} in a cache key")


# Every value in a key is an exact None/bool/int/float/str/bytes (packed by
# msgpack in a family of its own: nil, bool, int, float64 with all its bits,
# str, bin) or an ObjectId (extension type 0): strict_types sends every
# subclass, ObjectId included, to _key_default instead of packing it as its base.
_key_packer = msgpack.Packer(use_bin_type=True, strict_types=True, default=_key_default)


def _cache_key(t: Task, named: list, var_positional: list, var_keyword: list) -> bytes:
    """xxh3-128 of the packed ``[KEY_FORMAT, identity, code, named, *args, **kwargs]``.

    ``named`` is ``[[name, entry], ...]`` sorted by name, ``var_positional``
    ``[entry, ...]`` in order, ``var_keyword`` ``[[key, entry], ...]`` sorted
    by key; an entry is an inline value or an ObjectId. Each part has its own
    slot, so no argument of one kind can pass for one of another.
    """
    code = t._code()
    return xxhash.xxh3_128_digest(_key_packer.pack([KEY_FORMAT, t.identity, code, named, var_positional,
                                                    var_keyword]))


def _plain_key(t: Task, args: tuple) -> bytes | None:
    """The cache key of a call passing inline values to every parameter by position (plain signature), else None.

    The same key as :func:`_call_key` gives, without binding (such a call has
    no defaults to apply, no files to hash and no values to hash as objects),
    and the same bytes as :func:`_cache_key` packs: msgpack writes an array
    as its header then each item, so the parts that depend only on the task
    and its code are packed once per code version and only the arguments on
    every call.
    """
    if len(args) != t._n_plain:
        return None
    for a in args:
        if not is_inline(a):
            return None
    code = t._code()  # revalidated on every call
    head = t._key_head
    if head is None or head[0] != code or head[1] != t.identity:
        head = t._key_head = _plain_key_head(t, code)
    prefix, pairs = head[2], head[3]
    pack = _key_packer.pack
    if len(pairs) == 1:  # the common one-parameter task: no list to build
        pair, i = pairs[0]
        return xxhash.xxh3_128_digest(prefix + pair + pack(args[i]) + _NO_VARIADICS)
    return xxhash.xxh3_128_digest(prefix + b"".join([pair + pack(args[i]) for pair, i in pairs]) + _NO_VARIADICS)


def _plain_key_head(t: Task, code: str) -> tuple:
    """The constant parts of a plain call's key: ``(code, identity, prefix, ((pair, position), ...))``.

    ``prefix`` packs the outer array's header, ``KEY_FORMAT``, identity, code
    and the header of ``named``; each ``pair`` packs the header and name of a
    ``[name, value]`` item, its value taken from ``args[position]``.
    """
    pk = _key_packer
    prefix = pk.pack_array_header(6) + pk.pack(KEY_FORMAT) + pk.pack(t.identity) + pk.pack(code) \
        + pk.pack_array_header(len(t._key_order))
    pairs = tuple((pk.pack_array_header(2) + pk.pack(name), i) for name, i in t._key_order)
    return code, t.identity, prefix, pairs


def _call_key(t: Task, bound: dict, store: Store) -> bytes:
    """The cache key of a bound call (``cache_ignored_args`` left out)."""
    ignored = t.cache_ignored
    where = None
    try:
        if t._simple:
            named = [[k, v if is_inline(v) else _entry(v, True, store)] for k, v in sorted(bound.items())
                     if k not in ignored]
            return _cache_key(t, named, _EMPTY, _EMPTY)
        named, var_pos, var_kw = [], [], []
        for where, v in sorted(bound.items()):
            if where in ignored:
                continue
            if where == t._var_pos:
                var_pos = [x if is_inline(x) else _entry(x, True, store) for x in v]
            elif where == t._var_kw:
                var_kw = [[k, x if is_inline(x) else _entry(x, True, store)] for k, x in sorted(v.items())
                          if k not in ignored]
            else:
                named.append([where, v if is_inline(v) else _entry(v, True, store)])
        return _cache_key(t, named, var_pos, var_kw)
    except SerializationError as e:
        if where is None:  # the simple path does not track it: find the argument again
            where = next((k for k, v in bound.items() if k not in ignored and not _hashable(v, store)), "")
        raise SerializationError(f"task {t.name}: cannot hash argument {where} for the cache key: {e} (an "
                                 "argument listed in cache_ignored_args is left out of the key)") from None


def _hashable(v, store: Store) -> bool:
    try:
        _entry(v, True, store)
    except SerializationError:
        return False
    return True


_EMPTY: list = []
_NO_VARIADICS = _key_packer.pack(_EMPTY) + _key_packer.pack(_EMPTY)  # the key's *args and **kwargs of a plain call


def _file_inputs(t: Task, bound: dict, store: Store) -> None:
    """Replace ``Path``/``File`` arguments in ``bound`` by FileInputs, hashing their content."""
    if t._simple:
        for name, v in bound.items():
            if is_file_arg(v):
                bound[name] = FileInput(v, t.name, name, store)
        return
    for name, v in bound.items():
        if name == t._var_pos and any(map(is_file_arg, v)):
            bound[name] = tuple(FileInput(x, t.name, f"{name}[{i}]", store) if is_file_arg(x) else x
                                for i, x in enumerate(v))
        elif name == t._var_kw and any(map(is_file_arg, v.values())):
            bound[name] = {k: FileInput(x, t.name, f"{name}[{k!r}]", store) if is_file_arg(x) else x
                           for k, x in v.items()}
        elif is_file_arg(v):
            bound[name] = FileInput(v, t.name, name, store)


def _prepare(t: Task, args, kwargs, store: Store) -> tuple[dict, dict, bytes]:
    """Bind a call: ``(bound arguments, arguments recorded, cache key)``."""
    if not kwargs and len(args) == t._n_plain:
        bound = dict(zip(t._positional, args))  # what _bind returns for such a call, without its checks
        key = _plain_key(t, args)
        if key is not None:
            return bound, (_dumped(t, bound) if t.no_dump else bound), key
    else:
        bound = t._bind(args, dict(kwargs) if kwargs else {})
    _file_inputs(t, bound, store)
    key = _call_key(t, bound, store)
    dumped = _dumped(t, bound) if t.no_dump else bound
    return bound, dumped, key


def _dumped(t: Task, bound: dict) -> dict:
    """The arguments a run records: ``bound`` without ``no_dump_args`` (names or ``**kwargs`` keys)."""
    drop = t.no_dump
    out = {k: v for k, v in bound.items() if k not in drop}
    if t._var_kw in out:
        out[t._var_kw] = {k: v for k, v in out[t._var_kw].items() if k not in drop}
    return out
