"""File inputs: task arguments keyed by the content of a file or directory tree.

A task argument that is a ``pathlib.Path``, or a string wrapped in
:class:`File`, stands for what is at that path: the call's cache key holds the
id of the file or directory tree (the id :func:`terra.serialize.store_path`
gives it), so editing the file makes the next call run, and a run records that
content (stored, so ``terra.inp`` can restore the exact input and ``terra why``
can say which file changed). The function still receives the path as given.

Unchanged files are not read again: the id of each file is remembered in this
process under its path and ``(device, inode, size, mtime_ns, ctime_ns)``.
A file changed within :data:`RACY_NS` of being read is not remembered, since a
write in the same timestamp tick could leave every field of its stat equal.
"""

from __future__ import annotations

import os
import pathlib
import time

from .errors import SerializationError, TaskError
from .objects import ObjectId

__all__ = ["File", "FileInput", "is_file_arg"]

#: A file whose mtime or ctime is this recent (ns) is hashed again on the next call.
RACY_NS = 2_000_000_000
#: Files remembered at most; the memory is cleared when it fills.
CACHE_MAX = 100_000

# abspath -> (stat signature, blob id)
_known: dict[str, tuple[tuple, ObjectId]] = {}


class File:
    """Marks a path given as a string as a file input: the call is keyed by its content.

    ``pathlib.Path`` arguments are file inputs already; a plain ``str`` stays a
    string. The function receives ``path`` unchanged.

    Args:
        path: a file or directory, ``str`` or ``os.PathLike``.
    """

    __slots__ = ("path",)

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"terra.File needs a str or path, got {type(path).__name__}: {path!r}")
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
    """One file argument of one call: what the function receives, the path, and the content id."""

    __slots__ = ("value", "path", "__terra_ref__")

    def __init__(self, value, task: str, where: str):
        self.value = value.path if type(value) is File else value
        self.path = os.fspath(self.value)
        if not os.path.exists(self.path):
            raise TaskError(f"task {task}: file argument {where} = {self.path!r} does not exist (a path the "
                            "task writes is passed as a str, not a Path)")
        from .serialize import hash_path

        try:
            self.__terra_ref__ = hash_path(self.path, _remembered)
        except (SerializationError, OSError) as e:
            raise TaskError(f"task {task}: cannot read file argument {where} = {self.path!r}: {e}") from e

    def store(self, store, task: str, where: str) -> ObjectId:
        """Store the content; raises TaskError if it is no longer what the call was keyed by."""
        from .serialize import store_path

        oid = store_path(store, self.path, lambda enc, p, read: _remembered(enc, p, read, store))
        if oid != self.__terra_ref__:
            raise TaskError(f"task {task}: file argument {where} = {self.path!r} changed while the run "
                            "was starting; its result would not match its cache key, so it was not run")
        return oid


def _signature(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _remembered(enc, path: str, read, store=None) -> ObjectId:
    """A file's blob id from memory when its stat is unchanged (and, storing, the store has it)."""
    path = os.path.abspath(path)
    before = os.stat(path)
    sig = _signature(before)
    known = _known.get(path)
    if known is not None and known[0] == sig and (store is None or store.has(known[1])):
        return known[1]
    oid = read(enc, path)
    after = os.stat(path)
    racy = time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) < RACY_NS
    if _signature(after) == sig and not racy:
        if len(_known) >= CACHE_MAX:
            _known.clear()
        _known[path] = (sig, oid)
    return oid
