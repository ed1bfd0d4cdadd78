"""Values in code fingerprints: hashed by value once, revalidated by a cheap content guard on every call.

A value is hashed with :func:`terra.serialize.hash_value` (the id
``terra.hash`` gives) unless it is over :data:`MAX_CONST_BYTES`; then its part
says ``unhashed: ...`` (never skipped silently) and ``terra why`` lists it.

:func:`content_guard` is what a fingerprint rechecks on every call for each
mutable value it covers. Containers up to :data:`GUARD_ITEMS` items are
checked in full (exactly: types and values), larger ones by their length and a
spread sample of items; numpy arrays by shape, strides, dtype and up to
:data:`GUARD_BYTES` bytes (the whole buffer when small, whole elements at an
even stride when not, the first and last always). The trade-off: an in-place
write into a large container or array that touches no sampled item is not seen
by the process that made it (a fresh process hashes the value whole).
Re-hashing a 100 MB array on every call would cost about 10 ms per cache hit,
a thousand times a hit's cost; the guard costs a few microseconds.
"""

from __future__ import annotations

import enum

import xxhash

MAX_CONST_BYTES = 1 << 26  #: values larger than this (64 MiB) are recorded as not hashed
GUARD_ITEMS = 512  #: items of a mutable container revalidated exactly on every call
GUARD_BYTES = 1 << 14  #: bytes of a numpy array revalidated on every call

ATOMS = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis))


def mutable(v) -> bool:
    """True if the value can change in place, so that its content is guarded and not only its binding."""
    if isinstance(v, ATOMS) or isinstance(v, enum.Enum):
        return False
    if type(v) in (tuple, frozenset):
        return any(mutable(x) for x in v)
    return True


def value_part(value) -> str:
    """A value's part of a fingerprint: the hex of ``hash_value(value)``, or ``unhashed: why``."""
    size = _size(value, MAX_CONST_BYTES)
    if size > MAX_CONST_BYTES:
        return f"unhashed: {type(value).__name__} over {MAX_CONST_BYTES >> 20} MiB"
    from .serialize import hash_value

    try:
        return hash_value(value).hex()
    except Exception as e:  # noqa: BLE001 - recorded, never skipped silently
        return f"unhashed: {type(value).__name__} cannot be hashed ({type(e).__name__})"


def _size(v, limit: int, depth: int = 0) -> int:
    """Approximate byte size of a value, stopping once past ``limit``."""
    nbytes = getattr(v, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(v, (str, bytes, bytearray)):
        return len(v)
    if depth > 50:
        return limit + 1  # a structure this deep is not a constant to hash on every import
    total = 0
    if isinstance(v, dict):
        items = (x for kv in v.items() for x in kv)
    elif isinstance(v, (list, tuple, set, frozenset)):
        items = iter(v)
    elif type(v).__module__.startswith("pandas"):
        try:
            return int(v.memory_usage(deep=True).sum()) if hasattr(v, "columns") else int(v.memory_usage(deep=True))
        except Exception:  # noqa: BLE001
            return 0
    elif hasattr(v, "__dict__") and not isinstance(v, type):
        items = iter(vars(v).values())
    else:
        return 8
    for x in items:
        total += 8 + _size(x, limit - total, depth + 1)
        if total > limit:
            break
    return total


def content_guard(v) -> int:
    """A cheap digest of a mutable value's content, recomputed when a fingerprint is revalidated."""
    h = xxhash.xxh3_64()
    _feed(v, h, [GUARD_ITEMS])
    return h.intdigest()


def _feed(v, h, budget: list) -> None:
    budget[0] -= 1
    t = type(v)
    h.update(t.__name__.encode())
    if t is str:
        h.update(v.encode("utf-8", "surrogatepass"))
    elif t is bytes or t is bytearray:
        h.update(v)
    elif t in (int, float, bool, complex, type(None)) or isinstance(v, enum.Enum):
        h.update(repr(v).encode())
    elif t in (list, tuple):
        h.update(len(v).to_bytes(8, "little"))
        for x in _spread(v, budget):
            _feed(x, h, budget)
    elif t is dict:
        h.update(len(v).to_bytes(8, "little"))
        n = max(budget[0], 8)
        for i, (k, x) in enumerate(v.items()):
            if i >= n:
                break
            _feed(k, h, budget)
            _feed(x, h, budget)
    elif t in (set, frozenset):
        h.update(len(v).to_bytes(8, "little"))
        if len(v) <= budget[0]:
            for x in v:  # the same object iterates in the same order until it changes
                _feed(x, h, budget)
    elif t.__module__ == "numpy" and hasattr(v, "dtype") and hasattr(v, "strides"):
        _feed_array(v, h, budget)
    elif t.__module__.startswith("pandas"):
        h.update(repr(getattr(v, "shape", None)).encode())
        if hasattr(v, "columns"):
            for name in v.columns[: max(budget[0], 1)]:
                _feed(repr(name), h, budget)
                _feed_array(v[name].to_numpy(), h, budget)
        elif hasattr(v, "to_numpy"):
            _feed_array(v.to_numpy(), h, budget)
    elif hasattr(v, "__dict__") and not isinstance(v, type):
        h.update(id(v).to_bytes(8, "little"))
        _feed(vars(v), h, budget)
    else:
        h.update(id(v).to_bytes(8, "little"))


def _spread(seq, budget: list):
    n = len(seq)
    room = max(budget[0], 8)
    if n <= room:
        return seq
    step = n / room
    return [seq[int(i * step)] for i in range(room)] + [seq[-1]]


def _feed_array(a, h, budget: list) -> None:
    import numpy as np

    # hash() is per process, as is the guard: it is only compared within this process.
    h.update(hash((a.shape, a.strides, a.dtype.str)).to_bytes(8, "little", signed=True))
    if a.dtype.hasobject:
        for x in _spread(a.reshape(-1), budget):
            _feed(x, h, budget)
        return
    if a.nbytes <= GUARD_BYTES:
        h.update(a if a.flags.c_contiguous else np.ascontiguousarray(a))
        return
    # Whole elements at an even stride (always the first and the last): one gather, one hash.
    flat = a.reshape(-1) if a.flags.c_contiguous else a.ravel(order="K") if a.flags.f_contiguous else None
    if flat is None:
        flat = a[tuple(slice(None, None, max(1, n // 16)) for n in a.shape)].reshape(-1)
    step = max(1, flat.size * flat.itemsize // GUARD_BYTES)
    h.update(flat[::step].tobytes())
    h.update(flat[-1:].tobytes())
