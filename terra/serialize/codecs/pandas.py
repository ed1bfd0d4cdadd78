"""pandas DataFrame, Series and Index in the Arrow columnar format, one object per buffer.

Layout (part of the format)::

    Tree("pandas.v2", (schema[, columns], column, column, ...),
         {"type", "shape", "nbytes"[, "columns", "dtype", "name", "names", "freq", "allows_duplicate_labels"]})
    schema  = Blob("arrow.schema", {}, IPC-serialized Arrow schema with pandas metadata)
    columns = the DataFrame's column labels, stored as a pandas Index value (DataFrames only)
    column  = Tree("arrow.array", (buffer | None, ...[, dictionary]), {"length", "null_count"[, "dictionary"]})
    buffer  = Blob("arrow.buffer", {}, raw bytes)    (chunked when over 4 MiB)

The schema's pandas metadata keeps the index (its type and dtypes),
the columns' dtypes (categorical, tz-aware, nullable, strings) and their
order; columns are data columns then index levels, as Arrow's pandas
conversion lays them out. A DataFrame's column labels go to Arrow as
positions 0..n-1 and are stored beside it as an Index value, so that any
label index the Index codec keeps exactly (RangeIndex, a DatetimeIndex with
its freq, a CategoricalIndex, a MultiIndex) comes back as it was. ``names``
lists the index levels' names and ``freq`` the frequency of a
DatetimeIndex/TimedeltaIndex: Arrow keeps neither exactly (it turns names
into strings), so the Arrow side sees an unnamed index. A MultiIndex is its
tuples, names and level dtypes: its levels (their classes, unused values,
freq) are rebuilt from those. Storing each Arrow buffer as its own payload,
rather than one IPC stream, means a numeric column is hashed in place with no
copy and a column that did not change between two versions of a frame is
stored once. Values with ``attrs`` are wrapped as ``Tree("pandas.attrs", (value,
attrs))`` so attrs of any type go through terra's own encoder.

The rule: a value comes back exactly (its type, dtypes, index type and
names, freq, column labels, attrs, flags and every value bit) or it is not
stored this way: it goes to the pickle fallback with a PickleWarning. Equal
values built differently (concat, slices, copies, block layouts, chunkings)
get the same id, because the stored form is canonical:

- every column is one contiguous array with exact-size buffers: no slice
  offset, a validity bitmap only when there are nulls, zeroed value slots
  under nulls and zeroed trailing bits;
- numpy-backed columns keep NaN/NaT as values (never turned into nulls);
- volatile schema metadata (pyarrow/pandas versions) is dropped and the
  pandas metadata written with sorted keys.

Values that differ in any of the kept properties are different values with
different ids: ``Index([0, 1, 2])`` is not ``RangeIndex(3)``, and a frame with
RangeIndex columns is not the equal frame with ``columns=[0, 1, 2]``.

Loading treats the stored objects as untrusted: the schema may only hold the
Arrow types terra writes, every buffer's size is checked against the array's
length before Arrow sees it, and the arrays are fully validated before
``to_pandas``; any failure raises :class:`~terra.errors.CorruptObject` naming
the object. Trees of the previous layout (type ``pandas``: no column labels
entry, no freq) still load.
"""

from __future__ import annotations

import json
import threading

import numpy as np

from ...errors import CorruptObject, TerraError
from ...objects import ObjectId, Tree, object_id
from .. import registry
from .._encode import Encoder, loaded, warn_user
from .pickle import PickleWarning, pickle_value

__all__ = ["canonical_array"]

_TREE = "pandas.v2"
_LEGACY_TREE = "pandas"  # written before column labels and freq were kept
_KINDS = ("DataFrame", "Series", "Index")
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
    """The frame Arrow converts: columns at positions 0..n-1, index levels unnamed.

    Arrow keeps neither label types (an index named 0 or True comes back as a
    string) nor label indexes, so both are stored beside the Arrow data.
    """
    if kind == "DataFrame":
        df = v.set_axis(pd.RangeIndex(v.shape[1]), axis=1)
    elif kind == "Series":
        if not _plain(v.name):
            raise _Unfaithful(f"its name is a {type(v.name).__name__}")
        df = v.to_frame(name=_SERIES_COLUMN)
    else:
        df = pd.DataFrame(index=v)
    names = list(df.index.names)
    for name in names:
        if not _plain(name):
            raise _Unfaithful(f"its index is named by a {type(name).__name__}")
    if any(name is not None for name in names):
        df = df.set_axis(df.index.set_names([None] * len(names)), axis=0)
    return df, names


def _levels(idx) -> list:
    return list(idx.levels) if hasattr(idx, "levels") else [idx]


def _check_columns(df) -> None:
    for i, dt in enumerate(df.dtypes):
        if dt == object and not _all_str(df.iloc[:, i]):
            raise _Unfaithful(f"column {i} has dtype object (Arrow would convert its values)")
    for lev in _levels(df.index):
        if lev.dtype == object and not _all_str(lev):
            raise _Unfaithful("its index has dtype object")


def _all_str(values) -> bool:
    """An object column of str and None (pandas 2's usual text column): Arrow keeps it exactly.

    Missing values must be None: Arrow would give NaN back as None.
    """
    from pandas.api.types import infer_dtype

    if infer_dtype(values, skipna=True) not in ("string", "empty"):
        return False
    arr = np.asarray(values, dtype=object)
    # Exactly str and None: a str subclass (np.str_) would come back as str, NaN as None.
    return set(map(type, arr)) <= {str, type(None)}


def _has_object(df) -> bool:
    return any(dt == object for dt in df.dtypes) or any(lev.dtype == object for lev in _levels(df.index))


def _labels(xs) -> tuple:
    # By type and repr: 1, 1.0 and True are equal labels but different values.
    return tuple((type(x), repr(x)) for x in xs)


def _dtype_key(dt):
    # Equal CategoricalDtypes may differ in the dtype of their categories.
    cats = getattr(dt, "categories", None)
    return (dt, str(cats.dtype) if cats is not None else None)


def _index_key(idx) -> tuple:
    dtypes = tuple(idx.dtypes) if hasattr(idx, "levels") else (idx.dtype,)
    return (type(idx), tuple(map(_dtype_key, dtypes)), _labels(idx.names))


def _same_structure(a, b, kind: str) -> bool:
    """Whether ``a`` (Arrow's round trip of ``b``'s zero-row slice) has ``b``'s structure."""
    if _index_key(a.index) != _index_key(b.index):
        return False
    return kind == "Index" or tuple(map(_dtype_key, a.dtypes)) == tuple(map(_dtype_key, b.dtypes))


def _structure_key(df, kind: str):
    """Everything Arrow's schema for ``df`` depends on (not the data), or None if unhashable."""
    key = (kind, _index_key(df.index), df.shape[1], tuple(map(_dtype_key, df.dtypes)))
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
        back = empty.to_pandas()
    except (pa.ArrowException, ValueError, TypeError, KeyError) as e:
        raise _Unfaithful(f"Arrow cannot represent it ({e})") from e
    if not _same_structure(back, df, kind):
        raise _Unfaithful("Arrow would give back different dtypes or a different index")
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
    for f in schema:
        if not _storable_type(f.type):
            raise _Unfaithful(f"it has a column of Arrow type {f.type}, which terra does not store natively")
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
            # Positions: _frame_of cleared the names (a level named 0 would shadow level 0).
            sources.append(df.index.get_level_values(level) if df.index.nlevels > 1 else df.index)
        level += 1
    if len(sources) != len(schema):
        raise _Unfaithful("its Arrow schema does not match its columns")
    meta = {b"pandas": json.dumps(md, sort_keys=True, separators=(",", ":")).encode()}
    return schema.with_metadata(meta), sources


def _freqs(idx, pd) -> list | None:
    """``[freq]`` of a DatetimeIndex/TimedeltaIndex as text, or None if it has none.

    A MultiIndex has none: it is its tuples, names and level dtypes, and its
    levels (their classes, unused values and freq) are rebuilt from those.
    """
    from pandas.tseries.frequencies import to_offset

    f = idx.freq if isinstance(idx, (pd.DatetimeIndex, pd.TimedeltaIndex)) else None
    if f is None:
        return None
    back = to_offset(f.freqstr)
    if type(back) is not type(f) or back != f:
        raise _Unfaithful(f"its index frequency {f!r} cannot be recorded")
    return [f.freqstr]


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
    df, names = _frame_of(v, kind, pd)
    _check_columns(df)
    schema, sources = _schema(df, kind, pd)
    freq = _freqs(df.index, pd)
    entries = [enc.payload("arrow.schema", {}, schema.serialize())]
    if kind == "DataFrame":
        entries.append(enc.child(v.columns, ".columns"))
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
    if freq is not None:
        meta["freq"] = freq
    if any(name is not None for name in names):
        meta["names"] = names
    if kind != "Index" and not v.flags.allows_duplicate_labels:
        meta["allows_duplicate_labels"] = False
    oid = enc.emit(Tree(_TREE, tuple(entries), meta))
    attrs = getattr(v, "attrs", None)
    if attrs:
        attrs_id = enc.child(dict(attrs), ".attrs")
        oid = enc.emit(Tree("pandas.attrs", (oid, attrs_id), {"type": f"pandas.{kind}"}))
    return oid


def _storable_type(t) -> bool:
    """Whether terra stores (and loads) Arrow type ``t`` natively: what canonical_array handles."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return (pa.types.is_integer(t.index_type) and not pa.types.is_dictionary(t.value_type)
                and _storable_type(t.value_type))
    return pa.types.is_boolean(t) or _var_width(t) or _fixed_width(t)


# -- decoding ----------------------------------------------------------------------------
#
# Stored objects are untrusted input: a crafted length or offset handed to Arrow
# makes it read out of bounds (a segfault), so every size is checked here first.


def _corrupt(oid: ObjectId, why: str) -> CorruptObject:
    return CorruptObject(f"object {oid.hex()} is not a valid stored pandas value: {why}")


def _count(x, what: str, oid: ObjectId) -> int:
    if type(x) is not int or x < 0:
        raise _corrupt(oid, f"{what} is {x!r}")
    return x


def _buffers(dec, wanted: list) -> list:
    """The stored Arrow buffers ``wanted`` as ``(id, exact size or None, owner)``, read in one batch.

    One batch lets the store read (and decompress) every column's buffers on
    all cores at once. Each is checked to hold exactly its size before its
    memory is allocated.
    """
    import pyarrow as pa

    for oid, _size, owner in wanted:
        if type(oid) is not ObjectId:
            raise _corrupt(owner, f"buffer entry {oid!r} is not an object id")

    def check(i, blob, nbytes):
        oid, size, owner = wanted[i]
        if blob.codec != "arrow.buffer":
            raise _corrupt(owner, f"buffer {oid.hex()} has codec {blob.codec!r}")
        if size is not None and nbytes != size:
            raise _corrupt(owner, f"buffer {oid.hex()} has {nbytes} bytes, the array needs {size}")

    out = []
    for _blob, data in dec.store.read_payloads([w[0] for w in wanted], check):
        if data.ctypes.data % 8:
            data = data.copy()  # Arrow (and the numpy views to_pandas makes) want aligned memory
        out.append(pa.py_buffer(data))
    return out


def _buffer_sizes(t, n: int) -> list:
    """Exact byte sizes of the buffers terra writes for ``n`` values of type ``t`` (None: any)."""
    import pyarrow as pa

    bits = (n + 7) // 8
    if pa.types.is_boolean(t):
        return [bits, bits]
    if _var_width(t):
        width = 8 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else 4
        return [bits, (n + 1) * width, None]
    return [bits, n * (t.bit_width // 8)]


class _Planned:
    """A stored Arrow array checked up to its buffers, which are read later in one batch."""

    __slots__ = ("oid", "type", "storage", "n", "nulls", "entries", "dictionary", "first")

    def __init__(self, oid, t, storage, n, nulls, entries, dictionary):
        self.oid, self.type, self.storage, self.n, self.nulls = oid, t, storage, n, nulls
        self.entries, self.dictionary, self.first = entries, dictionary, 0


def _plan_array(dec, oid, t, length: int | None, wanted: list) -> _Planned:
    """Check the array tree under ``oid`` (type ``t``, ``length`` values if given) and list
    the buffers it needs in ``wanted``; :func:`_build_array` makes the array once they are read."""
    import pyarrow as pa

    if type(oid) is not ObjectId:
        raise CorruptObject(f"an Arrow array entry is {oid!r}, not an object id")
    tree = dec.store.get(oid)
    if not isinstance(tree, Tree) or tree.type != "arrow.array" or not isinstance(tree.meta, dict):
        raise _corrupt(oid, "it is not an Arrow array")
    n = _count(tree.meta.get("length"), "its length", oid)
    nulls = _count(tree.meta.get("null_count"), "its null count", oid)
    if length is not None and n != length:
        raise _corrupt(oid, f"it has {n} values in a value of {length} rows")
    if nulls > n:
        raise _corrupt(oid, f"it has {nulls} nulls in {n} values")
    entries = list(tree.entries)
    dictionary = None
    if tree.meta.get("dictionary", False) is not False:
        if not pa.types.is_dictionary(t) or not entries:
            raise _corrupt(oid, f"a dictionary array where the schema says {t}")
        dictionary = _plan_array(dec, entries.pop(), t.value_type, None, wanted)
        storage = t.index_type
    elif pa.types.is_dictionary(t):
        raise _corrupt(oid, f"no dictionary for a column of type {t}")
    else:
        storage = t
    sizes = _buffer_sizes(storage, n)
    if len(entries) != len(sizes):
        raise _corrupt(oid, f"{len(entries)} buffers for type {storage}, which has {len(sizes)}")
    if (entries[0] is None) != (nulls == 0):
        raise _corrupt(oid, "its validity bitmap does not match its null count")
    plan = _Planned(oid, t, storage, n, nulls, entries, dictionary)
    plan.first = len(wanted)
    if n:
        wanted.extend((e, size, oid) for i, (e, size) in enumerate(zip(entries, sizes)) if not (e is None and i == 0))
    return plan


def _build_array(plan: _Planned, bufs: list):
    """The array ``plan`` describes, from the batch of buffers read for it, fully validated."""
    import pyarrow as pa

    dictionary = None if plan.dictionary is None else _build_array(plan.dictionary, bufs)
    if plan.n == 0:
        arr = pa.array([], type=plan.storage)
    else:
        got, k = [], plan.first
        for i, e in enumerate(plan.entries):
            if e is None and i == 0:
                got.append(None)
            else:
                got.append(bufs[k])
                k += 1
        arr = pa.Array.from_buffers(plan.storage, plan.n, got, null_count=-1)  # -1: counted from the bitmap
        arr.validate(full=True)  # offsets, UTF-8: before anything reads the values
        if arr.null_count != plan.nulls:
            raise _corrupt(plan.oid, f"its bitmap has {arr.null_count} nulls, its header says {plan.nulls}")
    if dictionary is not None:
        arr = pa.DictionaryArray.from_arrays(arr, dictionary, ordered=plan.type.ordered)
        arr.validate(full=True)  # every index within the dictionary
    return arr


def _read_schema(dec, oid, owner: ObjectId):
    """The stored Arrow schema, checked to hold only types terra writes, and its pandas metadata."""
    import pyarrow as pa

    if type(oid) is not ObjectId:
        raise _corrupt(owner, f"schema entry {oid!r} is not an object id")
    blob, data = dec.store.read_payload(oid)
    if blob.codec != "arrow.schema":
        raise _corrupt(owner, f"schema {oid.hex()} has codec {blob.codec!r}")
    schema = pa.ipc.read_schema(pa.py_buffer(data))
    for f in schema:
        if not _storable_type(f.type):
            raise _corrupt(owner, f"its schema has a column of type {f.type}")
    md = json.loads((schema.metadata or {}).get(b"pandas", b"null"))
    if not isinstance(md, dict) or not all(isinstance(md.get(k), list)
                                           for k in ("index_columns", "columns", "column_indexes")):
        raise _corrupt(owner, "its schema has no valid pandas metadata")
    for ic in md["index_columns"]:
        if isinstance(ic, dict):
            bounds = [ic.get(k) for k in ("start", "stop", "step")]
            if not all(type(b) is int for b in bounds) or bounds[2] == 0:
                raise _corrupt(owner, f"its range index is {ic!r}")
        elif ic not in schema.names:
            raise _corrupt(owner, f"its index column {ic!r} is not in its schema")
    return schema


def _with_freq(idx, freqs, pd):
    from pandas.tseries.frequencies import to_offset

    if (not isinstance(freqs, list) or len(freqs) != 1 or type(freqs[0]) is not str
            or not isinstance(idx, (pd.DatetimeIndex, pd.TimedeltaIndex))):
        raise ValueError(f"freq {freqs!r} for an index of type {type(idx).__name__}")
    return type(idx)(idx, freq=to_offset(freqs[0]), name=idx.name)  # checks the values conform


def _dec_frame(dec, tree, legacy: bool = False):
    import pandas as pd
    import pyarrow as pa

    oid = object_id(tree)
    try:
        return _frame_value(dec, tree, legacy, pd, pa, oid)
    except TerraError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure on crafted input is a corrupt object
        raise _corrupt(oid, f"{type(e).__name__}: {e}") from e


def _frame_value(dec, tree, legacy: bool, pd, pa, oid: ObjectId):
    meta = tree.meta
    if not isinstance(meta, dict):
        raise _corrupt(oid, "its header is not a map")
    kind = meta.get("type", "").rpartition(".")[2] if isinstance(meta.get("type"), str) else None
    if kind not in _KINDS:
        raise _corrupt(oid, f"unknown stored pandas kind {meta.get('type')!r}")
    shape = meta.get("shape")
    if type(shape) is not list or len(shape) != (2 if kind == "DataFrame" else 1):
        raise _corrupt(oid, f"shape {shape!r} for a {kind}")
    rows = _count(shape[0], "its row count", oid)
    entries = list(tree.entries)
    has_columns = kind == "DataFrame" and not legacy
    if len(entries) < 1 + has_columns:
        raise _corrupt(oid, "it has no schema")
    schema = _read_schema(dec, entries.pop(0), oid)
    columns_id = entries.pop(0) if has_columns else None
    if len(entries) != len(schema):
        raise _corrupt(oid, f"{len(entries)} columns for a schema of {len(schema)}")
    wanted: list = []
    plans = [_plan_array(dec, c, f.type, rows, wanted) for f, c in zip(schema, entries)]
    bufs = _buffers(dec, wanted)
    arrays = [_build_array(p, bufs) for p in plans]
    if arrays:
        table = pa.Table.from_arrays(arrays, schema=schema)
    else:  # no columns: only a RecordBatch keeps the row count (a bufferless array: pa.nulls allocates)
        batch = pa.RecordBatch.from_arrays([pa.Array.from_buffers(pa.null(), rows, [None])],
                                           names=["_"]).drop_columns(["_"])
        table = pa.Table.from_batches([batch.replace_schema_metadata(schema.metadata)])
    # Every column was validated in full as it was built (_build_array): the
    # table only needs its structure checked (a second full pass cost ~15% of a load).
    table.validate()
    df = table.to_pandas()
    if len(df) != rows:
        raise _corrupt(oid, f"it gave {len(df)} rows, its header says {rows}")
    freq = meta.get("freq")
    if freq is not None:
        df.index = _with_freq(df.index, freq, pd)
    names = meta.get("names")
    if names is not None:
        if not isinstance(names, list) or len(names) != df.index.nlevels or not all(map(_plain, names)):
            raise _corrupt(oid, f"index names {names!r} for {df.index.nlevels} levels")
        df.index = df.index.set_names(names)
    if kind == "Index":
        return df.index
    if kind == "Series":
        name = meta.get("name")
        if list(df.columns) != [_SERIES_COLUMN] or not _plain(name):
            raise _corrupt(oid, "it is not a stored Series")
        value = df[_SERIES_COLUMN]
        value.name = name
    else:
        value = df
        if columns_id is not None:
            columns = dec.load(columns_id)
            if not isinstance(columns, pd.Index) or len(columns) != df.shape[1]:
                raise _corrupt(oid, f"its column labels are a {type(columns).__name__} "
                                    f"of length {len(columns) if hasattr(columns, '__len__') else '?'}, "
                                    f"for {df.shape[1]} columns")
            value = df.set_axis(columns, axis=1)
        if value.shape[1] != shape[1]:
            raise _corrupt(oid, f"it has {value.shape[1]} columns, its header says {shape[1]}")
    if meta.get("allows_duplicate_labels", True) is False:
        value = value.set_flags(allows_duplicate_labels=False)
    return value


def _dec_legacy_frame(dec, tree):
    return _dec_frame(dec, tree, legacy=True)


def _dec_attrs(dec, tree):
    import pandas as pd

    oid = object_id(tree)
    if len(tree.entries) != 2:
        raise _corrupt(oid, "an attrs wrapper needs a value and its attrs")
    value = dec.load(tree.entries[0])
    attrs = dec.load(tree.entries[1])
    if not isinstance(value, (pd.DataFrame, pd.Series)) or not isinstance(attrs, dict):
        raise _corrupt(oid, f"attrs {type(attrs).__name__} on a {type(value).__name__}")
    value.attrs = attrs
    return value


def _sum_frame(store, tree) -> dict:
    if not isinstance(tree.meta, dict):
        raise _corrupt(object_id(tree), "its header is not a map")
    return {k: tree.meta[k] for k in ("type", "shape", "columns", "dtype", "name", "nbytes") if k in tree.meta}


def _sum_attrs(store, tree) -> dict:
    from .._decode import summarize

    if len(tree.entries) != 2 or type(tree.entries[0]) is not ObjectId:
        raise _corrupt(object_id(tree), "an attrs wrapper needs a value and its attrs")
    out = summarize(store, tree.entries[0])
    out["attrs"] = True
    return out


PROVIDES = registry.Codec(
    finder=_find,
    trees={_TREE: _dec_frame, _LEGACY_TREE: _dec_legacy_frame, "pandas.attrs": _dec_attrs},
    summaries={"tree:" + _TREE: _sum_frame, "tree:" + _LEGACY_TREE: _sum_frame, "tree:pandas.attrs": _sum_attrs},
)
