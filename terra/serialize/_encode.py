"""The encoder: a value becomes content-addressed objects, emitted to a sink.

One encoder serves both :func:`store_value` (the sink batches ``put_many``)
and :func:`hash_value` (the sink drops everything), so a value's hash and the
id it is stored under can never disagree.

A value's id depends only on the value, never on where it sits: the same
array has the same id at top level, inside a dict or inside a dataclass.
Containers are Merkle trees of their children's ids, with small primitives
inlined as entries.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Callable

from ..errors import SerializationError
from ..objects import Object, ObjectId, is_inline, object_id, split_payload
from . import registry

__all__ = ["Encoder", "hash_value", "store_value"]

# The store sink writes pending objects once this much payload has accumulated,
# bounding the memory held by encoded copies (Arrow IPC, pickles, files).
FLUSH_BYTES = 64 << 20

Pairs = list[tuple[ObjectId, Object]]

# Encoders by exact type, filled by install(): fn(encoder, value) -> ObjectId.
EXACT: dict[type, Callable[["Encoder", Any], ObjectId]] = {}
# Encoders tried in the codec table's order for types not in EXACT: fn(encoder, value) -> ObjectId | None.
FINDERS: list[Callable[["Encoder", Any], ObjectId | None]] = []


def ref_of(value: Any) -> ObjectId | None:
    """The id a value stands for (``__terra_ref__``, e.g. an Artifact), else None."""
    # Look on the type first: a Mock or a proxy answers any attribute name.
    if getattr(type(value), "__terra_ref__", None) is None:
        return None
    ref = value.__terra_ref__
    if isinstance(ref, ObjectId):
        return ref
    if isinstance(ref, (bytes, bytearray)) and len(ref) == 16:
        return ObjectId(bytes(ref))
    if isinstance(ref, str):
        return ObjectId.from_hex(ref)
    raise SerializationError(f"{type(value).__name__}.__terra_ref__ is not an object id: {ref!r}")


class Encoder:
    """Turns values into objects; every object goes to ``sink(pairs)`` children first."""

    def __init__(self, sink: Callable[[Pairs], None]):
        self._sink = sink
        # id(obj) -> (obj, oid): a container seen twice is encoded once. The
        # object is kept so its id() cannot be reused by a temporary.
        self._memo: dict[int, tuple[Any, ObjectId]] = {}
        self._active: set[int] = set()
        # Steps from the top-level value down to the one being encoded: strings, or
        # (kind, label) pairs formatted only when an error needs the path.
        self.steps: list = []

    # -- emitting objects ----------------------------------------------------

    def emit(self, obj: Object) -> ObjectId:
        """Send one small object to the sink; returns its id."""
        oid = object_id(obj)
        self._sink([(oid, obj)])
        return oid

    def payload(self, codec: str, meta: dict, buf) -> ObjectId:
        """Send a payload (chunked when large, hashed in place); returns the value's id."""
        pairs = split_payload(codec, meta, buf)
        self._sink(pairs)
        return pairs[-1][0]

    # -- values ----------------------------------------------------------------

    @property
    def path(self) -> str:
        """Where the encoder is inside the top-level value, e.g. ``value["models"][3]``."""
        return "value" + "".join(map(format_step, self.steps))

    def fail(self, value: Any, why: str, cls=SerializationError) -> SerializationError:
        """An error naming the current path and the value's type."""
        return cls(f"cannot store {self.path} of type {type_name(type(value))}: {why}")

    def entry(self, value: Any, step: str):
        """A Tree entry for ``value``: the value itself if :func:`is_inline`, else a child id."""
        return value if is_inline(value) else self.child(value, step)

    def child(self, value: Any, step: str) -> ObjectId:
        """The id of a value nested at ``step`` below the current path."""
        self.steps.append(step)
        try:
            return self.value(value)
        finally:
            self.steps.pop()

    def value(self, value: Any) -> ObjectId:
        """The id of ``value``, emitting every object it is made of."""
        t = type(value)
        fn = EXACT.get(t)
        if fn is not None and t not in _CONTAINERS and t not in registry.USER_TYPES:
            return fn(self, value)
        ref = ref_of(value)
        if ref is not None:
            return ref
        key = id(value)
        hit = self._memo.get(key)
        if hit is not None:
            return hit[1]
        if key in self._active:
            raise self.fail(value, "it contains itself (a reference cycle)")
        self._active.add(key)
        try:
            if fn is not None and t not in registry.USER_TYPES:
                oid = fn(self, value)
            else:
                oid = self._find(value)
        finally:
            self._active.discard(key)
        self._memo[key] = (value, oid)
        return oid

    def _find(self, value: Any) -> ObjectId:
        for finder in FINDERS:
            oid = finder(self, value)
            if oid is not None:
                return oid
        raise self.fail(value, "no codec accepts it")  # the pickle fallback is last; unreachable


_CONTAINERS: set[type] = set()  # exact types that need cycle detection and memoizing


def short_repr(x: Any) -> str:
    """A value as shown in a path: strings in double quotes, long reprs cut."""
    r = json.dumps(x) if type(x) is str else repr(x)
    return r if len(r) <= 40 else r[:37] + "..."


_STEP_FORMATS = {"[]": "[{}]", "key": "<key {}>", "{}": "{{{}}}"}


def format_step(step) -> str:
    """One path step as text: ``["a"]``, ``[3]``, ``<key (1, 2)>``, ``{'x'}`` or ``.field``."""
    if type(step) is str:
        return step
    kind, label = step
    return _STEP_FORMATS[kind].format(short_repr(label))


def warn_user(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside terra (the user's line)."""
    import os
    import warnings

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(root):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def type_name(cls: type) -> str:
    """A readable name for a type: ``int``, ``numpy.ndarray``, ``mymod.Model``."""
    mod = cls.__module__
    return cls.__qualname__ if mod == "builtins" else f"{mod}.{cls.__qualname__}"


# -- sinks -------------------------------------------------------------------------


def discard(pairs: Pairs) -> None:
    """A sink that keeps nothing: hashing without storing."""


class StoreSink:
    """Batches objects into ``store.put_many`` calls, children before parents."""

    def __init__(self, store):
        self.store = store
        self.pending: dict[ObjectId, Object] = {}
        self.nbytes = 0

    def __call__(self, pairs: Pairs) -> None:
        for oid, obj in pairs:
            if oid not in self.pending:
                self.pending[oid] = obj
                data = getattr(obj, "data", None)
                if data is not None:
                    self.nbytes += memoryview(data).nbytes
        if self.nbytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.put_many(list(self.pending.items()))
            self.pending.clear()
            self.nbytes = 0


_installed = False
_install_lock = threading.Lock()


def _load_codecs() -> None:
    """Install the codec table (:data:`.codecs.TABLE`) once, in its order.

    Done on first use so that ``import terra`` does not pay for it; the lock
    keeps a second thread from dispatching on a half-filled table.
    """
    global _installed
    if _installed:
        return
    with _install_lock:
        if not _installed:
            from .codecs import TABLE

            for codec in TABLE:
                install(codec)
            _installed = True


def hash_value(value: Any) -> ObjectId:
    """The id ``value`` would be stored under, computed without storing anything.

    Like ``git hash-object``: equal values give equal ids in every process.

    Args:
        value: any value terra can store.

    Returns:
        The value's ObjectId (``str(oid)`` is its hex form).

    Raises:
        SerializationError: part of the value cannot be stored; the message names where.
        PickleRefused: the value needs pickle and ``allow_pickle`` is off.
    """
    _load_codecs()
    return Encoder(discard).value(value)


def store_value(store, value: Any) -> ObjectId:
    """Encode ``value`` and put every object it is made of into ``store``.

    Args:
        store: a :class:`terra.store.Store`.
        value: any value terra can store.

    Returns:
        The value's id (equal to :func:`hash_value` of it).

    Raises:
        SerializationError: part of the value cannot be stored; the message names where.
        PickleRefused: the value needs pickle and ``allow_pickle`` is off.
    """
    _load_codecs()
    sink = StoreSink(store)
    oid = Encoder(sink).value(value)
    sink.flush()
    return oid


def install(codec: registry.Codec) -> None:
    """Put what ``codec`` provides into the dispatch tables; its finder goes after those installed before.

    Raises:
        ValueError: a type, codec name or tree type is already taken by another codec.
    """
    tables = ((EXACT, codec.exact), (EXACT, codec.containers), (registry.BLOB_DECODERS, codec.blobs),
              (registry.TREE_DECODERS, codec.trees), (registry.SUMMARIZERS, codec.summaries))
    taken = [k for table, entries in tables for k, fn in entries.items() if table.get(k, fn) is not fn]
    if taken:  # checked before anything is installed: a refused codec leaves no trace
        raise ValueError(f"codec entries {taken!r} are already installed by another codec")
    for table, entries in tables:
        table.update(entries)
    _CONTAINERS.update(codec.containers)
    if codec.finder is not None and codec.finder not in FINDERS:
        FINDERS.append(codec.finder)


def loaded(name: str):
    """The module ``name`` if the program has imported it, else None (never imports)."""
    return sys.modules.get(name)
