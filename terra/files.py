"""File inputs: task arguments keyed by the content of a file or directory tree.

A task argument that is a ``pathlib.Path``, or a string wrapped in
:class:`File`, stands for what is at that path: the call's cache key holds the
id of the file or directory tree (the id :func:`terra.serialize.store_path`
gives it), so editing the file makes the next call run, and a run records that
content (stored, so ``terra.inp`` can restore the exact input and ``terra why``
can say which file changed). The function still receives the path as given.

Unchanged files are not read again: the id of each file is remembered under
its absolute path and ``(device, inode, size, mtime_ns, ctime_ns)``, in this
process and in the store's short-lived state (``filestat/<hash of path>``,
gone with the rest of that state after a reboot). A file changed within
:data:`RACY_NS` of being read is not remembered, since a write in the same
timestamp tick could leave every field of its stat equal.
"""

from __future__ import annotations

import os
import pathlib
import time

import msgpack
import xxhash

from .errors import SerializationError, TaskError
from .objects import ObjectId

__all__ = ["File", "FileInput", "is_file_arg"]

#: A file whose mtime or ctime is this recent (ns) is hashed again on the next call.
RACY_NS = 2_000_000_000
#: Files remembered at most; the memory is cleared when it fills.
CACHE_MAX = 100_000

# abspath -> (stat signature, blob id)
_known: dict[str, tuple[list, ObjectId]] = {}


class File:
    """Marks a path given as a string as a file input: the call is keyed by its content.

    ``pathlib.Path`` arguments are file inputs already; a plain ``str`` stays a
    string. The function receives ``path`` unchanged.

    Args:
        path: a file or directory, ``str`` or ``os.PathLike``.

    Raises:
        TaskError: ``path`` is not a str or path.
    """

    __slots__ = ("path",)

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise TaskError(f"terra.File needs a str or path, got {type(path).__name__}: {path!r}")
        self.path = path

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __eq__(self, other) -> bool:
        return type(other) is File and other.path == self.path

    def __hash__(self) -> int:
        return hash((File, self.path))

    def __repr__(self) -> str:
        return f"terra.File({self.path!r})"


def is_file_arg(value) -> bool:
    """Whether a task argument is a file input (a ``pathlib.Path`` or a :class:`File`)."""
    return isinstance(value, (pathlib.Path, File))


class FileInput:
    """One file argument of one call: what the function receives, its path and its content id.

    Args:
        value: the ``Path`` or :class:`File` argument.
        task: the task's name, for errors.
        where: the argument's place (``data``, ``args[0]``...), for errors.
        store: the store whose short-lived state remembers file ids across processes.

    Raises:
        TaskError: the path does not exist or cannot be read.
    """

    __slots__ = ("value", "path", "__terra_ref__")

    def __init__(self, value, task: str, where: str, store=None):
        self.value = value.path if type(value) is File else value
        self.path = os.fspath(self.value)
        if not os.path.exists(self.path):
            raise TaskError(f"task {task}: file argument {where} = {self.path!r} does not exist (a path the "
                            "task writes is passed as a str, not a Path)")
        from .serialize import hash_path

        memory = _Memory(store, storing=False)
        try:
            self.__terra_ref__ = hash_path(self.path, memory)
        except (SerializationError, OSError) as e:
            raise TaskError(f"task {task}: cannot read file argument {where} = {self.path!r}: {e}") from e
        memory.save()

    def store(self, store, task: str, where: str) -> ObjectId:
        """Store the content; raises TaskError if it is no longer what the call was keyed by."""
        from .serialize import store_path

        memory = _Memory(store, storing=True)
        oid = store_path(store, self.path, memory)
        memory.save()
        if oid != self.__terra_ref__:
            raise TaskError(f"task {task}: file argument {where} = {self.path!r} changed while the run "
                            "was starting; its result would not match its cache key, so it was not run")
        return oid


_STATE_PREFIX = b"filestat/"


def _signature(st: os.stat_result) -> list:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class _Memory:
    """Answers ``file_blob(enc, path, read)`` from the ids remembered for unchanged files.

    Looks in this process first, then in the store's short-lived state (so a
    new process does not read an unchanged file again); what it learns is
    written back by :meth:`save` in one transaction.
    """

    def __init__(self, store, storing: bool):
        self.store = store
        self.storing = storing
        self.learned: list[tuple[bytes, bytes]] = []

    def __call__(self, enc, path: str, read) -> ObjectId:
        path = os.path.abspath(path)
        before = os.stat(path)
        sig = _signature(before)
        oid = self._recall(path, sig)
        if oid is not None and (not self.storing or self.store.has(oid)):
            return oid
        oid = read(enc, path)
        racy = time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) < RACY_NS
        if _signature(os.stat(path)) == sig and not racy:
            if len(_known) >= CACHE_MAX:
                _known.clear()
            _known[path] = (sig, oid)
            if self.store is not None:
                self.learned.append((_state_key(path), msgpack.packb([*sig, bytes(oid)])))
        return oid

    def _recall(self, path: str, sig: list) -> ObjectId | None:
        known = _known.get(path)
        if known is not None and known[0] == sig:
            return known[1]
        if self.store is None:
            return None
        with self.store.state_refs() as txn:
            raw = txn.get(_state_key(path))
        if raw is None:
            return None
        try:
            *theirs, oid = msgpack.unpackb(bytes(raw))
            oid = ObjectId(oid)
        except Exception:  # noqa: BLE001 - a damaged memory is only a miss
            return None
        if theirs != sig:
            return None
        _known[path] = (sig, oid)
        return oid

    def save(self) -> None:
        """Write what was learned to the store's short-lived state."""
        if self.learned:
            learned, self.learned = self.learned, []
            self.store.update_state(lambda txn: [txn.put(k, v) for k, v in learned])


def _state_key(path: str) -> bytes:
    # Paths can exceed LMDB's 511-byte keys: name them by their hash.
    return _STATE_PREFIX + xxhash.xxh3_128_digest(path.encode("utf-8", "surrogateescape"))
