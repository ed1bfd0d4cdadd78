"""The fallback: pickle protocol 5 with out-of-band buffers.

Used for anything no other codec accepts. Each new type warns once, because
pickles may not load under other Python or library versions and their bytes
(hence ids) are only as deterministic as the type's pickling.

Safety checks, all cheap relative to pickling itself:

- ``allow_pickle=False`` refuses both writing and reading pickles.
- An object that cannot be pickled raises :class:`SerializationError` naming
  the path inside the value, descending into attributes to find the culprit.
- A type that defines ``__eq__`` is unpickled again and compared: a copy that
  is not equal to the original is refused rather than stored wrong. (Types
  without ``__eq__`` compare by identity, so no comparison can mean anything
  for them.) Comparisons that raise or are ambiguous (arrays) are skipped, and
  so are copies not equal even to themselves (NaN inside).
- Sets and frozensets inside a pickle are written in a canonical order (by the
  pickled bytes of each element), so a value's id does not depend on the
  process's hash seed.
- Loading unpickles only payloads signed with this user's key (see
  :mod:`terra.trust`) unless ``allow_foreign_pickles`` is on.
"""

from __future__ import annotations

import io
import pickle
import threading
from typing import Any

import numpy as np

from ... import trust
from ...config import get_config
from ...errors import PickleRefused, SerializationError, UntrustedObject
from ...objects import ObjectId, Tree
from .. import registry
from ..registry import PickleWarning
from .._encode import Encoder, type_name, warn_user

__all__ = ["fallback", "pickle_value", "unpickle"]

CODEC = "pickle"
assert CODEC in trust.SIGNED_CODECS  # what the store signs is what this module unpickles
CHECK_MAX = 16 << 20  # round-trip comparison only below this many pickled bytes

_warned: set[type] = set()
_warn_lock = threading.Lock()


def _warn_once(cls: type) -> None:
    with _warn_lock:
        if cls in _warned:
            return
        _warned.add(cls)
    warn_user(
        f"terra stores {type_name(cls)} with pickle: it may not load under other Python or "
        f"library versions, and equal values may hash differently; register a codec with "
        f"terra.register_codec or define __terra_write__/__terra_read__ to avoid this",
        PickleWarning,
    )


def pickle_value(enc: Encoder, value: Any, *, warn: bool = True, check: bool = True,
                 codec: str = CODEC) -> ObjectId:
    """Store ``value`` as a pickle; buffers (arrays...) become their own payloads.

    Raises:
        PickleRefused: ``allow_pickle`` is off.
        SerializationError: the value cannot be pickled or does not round-trip.
    """
    cls = type(value)
    if not get_config().allow_pickle:
        raise enc.fail(value, "it needs pickle and allow_pickle is off "
                              "(register a codec for this type, or turn allow_pickle on)", PickleRefused)
    buffers: list[pickle.PickleBuffer] = []
    try:
        try:
            data = _dumps_setless(value, buffers.append)
        except _HoldsSet:
            buffers = []
            data = canonical_dumps(value, buffers.append)
        raws = [b.raw() for b in buffers]
    except BufferError:  # a non-contiguous buffer cannot go out of band: keep it in the pickle
        buffers, raws = [], []
        data = _dumps(enc, value)
    except Exception as e:  # noqa: BLE001 - pickle raises many kinds
        _raise_unpicklable(enc, value, e)
    if check and cls.__eq__ is not object.__eq__:
        _check_round_trip(enc, value, data, raws)
    if warn:
        _warn_once(cls)
    meta = {"type": type_name(cls)}
    if not raws:
        return enc.payload(codec, meta, data)
    main = enc.payload(codec, meta, data)
    parts = [enc.payload(codec + ".buffer", {}, r) for r in raws]
    return enc.emit(Tree(codec, (main, *parts), meta))


def _dumps(enc: Encoder, value: Any) -> bytes:
    try:
        try:
            return _dumps_setless(value)
        except _HoldsSet:
            return canonical_dumps(value)
    except Exception as e:  # noqa: BLE001
        _raise_unpicklable(enc, value, e)


# -- canonical sets ------------------------------------------------------------------------
#
# A set pickles in iteration order, which for str/bytes elements depends on
# the hash seed: the same value would get a new id in every process. The C
# pickler has no hook to reorder exact sets, but its persistent_id hook sees
# every object: a value is pickled by C until a set turns up, and only then
# written again by the Python pickler with sets sorted by their elements' own
# pickles (measured: the hook costs about as much again as C pickling; the
# Python pickler ~15x).


class _HoldsSet(Exception):
    pass


class _SetlessPickler(pickle.Pickler):
    """The C pickler, stopping at the first set or frozenset (output otherwise unchanged)."""

    def persistent_id(self, obj):
        if isinstance(obj, (set, frozenset)):
            raise _HoldsSet
        return None


def _dumps_setless(value: Any, buffer_callback=None) -> bytes:
    f = io.BytesIO()
    _SetlessPickler(f, protocol=5, buffer_callback=buffer_callback).dump(value)
    return f.getvalue()


def _element_key(x: Any) -> bytes:
    try:
        return _dumps_setless(x)
    except _HoldsSet:
        return canonical_dumps(x)


class _CanonicalPickler(pickle._Pickler):  # the Python pickler: its dispatch table can be changed
    dispatch = pickle._Pickler.dispatch.copy()

    def save_set(self, obj):
        # Same opcodes as pickle's own save_set, elements in canonical order.
        self.write(pickle.EMPTY_SET)
        self.memoize(obj)
        items = sorted(obj, key=_element_key)
        for i in range(0, len(items), 1000):
            self.write(pickle.MARK)
            for x in items[i : i + 1000]:
                self.save(x)
            self.write(pickle.ADDITEMS)

    def save_frozenset(self, obj):
        self.write(pickle.MARK)
        for x in sorted(obj, key=_element_key):
            self.save(x)
        if id(obj) in self.memo:  # an element referred back to the set
            self.write(pickle.POP_MARK + self.get(self.memo[id(obj)][0]))
            return
        self.write(pickle.FROZENSET)
        self.memoize(obj)

    dispatch[set] = save_set
    dispatch[frozenset] = save_frozenset

    def reducer_override(self, obj):
        # Subclasses of set reduce to (cls, (list(self),), state): sort that list.
        if isinstance(obj, (set, frozenset)) and type(obj) not in (set, frozenset):
            rv = obj.__reduce_ex__(self.proto)
            if isinstance(rv, tuple) and len(rv) >= 2 and len(rv[1]) == 1 and isinstance(rv[1][0], list):
                return (rv[0], (sorted(rv[1][0], key=_element_key),), *rv[2:])
            return rv
        return NotImplemented


def canonical_dumps(value: Any, buffer_callback=None) -> bytes:
    """``pickle.dumps(value, protocol=5)`` with every set's elements in a canonical order."""
    f = io.BytesIO()
    _CanonicalPickler(f, protocol=5, buffer_callback=buffer_callback).dump(value)
    return f.getvalue()


def _raise_unpicklable(enc: Encoder, value: Any, err: Exception):
    # Name the innermost attribute that fails, so `value["m"].lock` beats `value["m"]`.
    steps = _culprit(value, depth=4)
    if steps:
        enc.steps.extend(s for s, _ in steps)
        try:
            raise enc.fail(steps[-1][1], f"it cannot be pickled ({err})") from err
        finally:
            del enc.steps[-len(steps):]
    raise enc.fail(value, f"it cannot be pickled ({err})") from err


def _culprit(value: Any, depth: int) -> list[tuple[str, Any]]:
    """Steps to the deepest attribute/item of ``value`` that fails to pickle."""
    if depth == 0:
        return []
    if isinstance(value, dict):
        items = [(("[]", k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(("[]", i), v) for i, v in enumerate(value)]
    else:
        state = getattr(value, "__dict__", None)
        items = [(f".{k}", v) for k, v in state.items()] if isinstance(state, dict) else []
    for step, v in items:
        try:
            pickle.dumps(v, protocol=5, buffer_callback=lambda b: None)
        except Exception:  # noqa: BLE001
            return [(step, v)] + _culprit(v, depth - 1)
    return []


def _check_round_trip(enc: Encoder, value: Any, data: bytes, raws: list) -> None:
    if len(data) + sum(memoryview(r).nbytes for r in raws) > CHECK_MAX:
        return
    try:
        back = pickle.loads(data, buffers=raws)
    except Exception as e:  # noqa: BLE001
        raise enc.fail(value, f"its pickle does not load back ({type(e).__name__}: {e})") from e
    try:
        same = bool(back == value)
    except Exception:  # noqa: BLE001 - ambiguous (arrays) or failing __eq__: cannot judge
        return
    if same:
        return
    try:
        if not bool(back == back):
            return  # not even equal to itself (NaN inside): equality cannot judge
    except Exception:  # noqa: BLE001
        return
    raise enc.fail(value, "its pickled copy is not equal to the original, so it would not load back "
                          "faithfully; register a codec for this type")


def unpickle(data, buffers=(), what: str = "value") -> Any:
    """``pickle.loads`` that honours ``allow_pickle`` (callers check the signature first)."""
    if not get_config().allow_pickle:
        raise PickleRefused(f"the stored {what} is a pickle and allow_pickle is off")
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as e:  # noqa: BLE001 - unpickling runs the pickled classes' code
        raise SerializationError(f"the stored {what} cannot be unpickled: {type(e).__name__}: {e}") from e


def _check_trusted(dec, what: str) -> None:
    """Refuse to unpickle ``dec.oid`` unless this user signed it or foreign pickles are allowed."""
    cfg = get_config()
    if not cfg.allow_pickle:
        raise PickleRefused(f"the stored {what} is a pickle and allow_pickle is off")
    oid = dec.oid
    if cfg.allow_foreign_pickles or trust.verify(oid, dec.signature(oid)):
        return
    raise UntrustedObject(
        f"object {oid.hex()} is a pickle (of {what}) that was not written by you (no signature from your key "
        f"{cfg.pickle_key_path}): unpickling it could run any code. If you trust where this store came from, "
        f"use --trust on the command line or terra.configure(allow_foreign_pickles=True)")


def fallback(enc: Encoder, value: Any) -> ObjectId:
    """The last finder: pickle anything."""
    return pickle_value(enc, value)


def _what(obj) -> str:
    what = obj.meta.get("type", "value")
    return what if isinstance(what, str) else "value"


def _decode_blob(dec, blob, payload: np.ndarray) -> Any:
    what = _what(blob)
    _check_trusted(dec, what)
    return unpickle(payload, what=what)


def _decode_tree(dec, tree) -> Any:
    what = _what(tree)
    _check_trusted(dec, what)
    main, *parts = tree.entries
    return unpickle(dec.payload(main), [dec.payload(p) for p in parts], what)


def _summary(blob) -> dict:
    return {"type": blob.meta.get("type", "pickle"), "codec": "pickle"}


def _tree_summary(store, tree) -> dict:
    return {"type": tree.meta.get("type", "pickle"), "codec": "pickle"}


PROVIDES = registry.Codec(finder=fallback, blobs={CODEC: _decode_blob}, trees={CODEC: _decode_tree},
                          summaries={CODEC: _summary, "tree:" + CODEC: _tree_summary})
