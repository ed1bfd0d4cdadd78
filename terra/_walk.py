"""Reading the structure of stored objects cheaply: their kind and the ids they refer to.

Blobs and chunks refer to nothing and hold nearly all the bytes, so their
kind is read from the first bytes of the encoding (decompressing at most one
zstd block) and their payload is never decoded or hashed. gc, fsck, rm and
lineage labels walk the object graph through these helpers.
"""

from __future__ import annotations

import threading

import zstandard

from .objects import Blob, Chunk, Object, ObjectId, decode, references
from .store import RAW, Store, is_view, split, unframe

__all__ = ["children", "is_leaf", "read_structure"]


_local = threading.local()

# Compressed objects up to this size are decompressed whole rather than peeked at.
_PEEK_OVER = 4096


def _head(view: memoryview) -> bytes:
    flag, body = split(b"", view)
    if flag == RAW:
        return bytes(body[:8])
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    with dctx.stream_reader(body) as r:
        return r.read(8)


def is_leaf(raw) -> bool:
    """True if a stored (framed) object is a Blob or Chunk, which refer to nothing.

    Encodings start with a msgpack array header and the kind as a fixstr:
    ``\\xa4blob``, ``\\xa5chunk`` (``chunked`` is ``\\xa7chunked``).
    """
    head = _head(memoryview(raw))
    return head[1:6] == b"\xa4blob" or head[1:7] == b"\xa5chunk"


def children(oid: bytes, raw) -> list[ObjectId]:
    """The ids a stored (framed) object refers to; [] for leaves and unreadable objects.

    Not verified against ``oid`` (fsck does that): unreadable objects count as
    having no children.
    """
    view = memoryview(raw)
    if not view.nbytes:
        return []
    try:
        if (is_view(view) or view.nbytes > _PEEK_OVER) and is_leaf(view):
            return []
        obj = decode(unframe(bytes(oid), view))
        return [] if isinstance(obj, (Blob, Chunk)) else list(references(obj))
    except Exception:  # noqa: BLE001 - corrupt objects are fsck's business
        return []


def read_structure(store: Store, oid: ObjectId) -> Object | None:
    """The object ``oid`` if it is a Tree, Chunked or Run (verified); None for blobs, chunks and absent ids."""
    with store.backend.reading() as r:
        raw = r.get(oid)
        if raw is None or not memoryview(raw).nbytes:
            return None
        try:
            if is_leaf(raw):
                return None
        except Exception:  # noqa: BLE001 - let the verified read below report it
            pass
    return store.get(oid)
