"""In-memory backend: the reference model the LMDB backend is checked against."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from contextlib import contextmanager
from typing import Iterable, Iterator

from .base import Backend

__all__ = ["MemoryBackend"]


_MISSING = object()


class _Refs:
    def __init__(self, data: dict[bytes, bytes], write: bool):
        self._data = data
        self._write = write
        self.undo: dict[bytes, object] = {}

    def _remember(self, key):
        if key not in self.undo:
            self.undo[key] = self._data.get(key, _MISSING)

    def get(self, key):
        return self._data.get(bytes(key))

    def put(self, key, value):
        assert self._write, "read-only ref transaction"
        key = bytes(key)
        self._remember(key)
        self._data[key] = bytes(value)

    def delete(self, key):
        assert self._write, "read-only ref transaction"
        key = bytes(key)
        self._remember(key)
        return self._data.pop(key, None) is not None

    def scan(self, prefix, reverse=False):
        keys = sorted(k for k in self._data if k.startswith(prefix))
        for k in reversed(keys) if reverse else keys:
            yield k, self._data[k]


class MemoryBackend(Backend):
    """Objects and refs in process memory; thread-safe, gone with the process."""

    def __init__(self) -> None:
        self._objects: dict[bytes, bytes] = {}
        self._times: dict[bytes, float] = {}
        self._refs: dict[bytes, bytes] = {}
        self._lock = threading.RLock()
        self._sorted: list[bytes] | None = []  # ids in order; None when stale

    def put_many(self, items: Iterable[tuple[bytes, object]], durable=True) -> list[bool | None]:
        out: list[bool | None] = []
        with self._lock:
            now = time.time()
            for key, value in items:
                key = bytes(key)
                new = key not in self._objects
                if new:
                    if value is None:  # refresh-only of an id that is gone
                        out.append(None)
                        continue
                    self._objects[key] = b"".join(value) if isinstance(value, tuple) else bytes(value)
                    self._sorted = None
                self._times[key] = now
                out.append(new)
        return out

    def has_many(self, keys):
        with self._lock:
            return [bytes(k) in self._objects for k in keys]

    @contextmanager
    def reading(self):
        with self._lock:
            yield self._objects

    def delete_many(self, keys, older_than=None, keep=None):
        n = size = 0
        with self._lock:
            refs = _Refs(self._refs, False)
            spare = keep(self._objects, refs, refs) if keep is not None else ()
            for key in keys:
                key = bytes(key)
                if key not in self._objects or key in spare:
                    continue
                if older_than is not None and self._times[key] >= older_than:
                    continue
                size += len(self._objects.pop(key))
                del self._times[key]
                n += 1
            if n:
                self._sorted = None
        return n, size

    def iter_ids(self, prefix=b"") -> Iterator[tuple[bytes, int, float]]:
        prefix = bytes(prefix)
        with self._lock:
            if self._sorted is None:
                self._sorted = sorted(self._objects)
            keys = self._sorted
            items = []
            for i in range(bisect_left(keys, prefix), len(keys)):
                k = keys[i]
                if not k.startswith(prefix):
                    break
                items.append((k, len(self._objects[k]), self._times[k]))
        yield from items

    @contextmanager
    def refs(self):
        with self._lock:
            yield _Refs(self._refs, False)

    def update_refs(self, fn, durable=True):
        with self._lock:
            txn = _Refs(self._refs, True)
            try:
                return fn(txn)
            except BaseException:
                for key, old in txn.undo.items():  # roll back, as a real transaction would
                    if old is _MISSING:
                        self._refs.pop(key, None)
                    else:
                        self._refs[key] = old
                raise
