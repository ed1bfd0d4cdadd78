"""Pure object model: ids, frozen objects, canonical encoding. No I/O here."""

from .ids import HASH_ALGORITHM, HEX_CHARS, ID_BYTES, MIN_PREFIX, ObjectId, digest, hasher
from .model import (
    CHUNK_SIZE,
    Blob,
    Chunk,
    Chunked,
    Object,
    Run,
    Tree,
    canonical_pack,
    decode,
    encode,
    object_id,
    references,
    split_payload,
    chunk_header,
)

__all__ = [
    "CHUNK_SIZE",
    "HASH_ALGORITHM",
    "HEX_CHARS",
    "ID_BYTES",
    "MIN_PREFIX",
    "Blob",
    "Chunk",
    "Chunked",
    "Object",
    "ObjectId",
    "Run",
    "Tree",
    "canonical_pack",
    "decode",
    "digest",
    "encode",
    "hasher",
    "object_id",
    "references",
    "split_payload",
    "chunk_header",
]
