"""pandas DataFrame, Series and Index in the Arrow columnar format, one object per buffer.

Layout (part of the format)::

    Tree("pandas", (schema, column, column, ...), {"type", "shape", "columns", "nbytes"...})
    schema = Blob("arrow.schema", {}, IPC-serialized Arrow schema with pandas metadata)
    column = Tree("arrow.array", (buffer | None, ...[, dictionary]), {"length", "null_count"[, "dictionary"]})
    buffer = Blob("arrow.buffer", {}, raw bytes)    (chunked when over 4 MiB)

The schema's pandas metadata keeps the index, column names, dtypes
(categorical, tz-aware, nullable, strings) and their order; columns are
data columns then index levels, as Arrow's pandas conversion lays them out.
Storing each Arrow buffer as its own payload, rather than one IPC stream,
means a numeric column is hashed in place with no copy (hashing a frame costs
about as much as reading it once) and a column that did not change between
two versions of a frame is stored once. Frames with ``attrs`` are wrapped as
``Tree("pandas.attrs", (frame, attrs))`` so attrs of any type go through
terra's own encoder.

Canonical form, so that equal frames built differently (concat, slices,
copies, block layouts, chunkings) get the same id:

- an int64 index that is a range is stored as a RangeIndex;
- every column is one contiguous array with exact-size buffers: no slice
  offset, a validity bitmap only when there are nulls, zeroed value slots
  under nulls and zeroed trailing bits;
- numpy-backed columns keep NaN/NaT as values (never turned into nulls);
- volatile schema metadata (pyarrow/pandas versions) is dropped and the
  pandas metadata written with sorted keys.

What Arrow cannot represent faithfully goes to the pickle fallback, never
stored altered: object columns (mixed Python values), duplicate column
names, nested Arrow types, and anything whose dtypes, columns or index type
would come back different (checked on a zero-row round trip, which costs no
data copies).
"""

from __future__ import annotations

import json
import threading

import numpy as np

from ...errors import SerializationError
from ...objects import ObjectId, Tree
from .. import registry
from .._encode import FINDERS, Encoder, loaded, warn_user
from .pickle import PickleWarning, pickle_value

__all__ = ["canonical_array"]

_SERIES_COLUMN = "__series__"
_VOLATILE = ("creator", "pandas_version", "attributes")
_SUMMARY_COLUMNS = 20

_warned: set[tuple[str, str]] = set()
_lock = threading.Lock()


class _Unfaithful(Exception):
    """Arrow would not give this pandas object back unchanged."""


# -- encoding ----------------------------------------------------------------------------


def _find(enc: Encoder, v) -> ObjectId | None:
    pd = loaded("pandas")
    if pd is None:
        return None
    t = type(v)
    if t is pd.DataFrame:
        kind = "DataFrame"
    elif t is pd.Series:
        kind = "Series"
    elif isinstance(v, pd.Index) and t.__module__.partition(".")[0] == "pandas":
        kind = "Index"
    else:
        return None
    try:
        return _encode(enc, v, kind, pd)
    except _Unfaithful as e:
        _warn_once(kind, str(e))
        return pickle_value(enc, v, warn=False)


def _warn_once(kind: str, why: str) -> None:
    with _lock:
        if (kind, why) in _warned:
            return
        _warned.add((kind, why))
    warn_user(f"terra stores this pandas.{kind} with pickle because {why}; its id may differ "
              f"between equal values and it may not load under other pandas versions", PickleWarning)


def _plain(x) -> bool:
    return x is None or type(x) in (str, bool, float) or (type(x) is int and -(1 << 63) <= x < (1 << 63))


def _frame_of(v, kind: str, pd):
    if kind == "DataFrame":
        return v
    if kind == "Series":
        if not _plain(v.name):
            raise _Unfaithful(f"its name is a {type(v.name).__name__}")
        return v.to_frame(name=_SERIES_COLUMN)
    return pd.DataFrame(index=v)


def _canonical_index(df, pd):
    idx = df.index
    if type(idx) is pd.Index and idx.dtype == np.int64:
        values = idx.to_numpy()
        n = len(values)
        step = int(values[1] - values[0]) if n > 1 else 1
        if step != 0 and (n < 2 or np.all(np.diff(values) == step)):
            start = int(values[0]) if n else 0
            return df.set_axis(pd.RangeIndex(start, start + step * n, step, name=idx.name), axis=0)
    return df


def _check_columns(df) -> None:
    if not df.columns.is_unique:
        raise _Unfaithful("its column names are not unique")
    for name, dt in df.dtypes.items():
        if dt == object and not _all_str(df[name]):
            raise _Unfaithful(f"column {name!r} has dtype object (Arrow would convert its values)")
    levels = df.index.levels if hasattr(df.index, "levels") else [df.index]
    for lev in levels:
        if lev.dtype == object and not _all_str(lev):
            raise _Unfaithful("its index has dtype object")


def _all_str(values) -> bool:
    """An object column of str and None (pandas 2's usual text column): Arrow keeps it exactly.

    Missing values must be None: Arrow would give NaN back as None.
    """
    import pandas as pd
    from pandas.api.types import infer_dtype

    if infer_dtype(values, skipna=True) not in ("string", "empty"):
        return False
    arr = np.asarray(values, dtype=object)
    missing = pd.isna(arr)
    return not missing.any() or all(x is None for x in arr[missing])


def _has_object(df) -> bool:
    levels = df.index.levels if hasattr(df.index, "levels") else [df.index]
    return any(dt == object for dt in df.dtypes) or any(lev.dtype == object for lev in levels)


def _same_structure(a, b, kind: str) -> bool:
    def same_index(x, y):
        return (type(x) is type(y) and list(x.names) == list(y.names)
                and (list(x.dtypes) == list(y.dtypes) if hasattr(x, "levels") else x.dtype == y.dtype))

    if not same_index(a.index, b.index):
        return False
    if kind == "Index":
        return True
    if len(a.columns) == 0 and len(b.columns) == 0:
        return True  # the type of an empty column index is not kept; any empty one is equal
    return (same_index(a.columns, b.columns) and a.columns.equals(b.columns)
            and list(a.dtypes) == list(b.dtypes))


def _structure_key(df, kind: str):
    """Everything Arrow's schema for ``df`` depends on (not the data), or None if unhashable."""
    # Labels by type and repr: 1, 1.0 and True are equal keys but make different schemas.
    def labels(xs):
        return tuple((type(x), repr(x)) for x in xs)

    def dtype_key(dt):
        # Equal CategoricalDtypes may differ in the dtype of their categories.
        cats = getattr(dt, "categories", None)
        return (dt, str(cats.dtype) if cats is not None else None)

    def index_key(idx):
        dtypes = tuple(idx.dtypes) if hasattr(idx, "levels") else (idx.dtype,)
        return (type(idx), tuple(map(dtype_key, dtypes)), labels(idx.names))

    key = (kind, index_key(df.index), index_key(df.columns), labels(df.columns),
           tuple(map(dtype_key, df.dtypes)))
    try:
        hash(key)
    except TypeError:
        return None
    return key


_schemas: dict = {}  # structure key -> (schema, pandas metadata); bounded below
_SCHEMA_CACHE = 256


def _empty_schema(df, kind: str, pd):
    """Schema and pandas metadata of ``df``'s structure, checked to round-trip (memoized)."""
    import pyarrow as pa

    key = _structure_key(df, kind)
    hit = _schemas.get(key) if key is not None else None
    if hit is not None:
        return hit
    try:
        # A zero-row conversion gives the exact schema and metadata at no data cost.
        empty = pa.Table.from_pandas(df.iloc[:0], preserve_index=None)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise _Unfaithful(f"Arrow cannot represent it ({e})") from e
    if not _same_structure(empty.to_pandas(), df, kind):
        raise _Unfaithful("Arrow would give back different dtypes, columns or index")
    schema = empty.schema
    if _has_object(df):
        # Object columns (checked to hold only str and None) have no type without
        # rows: they are text. Their metadata still says object, so they load as object.
        for i, f in enumerate(schema):
            if pa.types.is_null(f.type):
                schema = schema.set(i, f.with_type(pa.string()))
        # pandas 3 loads Arrow text as its `str` dtype: then object would not come back.
        if not _has_object(schema.empty_table().to_pandas()):
            raise _Unfaithful("Arrow would give its object columns back as another dtype")
    md = json.loads(schema.metadata[b"pandas"])
    for k in _VOLATILE:
        md.pop(k, None)
    out = (schema, json.dumps(md))
    if key is not None:
        if len(_schemas) >= _SCHEMA_CACHE:
            _schemas.clear()
        _schemas[key] = out
    return out


def _schema(df, kind: str, pd):
    """The Arrow schema (canonical pandas metadata) and the Series/Index behind each field."""
    schema, md_text = _empty_schema(df, kind, pd)
    md = json.loads(md_text)
    sources = [df.iloc[:, i] for i in range(df.shape[1])]
    level = 0
    for i, ic in enumerate(md["index_columns"]):
        if isinstance(ic, dict):  # a RangeIndex, kept as metadata: fill in the real bounds
            idx = df.index
            ic.update(start=int(idx.start), stop=int(idx.stop), step=int(idx.step))
        else:
            sources.append(df.index.get_level_values(level) if df.index.nlevels > 1 else df.index)
        level += 1
    if len(sources) != len(schema):
        raise _Unfaithful("its Arrow schema does not match its columns")
    meta = {b"pandas": json.dumps(md, sort_keys=True, separators=(",", ":")).encode()}
    return schema.with_metadata(meta), sources


def _column(src, field, pd):
    """A canonical Arrow array for one column (a Series or an Index level)."""
    import pyarrow as pa

    t = field.type
    dtype = src.dtype
    n = len(src)
    if isinstance(dtype, np.dtype) and dtype.kind in "biufmM" and pa.from_numpy_dtype(dtype) == t:
        # numpy-backed: the column's own memory, no NaN/NaT scan (they stay values).
        data = np.ascontiguousarray(src.to_numpy())
        if dtype.kind == "b":
            data = np.packbits(data, bitorder="little")
        return pa.Array.from_buffers(t, n, [None, pa.py_buffer(data)])
    if isinstance(dtype, pd.CategoricalDtype) and pa.types.is_dictionary(t):
        cat = src.array
        codes = np.ascontiguousarray(cat.codes)
        if pa.from_numpy_dtype(codes.dtype) != t.index_type:
            raise _Unfaithful("its categorical codes do not match Arrow's index type")
        missing = codes < 0
        mask = missing if missing.any() else None
        indices = canonical_array(pa.array(codes, type=t.index_type, mask=mask))
        dictionary = canonical_array(_plain_array(pa.array(cat.categories, type=t.value_type, from_pandas=True)))
        return pa.DictionaryArray.from_arrays(indices, dictionary, ordered=t.ordered)
    if isinstance(dtype, pd.DatetimeTZDtype) and pa.types.is_timestamp(t):
        return pa.Array.from_buffers(t, n, [None, pa.py_buffer(np.ascontiguousarray(src.array.asi8))])
    a = _plain_array(pa.array(src, type=t, from_pandas=True))
    if a.type != t:
        raise _Unfaithful(f"a column converts to {a.type}, not {t}")
    return canonical_array(a)


def _plain_array(a):
    import pyarrow as pa

    if isinstance(a, pa.ChunkedArray):
        return a.combine_chunks() if a.num_chunks != 1 else a.chunk(0)
    return a


def canonical_array(a):
    """``a`` with canonical buffers: no offset, no garbage under nulls or past the end.

    Buffers already canonical are kept as they are (no copy).
    """
    import pyarrow as pa

    t = a.type
    if pa.types.is_dictionary(t):
        return pa.DictionaryArray.from_arrays(canonical_array(a.indices), canonical_array(a.dictionary),
                                              ordered=t.ordered)
    n, nulls = len(a), a.null_count
    bufs = a.buffers()
    valid = None
    validity = None
    if nulls:
        valid = a.is_valid().to_numpy(zero_copy_only=False)
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    if pa.types.is_boolean(t):
        values = (a.fill_null(False) if nulls else a).to_numpy(zero_copy_only=False)
        return pa.Array.from_buffers(t, n, [validity, pa.py_buffer(np.packbits(values, bitorder="little"))],
                                     null_count=nulls)
    if _fixed_width(t):
        w = t.bit_width // 8
        if not nulls and bufs[0] is None and a.offset == 0 and bufs[1].size == n * w:
            return a
        data = np.frombuffer(bufs[1], np.uint8)[a.offset * w : (a.offset + n) * w]
        if nulls:
            data = data.copy()
            data.reshape(n, w)[~valid] = 0
        return pa.Array.from_buffers(t, n, [validity, pa.py_buffer(data)], null_count=nulls)
    if _var_width(t):
        if nulls:
            a = a.fill_null(b"" if pa.types.is_binary(t) or pa.types.is_large_binary(t) else "")
            bufs = a.buffers()
        odt = np.int64 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else np.int32
        offsets = np.frombuffer(bufs[1], odt)[a.offset : a.offset + n + 1] if n else np.zeros(1, odt)
        start, end = int(offsets[0]), int(offsets[-1])
        data = bufs[2] if bufs[2] is not None else pa.py_buffer(b"")
        if (not nulls and bufs[0] is None and a.offset == 0 and start == 0
                and data.size == end and bufs[1].size == (n + 1) * odt().itemsize):
            return a
        if start:
            offsets = offsets - odt(start)
        return pa.Array.from_buffers(t, n, [validity, pa.py_buffer(offsets), data.slice(start, end - start)],
                                     null_count=nulls)
    if pa.types.is_null(t):
        return pa.nulls(n)
    raise _Unfaithful(f"it has a column of Arrow type {t}, which terra does not store natively")


def _fixed_width(t) -> bool:
    import pyarrow as pa

    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)
            or pa.types.is_decimal(t) or pa.types.is_fixed_size_binary(t)) and t.bit_width % 8 == 0


def _var_width(t) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t))


def _encode_array(enc: Encoder, a) -> tuple[ObjectId, int]:
    """Emit one canonical array; returns its id and its byte size."""
    import pyarrow as pa

    entries = []
    size = 0
    meta = {"length": len(a), "null_count": a.null_count}
    arr = a.indices if pa.types.is_dictionary(a.type) else a
    for b in arr.buffers():
        if b is None:
            entries.append(None)
        else:
            entries.append(enc.payload("arrow.buffer", {}, b))
            size += b.size
    if pa.types.is_dictionary(a.type):
        did, dsize = _encode_array(enc, a.dictionary)
        entries.append(did)
        size += dsize
        meta["dictionary"] = True
    return enc.emit(Tree("arrow.array", tuple(entries), meta)), size


def _encode(enc: Encoder, v, kind: str, pd) -> ObjectId:
    df = _frame_of(v, kind, pd)
    _check_columns(df)
    df = _canonical_index(df, pd)
    schema, sources = _schema(df, kind, pd)
    entries = [enc.payload("arrow.schema", {}, schema.serialize())]
    nbytes = 0
    for field, src in zip(schema, sources):
        oid, size = _encode_array(enc, _column(src, field, pd))
        entries.append(oid)
        nbytes += size
    meta = {"type": f"pandas.{kind}", "shape": list(v.shape), "nbytes": nbytes}
    if kind == "DataFrame":
        meta["columns"] = [str(c) for c in v.columns[:_SUMMARY_COLUMNS]]
    else:
        meta["dtype"] = str(v.dtype)
        if kind == "Series":
            meta["name"] = v.name
    oid = enc.emit(Tree("pandas", tuple(entries), meta))
    attrs = getattr(v, "attrs", None)
    if attrs:
        attrs_id = enc.child(dict(attrs), ".attrs")
        oid = enc.emit(Tree("pandas.attrs", (oid, attrs_id), {"type": f"pandas.{kind}"}))
    return oid


# -- decoding ----------------------------------------------------------------------------


def _buffer(dec, oid):
    import pyarrow as pa

    if oid is None:
        return None
    data = dec.payload(oid)
    if data.ctypes.data % 8:
        data = data.copy()  # Arrow (and the numpy views to_pandas makes) want aligned memory
    return pa.py_buffer(data)


def _decode_array(dec, oid, t):
    import pyarrow as pa

    tree = dec.store.get(oid)
    length, nulls = tree.meta["length"], tree.meta["null_count"]
    entries = list(tree.entries)
    if tree.meta.get("dictionary"):
        dictionary = _decode_array(dec, entries.pop(), t.value_type)
        bufs = [_buffer(dec, e) for e in entries]
        indices = pa.Array.from_buffers(t.index_type, length, bufs, null_count=nulls)
        return pa.DictionaryArray.from_arrays(indices, dictionary, ordered=t.ordered)
    if pa.types.is_null(t):
        return pa.nulls(length)
    return pa.Array.from_buffers(t, length, [_buffer(dec, e) for e in entries], null_count=nulls)


def _dec_frame(dec, tree):
    import pyarrow as pa

    schema_id, *columns = tree.entries
    schema = pa.ipc.read_schema(pa.py_buffer(dec.payload(schema_id)))
    arrays = [_decode_array(dec, c, f.type) for f, c in zip(schema, columns)]
    kind = tree.meta["type"].rpartition(".")[2]
    rows = tree.meta["shape"][0]
    if arrays:
        table = pa.Table.from_arrays(arrays, schema=schema)
    else:  # no columns: only a RecordBatch keeps the row count
        batch = pa.RecordBatch.from_arrays([pa.nulls(rows)], names=["_"]).drop_columns(["_"])
        table = pa.Table.from_batches([batch.replace_schema_metadata(schema.metadata)])
    df = table.to_pandas()
    if kind == "DataFrame":
        return df
    if kind == "Series":
        s = df[_SERIES_COLUMN]
        s.name = tree.meta.get("name")
        return s
    if kind == "Index":
        return df.index
    raise SerializationError(f"unknown stored pandas kind {kind!r}")


def _dec_attrs(dec, tree):
    value = dec.load(tree.entries[0])
    value.attrs = dec.load(tree.entries[1])
    return value


def _sum_frame(store, tree) -> dict:
    return {k: tree.meta[k] for k in ("type", "shape", "columns", "dtype", "name", "nbytes") if k in tree.meta}


def _sum_attrs(store, tree) -> dict:
    from .._decode import summarize

    out = summarize(store, tree.entries[0])
    out["attrs"] = True
    return out


FINDERS.append(_find)
registry.TREE_DECODERS["pandas"] = _dec_frame
registry.TREE_DECODERS["pandas.attrs"] = _dec_attrs
registry.SUMMARIZERS["tree:pandas"] = _sum_frame
registry.SUMMARIZERS["tree:pandas.attrs"] = _sum_attrs
