"""LMDB backend, used the way LMDB's authors require.

* One environment per store per process, shared by every handle, safe
  across ``fork()`` (see ``_env``); the short-lived state lives in a side
  environment (see ``_state``).
* The map starts at the requested size and grows on ``MapFull``; growth is
  serialized across processes with a file lock, and other processes adopt the
  new size when LMDB tells them (``MapResized``).
* ``set_mapsize`` is only legal with no transaction open in the process, so
  every transaction of an environment runs under its process-local lock, and
  growing inside a read snapshot of the same thread is refused, not risked.
* Stale reader slots of dead processes are cleared at open, durable commits
  are the default, and opening for writing on a network filesystem is refused.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from contextlib import contextmanager
from typing import Iterable

import lmdb

from ..errors import StoreError
from . import _framing
from ._disk import check_local_filesystem, disk_full
from ._env import Env, close_env, registered, shared_env, usable
from ._state import MergedRefs, boot_id, reset_if_rebooted
from .base import Backend

__all__ = ["LMDBBackend"]

DEFAULT_MAP_SIZE = 1 << 30
# Bytes written per transaction before committing, so one huge value does not
# hold the single LMDB write lock for long.
TXN_BYTES = 64 << 20
_TIME = struct.Struct("<d")
_GROW_STEP = 1 << 20
# The data file is kept this far ahead of LMDB's last page (written zeros, within the map):
# a commit that writes only inside the file needs no journal commit for a new file size
# in its fdatasync, which is most of a durable commit's cost on a busy ext4 disk.
_AHEAD_MIN, _AHEAD_MAX, _AHEAD_LOW = 1 << 20, 16 << 20, 256 << 10


class _Snapshot:
    """A read transaction held under the environment's lock.

    A class rather than a generator context manager: every read goes through it.
    """

    __slots__ = ("backend", "buffers", "wrap", "e", "txn")

    def __init__(self, backend, buffers, wrap):
        self.backend, self.buffers, self.wrap = backend, buffers, wrap

    def __enter__(self):
        backend = self.backend
        while True:
            e = backend._env()
            e.lock.acquire()
            if not e.closed:  # else another handle closed it meanwhile: reopen
                break
            e.lock.release()
        try:
            while True:
                try:
                    txn = e.env.begin(buffers=self.buffers)
                    break
                except lmdb.MapResizedError:
                    backend._adopt_size(e)
        except lmdb.Error as exc:
            e.lock.release()
            raise StoreError(f"store {backend.path}: {exc}") from exc
        except BaseException:
            e.lock.release()
            raise
        e.open_readers += 1
        self.e, self.txn = e, txn
        return (e, txn) if self.wrap is None else self.wrap(e, txn)

    def __exit__(self, *exc):
        e = self.e
        e.open_readers -= 1
        try:
            self.txn.abort()
        finally:
            e.lock.release()
        if isinstance(exc[1], lmdb.Error):  # a damaged page met while reading: a terra error
            raise StoreError(f"store {self.backend.path} is damaged: {exc[1]}; run `terra fsck`") from exc[1]
        return False


class _Reader:
    __slots__ = ("txn", "db")

    def __init__(self, txn, db):
        self.txn, self.db = txn, db

    @classmethod
    def of(cls, e, txn):
        return cls(txn, e.objects)

    def get(self, key):
        return self.txn.get(key, db=self.db)


class _RefTxn:
    __slots__ = ("txn", "db")

    def __init__(self, txn, db):
        self.txn, self.db = txn, db

    @classmethod
    def of(cls, e, txn):
        return cls(txn, e.refs)

    def get(self, key):
        v = self.txn.get(key, db=self.db)
        return None if v is None else bytes(v)

    def put(self, key, value):
        self.txn.put(key, value, db=self.db)

    def delete(self, key):
        return self.txn.delete(key, db=self.db)

    def clear(self):
        """Delete every entry by position: a damaged key order cannot hide one from this."""
        self.txn.drop(self.db, delete=False)

    def delete_exact(self, key):
        """Delete ``key`` found by walking the cursor, not by searching: a damaged key may sit out of order."""
        cur = self.txn.cursor(db=self.db)
        for k in cur.iternext(values=False):
            if bytes(k) == key:
                return cur.delete()
        return False

    def scan(self, prefix, reverse=False):
        cur = self.txn.cursor(db=self.db)
        if not reverse:
            if not cur.set_range(prefix):
                return
            for k, v in cur:
                k = bytes(k)
                if not k.startswith(prefix):
                    return
                yield k, bytes(v)
            return
        # Position just past the prefix range, then walk back.
        end = _prefix_end(prefix)
        found = cur.set_range(end) if end is not None else cur.last()
        if end is not None and found:
            found = cur.prev()
        elif end is not None:
            found = cur.last()
        while found:
            k = bytes(cur.key())
            if not k.startswith(prefix):
                if k < prefix:
                    return
            else:
                yield bytes(k), bytes(cur.value())
            found = cur.prev()


def _touch(e, txn) -> None:
    """Make a transaction commit (a write txn with no change commits nothing)."""
    txn.put(b"\0touch", b"", db=e.times)
    txn.delete(b"\0touch", db=e.times)


def _prefix_end(prefix: bytes) -> bytes | None:
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


class LMDBBackend(Backend):
    """Objects and refs in an LMDB environment in directory ``path``."""

    def __init__(self, path: str, map_size: int = DEFAULT_MAP_SIZE, readonly: bool = False,
                 volatile: bool = False):
        if not readonly:
            check_local_filesystem(path)  # before creating anything there
            os.makedirs(path, exist_ok=True)
        self.path = os.path.realpath(path)
        self._map_size = map_size
        self._readonly = readonly
        self._volatile = volatile
        self._last: Env | None = None
        self._state: LMDBBackend | None = None
        if volatile and not readonly:
            reset_if_rebooted(self.path)
        self._env()  # open now so errors surface at open

    def _env(self) -> Env:
        e = self._last
        if not usable(e, self.path):
            e = self._last = shared_env(self.path, self._map_size, self._readonly, self._volatile)
        return e

    # -- volatile state: leases and runs in progress ------------------------------------

    def _state_backend(self) -> "LMDBBackend | None":
        """The store's unsynced side environment, or None where it cannot be made safe."""
        if self._volatile or boot_id() is None:
            return None
        if self._state is None:
            path = os.path.join(self.path, "state")
            if self._readonly and not os.path.exists(os.path.join(path, "data.mdb")):
                return None
            self._state = LMDBBackend(path, map_size=64 << 20, readonly=self._readonly, volatile=True)
        return self._state

    def update_state(self, fn):
        state = self._state_backend()
        if state is None:
            return self.update_refs(fn, durable=False)
        return state.update_refs(fn, durable=False)

    def refs(self):
        state = self._state_backend()
        if state is None:
            return self._read(False, _RefTxn.of)
        return MergedRefs(state._read(False, _RefTxn.of), self._read(False, _RefTxn.of))

    def state_refs(self):
        state = self._state_backend()
        return (state or self)._read(False, _RefTxn.of)

    # -- transactions with growth and resize handling -------------------------------

    def _adopt_size(self, e: Env) -> None:
        """Pick up the map size another process has grown the store to."""
        if e.open_readers:
            raise StoreError(
                f"store {self.path}: cannot adopt a resized map while a read snapshot is open "
                "in this process; do not write inside `reading()` or `refs()`"
            )
        e.env.set_mapsize(0)

    def _grow(self, e: Env, failed_size: int, need: int) -> None:
        if e.open_readers:
            raise StoreError(
                f"store {self.path}: the map is full and cannot grow while a read snapshot is "
                "open in this process; do not write inside `reading()` or `refs()`"
            )
        # Upstream LMDB has a corruption bug with concurrent resizes: serialize
        # them across processes with a file lock.
        with open(os.path.join(self.path, "grow.lock"), "a+b") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            e.env.set_mapsize(0)  # adopt what another process may have grown to
            size = e.env.info()["map_size"]
            if size <= failed_size:
                target = max(failed_size * 2, failed_size + 2 * need, 1 << 20)
                e.env.set_mapsize(-(-target // _GROW_STEP) * _GROW_STEP)

    @contextmanager
    def _locked(self):
        """This process's environment of the store, with its lock held."""
        while True:
            e = self._env()
            with e.lock:
                if not e.closed:  # else another handle closed it meanwhile: reopen
                    yield e
                    return

    def _write(self, fn, need: int = 0, durable: bool = True):
        """Run ``fn(env, txn)`` in a write transaction, growing the map as needed.

        ``durable``: flush the meta page too once committed, so a system crash
        cannot undo this commit (or any earlier one).
        """
        if self._readonly:
            raise StoreError(f"store {self.path} is open read-only")
        while True:
            with self._locked() as e:
                try:
                    with e.env.begin(write=True, buffers=True) as txn:
                        result = fn(e, txn)
                        if not self._volatile:
                            self._keep_ahead(e)
                    if durable:
                        e.env.sync(True)
                    return result
                except lmdb.MapFullError:
                    # The size that was full: only this process resizes its map, under e.lock, held here.
                    self._grow(e, e.env.info()["map_size"], need)
                except lmdb.MapResizedError:
                    self._adopt_size(e)
                except lmdb.ReadonlyError as exc:
                    raise StoreError(f"store {self.path} is open read-only") from exc
                except lmdb.Error as exc:
                    full = disk_full(self.path, exc, need)
                    if full is not None:
                        raise full from exc
                    raise StoreError(f"store {self.path}: {exc}") from exc

    def _keep_ahead(self, e: Env) -> None:
        """Extend data.mdb with zeros past LMDB's last page when little room is left.

        Called inside a write transaction: LMDB's writer lock keeps every other
        process from writing pages past the end meanwhile, and this
        transaction's own pages are written at its commit, after the zeros.
        Pages past the last one are never read, so the zeros carry no meaning;
        the extension becomes durable with the commit's own sync. A failure
        (full disk, file size limit) only leaves the file as LMDB would grow it.
        """
        info = e.env.info()
        used = (info["last_pgno"] + 1) * e.psize
        if used + _AHEAD_LOW <= e.file_end:
            return
        data = os.path.join(self.path, "data.mdb")
        try:
            end = os.stat(data).st_size  # another process may have extended it
        except OSError:
            return
        e.file_end = end
        target = min(used + min(max(used // 16, _AHEAD_MIN), _AHEAD_MAX), info["map_size"])
        if used + _AHEAD_LOW <= end or target <= end:
            return
        try:
            zeros = bytes(min(target - end, _AHEAD_MIN))
            with open(data, "r+b") as f:
                f.seek(end)
                while end < target:
                    end += f.write(zeros[: target - end])
        except OSError:
            pass  # a full disk or a file size limit: LMDB grows the file itself, and says so if it cannot
        finally:
            e.file_end = target  # after a failure too: tried again only once the data has grown

    def _read(self, buffers: bool, wrap=None) -> "_Snapshot":
        """A read transaction, entered as ``(env, txn)`` or as ``wrap(env, txn)``."""
        return _Snapshot(self, buffers, wrap)

    # -- Backend ---------------------------------------------------------------

    def put_many(self, items: Iterable[tuple[bytes, object]], durable: bool = True) -> list[bool | None]:
        out: list[bool | None] = []
        batch: list[tuple[bytes, object]] = []
        size = 0

        def do(e, txn):
            return self._put_in(e, txn, batch)

        def flush(last: bool):
            out.extend(self._write(do, need=size, durable=durable and last))
            batch.clear()

        for key, value in items:
            batch.append((bytes(key), value))
            if value is not None:
                size += _framing.size(value)
            if size >= TXN_BYTES:
                flush(False)
                size = 0
        if batch or (durable and out):
            flush(True)
        return out

    def commit(self, items, fn, hold=None):
        items = [(bytes(k), v) for k, v in items]
        size = sum(_framing.size(v) for _, v in items if v is not None)
        if size >= TXN_BYTES:  # keep write transactions short: objects first
            return super().commit(items, fn, hold)

        def do(e, txn):
            self._put_in(e, txn, items)
            return fn(_RefTxn(txn, e.refs))
        return self._write(do, need=size)

    def get_ref(self, key: bytes) -> bytes | None:
        """One ref's value: the cache lookup's fast path."""
        e = self._last
        if not usable(e, self.path):
            e = self._env()
        with e.lock:  # resizes happen under this lock too: none can run in between
            if not e.closed:
                try:
                    txn = e.env.begin()  # copies the value out (no buffers): nothing to count as open
                    try:
                        return txn.get(key, None, e.refs)  # positional: py-lmdb parses keywords slowly
                    finally:
                        txn.abort()
                except lmdb.MapResizedError:
                    pass  # the general path adopts the new size
                except lmdb.Error as exc:
                    raise StoreError(f"store {self.path}: {exc}") from exc
        with self._read(False) as (e, txn):
            return txn.get(key, db=e.refs)

    @staticmethod
    def _put_in(e, txn, batch):
        now = _TIME.pack(time.time())
        cur = txn.cursor(db=e.objects)
        res = []
        for key, value in batch:
            if value is None:  # refresh the time of an existing id only
                if not cur.set_key(key):
                    res.append(None)
                    continue
                res.append(False)
            elif isinstance(value, tuple):
                # Join the parts in a reused, already-faulted buffer: LMDB
                # copies the value into its page during put.
                if cur.set_key(key):
                    res.append(False)
                else:
                    res.append(txn.put(key, _framing.joined(value, e.scratch(_framing.size(value))),
                                       overwrite=False, db=e.objects))
            else:
                res.append(txn.put(key, value, overwrite=False, db=e.objects))
            txn.put(key, now, db=e.times)
        return res

    def has_many(self, keys):
        with self._read(True) as (e, txn):
            return [txn.get(bytes(k), db=e.objects) is not None for k in keys]

    def reading(self):
        return self._read(True, _Reader.of)

    def delete_many(self, keys, older_than=None, keep=None):
        keys = [bytes(k) for k in keys]

        def do(e, txn, part):
            n = size = 0
            spare = self._spare(e, txn, keep) if keep is not None else ()
            for key in part:
                v = txn.get(key, db=e.objects)
                if v is None or key in spare:
                    continue
                if older_than is not None:
                    t = txn.get(key, db=e.times)
                    # A damaged time counts as now: kept, never collected by mistake.
                    if t is not None and (len(t) != 8 or _TIME.unpack(t)[0] >= older_than):
                        continue
                size += len(v)
                txn.delete(key, db=e.objects)
                txn.delete(key, db=e.times)
                n += 1
            return n, size

        with self._locked() as e:
            e.env.reader_check()  # a dead reader's snapshot would keep the freed pages from reuse
        total_n = total_size = 0
        for i in range(0, len(keys), 10_000):  # keep write transactions short
            part = keys[i : i + 10_000]
            n, s = self._write(lambda e, txn, part=part: do(e, txn, part))
            total_n, total_size = total_n + n, total_size + s
        if total_n:
            # LMDB reuses the pages a transaction freed only once a later one
            # has committed (the previous meta page still names them): commit
            # one now, so the next write can use the space, not grow the file.
            self._write(_touch, durable=False)
        return total_n, total_size

    def _spare(self, e, txn, keep) -> set:
        """``keep(reader, refs, state)`` inside the write transaction ``txn``."""
        refs = _RefTxn(txn, e.refs)
        state = self._state_backend()
        if state is None:  # the state shares this environment: read it in this transaction
            return keep(_Reader(txn, e.objects), refs, refs)
        # Lock order: the durable environment (held here), then the volatile one.
        with state._read(False, _RefTxn.of) as st:
            return keep(_Reader(txn, e.objects), refs, st)

    def iter_ids(self, prefix=b""):
        # Batches, so no read transaction stays open while the caller works.
        start, skip = prefix, False
        while True:
            batch = []
            with self._read(True) as (e, txn):
                cur = txn.cursor(db=e.objects)
                tcur = txn.cursor(db=e.times)
                if not cur.set_range(start):
                    return
                for k, v in cur:
                    k = bytes(k)
                    if not k.startswith(prefix):
                        break
                    if skip and k == start:
                        continue
                    t = tcur.get(k)
                    when = _TIME.unpack(t)[0] if t and len(t) == 8 else (time.time() if t else 0.0)
                    batch.append((k, len(v), when))  # a damaged time counts as now
                    if len(batch) >= 4096:
                        break
            yield from batch
            if len(batch) < 4096:
                return
            start, skip = batch[-1][0], True

    def update_refs(self, fn, durable=True):
        return self._write(lambda e, txn: fn(_RefTxn(txn, e.refs)), durable=durable)

    def info(self) -> dict:
        """LMDB environment info and stats (map size, pages, readers)."""
        with self._locked() as e:
            return {**e.env.info(), **e.env.stat(), "path": self.path}

    def is_open(self) -> bool:
        """Whether this process has an environment of the store open (one inherited across fork() counts)."""
        return registered(self.path) is not None

    def close(self) -> None:
        """Close this process's environment of the store.

        The environment is shared by every handle on the store in this
        process; any of them reopens it transparently when used again.

        Raises:
            StoreError: called inside a read snapshot of the store.
        """
        e = registered(self.path)
        if e is not None and e.pid == os.getpid():  # never close one inherited across fork()
            close_env(e, "close it")
        if self._state is not None:
            self._state.close()
