"""numpy arrays and scalars: the raw C-order buffer plus dtype and shape.

``Blob("numpy", {"dtype", "shape"[, "descr"[, "layout"]]}, buffer)`` (a
Chunked when over 4 MiB). A C-contiguous array is hashed in place, chunk by
chunk, with no copy; any other layout (Fortran order, strided views) is first
made C-contiguous, so equal elements give equal ids whatever the memory order.
The dtype string keeps byte order and units (``<f8``, ``>i4``, ``<M8[ns]``).

Structured dtypes are stored in their packed form: the fields' bytes one after
another, without the padding an aligned or offset layout leaves between them
(padding holds whatever was in memory, so hashing it would give equal values
different ids). ``descr`` describes the packed dtype; when the array's own
dtype is not that packed one, ``layout`` records it exactly (names, formats,
offsets, itemsize, alignment, nested) and loading copies the fields back into
that layout, with zeroed padding.

Object arrays (and numpy 2 StringDType, whose buffer holds pointers), dtypes
with titles or metadata go to the pickle fallback. Loading checks the stored
dtype, shape and payload size before viewing a byte of the payload.
"""

from __future__ import annotations

import numpy as np

from ...errors import CorruptObject
from ...objects import Blob, Chunked, ObjectId, object_id
from .. import registry
from .._encode import Encoder


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, (list, tuple)) else x


def _descr_dtype(descr) -> np.dtype:
    """The dtype of a ``dtype.descr`` that went through msgpack (tuples became lists)."""

    def field(f):
        if type(f) is not list or not 2 <= len(f) <= 3:
            raise ValueError(f"bad dtype field {f!r}")
        fmt = [field(g) for g in f[1]] if type(f[1]) is list else f[1]
        return (f[0], fmt, tuple(f[2])) if len(f) == 3 else (f[0], fmt)

    if type(descr) is not list:
        raise ValueError(f"bad dtype description {descr!r}")
    return np.dtype([field(f) for f in descr])


def _plain_ok(dtype: np.dtype) -> bool:
    return not dtype.hasobject and dtype.kind != "T" and dtype.metadata is None


def layout_spec(dtype: np.dtype):
    """An exact, plain description of ``dtype`` (nested lists/dicts), or None if it has none.

    Plain dtypes are their ``dtype.str``; subarrays ``{"base", "shape"}``;
    structured dtypes ``{"names", "formats", "offsets", "itemsize", "aligned"}``.
    """
    if not _plain_ok(dtype):
        return None
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        inner = layout_spec(base)
        return None if inner is None else {"base": inner, "shape": list(shape)}
    if dtype.fields is None:
        return dtype.str if np.dtype(dtype.str) == dtype else None
    names, formats, offsets = [], [], []
    for name in dtype.names:
        field = dtype.fields[name]
        if len(field) != 2:  # a field with a title
            return None
        inner = layout_spec(field[0])
        if inner is None:
            return None
        names.append(name)
        formats.append(inner)
        offsets.append(field[1])
    return {"names": names, "formats": formats, "offsets": offsets, "itemsize": dtype.itemsize,
            "aligned": bool(dtype.isalignedstruct)}


def spec_dtype(spec) -> np.dtype:
    """The dtype a :func:`layout_spec` describes.

    Raises:
        ValueError: the description is malformed or names an object dtype.
    """
    if type(spec) is str:
        dt = np.dtype(spec)
    elif type(spec) is dict and "base" in spec:
        shape = spec["shape"]
        if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"bad subarray shape {shape!r}")
        dt = np.dtype((spec_dtype(spec["base"]), tuple(shape)))
    elif type(spec) is dict:
        formats = spec["formats"]
        if type(formats) is not list:
            raise ValueError("bad structured dtype formats")
        dt = np.dtype({"names": spec["names"], "formats": [spec_dtype(f) for f in formats],
                       "offsets": spec["offsets"], "itemsize": spec["itemsize"],
                       "aligned": spec["aligned"] is True})
    else:
        raise ValueError(f"bad dtype description {spec!r}")
    if not _plain_ok(dt):
        raise ValueError(f"dtype {dt} cannot be read from raw bytes")
    return dt


def _packed(dtype: np.dtype) -> np.dtype:
    from numpy.lib import recfunctions as rf

    return rf.repack_fields(dtype, align=False, recurse=True)


def dtype_meta(dtype: np.dtype) -> dict | None:
    """Meta describing ``dtype`` and its packed form, or None if it cannot be stored as raw bytes."""
    if dtype.itemsize == 0 or not _plain_ok(dtype):
        return None
    if dtype.fields is None and dtype.subdtype is None:
        return {"dtype": dtype.str} if np.dtype(dtype.str) == dtype else None
    spec = layout_spec(dtype)
    if spec is None:
        return None
    packed = _packed(dtype)
    descr = packed.descr
    meta = {"dtype": packed.str, "descr": _listify(descr)}
    rebuilt = _descr_dtype(_listify(descr))
    if layout_spec(rebuilt) != layout_spec(packed):
        return None  # a packed dtype its descr cannot express
    if spec != layout_spec(rebuilt):
        meta["layout"] = spec
        if layout_spec(spec_dtype(spec)) != spec:
            return None
    return meta


def meta_dtype(meta: dict) -> np.dtype:
    """The dtype of the stored (packed) bytes recorded by :func:`dtype_meta`.

    Raises:
        ValueError, TypeError: the recorded dtype is malformed or not raw bytes.
    """
    descr = meta.get("descr")
    dt = _descr_dtype(descr) if descr is not None else np.dtype(meta["dtype"])
    if not _plain_ok(dt):
        raise ValueError(f"dtype {dt} cannot be read from raw bytes")
    return dt


def flat_bytes(a: np.ndarray) -> np.ndarray:
    """The array's elements in C order as a 1-D uint8 view (a copy only if not C-contiguous)."""
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a.reshape(-1).view(np.uint8)


def _stored_bytes(a: np.ndarray, meta: dict) -> np.ndarray:
    if "layout" in meta:
        a = np.asarray(a).astype(meta_dtype(meta))  # field by field: the padding is left out
    return flat_bytes(a)


def _enc_array(enc: Encoder, a: np.ndarray) -> ObjectId | None:
    meta = dtype_meta(a.dtype)
    if meta is None:
        return None
    data = _stored_bytes(a, meta)
    meta["shape"] = list(a.shape)
    return enc.payload("numpy", meta, data)


def _enc_scalar(enc: Encoder, v: np.generic) -> ObjectId | None:
    meta = dtype_meta(v.dtype)
    if meta is None:
        return None
    meta["type"] = "numpy." + type(v).__name__
    return enc.payload("numpy.scalar", meta, _stored_bytes(np.asarray(v), meta))


def _find(enc: Encoder, v) -> ObjectId | None:
    t = type(v)
    # np.memmap is an ndarray over a file: stored (and loaded) as a plain array.
    if t is np.ndarray or t is np.memmap:
        return _enc_array(enc, v)
    if isinstance(v, np.generic):
        return _enc_scalar(enc, v)
    return None


def _shape(meta: dict) -> tuple:
    shape = meta.get("shape")
    if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"bad array shape {shape!r}")
    return tuple(shape)


def _count(shape) -> int:
    n = 1
    for d in shape:  # Python ints: a crafted shape cannot overflow into a small product
        n *= d
    return n


def as_array(payload: np.ndarray, dtype: np.dtype, shape) -> np.ndarray:
    """View a fresh uint8 payload as an array (copied only if misaligned for the dtype).

    Raises:
        ValueError: the payload does not hold exactly ``shape`` elements of ``dtype``.
    """
    if payload.nbytes != dtype.itemsize * _count(shape):
        raise ValueError(f"stored array payload has {payload.nbytes} bytes, "
                         f"expected {dtype.itemsize} x {tuple(shape)}")
    if payload.ctypes.data % max(dtype.alignment, 1):
        payload = payload.copy()  # numpy allocations are aligned
    return payload.view(dtype).reshape(shape)


def _unpacked(meta: dict, payload: np.ndarray, shape) -> np.ndarray:
    packed = as_array(payload, meta_dtype(meta), shape)
    layout = meta.get("layout")
    if layout is None:
        return packed
    dtype = spec_dtype(layout)
    if layout_spec(_packed(dtype)) != layout_spec(packed.dtype):
        raise ValueError(f"stored layout {dtype} does not match its packed bytes {packed.dtype}")
    out = np.zeros(shape, dtype)
    out[...] = packed  # structured assignment goes field by field, by position
    return out


def _checked(blob, fn, payload=None):
    """``fn()``, with any failure on a malformed stored header raised as CorruptObject naming the object."""
    try:
        return fn()
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, MemoryError,
            RecursionError) as e:
        # Blob headers come without their payload: the id is computed only on this path.
        whole = blob if payload is None or isinstance(blob, Chunked) else Blob(blob.codec, blob.meta, payload)
        raise CorruptObject(f"object {object_id(whole).hex()} is not a valid stored numpy value "
                            f"({type(e).__name__}: {e})") from e


def _dec_array(dec, blob, payload):
    return _checked(blob, lambda: _unpacked(blob.meta, payload, _shape(blob.meta)), payload)


def _dec_scalar(dec, blob, payload):
    return _checked(blob, lambda: _unpacked(blob.meta, payload, ())[()], payload)


def _summary_dtype(meta: dict) -> np.dtype:
    return spec_dtype(meta["layout"]) if "layout" in meta else meta_dtype(meta)


def _sum_array(blob) -> dict:
    def summary():
        shape = _shape(blob.meta)
        dtype = _summary_dtype(blob.meta)
        return {"type": "numpy.ndarray", "shape": list(shape), "dtype": str(dtype),
                "nbytes": dtype.itemsize * _count(shape)}

    return _checked(blob, summary)


def _sum_scalar(blob) -> dict:
    return _checked(blob, lambda: {"type": str(blob.meta.get("type", "numpy.generic")),
                                   "dtype": str(_summary_dtype(blob.meta))})


PROVIDES = registry.Codec(finder=_find, blobs={"numpy": _dec_array, "numpy.scalar": _dec_scalar},
                          summaries={"numpy": _sum_array, "numpy.scalar": _sum_scalar})
