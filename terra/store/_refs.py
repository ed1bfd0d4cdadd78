"""Sealed refs: every ref value carries a checksum over its key and value.

LMDB keeps no checksums and objects are verified against their ids, so the
refs (run entries, indexes, tags, counters, leases) are the one place a
flipped bit would be believed. Each value is stored as ``value + xxh3-64``,
the hash taken over key and value with the key's length as seed: a damaged
value, a damaged key (an entry that moved to another key) and a shifted
key/value boundary all fail the check. Sealing sits in the Store layer, below
every module that reads refs, so no reader can forget it; the cost is one
~0.1 µs hash per entry read.

Why checksums rather than deriving every ref from the verified records on
each read: the hot path (a cache hit) must stay one key computation and one
or two gets, and runs in progress, leases, tags and counters have no record
to derive from. The records are still the truth a repair rebuilds the indexes
from (``terra fsck --repair``), and a cache hit is confirmed against its
record before its inline value is served (``terra.task``).

Reads: ``get`` of a damaged entry raises :class:`CorruptRef` naming the key;
``scan`` skips damaged entries (listings keep going), notes each on the
transaction's ``damaged`` list and warns once per key per process.
``meta/`` keys (format, hash algorithm) are read before the format is known
and stay unsealed.
"""

from __future__ import annotations

import warnings

import xxhash

from ..errors import CorruptRef, DamagedRefWarning

__all__ = ["SealedTxn", "describe", "seal", "unseal", "verifies"]

_SUM = 8
_digest = xxhash.xxh3_64_digest
_warned: set[bytes] = set()


def seal(key: bytes, value: bytes) -> bytes:
    """``value`` with its checksum appended, as stored under ``key``."""
    value = bytes(value)
    return value + _digest(key + value, len(key))


def verifies(key: bytes, raw) -> bool:
    """Whether a stored ref value carries a good checksum for ``key``."""
    raw = bytes(raw)
    return len(raw) >= _SUM and raw[-_SUM:] == _digest(key + raw[:-_SUM], len(key))


def unseal(key: bytes, raw) -> bytes:
    """The value a stored ref holds.

    Raises:
        CorruptRef: the checksum does not match (the entry is damaged).
    """
    if type(raw) is not bytes:
        raw = bytes(raw)
    value = raw[:-_SUM]  # every cache hit unseals one ref: one slice, one concatenation, one hash
    if len(raw) < _SUM or raw[-_SUM:] != _digest(key + value, len(key)):
        raise CorruptRef(f"ref {describe(key)} is damaged (checksum mismatch); run `terra fsck --repair`")
    return value


def describe(key: bytes) -> str:
    """A ref key for messages: its prefix as text, binary parts as hex or run ids."""
    key = bytes(key)
    head, sep, rest = key.partition(b"/")
    if not sep:
        return repr(key)
    name = head.decode("ascii", "replace")
    if name in ("run", "produced", "cache", "lease") and rest:
        if name == "run" and len(rest) == 8:
            return f"run/{int.from_bytes(rest, 'big')}"
        return f"{name}/{rest.hex()}"
    if name == "task" and len(rest) >= 9 and rest[-9:-8] == b"\0":
        return f"task/{rest[:-9].decode('utf-8', 'replace')}/{int.from_bytes(rest[-8:], 'big')}"
    if name == "edge" and len(rest) >= 18:
        return f"edge/{rest[:1].decode('ascii', 'replace')}/{int.from_bytes(rest[2:10], 'big')}" \
               f"/{int.from_bytes(rest[10:18], 'big')}/{rest[18:].hex()}"
    return key.decode("utf-8", "replace")


def _warn(key: bytes) -> None:
    if key not in _warned:
        if len(_warned) > 10_000:
            _warned.clear()
        _warned.add(key)
        warnings.warn(f"ref {describe(key)} is damaged and was skipped; run `terra fsck --repair`",
                      DamagedRefWarning, stacklevel=3)


class SealedTxn:
    """A ref transaction whose values are sealed on write and verified on read."""

    __slots__ = ("txn", "damaged")

    def __init__(self, txn):
        self.txn = txn
        self.damaged: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        raw = self.txn.get(key)
        if raw is None or key.startswith(b"meta/"):
            return raw
        return unseal(key, raw)

    def put(self, key: bytes, value: bytes) -> None:
        self.txn.put(key, value if key.startswith(b"meta/") else seal(key, value))

    def delete(self, key: bytes) -> bool:
        return self.txn.delete(key)

    def delete_damaged(self, key: bytes) -> bool:
        """Delete an entry seen by a scan even if its key is out of order (a damaged key)."""
        exact = getattr(self.txn, "delete_exact", None)
        return bool(self.txn.delete(key) or (exact is not None and exact(key)))

    def scan(self, prefix: bytes, reverse: bool = False):
        for k, raw in self.txn.scan(prefix, reverse):
            if k.startswith(b"meta/"):
                yield k, raw
            elif len(raw) >= _SUM and raw[-_SUM:] == _digest(k + raw[:-_SUM], len(k)):
                yield k, raw[:-_SUM]
            else:
                self.damaged.append(k)
                _warn(k)

    def rewrite(self, items) -> None:
        """Replace every entry with ``items`` (stored form), re-inserted in key order.

        For a repair after a key was damaged in place: LMDB finds keys by binary
        search, so one key out of order can hide its neighbours from lookups.
        """
        self.txn.clear()
        for k, v in sorted(items):
            self.txn.put(k, v)

    def scan_raw(self, prefix: bytes = b""):
        """Every entry as stored, checksums unchecked (for fsck and repair)."""
        return self.txn.scan(prefix)


class SealedSnapshot:
    """A read snapshot of refs (a context manager) entered as a :class:`SealedTxn`."""

    __slots__ = ("inner", "txn")

    def __init__(self, inner):
        self.inner = inner

    def __enter__(self) -> SealedTxn:
        self.txn = SealedTxn(self.inner.__enter__())
        return self.txn

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)


class PlainTxn(SealedTxn):
    """The same interface over refs written before sealing (a read-only old store)."""

    __slots__ = ()

    def get(self, key: bytes) -> bytes | None:
        return self.txn.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.txn.put(key, value)

    def scan(self, prefix: bytes, reverse: bool = False):
        return self.txn.scan(prefix, reverse)


class PlainSnapshot(SealedSnapshot):
    __slots__ = ()

    def __enter__(self) -> PlainTxn:
        self.txn = PlainTxn(self.inner.__enter__())
        return self.txn


def seal_all(txn) -> int:
    """Seal every entry of a raw ref transaction that does not verify yet; the count sealed.

    Migrates a store written before refs carried checksums. Idempotent: a
    sealed value verifies (an unsealed one would by chance only once in 2**64).
    """
    todo = [(k, v) for k, v in txn.scan(b"") if not k.startswith(b"meta/") and not verifies(k, v)]
    for k, v in todo:
        txn.put(k, seal(k, v))
    return len(todo)
