"""Codec tables: which function encodes a type and which decodes a stored name.

Each codec module declares what it provides as a :class:`Codec` (importing it
registers nothing); :mod:`terra.serialize.codecs` installs them from one
ordered table. Users add theirs through :func:`register_codec`. The tables:

- Blob decoders keyed by the Blob's ``codec`` name,
- Tree decoders keyed by the Tree's ``type``.

Class import paths (``module:qualname``) name classes inside stored objects
so that a dataclass, an Enum or a ``__terra_read__`` class can be found again
when a value is loaded in another process. A stored path is data, not an
instruction: :func:`resolve_class` gives the class only if it is the kind the
decoder builds, so a crafted ``os:system`` is refused, never called.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import SerializationError, UntrustedObject

__all__ = ["Codec", "PickleWarning", "UserCodec", "class_path", "import_class", "register_codec", "resolve_class",
           "user_codec_for"]

BLOB_DECODERS: dict[str, Callable] = {}
TREE_DECODERS: dict[str, Callable] = {}
SUMMARIZERS: dict[str, Callable] = {}


@dataclass(frozen=True)
class Codec:
    """What one codec module provides, installed by :mod:`terra.serialize.codecs`.

    ``finder(encoder, value) -> ObjectId | None`` is tried, in the table's order,
    for types not in ``exact``/``containers`` (encoders by exact type;
    containers also get cycle detection). ``blobs`` and ``trees`` are decoders
    by Blob codec name and Tree type; ``summaries`` are summarizers by Blob
    codec name or ``"tree:" + type``.
    """

    finder: Callable | None = None
    exact: Mapping[type, Callable] = field(default_factory=dict)
    containers: Mapping[type, Callable] = field(default_factory=dict)
    blobs: Mapping[str, Callable] = field(default_factory=dict)
    trees: Mapping[str, Callable] = field(default_factory=dict)
    summaries: Mapping[str, Callable] = field(default_factory=dict)


class PickleWarning(UserWarning):
    """A value was stored with pickle (may not load under other library versions)."""


class UserCodec:
    """A codec registered by the user: ``encode(obj) -> bytes``, ``decode(bytes) -> obj``."""

    __slots__ = ("type", "encode", "decode", "name")

    def __init__(self, type_: type, encode: Callable, decode: Callable, name: str):
        self.type, self.encode, self.decode, self.name = type_, encode, decode, name


_USER_BY_TYPE: dict[type, UserCodec] = {}
USER_TYPES = _USER_BY_TYPE  # read by the encoder: a user codec beats a built-in one
USER_BY_NAME: dict[str, UserCodec] = {}


def register_codec(type_: type, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any],
                   name: str | None = None) -> None:
    """Store values of ``type_`` (and its subclasses) with your own functions.

    The codec name is recorded in every stored value, so register the same
    name before loading such values in another process.

    Args:
        type_: the class to handle; subclasses use it too unless they have their own.
        encode: turns a value into bytes (deterministically: equal values, equal bytes).
        decode: turns those bytes back into an equal value.
        name: stable codec name; defaults to the class's import path.

    Raises:
        TypeError: ``type_`` is not a class or a function is not callable.
        ValueError: ``name`` is already used by another type.
    """
    if not isinstance(type_, type):
        raise TypeError(f"register_codec needs a class, got {type_!r}")
    if not callable(encode) or not callable(decode):
        raise TypeError("register_codec needs callable encode and decode functions")
    name = name or class_path(type_)
    other = USER_BY_NAME.get(name)
    if other is not None and other.type is not type_:
        raise ValueError(f"codec name {name!r} is already registered for {class_path(other.type)}")
    old = _USER_BY_TYPE.get(type_)
    if old is not None:
        USER_BY_NAME.pop(old.name, None)
    codec = UserCodec(type_, encode, decode, name)
    _USER_BY_TYPE[type_] = codec
    USER_BY_NAME[name] = codec


def user_codec_for(cls: type) -> UserCodec | None:
    """The user codec for ``cls``: its own, else the nearest base class's."""
    if not _USER_BY_TYPE:
        return None
    for base in cls.__mro__:
        c = _USER_BY_TYPE.get(base)
        if c is not None:
            return c
    return None


def class_path(cls: type) -> str:
    """``module:qualname`` of a class, the form stored in objects."""
    return f"{cls.__module__}:{cls.__qualname__}"


def importable(cls: type) -> bool:
    """Whether :func:`import_class` could find ``cls`` again by its path."""
    if "<locals>" in cls.__qualname__:
        return False
    try:
        return import_class(class_path(cls)) is cls
    except SerializationError:
        return False


def import_class(path: str) -> type:
    """The class named by a ``module:qualname`` path.

    Raises:
        SerializationError: the module or class cannot be found.
    """
    module, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise SerializationError(f"cannot find class {path} to load a stored value: {e}") from e
    return obj


def resolve_class(path: Any, kind: str, is_kind: Callable[[type], bool], dec) -> type:
    """The class a stored ``path`` names, if it is a class for which ``is_kind`` holds.

    A module the program has not imported yet is imported only for objects
    this user wrote (signed, see :mod:`terra.trust`) or with
    ``allow_foreign_pickles``: importing runs the module's code.

    Args:
        path: the ``module:qualname`` read from a stored object.
        kind: what the decoder builds, for the message ("an Enum", "a dataclass").
        is_kind: the test the class must pass.
        dec: the decoder; its ``oid`` is the object being decoded, named in errors.

    Raises:
        UntrustedObject: ``path`` names something else (a function, another class),
            or a module not yet imported in an object written by someone else.
        SerializationError: the module or class cannot be found.
    """
    oid = dec.oid
    if not isinstance(path, str) or ":" not in path:
        raise UntrustedObject(f"object {oid.hex()} names {path!r} as its class, which is not a class path")
    module = path.partition(":")[0]
    if module not in sys.modules and not _vouched_for(dec):
        raise UntrustedObject(
            f"object {oid.hex()} names class {path}, but module {module} is not imported and this object was "
            f"not written by you: importing it would run its code. Import {module} first, or use --trust / "
            f"terra.configure(allow_foreign_pickles=True) if you trust where this store came from")
    cls = import_class(path)
    try:
        ok = isinstance(cls, type) and bool(is_kind(cls))
    except Exception:  # noqa: BLE001 - an odd class that fails the test is not of the kind
        ok = False
    if not ok:
        raise UntrustedObject(f"object {oid.hex()} names {path} as its class, but that is not {kind}: "
                              f"refusing to call it")
    return cls


def _vouched_for(dec) -> bool:
    from .. import trust
    from ..config import get_config

    return get_config().allow_foreign_pickles or trust.verify(dec.oid, dec.signature(dec.oid))
