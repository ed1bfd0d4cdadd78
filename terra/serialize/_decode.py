"""The decoder: stored objects become a fresh value, and cheap summaries of them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CorruptObject, SerializationError
from ..objects import Blob, Chunked, ObjectId, Tree
from . import registry

__all__ = ["Decoder", "load_value", "summarize"]


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
    """Loads objects of one store back into values."""

    def __init__(self, store):
        self.store = store

    def load(self, oid: ObjectId) -> Any:
        """The value stored under ``oid``."""
        obj, payload = read_object(self.store, oid)
        if isinstance(obj, Tree):
            fn = registry.TREE_DECODERS.get(obj.type)
            if fn is None:
                raise SerializationError(f"object {oid.hex()} is a tree of unknown type {obj.type!r}")
            return fn(self, obj)
        fn = registry.BLOB_DECODERS.get(obj.codec)
        if fn is None:
            raise SerializationError(f"object {oid.hex()} uses unknown codec {obj.codec!r}")
        return fn(self, obj, payload)

    def entry(self, e: Any) -> Any:
        """The value of a Tree entry: inline primitives as they are, ids loaded."""
        return self.load(e) if isinstance(e, ObjectId) else e

    def payload(self, oid: ObjectId) -> np.ndarray:
        """The payload of a Blob/Chunked child as a fresh uint8 array."""
        return self.store.read_payload(oid)[1]


def _oid(store, oid) -> ObjectId:
    if isinstance(oid, ObjectId):
        return oid
    return store._oid(oid) if hasattr(store, "_oid") else ObjectId(oid)


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
    return Decoder(store).load(_oid(store, oid))


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
    oid = _oid(store, oid)
    obj = store.get(oid)
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
