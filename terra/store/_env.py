"""LMDB environments: one per store per process, shared by every handle, safe across fork().

A child after ``fork()`` opens its own environment and never closes the
parent's (closing it would free the parent's reader slots, py-lmdb's cached
spare read transaction included). Stale reader slots of dead processes are
cleared at open.
"""

from __future__ import annotations

import os
import threading

import lmdb

from ..errors import StoreError
from ..objects import CHUNK_SIZE

__all__ = ["Env", "close_env", "process_id", "registered", "shared_env", "usable"]

# Largest join buffer kept between puts: one chunk and its header.
_SCRATCH_MAX = CHUNK_SIZE + 64


class Env:
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
        # End of data.mdb as last seen by this process (see _lmdb's _keep_ahead).
        self.file_end = 0
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
        self.psize = self.env.stat()["psize"]

    def scratch(self, n: int):
        """A reused buffer of ``n`` bytes (call under ``lock``), or None if too large to keep."""
        if n > _SCRATCH_MAX:
            return None
        if self._scratch is None or self._scratch.nbytes < n:
            import numpy as np

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


_ENVS: dict[str, Env] = {}
_ENVS_LOCK = threading.Lock()
# Environments inherited across fork(): kept referenced so they are never
# closed in the child. They still hold the parent's reader slots (py-lmdb
# keeps a spare read transaction in one): closing them here would free those
# slots under the parent's feet.
_ABANDONED: list[Env] = []


def shared_env(path: str, map_size: int, readonly: bool, volatile: bool = False) -> Env:
    """This process's environment of the store in ``path``, opened (or reopened writable) if needed."""
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
                env = _ENVS[path] = Env(path, map_size, readonly, inherited, volatile)
                return env
            if not (env.readonly and not readonly):
                return env
        # Reopen writable: LMDB allows one environment per file per process,
        # so the read-only one is closed; handles using it reopen transparently.
        close_env(env, "reopen it writable")


def close_env(env: Env, why: str) -> None:
    """Close ``env`` once no thread uses it; refused inside a read snapshot of this thread."""
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


def usable(env: Env | None, path: str) -> bool:
    """Whether ``env`` is still this process's open environment of ``path`` (checked on every read).

    Lock-free (one dict read is atomic) and without a ``getpid`` system call
    (``_pid`` follows fork): every cache hit asks.
    """
    return env is not None and not env.closed and env.pid == _pid and _ENVS.get(path) is env


def registered(path: str) -> Env | None:
    """The environment registered for ``path`` in this process (perhaps inherited across fork()), or None."""
    with _ENVS_LOCK:
        return _ENVS.get(path)


_pid = os.getpid()


def process_id() -> int:
    """``os.getpid()`` without a system call per use (a few per cache lookup, more per run).

    Refreshed in a forked child by the same at-fork hook that resets the
    registry's lock, so a child never takes its parent's environment for its own.
    """
    return _pid


def _reset_after_fork() -> None:
    # The lock of _ENVS may have been held by another thread at fork time.
    global _ENVS_LOCK, _pid
    _ENVS_LOCK = threading.Lock()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_reset_after_fork)
