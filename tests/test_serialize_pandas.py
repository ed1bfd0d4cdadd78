"""pandas values: faithful round trips and canonical ids for frames built differently."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from terra.serialize import hash_value, load_value, store_value, summarize
from terra.serialize.codecs.pickle import PickleWarning
from terra.store import MemoryBackend, Store

from _exact import assert_identical
from _value_fixtures import backend_store, fresh_pickle_warnings  # noqa: F401 - fixtures "store" and autouse




def rich_frame(n: int = 20) -> pd.DataFrame:
    """Every dtype family the issue names, with nulls, and a non-default index."""
    return pd.DataFrame(
        {
            "i": np.arange(n, dtype=np.int64),
            "u8": np.arange(n, dtype=np.uint8),
            "f": np.linspace(0, 1, n),
            "fnan": [np.nan if i % 3 == 0 else float(i) for i in range(n)],
            "bool": [i % 2 == 0 for i in range(n)],
            "s": [f"s{i}" if i % 4 else None for i in range(n)],
            "cat": pd.Categorical(["a", "b", None, "c"] * (n // 4), categories=["c", "b", "a", "unused"]),
            "ocat": pd.Categorical([1, 2] * (n // 2), ordered=True),
            "tz": pd.date_range("2020-03-29", periods=n, freq="h", tz="Europe/Paris"),
            "naive": pd.date_range("2020", periods=n, freq="D").as_unit("ns"),
            "nat": pd.Series(pd.to_datetime(["2020-01-01", None] * (n // 2))),
            "td": pd.to_timedelta(np.arange(n), unit="s"),
            "Int64": pd.array([None if i % 3 == 0 else i for i in range(n)], dtype="Int64"),
            "Float64": pd.array([None if i % 5 == 0 else i / 2 for i in range(n)], dtype="Float64"),
            "boolean": pd.array([None if i % 4 == 0 else i % 2 == 0 for i in range(n)], dtype="boolean"),
            "string": pd.array([None if i % 5 == 0 else str(i) for i in range(n)], dtype="string"),
        },
        index=pd.Index([f"row{i}" for i in range(n)], name="key"),
    )


def assert_same(a, b):
    assert_identical(a, b)


def roundtrip(store, v):
    oid = store_value(store, v)
    assert oid == hash_value(v)
    return load_value(store, oid)


def test_rich_frame_round_trip(store):
    df = rich_frame()
    df.attrs = {"unit": "m", "source": ("a", 1), "arr": [1.5]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", PickleWarning)  # no silent fallback for any of these dtypes
        back = roundtrip(store, df)
    assert_same(df, back)
    assert back["cat"].cat.categories.tolist() == ["c", "b", "a", "unused"]
    assert str(back["tz"].dt.tz) == "Europe/Paris"
    back.iloc[0, 0] = 99  # loaded frames are writable and independent
    assert load_value(store, store_value(store, df)).iloc[0, 0] == 0


@pytest.mark.parametrize("make", [
    lambda df: df.set_index(["s", "i"]),
    lambda df: df.set_index("tz"),
    lambda df: df.set_index("cat"),
    lambda df: df.reset_index(drop=True),
    lambda df: df.iloc[3:11],
    lambda df: df.T.iloc[:2].T.astype({"i": "int64", "u8": "uint8"}).iloc[:, :2],
    lambda df: df.set_axis(pd.MultiIndex.from_product([["x", "y"], list(range(8))]), axis=1)
               .iloc[:, :16],
    lambda df: df.iloc[:0],
    lambda df: pd.DataFrame(index=df.index),
    lambda df: pd.DataFrame(np.arange(6.0).reshape(2, 3)),
    lambda df: pd.DataFrame({1: [1, 2], 2.5: [3, 4]}),
], ids=["multiindex", "tzindex", "catindex", "range", "slice", "narrow", "multicols", "empty", "nocols",
        "intcols", "numbercols"])
def test_frame_variants_round_trip(store, make):
    df = make(rich_frame(16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PickleWarning)
        back = roundtrip(store, df)
    assert_same(df, back)


def test_series_and_index_round_trip(store):
    df = rich_frame()
    for s in [df["tz"], df["Int64"].rename(7), df["cat"].rename(None), df["string"]]:
        back = roundtrip(store, s)
        assert_same(s, back)
        assert back.name == s.name
    s = df["f"].copy()
    s.attrs = {"a": 1}
    assert roundtrip(store, s).attrs == {"a": 1}
    for idx in [df.index, pd.RangeIndex(2, 20, 3, name="r"), pd.DatetimeIndex(df["tz"]),
                pd.CategoricalIndex(["a", "b"]), df.set_index(["s", "i"]).index]:
        assert_same(idx, roundtrip(store, idx))


def test_object_columns_fall_back_to_pickle(store):
    mixed = pd.DataFrame({"o": pd.Series([1, "x", None, 2.5], dtype=object)})
    with pytest.warns(PickleWarning, match="dtype object"):
        back = roundtrip(store, mixed)
    assert back["o"].tolist() == [1, "x", None, 2.5] and back["o"].dtype == object
    strings = pd.DataFrame({"o": pd.Series(["a", None], dtype=object)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PickleWarning)  # same reason: warned once already
        back = roundtrip(store, strings)
    assert back["o"].dtype == object and back["o"].tolist() == ["a", None]  # not silently made `str`


def test_duplicate_columns_are_stored_natively(store):
    # Arrow sees positions; the labels are stored beside it as an Index value.
    df = pd.DataFrame([[1, 2.5]], columns=["a", "a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PickleWarning)
        assert_same(df, roundtrip(store, df))


def test_summary_without_loading(store):
    df = rich_frame()
    s = summarize(store, store_value(store, df))
    assert s["type"] == "pandas.DataFrame" and s["shape"] == [20, 16] and s["columns"][:3] == ["i", "u8", "f"]
    assert s["nbytes"] > 0
    s = summarize(store, store_value(store, df["f"]))
    assert s["type"] == "pandas.Series" and s["shape"] == [20] and s["dtype"] == "float64"


# -- canonical ids ----------------------------------------------------------------------------


def same_id(a, b):
    return hash_value(a) == hash_value(b)


def test_equal_frames_built_differently_share_an_id():
    base = rich_frame(24)
    assert same_id(base, base.copy())
    assert same_id(base, pd.concat([base.iloc[:7], base.iloc[7:]]))
    assert same_id(base, pd.DataFrame({c: base[c] for c in base.columns}))
    assert same_id(base, base[list(base.columns)].copy())
    doubled = pd.concat([base, base])
    assert same_id(doubled.iloc[24:], base)  # a slice of a bigger frame: offsets, bitmaps
    assert same_id(doubled.iloc[5:13], base.iloc[5:13].copy())
    wide = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=list("abc"))
    separate = pd.DataFrame({c: wide[c].to_numpy().copy() for c in "abc"})  # 1 block vs 3 blocks
    assert same_id(wide, separate)
    assert same_id(wide, pd.DataFrame(np.asfortranarray(wide.to_numpy()), columns=list("abc")))
    ints = pd.DataFrame({"x": [1, 2, 3]})
    assert same_id(ints, pd.DataFrame({"x": np.array([1, 2, 3])}, index=pd.RangeIndex(3)))


def test_nullable_garbage_under_nulls_is_ignored():
    a = pd.array([1, 2, 3], dtype="Int64")
    a[1] = pd.NA  # leaves 2 under the mask
    b = pd.array([1, None, 3], dtype="Int64")  # leaves something else
    assert same_id(pd.Series(a), pd.Series(b))
    s = pd.Series(["a", "bb", None, "dddd"] * 5, dtype="str")
    assert same_id(pd.concat([s[:3], s[3:]]), s)
    assert same_id(s[2:9].reset_index(drop=True), pd.Series(list(s[2:9]), dtype="str"))
    bb = pd.array([True, None, False, True, None, False, True, True, False, None, True], dtype="boolean")
    assert same_id(pd.Series(bb[2:7]), pd.Series(pd.array(list(bb[2:7]), dtype="boolean")))


def test_different_frames_get_different_ids():
    base = rich_frame()
    changed = base.copy()
    changed.iloc[4, 2] = 0.123
    variants = [
        base, changed, base.astype({"i": "int32"}), base.rename(columns={"i": "j"}),
        base.set_axis([f"r{i}" for i in range(20)]), base.rename_axis("other"), base.iloc[:-1],
        base[list(reversed(base.columns))], base.astype({"s": "string"}),
        base.assign(cat=base["cat"].cat.reorder_categories(["a", "b", "c", "unused"])),
        base.assign(cat=base["cat"].cat.as_ordered()),
        base.assign(tz=base["tz"].dt.tz_convert("UTC")),
    ]
    ids = [hash_value(v) for v in variants]
    assert len(set(ids)) == len(ids)
    s = base["f"]
    assert len({hash_value(s), hash_value(s.rename("g")), hash_value(s.to_frame()), hash_value(s.index)}) == 4


def test_column_buffers_are_shared_between_versions(store):
    df = pd.DataFrame({"a": np.arange(100_000), "b": np.zeros(100_000)})
    store_value(store, df)
    before = sum(1 for _ in store.iter_ids())
    df2 = df.assign(b=np.ones(100_000))
    store_value(store, df2)
    added = sum(1 for _ in store.iter_ids()) - before
    assert added <= 5  # new b buffer + b array + schema-less frame tree, not a copy of "a"


def test_frame_buffers_are_read_in_one_batch(store, monkeypatch):
    """Every column's buffers (dictionaries too) come from one read, which the store can spread
    over all cores; each buffer is still its own fresh array, so no column aliases another."""
    df = rich_frame(40)
    oid = store_value(store, df)
    batches = []
    real = type(store).read_payloads

    def counting(self, oids, check=None):
        oids = list(oids)
        batches.append(len(oids))
        return real(self, oids, check)

    monkeypatch.setattr(type(store), "read_payloads", counting)
    back = load_value(store, oid)
    assert_same(back, df)
    # Schemas and the column labels (an Index value of its own) in small reads, every buffer
    # of the frame's 17 columns in one.
    big = [b for b in batches if b > 3]
    assert len(big) == 1 and big[0] >= 20, batches
    back.loc["row1", "i"] = -5  # writable, and only that cell changed
    assert back["i"].tolist() == [0, -5] + list(range(2, 40))
    assert_same(load_value(store, oid), df)


def test_schema_cache_tells_apart_equal_looking_structures(store):
    # Equal dtypes (CategoricalDtype compares values) and equal labels (1 == True) must not
    # share a memoized Arrow schema.
    a = pd.DataFrame({"c": pd.Categorical([1, 2])})
    b = pd.DataFrame({"c": pd.Categorical([1.0, 2.0])})
    assert roundtrip(store, a)["c"].cat.categories.dtype == np.int64
    assert roundtrip(store, b)["c"].cat.categories.dtype == np.float64
    x = pd.DataFrame([[1, 2]], columns=[1, 2])
    y = pd.DataFrame([[1, 2]], columns=[1.0, 2.0])
    assert roundtrip(store, x).columns.dtype == np.int64
    assert roundtrip(store, y).columns.dtype == np.float64
    assert hash_value(x) != hash_value(y)


# -- issue 9.6: exact round trips, or a refusal ------------------------------------------------


def native(store, v):
    """Store ``v`` (no pickle allowed), load it back, check it is identical and its id stable."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PickleWarning)
        back = roundtrip(store, v)
    assert_identical(v, back)
    return back


def test_int64_index_whose_step_overflows_is_kept(store):
    # The step between the two labels overflows int64: it was rebuilt as a wrong RangeIndex.
    s = pd.Series([1, 2], index=pd.Index([-(2**63), 2**63 - 1]))
    assert native(store, s).index.tolist() == [-(2**63), 2**63 - 1]
    s = pd.Series([1, 2, 3], index=pd.Index([2**63 - 3, 2**63 - 2, 2**63 - 1], name="i"))
    assert type(native(store, s).index) is pd.Index


def test_int64_index_is_not_a_range_index(store):
    idx = pd.Index([0, 1, 2])
    assert type(native(store, idx)) is pd.Index
    assert type(native(store, pd.Series([1.0, 2, 3], index=idx)).index) is pd.Index
    assert type(native(store, pd.RangeIndex(0, 10, 3, name="r"))) is pd.RangeIndex
    assert native(store, pd.RangeIndex(0, 10, 3)).stop == 10  # an odd stop is kept as it is
    # Equal by .equals, different values: each comes back as itself, so their ids differ.
    ints = pd.DataFrame({"x": [1, 2, 3]})
    assert not same_id(ints, ints.set_axis(idx))
    assert not same_id(idx, pd.RangeIndex(3))


@pytest.mark.parametrize("make", [
    lambda: pd.date_range("2020-03-28", periods=5, freq="D", tz="Europe/Paris", name="t"),
    lambda: pd.date_range("2020", periods=4, freq="BME"),
    lambda: pd.date_range("2020", periods=4, freq="15s").as_unit("s"),
    lambda: pd.timedelta_range(0, periods=3, freq="2h"),
], ids=["tz-days", "business-month-end", "seconds", "timedelta"])
def test_index_freq_is_kept(store, make):
    idx = make()
    assert native(store, idx).freq == idx.freq
    assert native(store, pd.Series(np.arange(len(idx)), index=idx)).index.freq == idx.freq
    frame = pd.DataFrame({"a": np.arange(len(idx))}, index=idx)
    assert native(store, frame).index.freq == idx.freq
    assert native(store, frame.T).columns.freq == idx.freq  # labels with a freq
    unset = idx.copy()
    unset.freq = None
    assert native(store, unset).freq is None
    assert not same_id(idx, unset)  # equal values, but one has a freq


def test_frame_with_range_index_columns_is_stored_natively(store):
    # pd.DataFrame(ndarray) has RangeIndex columns: it went to pickle, with an id unlike its twin's.
    a = pd.DataFrame(np.arange(6.0).reshape(2, 3))
    b = pd.DataFrame(np.arange(6.0).reshape(2, 3), columns=[0, 1, 2])
    assert type(native(store, a).columns) is pd.RangeIndex
    assert type(native(store, b).columns) is pd.Index
    # Equal by .equals but not the same value (the column index type differs): different ids,
    # each stable, and equal to the id of the same frame built another way.
    assert not same_id(a, b)
    assert same_id(a, pd.DataFrame({i: a[i].to_numpy().copy() for i in range(3)}))
    assert same_id(b, pd.DataFrame({i: b[i].to_numpy().copy() for i in range(3)}).set_axis([0, 1, 2], axis=1))


@pytest.mark.parametrize("name", [0, True, 1.5, -0.0, "", "x", None])
def test_index_names_keep_their_type(store, name):
    s = pd.Series([1, 2], index=pd.Index(["a", "b"], name=name), name=name)
    back = native(store, s)
    assert type(back.index.name) is type(name) and repr(back.index.name) == repr(name)
    mi = pd.MultiIndex.from_arrays([[1, 2], ["a", "b"]], names=[name, "second"])
    assert native(store, mi).names == [name, "second"]
    labels = pd.DataFrame([[1, 2]], columns=pd.Index(["a", "b"], name=name))
    assert repr(native(store, labels).columns.name) == repr(name)


def test_categorical_and_interval_labels_and_flags(store):
    df = pd.DataFrame([[1, 2]], columns=pd.CategoricalIndex(["x", "y"], categories=["y", "x", "z"]))
    assert list(native(store, df).columns.categories) == ["y", "x", "z"]
    strict = pd.DataFrame({"a": [1, 2]}).set_flags(allows_duplicate_labels=False)
    assert native(store, strict).flags.allows_duplicate_labels is False
    assert not same_id(strict, pd.DataFrame({"a": [1, 2]}))
    with pytest.warns(PickleWarning):  # Arrow cannot keep an IntervalIndex: refused, not altered
        back = roundtrip(store, pd.Series([1, 2], index=pd.interval_range(0, 2)))
    assert type(back.index) is pd.IntervalIndex


def test_previous_layout_still_loads(store):
    # Trees of type "pandas" (before column labels, names and freq were kept) load as they were written.
    from terra.objects import Tree

    s = pd.Series([1.5, 2.5], index=pd.Index(["a", "b"], name="k"), name="v")
    tree = store.get(store_value(store, s))
    legacy = store.put(Tree("pandas", tree.entries, {k: v for k, v in tree.meta.items() if k != "names"})).id
    back = load_value(store, legacy)
    assert back.tolist() == [1.5, 2.5] and back.name == "v" and back.index.tolist() == ["a", "b"]


# Golden ids of the pandas layout ("pandas.v2"): a format change must be deliberate. The values:
#   frame  = pd.DataFrame({"a": [1, 2], "b": ["x", None]}, index=pd.Index([5, 7], name="k"))
#   series = pd.Series([1.5, 2.5], index=pd.date_range("2020", periods=2, freq="D"), name="s")
#   range  = pd.RangeIndex(0, 10, 3, name="r")
GOLDEN_FRAME = "43b1457ad28f972cc59d9672729b86c4"
GOLDEN_SERIES = "ae4d25a7c74a42d8a177faa4db10c143"
GOLDEN_RANGE = "51001c82bd16339bc4170ce0d380cfc1"


def test_golden_pandas_ids():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", None]}, index=pd.Index([5, 7], name="k"))
    assert str(hash_value(frame)) == GOLDEN_FRAME
    series = pd.Series([1.5, 2.5], index=pd.date_range("2020", periods=2, freq="D"), name="s")
    assert str(hash_value(series)) == GOLDEN_SERIES
    assert str(hash_value(pd.RangeIndex(0, 10, 3, name="r"))) == GOLDEN_RANGE


# -- properties -------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import pandas as hpd  # noqa: E402

frames = hpd.data_frames(
    columns=[hpd.column("i", dtype=np.int64), hpd.column("f", dtype=float), hpd.column("b", dtype=bool),
             hpd.column("t", dtype="datetime64[ns]"), hpd.column("s", elements=st.text(max_size=5))],
    index=hpd.range_indexes(max_size=12),
)


@settings(max_examples=40, deadline=None)
@given(frames, st.integers(0, 12), st.integers(0, 12), st.sampled_from(["Int64", "string", "category"]))
def test_frames_slices_and_nullable_property(df, lo, hi, extra):
    df = df.astype({"s": "str"})
    n = len(df)
    if extra == "Int64":
        df["x"] = pd.array([None if i % 2 else i for i in range(n)], dtype="Int64")
    elif extra == "string":
        df["x"] = pd.array([None if i % 2 else str(i) for i in range(n)], dtype="string")
    else:
        df["x"] = pd.Categorical([None if i % 2 else "ab"[i % 4 // 2] for i in range(n)], categories=["a", "b"])
    sliced = df.iloc[lo:hi]
    store = Store(MemoryBackend())
    with warnings.catch_warnings():
        warnings.simplefilter("error", PickleWarning)  # all of these take the Arrow path
        back = load_value(store, store_value(store, sliced))
    pd.testing.assert_frame_equal(back, sliced, check_exact=True, check_index_type="equiv")
    rebuilt = pd.DataFrame({c: pd.Series(list(sliced[c]), dtype=sliced[c].dtype, index=sliced.index)
                            for c in sliced.columns})
    assert hash_value(rebuilt) == hash_value(sliced)
