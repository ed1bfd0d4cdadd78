"""Files and directories as objects, and objects that write themselves to files.

``store_path`` turns a file or a directory into ``Tree("dir", entries, meta)``
with one entry per file, ``(relative posix name, blob id)`` sorted by name,
each file's bytes a ``Blob("file", {}, bytes)`` (chunked when large, so equal
files and equal regions are stored once). A single file is a one-entry tree
whose name is ``""`` and whose meta says ``"path_kind": "file"``. Empty
directories and executable bits are kept in meta; symlinks are followed.

Objects with ``__terra_write__(self, path)`` and ``__terra_read__(cls, path)``
are stored the same way, with the class's import path in the tree meta.
"""

from __future__ import annotations

import atexit
import functools
import os
import pathlib
import shutil
import stat
import tempfile
import weakref

import numpy as np

from ..errors import SerializationError
from ..objects import Blob, Chunked, ObjectId, Tree
from . import registry
from ._encode import Encoder, StoreSink, discard
from ._scratch import scratch_dir, set_scratch_dir

__all__ = ["hash_path", "restore_path", "scratch_dir", "set_scratch_dir", "store_path"]


def make_scratch(prefix: str) -> str:
    """A new empty directory under :func:`scratch_dir`."""
    base = scratch_dir()
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=base)


# -- encoding ------------------------------------------------------------------------------


def encode_path(enc: Encoder, path: str, meta: dict | None = None, file_blob=None) -> ObjectId:
    """Emit the objects of a file or directory tree; returns the Tree's id.

    ``file_blob(enc, path, read)`` may stand in for ``read(enc, path)`` (which
    reads one file and emits its Blob), e.g. to answer from a cache.
    """
    meta = dict(meta or {})
    blob = _file_blob if file_blob is None else functools.partial(file_blob, read=_file_blob)
    entries: list[tuple[str, ObjectId]] = []
    execs: list[str] = []
    empty: list[str] = []
    links: dict[str, str] = {}
    if os.path.isdir(path):
        meta["path_kind"] = "dir"
        # Symbolic links are kept as links: following them could copy a whole
        # dataset a run merely pointed at into the store, or loop forever.
        for root, dirs, files in os.walk(path):
            rel = os.path.relpath(root, path)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                links[rel + name] = os.readlink(os.path.join(root, name))
                dirs.remove(name)
            dirs.sort()
            if not dirs and not files and rel:
                empty.append(rel.rstrip("/"))
            for name in files:
                full = os.path.join(root, name)
                if os.path.islink(full):
                    links[rel + name] = os.readlink(full)
                    continue
                entries.append((rel + name, blob(enc, full)))
                if os.stat(full).st_mode & stat.S_IXUSR:
                    execs.append(rel + name)
    elif os.path.isfile(path):
        meta["path_kind"] = "file"
        entries.append(("", blob(enc, path)))
        if os.stat(path).st_mode & stat.S_IXUSR:
            execs.append("")
    else:
        raise SerializationError(f"{path} is neither a file nor a directory")
    entries.sort()
    if execs:
        meta["exec"] = sorted(execs)
    if empty:
        meta["empty_dirs"] = sorted(empty)
    if links:
        meta["links"] = links
    return enc.emit(Tree("dir", tuple(entries), meta))


def _file_blob(enc: Encoder, path: str) -> ObjectId:
    # np.fromfile reads into numpy memory (fast; bytes objects page-fault slowly).
    data = np.fromfile(path, dtype=np.uint8)
    return enc.payload("file", {}, data)


def store_path(store, path, file_blob=None) -> ObjectId:
    """Store a file or a directory tree; returns the id to give :func:`restore_path`.

    Args:
        store: a :class:`terra.store.Store`.
        path: a file or directory.
        file_blob: optional ``file_blob(enc, path, read)`` standing in for reading one file.

    Returns:
        The id of a ``Tree("dir")`` (equal contents give equal ids).

    Raises:
        SerializationError: ``path`` is neither a file nor a directory.
    """
    sink = StoreSink(store)
    oid = encode_path(Encoder(sink), os.fspath(path), file_blob=file_blob)
    sink.flush()
    return oid


def hash_path(path, file_blob=None) -> ObjectId:
    """The id :func:`store_path` would return for ``path``, storing nothing.

    Raises:
        SerializationError: ``path`` is neither a file nor a directory.
    """
    return encode_path(Encoder(discard), os.fspath(path), file_blob=file_blob)


# -- restoring -----------------------------------------------------------------------------


def _safe_join(dest: str, rel: str) -> str:
    if rel.startswith("/") or ".." in rel.split("/"):
        raise SerializationError(f"refusing to restore {rel!r}: it leaves the destination directory")
    return os.path.join(dest, *rel.split("/"))


def _write_file(store, oid: ObjectId, dest: str, executable: bool) -> None:
    _, data = store.read_payload(oid)
    tmp = dest + ".terra-tmp"
    data.tofile(tmp)
    if executable:
        os.chmod(tmp, os.stat(tmp).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp, dest)  # never leave a half-written file under the real name


def restore_path(store, oid, dest) -> str:
    """Write a stored file or directory to ``dest`` (created; existing files are replaced).

    Args:
        store: a :class:`terra.store.Store`.
        oid: an id from :func:`store_path` (or a file Blob's id).
        dest: where to write the file or the directory.

    Returns:
        ``dest``.

    Raises:
        NotFound: the object or one of its files is missing.
        SerializationError: ``oid`` is not a stored file or directory.
    """
    from ._decode import as_id

    oid = as_id(store, oid)
    dest = os.fspath(dest)
    obj = store.get(oid)
    if isinstance(obj, (Blob, Chunked)):
        if obj.codec != "file":
            raise SerializationError(f"object {oid.hex()} is a {obj.codec} value, not a file")
        parent = os.path.dirname(os.path.abspath(dest))
        os.makedirs(parent, exist_ok=True)
        _write_file(store, oid, dest, False)
        return dest
    if not isinstance(obj, Tree) or obj.type != "dir":
        raise SerializationError(f"object {oid.hex()} is not a stored file or directory")
    execs = set(obj.meta.get("exec", ()))
    if obj.meta.get("path_kind") == "file":
        (name, fid), = obj.entries
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        _write_file(store, fid, dest, name in execs)
        return dest
    os.makedirs(dest, exist_ok=True)
    for rel in obj.meta.get("empty_dirs", ()):
        os.makedirs(_safe_join(dest, rel), exist_ok=True)
    for rel, fid in obj.entries:
        full = _safe_join(dest, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        _write_file(store, fid, full, rel in execs)
    for rel, target in sorted(obj.meta.get("links", {}).items()):
        full = _safe_join(dest, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if os.path.lexists(full):
            os.remove(full)
        os.symlink(target, full)
    return dest


# -- objects that write themselves ---------------------------------------------------------


def _find(enc: Encoder, v) -> ObjectId | None:
    cls = type(v)
    if not hasattr(cls, "__terra_write__"):
        return None
    if not hasattr(cls, "__terra_read__"):
        raise enc.fail(v, "it defines __terra_write__ but not the classmethod __terra_read__")
    if not registry.importable(cls):
        raise enc.fail(v, "its class cannot be imported by name (defined inside a function?)")
    tmp = make_scratch("terra-write-")
    try:
        path = os.path.join(tmp, "value")
        try:
            v.__terra_write__(path)
        except Exception as e:  # noqa: BLE001 - user code
            raise enc.fail(v, f"__terra_write__ failed: {type(e).__name__}: {e}") from e
        if not os.path.exists(path):
            raise enc.fail(v, "__terra_write__ wrote nothing at the path it was given")
        return encode_path(enc, path, {"class": registry.class_path(cls)})
    finally:
        # The sink already holds the file contents in memory.
        shutil.rmtree(tmp, ignore_errors=True)


def _reads_itself(cls: type) -> bool:
    return callable(getattr(cls, "__terra_read__", None)) and callable(getattr(cls, "__terra_write__", None))


def _decode(dec, tree):
    cls_path = tree.meta.get("class")
    cls = None
    if cls_path is not None:  # checked before anything is written to disk
        cls = registry.resolve_class(cls_path, "a class defining __terra_read__", _reads_itself, dec)
    tmp = make_scratch("terra-read-")
    path = os.path.join(tmp, "value")
    try:
        restore_path(dec.store, _tree_id(tree), path)
        if cls is None:
            value = pathlib.Path(path)
        else:
            try:
                value = cls.__terra_read__(path)
            except Exception as e:  # noqa: BLE001 - user code
                raise SerializationError(f"object {dec.oid.hex()}: {cls_path}.__terra_read__ failed: "
                                         f"{type(e).__name__}: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_with(value, tmp)
    return value


def _remove_with(value, tmp: str) -> None:
    """Remove the scratch copy ``tmp`` once ``value`` no longer needs it.

    ``__terra_read__`` may keep reading its path lazily (memory maps, zarr...),
    so the copy lives as long as the value; values that cannot be weakly
    referenced hold nothing lazily that a live reference does not already
    keep open, so their copy goes now (open files and maps stay readable).
    Anything left when the interpreter exits goes then.
    """
    try:
        weakref.finalize(value, shutil.rmtree, tmp, True)
    except TypeError:
        if isinstance(value, pathlib.PurePath):
            # The value is the path itself: it lives until exit.
            _at_exit.add(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


_at_exit: set[str] = set()


@atexit.register
def _remove_leftovers() -> None:
    for tmp in list(_at_exit):
        shutil.rmtree(tmp, ignore_errors=True)


def _tree_id(tree: Tree) -> ObjectId:
    from ..objects import object_id

    return object_id(tree)


def _summary(store, tree) -> dict:
    kind = tree.meta.get("class", "").replace(":", ".") or tree.meta.get("path_kind", "dir")
    return {"type": kind, "files": len(tree.entries)}


PROVIDES = registry.Codec(finder=_find, trees={"dir": _decode}, summaries={"tree:dir": _summary})
