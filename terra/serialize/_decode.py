"""The decoder: stored objects become a fresh value, and cheap summaries of them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CorruptObject, SerializationError, TerraError
from ..objects import Blob, Chunked, ObjectId, Tree
from . import registry

__all__ = ["Decoder", "load_value", "plain_value", "summarize"]


def read_object(store, oid: ObjectId) -> tuple[Any, np.ndarray | None]:
    """``(object, payload)``: a Blob/Chunked header with its payload, or a Tree and None."""
    try:
        # Most leaves are payloads: read them straight into a fresh array.
        return store.read_payload(oid)
    except CorruptObject:
        # read_payload refuses Trees with CorruptObject; get() tells a Tree
        # apart from real corruption (which it raises again).
        obj = store.get(oid)
        if isinstance(obj, Tree):
            return obj, None
        raise


class Decoder:
    """Loads objects of one store back into values.

    Every decoder failure leaves as a terra error naming the object: a
    decoder handed a well-hashed but malformed object (a crafted store) raises
    CorruptObject, never the exception of whatever it tripped on.
    """

    def __init__(self, store):
        self.store = store
        self.oid: ObjectId | None = None  # the object whose decoder is running

    def load(self, oid: ObjectId) -> Any:
        """The value stored under ``oid``."""
        obj = None
        try:
            obj, payload = read_object(self.store, oid)
            self.oid = oid
            if isinstance(obj, Tree):
                fn = registry.TREE_DECODERS.get(obj.type)
                if fn is None:
                    raise SerializationError(f"object {oid.hex()} is a tree of unknown type {obj.type!r}")
                return fn(self, obj)
            fn = registry.BLOB_DECODERS.get(obj.codec)
            if fn is None:
                raise SerializationError(f"object {oid.hex()} uses unknown codec {obj.codec!r}")
            return fn(self, obj, payload)
        except TerraError:
            raise
        except MemoryError as e:
            raise SerializationError(f"object {oid.hex()} ({_kind(obj)}) is too large to load here") from e
        except Exception as e:  # noqa: BLE001 - a malformed object trips decoders in many ways
            raise malformed(oid, obj, e) from e

    def entry(self, e: Any) -> Any:
        """The value of a Tree entry: inline primitives as they are, ids loaded."""
        return self.load(e) if isinstance(e, ObjectId) else e

    def payload(self, oid: ObjectId) -> np.ndarray:
        """The payload of a Blob/Chunked child as a fresh uint8 array."""
        return self.store.read_payload(oid)[1]

    def signature(self, oid: ObjectId) -> bytes | None:
        """The signature stored beside object ``oid`` (see :mod:`terra.trust`), if any."""
        return stored_signature(self.store, oid)


def _kind(obj) -> str:
    if obj is None:
        return "payload"
    return f"tree {obj.type!r}" if isinstance(obj, Tree) else f"codec {getattr(obj, 'codec', obj.kind)!r}"


def malformed(oid: ObjectId, obj, err: BaseException) -> CorruptObject:
    """The error for an object its decoder cannot make sense of."""
    return CorruptObject(f"object {oid.hex()} ({_kind(obj)}) is malformed: {type(err).__name__}: {err}")


def stored_signature(store, oid: ObjectId) -> bytes | None:
    """The signature stored with ``oid`` in ``store``, or None."""
    from ..store import _framing

    with store.backend.reading() as r:
        raw = r.get(oid)
        return None if raw is None else _framing.signature(raw)


def as_id(store, oid) -> ObjectId:
    """``oid`` (an ObjectId, raw bytes or full hex) as an ObjectId of ``store``."""
    if isinstance(oid, ObjectId):
        return oid
    return store.as_id(oid) if hasattr(store, "as_id") else ObjectId(oid)


def load_value(store, oid) -> Any:
    """Load the value stored under ``oid``; a fresh, independent value on every call.

    Args:
        store: a :class:`terra.store.Store`.
        oid: the value's id (ObjectId, 16 raw bytes or 32 hex characters).

    Returns:
        A value equal to the one stored.

    Raises:
        NotFound: the object (or one of its parts) is missing.
        CorruptObject: stored bytes do not match their id.
        PickleRefused: the value was pickled and ``allow_pickle`` is off.
        SerializationError: the value needs a codec or class that is not available.
    """
    from ._encode import _load_codecs

    _load_codecs()
    return Decoder(store).load(as_id(store, oid))


def summarize(store, oid) -> dict:
    """Type, shape and size of a stored value, read without loading its payload.

    Args:
        store: a :class:`terra.store.Store`.
        oid: the value's id.

    Returns:
        A dict with at least ``type``; arrays add ``shape``, ``dtype``, ``nbytes``,
        frames ``shape`` and ``columns``, containers ``len``.

    Raises:
        NotFound: no such object.
    """
    from ._encode import _load_codecs

    _load_codecs()
    oid = as_id(store, oid)
    obj = store.get(oid)
    try:
        return _summarize(store, obj)
    except TerraError:
        raise
    except Exception as e:  # noqa: BLE001 - crafted meta trips summarizers in many ways
        raise malformed(oid, obj, e) from e


# Codecs whose decoders build plain Python values without running any other code.
_PLAIN_CODECS = frozenset({"py", "str", "bytes"})


def plain_value(store, oid) -> tuple[bool, Any]:
    """``(True, value)`` if ``oid`` holds a None/bool/int/float/str/bytes, else ``(False, None)``.

    Decided by the codec that would decode it, never by the type its meta
    claims, so a view that shows small values inline never unpickles.
    """
    oid = as_id(store, oid)
    obj = store.get(oid)
    if not isinstance(obj, (Blob, Chunked)) or obj.codec not in _PLAIN_CODECS:
        return False, None
    value = load_value(store, oid)
    return type(value) in (type(None), bool, int, float, str, bytes), value


def _summarize(store, obj) -> dict:
    if isinstance(obj, Tree):
        fn = registry.SUMMARIZERS.get("tree:" + obj.type)
        if fn is not None:
            return fn(store, obj)
        meta = obj.meta
        return {"type": meta.get("type", obj.type), "len": len(obj.entries)}
    if isinstance(obj, (Blob, Chunked)):
        nbytes = obj.size if isinstance(obj, Chunked) else len(obj.data)
        fn = registry.SUMMARIZERS.get(obj.codec)
        out = fn(obj) if fn is not None else {"type": obj.meta.get("type", obj.codec)}
        out.setdefault("nbytes", nbytes)
        return out
    return {"type": obj.kind}
