"""The backend interface: what a place that holds objects must provide.

A backend stores opaque framed bytes under 16-byte object ids, remembers when
each id was last written (for gc's grace period), and keeps a small
transactional key space of refs (run ids, indexes, tags, leases). Everything
else — framing, compression, chunking, verification — is built on top of
these primitives by :class:`terra.store.Store`, so a new backend (a remote
bucket, say) implements only this page.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Callable, Iterable, Iterator, Protocol

__all__ = ["Backend", "Reader", "RefTxn"]


class Reader(Protocol):
    """A read snapshot; buffers it returns are valid only inside the snapshot."""

    def get(self, key: bytes) -> memoryview | bytes | None: ...


class RefTxn(Protocol):
    """One atomic transaction over the ref key space."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> bool: ...

    def scan(self, prefix: bytes, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]: ...


class Backend(ABC):
    """Raw storage of framed objects and refs. Implementations must be process-safe."""

    #: True when the bytes live on this machine and zero-copy reads are cheap.
    local: bool = True

    @abstractmethod
    def put_many(self, items: Iterable[tuple[bytes, object]], durable: bool = True) -> list[bool | None]:
        """Store ``(id, framed_value)`` pairs in order; return per item whether it was new.

        With ``durable=False`` the write may be lost in a system crash (never
        corrupted) until the next durable write makes it durable too.

        A framed value is bytes-like, or a tuple of bytes-like parts whose
        concatenation is the value (so a large payload need not be joined
        before the backend copies it into place).

        Existing ids keep their bytes but have their write time refreshed, so a
        concurrent gc inside its grace period never deletes them. A value of
        ``None`` only refreshes the time of an existing id: its result is
        ``False``, or ``None`` when the id is not stored (nothing is written).
        Items are committed in order: an item is never durable before the
        items given ahead of it.
        """

    @abstractmethod
    def has_many(self, keys: Iterable[bytes]) -> list[bool]:
        """Which of ``keys`` are stored."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Reader]:
        """A consistent read snapshot."""

    @abstractmethod
    def delete_many(self, keys: Iterable[bytes], older_than: float | None = None,
                    keep: Callable[[Reader, RefTxn, RefTxn], set] | None = None) -> tuple[int, int]:
        """Delete ``keys`` (only those last written before ``older_than``); return (count, bytes).

        ``keep(reader, refs, state)``, when given, is called inside every
        delete transaction with a reader of the objects, the refs and the
        short-lived state as they are at that moment; the ids it returns are
        not deleted. Writers cannot commit in between, so a collector can
        spare what a run began to need after it marked.
        """

    @abstractmethod
    def iter_ids(self, prefix: bytes = b"") -> Iterator[tuple[bytes, int, float]]:
        """Yield ``(id, stored_size, write_time)`` for ids starting with ``prefix``, in order."""

    @abstractmethod
    def refs(self) -> AbstractContextManager[RefTxn]:
        """A read-only snapshot of the ref key space."""

    @abstractmethod
    def update_refs(self, fn: Callable[[RefTxn], object], durable: bool = True) -> object:
        """Run ``fn`` in one atomic write transaction and return its result.

        ``fn`` may be called more than once (a backend retries after growing),
        so it must not have side effects outside the transaction. With
        ``durable=False`` a system crash may undo it (integrity is kept).
        """

    def get_ref(self, key: bytes) -> bytes | None:
        """One durable ref's value (every cache lookup reads one: a backend may do it faster)."""
        with self.refs() as txn:
            return txn.get(key)

    def update_state(self, fn: Callable[[RefTxn], object]) -> object:
        """Like :meth:`update_refs`, for short-lived state (leases, runs in progress).

        Such state may live where writes cost no sync; :meth:`refs` shows it
        beneath the durable refs. It must never be needed after a reboot.
        """
        return self.update_refs(fn, durable=False)

    def state_refs(self) -> AbstractContextManager[RefTxn]:
        """A read snapshot of the short-lived state alone (usable inside :meth:`update_refs`)."""
        return self.refs()

    def commit(self, items: list[tuple[bytes, object]], fn: Callable[[RefTxn], object],
               hold: Callable[[], object] | None = None) -> object:
        """Store ``items`` then run ``fn`` on the refs, durably; atomic where the backend can.

        ``hold()`` is called before any item is written outside the
        transaction that runs ``fn`` (items committed with the refs that name
        them need no hold: gc sees both or neither).
        """
        if hold is not None:
            hold()
        self.put_many(items, durable=False)
        return self.update_refs(fn)

    def close(self) -> None:  # noqa: B027 - optional
        """Release resources held by this handle."""
