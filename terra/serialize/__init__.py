"""Values ↔ objects: type-aware codecs and canonical hashing.

    store_value(store, value) -> ObjectId   encode, store every object, return the value's id
    hash_value(value) -> ObjectId           the id store_value would return, storing nothing
    load_value(store, oid) -> value         decode (a fresh, independent value each call)
    summarize(store, oid) -> dict           {"type": ..., "shape"/"dtype"/"len"..., "nbytes": ...}
    register_codec(type, encode, decode, name=...)
    store_path(store, path) / restore_path(store, oid, dest)   files and directories
    hash_path(path) -> ObjectId            the id store_path would return, storing nothing
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

Every stored form is a Merkle tree of canonical objects, so a value's id is a
function of the value alone (see each codec's docstring for its layout).
pandas frames are stored in the Arrow columnar format with one object per
Arrow buffer (not one IPC stream): numeric columns are then hashed in place,
and unchanged columns are shared between versions of a frame.
"""

from ._scratch import scratch_dir, set_scratch_dir

# The rest loads on first use: opening a store (which sets the scratch dir)
# must not import numpy, so that `terra ls` and friends start fast.
_LAZY = {
    "load_value": "._decode", "plain_value": "._decode", "summarize": "._decode",
    "hash_value": "._encode", "store_value": "._encode",
    "hash_path": "._files", "restore_path": "._files", "store_path": "._files",
    "PickleWarning": ".registry", "register_codec": ".registry",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def figure_png(store, oid) -> bytes:
    """The PNG bytes of a stored matplotlib figure (see :func:`.codecs.figure.figure_png`)."""
    # Imported on call: the codecs load on first use, not with terra.serialize.
    from .codecs.figure import figure_png as _png

    return _png(store, oid)


__all__ = [
    "PickleWarning",
    "figure_png",
    "hash_value",
    "load_value",
    "plain_value",
    "register_codec",
    "restore_path",
    "scratch_dir",
    "set_scratch_dir",
    "store_path",
    "store_value",
    "summarize",
]
