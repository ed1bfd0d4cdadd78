"""LMDB backend, used the way LMDB's authors require.

* One environment per store per process, shared by every handle; a child
  after ``fork()`` opens its own and never closes the parent's (closing it
  would release the parent's reader slots).
* The map starts at the requested size and grows on ``MapFull``; growth is
  serialized across processes with a file lock, and other processes adopt the
  new size when LMDB tells them (``MapResized``).
* ``set_mapsize`` is only legal with no transaction open in the process, so
  every transaction of an environment runs under its process-local lock.
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
from typing import Iterable, Iterator

import lmdb

from ..errors import StoreError, UnsupportedFilesystem
from .base import Backend

__all__ = ["LMDBBackend", "check_local_filesystem"]

DEFAULT_MAP_SIZE = 1 << 30
# Bytes written per transaction before committing, so one huge value does not
# hold the single LMDB write lock for long.
TXN_BYTES = 64 << 20
_TIME = struct.Struct("<d")
_GROW_STEP = 1 << 20

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "ncpfs", "fuse.sshfs",
    "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph", "lustre", "9p", "fuse.s3fs",
})


def check_local_filesystem(path: str, mountinfo: str | None = None) -> str:
    """Return the filesystem type of ``path``; raise if LMDB cannot use it safely.

    Raises:
        UnsupportedFilesystem: ``path`` is on NFS, SMB or another network filesystem.
    """
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo") as f:
                mountinfo = f.read()
        except OSError:  # not Linux: nothing to check against
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

    def __init__(self, path: str, map_size: int, readonly: bool):
        self.path = path
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.readonly = readonly
        self.closed = False
        # Read snapshots open in this process (under ``lock``): the map must
        # not be resized while one is, or its zero-copy buffers would dangle.
        self.open_readers = 0
        try:
            self.env = lmdb.open(
                path, map_size=map_size, max_dbs=4, subdir=True, readonly=readonly,
                sync=True, metasync=True, lock=True, max_readers=254,
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
            raise StoreError(f"cannot open store {path}: {e}") from e

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
# closed in the child.
_ABANDONED: list[_Env] = []


def _shared_env(path: str, map_size: int, readonly: bool) -> _Env:
    with _ENVS_LOCK:
        env = _ENVS.get(path)
        if env is not None and env.pid != os.getpid():
            _ABANDONED.append(env)
            env = None
        if env is not None and env.readonly and not readonly:
            env = None  # reopen writable; the read-only handle stays valid for its holders
        if env is None:
            env = _ENVS[path] = _Env(path, map_size, readonly)
        return env


def _reset_after_fork() -> None:
    # The lock of _ENVS may have been held by another thread at fork time.
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


class _Reader:
    __slots__ = ("txn", "db")

    def __init__(self, txn, db):
        self.txn, self.db = txn, db

    def get(self, key):
        return self.txn.get(key, db=self.db)


class _RefTxn:
    __slots__ = ("txn", "db")

    def __init__(self, txn, db):
        self.txn, self.db = txn, db

    def get(self, key):
        v = self.txn.get(key, db=self.db)
        return None if v is None else bytes(v)

    def put(self, key, value):
        self.txn.put(key, value, db=self.db)

    def delete(self, key):
        return self.txn.delete(key, db=self.db)

    def scan(self, prefix, reverse=False):
        cur = self.txn.cursor(db=self.db)
        if not reverse:
            if not cur.set_range(prefix):
                return
            for k, v in cur:
                if not k.startswith(prefix):
                    return
                yield bytes(k), bytes(v)
            return
        # Position just past the prefix range, then walk back.
        end = _prefix_end(prefix)
        found = cur.set_range(end) if end is not None else cur.last()
        if end is not None and found:
            found = cur.prev()
        elif end is not None:
            found = cur.last()
        while found:
            k = cur.key()
            if not k.startswith(prefix):
                if k < prefix:
                    return
            else:
                yield bytes(k), bytes(cur.value())
            found = cur.prev()


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

    def __init__(self, path: str, map_size: int = DEFAULT_MAP_SIZE, readonly: bool = False):
        os.makedirs(path, exist_ok=True) if not readonly else None
        if not readonly:
            check_local_filesystem(path)
        self.path = os.path.realpath(path)
        self._map_size = map_size
        self._readonly = readonly
        self._env()  # open now so errors surface at open

    def _env(self) -> _Env:
        return _shared_env(self.path, self._map_size, self._readonly)

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

    def _write(self, fn, need: int = 0):
        """Run ``fn(env, txn)`` in a write transaction, growing the map as needed."""
        while True:
            e = self._env()
            with e.lock:
                if e.closed:  # closed by another handle meanwhile: reopen
                    continue
                size = e.env.info()["map_size"]
                try:
                    with e.env.begin(write=True, buffers=True) as txn:
                        return fn(e, txn)
                except lmdb.MapFullError:
                    self._grow(e, size, need)
                except lmdb.MapResizedError:
                    self._adopt_size(e)

    @contextmanager
    def _read(self, buffers: bool):
        e = self._env()
        with e.lock:
            if e.closed:  # closed by another handle meanwhile: reopen
                e = self._env()
                e.lock.acquire()
                e.lock.release()
            while True:
                try:
                    txn = e.env.begin(buffers=buffers)
                    break
                except lmdb.MapResizedError:
                    self._adopt_size(e)
            e.open_readers += 1
            try:
                yield e, txn
            finally:
                e.open_readers -= 1
                txn.abort()

    # -- Backend ---------------------------------------------------------------

    def put_many(self, items: Iterable[tuple[bytes, object]]) -> list[bool | None]:
        out: list[bool | None] = []
        batch: list[tuple[bytes, object]] = []
        size = 0

        def do(e, txn):
            now = _TIME.pack(time.time())
            cur = txn.cursor(db=e.objects)
            res = []
            for key, value in batch:
                if value is None:  # refresh the time of an existing id only
                    if not cur.set_key(key):
                        res.append(None)
                        continue
                    res.append(False)
                else:
                    res.append(txn.put(key, value, overwrite=False, db=e.objects))
                txn.put(key, now, db=e.times)
            return res

        def flush():
            out.extend(self._write(do, need=size))
            batch.clear()

        for key, value in items:
            batch.append((bytes(key), value))
            if value is not None:
                size += value.nbytes if isinstance(value, memoryview) else len(value)
            if size >= TXN_BYTES:
                flush()
                size = 0
        if batch:
            flush()
        return out

    def has_many(self, keys):
        with self._read(True) as (e, txn):
            return [txn.get(bytes(k), db=e.objects) is not None for k in keys]

    @contextmanager
    def reading(self):
        with self._read(True) as (e, txn):
            yield _Reader(txn, e.objects)

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
                    if t is not None and _TIME.unpack(t)[0] >= older_than:
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
                    batch.append((k, len(v), _TIME.unpack(t)[0] if t else 0.0))
                    if len(batch) >= 4096:
                        break
            yield from batch
            if len(batch) < 4096:
                return
            start, skip = batch[-1][0], True

    @contextmanager
    def refs(self):
        with self._read(False) as (e, txn):
            yield _RefTxn(txn, e.refs)

    def update_refs(self, fn):
        return self._write(lambda e, txn: fn(_RefTxn(txn, e.refs)))

    def info(self) -> dict:
        """LMDB environment info and stats (map size, pages, readers)."""
        e = self._env()
        with e.lock:
            return {**e.env.info(), **e.env.stat(), "path": self.path}
