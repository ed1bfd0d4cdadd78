"""LMDB backend, used the way LMDB's authors require.

* One environment per store per process, shared by every handle; a child
  after ``fork()`` opens its own and never closes the parent's (closing it
  would free the parent's reader slots, py-lmdb's cached spare read
  transaction included).
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
import threading
import time
from contextlib import contextmanager
from typing import Iterable

import lmdb
import numpy as np

from ..errors import StoreError, UnsupportedFilesystem
from ..objects import CHUNK_SIZE
from . import _framing
from .base import Backend

__all__ = ["LMDBBackend", "check_local_filesystem"]

DEFAULT_MAP_SIZE = 1 << 30
# Bytes written per transaction before committing, so one huge value does not
# hold the single LMDB write lock for long.
TXN_BYTES = 64 << 20
_TIME = struct.Struct("<d")
_GROW_STEP = 1 << 20
# Largest join buffer kept between puts: one chunk and its header.
_SCRATCH_MAX = CHUNK_SIZE + 64

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "ncpfs", "fuse.sshfs",
    "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph", "lustre", "9p", "fuse.s3fs",
})


def _mountinfo() -> str | None:
    try:
        with open("/proc/self/mountinfo") as f:
            return f.read()
    except OSError:
        return None


def check_local_filesystem(path: str, mountinfo: str | None = None) -> str:
    """Return the filesystem type of ``path``; raise if LMDB cannot use it safely.

    Raises:
        UnsupportedFilesystem: ``path`` is on NFS, SMB or another network filesystem.
    """
    if mountinfo is None:
        mountinfo = _mountinfo()
        if mountinfo is None:  # not Linux: nothing to check against
            return "unknown"
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, right.split()[0]
    if fstype in NETWORK_FILESYSTEMS:
        raise UnsupportedFilesystem(
            f"{path} is on a {fstype} filesystem; LMDB is unsafe on network "
            "filesystems: put the store on a local disk and share it through a remote"
        )
    return fstype


class _Env:
    """The one LMDB environment of a store in this process."""

    def __init__(self, path: str, map_size: int, readonly: bool, inherited: bool = False,
                 volatile: bool = False):
        self.path = path
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.readonly = readonly
        self.closed = False
        # Read snapshots open in this process (under ``lock``): the map must
        # not be resized while one is, or its zero-copy buffers would dangle.
        self.open_readers = 0
        self._scratch = None
        try:
            self.env = _open_lmdb(
                path, inherited, map_size=map_size, max_dbs=4, subdir=True, readonly=readonly,
                # NOMETASYNC: one fdatasync per commit and integrity is kept;
                # writes that must be durable call env.sync() after committing.
                sync=not volatile, metasync=False, lock=True, max_readers=254,
                create=not readonly,
            )
        except lmdb.Error as e:
            raise StoreError(f"cannot open store {path}: {e}") from e
        try:
            self.env.reader_check()  # free the slots of readers that died
            while True:
                try:
                    self._open_dbs(readonly)
                    break
                except lmdb.MapResizedError:  # another process grew the map since we opened
                    self.env.set_mapsize(0)
        except lmdb.Error as e:
            self.env.close()
            raise StoreError(f"cannot open store {path}: {e}") from e

    def scratch(self, n: int):
        """A reused buffer of ``n`` bytes (call under ``lock``), or None if too large to keep."""
        if n > _SCRATCH_MAX:
            return None
        if self._scratch is None or self._scratch.nbytes < n:
            self._scratch = np.empty(max(n, 1 << 16), np.uint8)
        return self._scratch

    def _open_dbs(self, readonly: bool) -> None:
        if readonly:
            self.objects = self.env.open_db(b"objects", create=False)
            self.times = self.env.open_db(b"otime", create=False)
            self.refs = self.env.open_db(b"refs", create=False)
            return
        # Opening existing databases dirties nothing, so this commit writes
        # nothing to an existing store (UnsupportedFormat leaves files untouched).
        with self.env.begin(write=True) as txn:
            self.objects = self.env.open_db(b"objects", txn=txn)
            self.times = self.env.open_db(b"otime", txn=txn)
            self.refs = self.env.open_db(b"refs", txn=txn)


_ENVS: dict[str, _Env] = {}
_ENVS_LOCK = threading.Lock()
# Environments inherited across fork(): kept referenced so they are never
# closed in the child. They still hold the parent's reader slots (py-lmdb
# keeps a spare read transaction in one): closing them here would free those
# slots under the parent's feet.
_ABANDONED: list[_Env] = []


def _shared_env(path: str, map_size: int, readonly: bool, volatile: bool = False) -> _Env:
    # Lock order: an environment's lock before _ENVS_LOCK, never the reverse
    # (a thread inside a read snapshot may open another handle).
    while True:
        with _ENVS_LOCK:
            env = _ENVS.get(path)
            if env is not None and env.pid != os.getpid():
                _ABANDONED.append(env)
                env = None
            if env is None:
                inherited = any(a.path == path and a.pid != os.getpid() for a in _ABANDONED)
                env = _ENVS[path] = _Env(path, map_size, readonly, inherited, volatile)
                return env
            if not (env.readonly and not readonly):
                return env
        # Reopen writable: LMDB allows one environment per file per process,
        # so the read-only one is closed; handles using it reopen transparently.
        _close_env(env, "reopen it writable")


def _close_env(env: _Env, why: str) -> None:
    with env.lock:  # waits for reads and writes of other threads
        if env.open_readers:  # this thread is inside a read: its buffers must stay valid
            raise StoreError(f"store {env.path}: cannot {why} inside a read snapshot")
        with _ENVS_LOCK:
            if _ENVS.get(env.path) is env:
                del _ENVS[env.path]
            if not env.closed:
                env.closed = True
                env.env.close()


def _open_lmdb(path: str, inherited: bool, **kw) -> lmdb.Environment:
    if not inherited:
        return lmdb.open(path, **kw)
    # After fork() py-lmdb still counts the parent's environment as open in
    # this process and refuses a second one. That environment is the
    # parent's: its fcntl locks did not come along and it must never be
    # closed here, so opening the child's own is what LMDB requires. Step
    # past py-lmdb's guard for this one call (we hold _ENVS_LOCK).
    try:
        from lmdb import _envid
    except ImportError:  # older py-lmdb: no guard
        return lmdb.open(path, **kw)
    keys = _envid.env_keys
    _envid.env_keys = lambda p, subdir: (("terra-after-fork", os.getpid(), os.path.realpath(p)),)
    try:
        return lmdb.open(path, **kw)
    finally:
        _envid.env_keys = keys


def _reset_after_fork() -> None:
    # The lock of _ENVS may have been held by another thread at fork time.
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


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


class _MergedRefs:
    """Refs seen through the durable environment, falling back to the volatile one.

    Lock order everywhere: the durable environment, then the volatile one
    (nothing holds the volatile lock while taking the durable one).
    """

    __slots__ = ("_state", "_main", "_s", "_m")

    def __init__(self, state_snapshot, main_snapshot):
        self._state, self._main = state_snapshot, main_snapshot

    def __enter__(self):
        self._m = self._main.__enter__()
        try:
            self._s = self._state.__enter__()
        except BaseException:
            self._main.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            self._state.__exit__(*exc)
        finally:
            self._main.__exit__(*exc)
        return False

    def get(self, key):
        v = self._m.get(key)
        return self._s.get(key) if v is None else v

    def scan(self, prefix, reverse=False):
        a, b = self._m.scan(prefix, reverse), self._s.scan(prefix, reverse)
        x, y = next(a, None), next(b, None)
        while x is not None or y is not None:
            if y is None or (x is not None and (x[0] > y[0] if reverse else x[0] < y[0])):
                yield x
                x = next(a, None)
            elif x is None or x[0] != y[0]:
                yield y
                y = next(b, None)
            else:  # both: the durable one wins
                yield x
                x, y = next(a, None), next(b, None)


_BOOT_ID: list = []


def _boot_id() -> str | None:
    """This boot of the machine; unsynced state from an earlier boot may be torn."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _BOOT_ID.append(f.read().strip() or None)
        except OSError:
            _BOOT_ID.append(None)
    return _BOOT_ID[0]


def _reset_if_rebooted(path: str) -> None:
    """Delete a volatile environment written before the last reboot.

    It is opened without syncs, so a system crash may have torn it; and
    everything in it (leases, runs in progress) died with that boot anyway.
    """
    boot = _boot_id()
    marker = os.path.join(path, "boot_id")
    with open(os.path.join(path, "reset.lock"), "a+b") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            with open(marker) as f:
                if f.read().strip() == boot:
                    return
        except OSError:
            pass
        for name in ("data.mdb", "lock.mdb"):
            try:
                os.remove(os.path.join(path, name))
            except FileNotFoundError:
                pass
        with open(marker + ".tmp", "w") as f:
            f.write(boot or "")
            f.flush()
            os.fsync(f.fileno())
        os.replace(marker + ".tmp", marker)


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
        self._last: _Env | None = None
        self._state: LMDBBackend | None = None
        if volatile and not readonly:
            _reset_if_rebooted(self.path)
        self._env()  # open now so errors surface at open

    def _env(self) -> _Env:
        e = self._last
        if e is None or e.closed or e.pid != os.getpid() or _ENVS.get(self.path) is not e:
            e = self._last = _shared_env(self.path, self._map_size, self._readonly, self._volatile)
        return e

    # -- volatile state: leases and runs in progress ------------------------------------

    def _state_backend(self) -> "LMDBBackend | None":
        """The store's unsynced side environment, or None where it cannot be made safe."""
        if self._volatile or _boot_id() is None:
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
        return _MergedRefs(state._read(False, _RefTxn.of), self._read(False, _RefTxn.of))

    def state_refs(self):
        state = self._state_backend()
        return (state or self)._read(False, _RefTxn.of)

    # -- transactions with growth and resize handling -------------------------------

    def _adopt_size(self, e: _Env) -> None:
        """Pick up the map size another process has grown the store to."""
        if e.open_readers:
            raise StoreError(
                f"store {self.path}: cannot adopt a resized map while a read snapshot is open "
                "in this process; do not write inside `reading()` or `refs()`"
            )
        e.env.set_mapsize(0)

    def _grow(self, e: _Env, failed_size: int, need: int) -> None:
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
                size = e.env.info()["map_size"]
                try:
                    with e.env.begin(write=True, buffers=True) as txn:
                        result = fn(e, txn)
                    if durable:
                        e.env.sync(True)
                    return result
                except lmdb.MapFullError:
                    self._grow(e, size, need)
                except lmdb.MapResizedError:
                    self._adopt_size(e)
                except lmdb.ReadonlyError as exc:
                    raise StoreError(f"store {self.path} is open read-only") from exc
                except lmdb.Error as exc:
                    raise StoreError(f"store {self.path}: {exc}") from exc

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

    def commit(self, items, fn):
        items = [(bytes(k), v) for k, v in items]
        size = sum(_framing.size(v) for _, v in items if v is not None)
        if size >= TXN_BYTES:  # keep write transactions short: objects first
            return super().commit(items, fn)

        def do(e, txn):
            self._put_in(e, txn, items)
            return fn(_RefTxn(txn, e.refs))
        return self._write(do, need=size)

    def get_ref(self, key: bytes) -> bytes | None:
        """One ref's value: the cache lookup's fast path."""
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

    def delete_many(self, keys, older_than=None):
        keys = [bytes(k) for k in keys]

        def do(e, txn, part):
            n = size = 0
            for key in part:
                v = txn.get(key, db=e.objects)
                if v is None:
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

        total_n = total_size = 0
        for i in range(0, len(keys), 10_000):  # keep write transactions short
            part = keys[i : i + 10_000]
            n, s = self._write(lambda e, txn, part=part: do(e, txn, part))
            total_n, total_size = total_n + n, total_size + s
        return total_n, total_size

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

    def close(self) -> None:
        """Close this process's environment of the store.

        The environment is shared by every handle on the store in this
        process; any of them reopens it transparently when used again.

        Raises:
            StoreError: called inside a read snapshot of the store.
        """
        with _ENVS_LOCK:
            e = _ENVS.get(self.path)
        if e is not None and e.pid == os.getpid():  # never close one inherited across fork()
            _close_env(e, "close it")
        if self._state is not None:
            self._state.close()
