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
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

import numpy as np

from ...config import get_config
from ...errors import PickleRefused
from ...objects import ObjectId, Tree
from .. import registry
from ..registry import PickleWarning
from .._encode import Encoder, type_name, warn_user

__all__ = ["fallback", "pickle_value", "unpickle"]

CODEC = "pickle"
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
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
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
        return pickle.dumps(value, protocol=5)
    except Exception as e:  # noqa: BLE001
        _raise_unpicklable(enc, value, e)


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
    """``pickle.loads`` that honours ``allow_pickle``."""
    if not get_config().allow_pickle:
        raise PickleRefused(f"the stored {what} is a pickle and allow_pickle is off")
    return pickle.loads(data, buffers=buffers)


def fallback(enc: Encoder, value: Any) -> ObjectId:
    """The last finder: pickle anything."""
    return pickle_value(enc, value)


def _decode_blob(dec, blob, payload: np.ndarray) -> Any:
    return unpickle(payload, what=blob.meta.get("type", "value"))


def _decode_tree(dec, tree) -> Any:
    main, *parts = tree.entries
    what = tree.meta.get("type", "value")
    if not get_config().allow_pickle:
        raise PickleRefused(f"the stored {what} is a pickle and allow_pickle is off")
    return unpickle(dec.payload(main), [dec.payload(p) for p in parts], what)


def _summary(blob) -> dict:
    return {"type": blob.meta.get("type", "pickle"), "codec": "pickle"}


registry.BLOB_DECODERS[CODEC] = _decode_blob
registry.TREE_DECODERS[CODEC] = _decode_tree
registry.SUMMARIZERS[CODEC] = _summary
registry.SUMMARIZERS["tree:" + CODEC] = lambda store, tree: {"type": tree.meta.get("type", "pickle"),
                                                            "codec": "pickle"}
