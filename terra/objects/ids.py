"""Object ids: xxh3-128 digests, shown as 32 lowercase hex characters."""

from __future__ import annotations

import xxhash

HASH_ALGORITHM = "xxh3-128"
ID_BYTES = 16
HEX_CHARS = 2 * ID_BYTES
MIN_PREFIX = 4


class ObjectId(bytes):
    """A 16-byte object id; ``str()`` gives its hex form."""

    __slots__ = ()

    def __new__(cls, raw: bytes) -> "ObjectId":
        if len(raw) != ID_BYTES:
            raise ValueError(f"object id must be {ID_BYTES} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def from_hex(cls, text: str) -> "ObjectId":
        """Parse a full 32-character hex id."""
        if len(text) != HEX_CHARS:
            raise ValueError(f"object id must be {HEX_CHARS} hex characters: {text!r}")
        return cls(bytes.fromhex(text))

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:
        return f"ObjectId({self.hex()!r})"


def hasher() -> "xxhash.xxh3_128":
    """A fresh streaming hasher of the store's algorithm."""
    return xxhash.xxh3_128()


def digest(parts) -> ObjectId:
    """Id of the concatenation of ``parts`` (bytes-like), hashed in place."""
    h = xxhash.xxh3_128()
    for p in parts:
        h.update(p)
    return ObjectId(h.digest())


def is_hex(text: str) -> bool:
    """True if ``text`` is non-empty lowercase/uppercase hex."""
    try:
        int(text, 16)
    except (TypeError, ValueError):
        return False
    return not text.startswith(("0x", "0X", "-", "+")) and " " not in text
