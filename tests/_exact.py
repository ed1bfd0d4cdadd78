"""Exact comparison of pandas/numpy values: equal values AND the same type, dtypes, index types,
freq, names (with their types), attrs, flags and value bits."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _labels(xs):
    return [(type(x), repr(x)) for x in xs]


def level_values(idx, k: int):
    """Level ``k`` of a MultiIndex by position (get_level_values(0) picks a level *named* 0 or -0.0)."""
    return idx.set_names(list(range(idx.nlevels))).get_level_values(k).rename(idx.names[k])


def _levels(idx):
    return list(idx.levels) if isinstance(idx, pd.MultiIndex) else [idx]


def _bits(a, b):
    """numpy-backed values compare bit for bit (-0.0 vs 0.0, NaN payloads)."""
    if isinstance(a.dtype, np.dtype) and a.dtype.kind in "biufmMc":
        x, y = np.ascontiguousarray(np.asarray(a)), np.ascontiguousarray(np.asarray(b))
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def assert_same_index(a, b):
    """Same index exactly; a MultiIndex's levels are compared by their values (see the pandas codec)."""
    assert type(a) is type(b), (type(a), type(b))
    multi = isinstance(a, pd.MultiIndex)
    pd.testing.assert_index_equal(a, b, exact="equiv" if multi else True, check_names=True, check_exact=True,
                                  check_freq=False,
                                  check_categorical=True)
    assert _labels(a.names) == _labels(b.names)
    levels_a = [level_values(a, i) for i in range(a.nlevels)] if multi else [a]
    levels_b = [level_values(b, i) for i in range(b.nlevels)] if multi else [b]
    for x, y in zip(levels_a, levels_b, strict=True):
        assert (type(x) is type(y) or multi) and x.dtype == y.dtype
        if not multi:
            assert getattr(x, "freq", None) == getattr(y, "freq", None)
        cats = getattr(x.dtype, "categories", None)
        if cats is not None:
            assert list(cats) == list(y.dtype.categories) and cats.dtype == y.dtype.categories.dtype
        if isinstance(x, pd.RangeIndex) and not multi:
            assert (x.start, x.stop, x.step) == (y.start, y.stop, y.step)
    for x, y in zip(levels_a, levels_b):
        _bits(x, y)
        if x.dtype == object:
            assert _labels(x) == _labels(y)



def _same_column(a: pd.Series, b: pd.Series):
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    cats = getattr(a.dtype, "categories", None)
    if cats is not None:
        assert list(cats) == list(b.dtype.categories) and cats.dtype == b.dtype.categories.dtype
        assert a.dtype.ordered == b.dtype.ordered
    _bits(a, b)
    if a.dtype == object:
        assert _labels(a) == _labels(b)


def _exact_type(idx):
    # The indexes were compared exactly above (freq too); pandas would also compare the
    # classes and freq of a MultiIndex's levels, which are not part of its value.
    return "equiv" if isinstance(idx, pd.MultiIndex) else True


def assert_identical(a, b):
    """``b`` is ``a`` exactly: raises AssertionError naming the first difference."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.dtype.descr == b.dtype.descr and a.shape == b.shape
        assert a.dtype.isalignedstruct == b.dtype.isalignedstruct and a.dtype.itemsize == b.dtype.itemsize
        assert a.tobytes() == b.tobytes() or (a.dtype.names and np.array_equal(a, b))
        return
    if isinstance(a, pd.Index):
        assert_same_index(a, b)
        return
    assert a.attrs == b.attrs
    assert {k: (type(v), repr(v)) for k, v in a.attrs.items()} == {k: (type(v), repr(v)) for k, v in b.attrs.items()}
    assert a.flags.allows_duplicate_labels == b.flags.allows_duplicate_labels
    assert_same_index(a.index, b.index)
    if isinstance(a, pd.Series):
        assert (type(a.name), repr(a.name)) == (type(b.name), repr(b.name))
        pd.testing.assert_series_equal(a, b, check_exact=True, check_index_type=_exact_type(a.index),
                                       check_series_type=True, check_freq=False, check_flags=True,
                                       check_categorical=True)
        _same_column(a, b)
        return
    assert_same_index(a.columns, b.columns)
    pd.testing.assert_frame_equal(a, b, check_exact=True, check_index_type=_exact_type(a.index),
                                  check_column_type=_exact_type(a.columns), check_frame_type=True,
                                  check_freq=False, check_flags=True)
    for i in range(a.shape[1]):
        _same_column(a.iloc[:, i], b.iloc[:, i])


def identical(a, b) -> bool:
    try:
        assert_identical(a, b)
    except AssertionError:
        return False
    return True


def has_object(v) -> bool:
    """Whether ``v`` holds an object-dtype column or index level, or a nullable index (Arrow
    gives those back as other dtypes under pandas 3: they are stored with pickle)."""
    if isinstance(v, pd.Index):
        idx = [v]
        dtypes = []
    else:
        idx = [v.index] + ([v.columns] if isinstance(v, pd.DataFrame) else [])
        dtypes = list(v.dtypes) if isinstance(v, pd.DataFrame) else [v.dtype]
    for i in idx:
        dtypes += [lev.dtype for lev in _levels(i)]
    nullable_index = any(not isinstance(lev.dtype, np.dtype) and lev.dtype != "str"
                         and not isinstance(lev, (pd.CategoricalIndex, pd.DatetimeIndex))
                         for i in idx for lev in _levels(i))
    return nullable_index or any(d == object for d in dtypes)
