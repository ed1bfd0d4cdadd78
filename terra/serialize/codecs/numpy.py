"""numpy arrays and scalars: the raw C-order buffer plus dtype and shape.

``Blob("numpy", {"dtype", "shape"[, "descr"]}, buffer)`` (a Chunked when over
4 MiB). A C-contiguous array is hashed in place, chunk by chunk, with no copy;
any other layout (Fortran order, strided views) is first made C-contiguous, so
equal elements give equal ids whatever the memory order. The dtype string
keeps byte order and units (``<f8``, ``>i4``, ``<M8[ns]``); structured dtypes
also record ``dtype.descr``. Object arrays (and numpy 2 StringDType, whose
buffer holds pointers) go to the pickle fallback.
"""

from __future__ import annotations

import numpy as np

from ...errors import SerializationError
from ...objects import ObjectId
from .. import registry
from .._encode import FINDERS, Encoder


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, (list, tuple)) else x


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def dtype_meta(dtype: np.dtype) -> dict | None:
    """Meta describing ``dtype`` exactly, or None if it cannot be stored as raw bytes."""
    if dtype.hasobject or dtype.kind == "T" or dtype.itemsize == 0:
        return None
    meta = {"dtype": dtype.str}
    if dtype.fields is not None or dtype.subdtype is not None:
        descr = dtype.descr
        if np.dtype(descr) != dtype:  # padding/offsets descr cannot express
            return None
        meta["descr"] = _listify(descr)
    elif np.dtype(dtype.str) != dtype:
        return None
    return meta


def meta_dtype(meta: dict) -> np.dtype:
    """The dtype recorded by :func:`dtype_meta`."""
    descr = meta.get("descr")
    if descr is not None:
        return np.dtype([_tuplify(f) for f in descr])
    return np.dtype(meta["dtype"])


def flat_bytes(a: np.ndarray) -> np.ndarray:
    """The array's elements in C order as a 1-D uint8 view (a copy only if not C-contiguous)."""
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a.reshape(-1).view(np.uint8)


def _enc_array(enc: Encoder, a: np.ndarray) -> ObjectId | None:
    meta = dtype_meta(a.dtype)
    if meta is None:
        return None
    meta["shape"] = list(a.shape)
    return enc.payload("numpy", meta, flat_bytes(a))


def _enc_scalar(enc: Encoder, v: np.generic) -> ObjectId | None:
    meta = dtype_meta(v.dtype)
    if meta is None:
        return None
    meta["type"] = "numpy." + type(v).__name__
    return enc.payload("numpy.scalar", meta, flat_bytes(np.asarray(v)))


def _find(enc: Encoder, v) -> ObjectId | None:
    t = type(v)
    # np.memmap is an ndarray over a file: stored (and loaded) as a plain array.
    if t is np.ndarray or t is np.memmap:
        return _enc_array(enc, v)
    if isinstance(v, np.generic):
        return _enc_scalar(enc, v)
    return None


def as_array(payload: np.ndarray, dtype: np.dtype, shape) -> np.ndarray:
    """View a fresh uint8 payload as an array (copied only if misaligned for the dtype)."""
    if payload.nbytes != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise SerializationError(f"stored array payload has {payload.nbytes} bytes, "
                                 f"expected {dtype.itemsize} x {tuple(shape)}")
    if payload.ctypes.data % max(dtype.alignment, 1):
        payload = payload.copy()  # numpy allocations are aligned
    return payload.view(dtype).reshape(shape)


def _dec_array(dec, blob, payload):
    return as_array(payload, meta_dtype(blob.meta), tuple(blob.meta["shape"]))


def _dec_scalar(dec, blob, payload):
    return as_array(payload, meta_dtype(blob.meta), ())[()]


def _sum_array(blob) -> dict:
    shape = blob.meta["shape"]
    dtype = meta_dtype(blob.meta)
    return {"type": "numpy.ndarray", "shape": list(shape), "dtype": str(dtype),
            "nbytes": dtype.itemsize * int(np.prod(shape, dtype=np.int64))}


def _sum_scalar(blob) -> dict:
    return {"type": blob.meta.get("type", "numpy.generic"), "dtype": str(meta_dtype(blob.meta))}


FINDERS.append(_find)
registry.BLOB_DECODERS.update({"numpy": _dec_array, "numpy.scalar": _dec_scalar})
registry.SUMMARIZERS.update({"numpy": _sum_array, "numpy.scalar": _sum_scalar})
