"""terra: reproducible, cached pipelines on a content-addressed store.

Decorate a function with ``@Task`` and every call becomes a recorded run
whose outputs are stored as immutable, content-addressed artifacts; calling
it again with the same inputs and code returns the stored result.
"""

from __future__ import annotations

import sys as _sys
import types as _types

__version__ = "0.1.0"

from . import io
from .config import configure, get_config
from .errors import (
    AmbiguousPrefix,
    CorruptObject,
    NotFound,
    SerializationError,
    TerraError,
    UnsupportedFormat,
    UntrustedObject,
)
from .files import File
from .io import Artifact
from .runs import get_log, get_meta, get_run, get_run_dir, inp, out
from .task import Task, task

# Store maintenance and queries load on first use, so ``import terra`` (and
# every process that only runs tasks) skips them.
_LAZY = {
    "compact": "gc", "du": "gc", "fsck": "fsck", "gc": "gc", "get_artifact": "query", "get_runs": "query",
    "load": "query", "provenance": "provenance", "rm": "retention", "select_runs": "retention",
    "tag": "retention", "untag": "retention", "why": "why",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'terra' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


class _Package(_types.ModuleType):
    """terra's module type: a submodule import never hides the function of the same name.

    Importing ``terra.gc`` sets the package attribute ``gc`` to the module;
    ``terra.gc``, ``terra.fsck``, ``terra.why`` and ``terra.provenance`` stay
    the functions (as they were when these were imported eagerly).
    """

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def hash(value) -> str:  # noqa: A001 - mirrors `git hash-object`
    """The id ``value`` gets when stored, as 32 hex characters, without storing it."""
    from .serialize import hash_value

    return hash_value(value).hex()


def push(runs=None, remote: str | None = None, **options):
    """Upload runs with their ancestry to a remote (see :func:`terra.remote.push`)."""
    from .remote import push as _push

    return _push(runs, remote, **options)


def pull(runs=None, remote: str | None = None, **options):
    """Fetch runs with their ancestry from a remote (see :func:`terra.remote.pull`)."""
    from .remote import pull as _pull

    return _pull(runs, remote, **options)


def register_codec(type_, encode, decode, name: str) -> None:
    """Store values of ``type_`` with ``encode(obj) -> bytes`` / ``decode(bytes) -> obj``."""
    from .serialize import register_codec as _register

    _register(type_, encode, decode, name=name)


__all__ = [
    "AmbiguousPrefix",
    "Artifact",
    "CorruptObject",
    "File",
    "NotFound",
    "SerializationError",
    "Task",
    "TerraError",
    "UnsupportedFormat",
    "UntrustedObject",
    "compact",
    "configure",
    "du",
    "fsck",
    "gc",
    "get_artifact",
    "get_config",
    "get_log",
    "get_meta",
    "get_run",
    "get_run_dir",
    "get_runs",
    "hash",
    "inp",
    "io",
    "load",
    "out",
    "provenance",
    "pull",
    "push",
    "register_codec",
    "rm",
    "select_runs",
    "tag",
    "task",
    "untag",
    "why",
]
