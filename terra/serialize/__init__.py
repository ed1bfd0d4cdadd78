"""Values ↔ objects: type-aware codecs and canonical hashing.

    store_value(store, value) -> ObjectId   encode, store every object, return the value's id
    hash_value(value) -> ObjectId           the id store_value would return, storing nothing
    load_value(store, oid) -> value         decode (a fresh, independent value each call)
    summarize(store, oid) -> dict           {"type": ..., "shape"/"dtype"/"len"..., "nbytes": ...}
    register_codec(type, encode, decode, name=...)
    store_path(store, path) / restore_path(store, oid, dest)   files and directories
    figure_png(store, oid) -> bytes         PNG of a stored matplotlib figure

Any object with a ``__terra_ref__`` attribute (an ObjectId) — e.g. an
``terra.io.Artifact`` — is encoded as a reference to that id without
re-hashing or re-storing its value.

Layout: ``_encode`` (the one encoder, with its store and hash sinks),
``_decode`` (loading and summaries), ``registry`` (codec tables, user codecs,
class paths), ``_files`` (paths and ``__terra_write__`` objects), ``_user``
(registered codecs), and ``codecs/`` with one module per family of types.
Codec modules are imported on first use, and torch/matplotlib/pyarrow only
when a value needs them.
"""

from ._decode import load_value, summarize
from ._encode import hash_value, store_value
from ._files import restore_path, scratch_dir, set_scratch_dir, store_path
from .registry import register_codec


def figure_png(store, oid) -> bytes:
    """The PNG bytes of a stored matplotlib figure.

    Args:
        store: a :class:`terra.store.Store`.
        oid: the figure's id.

    Returns:
        The PNG file contents.

    Raises:
        SerializationError: ``oid`` is not a stored figure.
    """
    from .codecs.figure import figure_png as _png

    return _png(store, oid)


__all__ = [
    "figure_png",
    "hash_value",
    "load_value",
    "register_codec",
    "restore_path",
    "scratch_dir",
    "set_scratch_dir",
    "store_path",
    "store_value",
    "summarize",
]
