"""Canonical hashing: round trips over random nested values, and both directions of
"equal values, equal ids; different values, different ids", within and across processes."""

from __future__ import annotations

import math
import os
import pickle
import random
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from terra.serialize import hash_value, load_value, store_value
from terra.store import MemoryBackend, Store

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -----------------------------------------------------------------------------------

primitives = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
              | st.text(max_size=40) | st.binary(max_size=40) | st.text(min_size=300, max_size=400))
# Hashables for keys and set members. NaN is left out: two NaN keys cannot be told apart.
hashable_leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                   | st.text(max_size=20) | st.binary(max_size=20))
hashables = st.recursive(hashable_leaves,
                         lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3), max_leaves=6)
values = st.recursive(
    primitives,
    lambda c: (st.lists(c, max_size=4) | st.tuples(c) | st.tuples(c, c, c)
               | st.dictionaries(hashables, c, max_size=4) | st.sets(hashables, max_size=4)
               | st.frozensets(hashables, max_size=3)),
    max_leaves=20,
)
# A small domain, so that two draws are often equal, or equal except in type.
tiny_leaves = st.sampled_from([0, 1, True, False, 1.0, 0.0, -0.0, "a", b"a", None, "", ()])
tiny = st.recursive(tiny_leaves, lambda c: (st.lists(c, max_size=2) | st.tuples(c, c)
                                           | st.dictionaries(st.sampled_from(["k", 1, (1,)]), c, max_size=2)
                                           | st.frozensets(tiny_leaves, max_size=2)), max_leaves=5)


def tag(v):
    """A strict, hashable form: equal iff the values are the same, types and float bits included."""
    t = type(v)
    if t is float:
        return ("f", b"nan" if math.isnan(v) else struct.pack("<d", v))
    if v is None or t in (bool, int, str, bytes):
        return (t.__name__, v)
    if t in (list, tuple):
        return (t.__name__, tuple(tag(x) for x in v))
    if t is dict:
        return ("dict", frozenset((tag(k), tag(x)) for k, x in v.items()))
    if t in (set, frozenset):
        return (t.__name__, frozenset(tag(x) for x in v))
    raise TypeError(t)


def rebuilt(v):
    """An equal value built differently: dicts in reverse insertion order, sets re-created."""
    t = type(v)
    if t is dict:
        return {k: rebuilt(v[k]) for k in reversed(list(v))}
    if t in (list, tuple):
        return t(rebuilt(x) for x in v)
    if t in (set, frozenset):
        items = list(v)
        random.Random(len(items)).shuffle(items)
        return t(items)
    return v


@pytest.fixture(scope="module")
def store():
    return Store(MemoryBackend())


# -- builtins ---------------------------------------------------------------------------------------


@SETTINGS
@given(values)
def test_round_trip(store, value):
    oid = store_value(store, value)
    assert oid == hash_value(value)
    assert tag(load_value(store, oid)) == tag(value)


@SETTINGS
@given(values)
def test_equal_values_built_differently_share_an_id(value):
    assert hash_value(rebuilt(value)) == hash_value(value)


@settings(max_examples=300, deadline=None)
@given(tiny, tiny)
def test_id_equal_iff_strictly_equal(a, b):
    assert (hash_value(a) == hash_value(b)) == (tag(a) == tag(b))


@pytest.mark.parametrize("a,b", [
    (1, 1.0), (1, True), (1.0, True), (0, False), (0.0, -0.0), ([1, 2], (1, 2)), ((), []), ({}, set()),
    (set(), frozenset()), ({"a": 1}, {"a": 1.0}), ({"a": 1}, {"b": 1}), ([1, [2]], [1, [2.0]]),
    ("1", 1), (b"a", "a"), (None, 0), ([None], []), ({1: 2}, {2: 1}), (2**64, 2**64 + 1),
    ("x" * 300, "x" * 299 + "y"), ([1, 2, 3], [1, 3, 2]),
])
def test_different_values_different_ids(a, b):
    assert hash_value(a) != hash_value(b)


@SETTINGS
@given(st.text() | st.binary())
def test_sort_key_fast_path_is_canonical(x):
    from terra.objects import canonical_pack
    from terra.serialize.codecs.builtins import _sort_key

    assert _sort_key(x) == canonical_pack(x)


def test_nan_is_normalized():
    nan2 = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    assert hash_value(float("nan")) == hash_value(nan2) == hash_value(-float("nan"))
    assert hash_value([float("nan")]) == hash_value([nan2])


# -- numpy -----------------------------------------------------------------------------------------

dtypes = (hnp.integer_dtypes() | hnp.unsigned_integer_dtypes() | hnp.floating_dtypes() | hnp.boolean_dtypes()
          | hnp.datetime64_dtypes() | hnp.complex_number_dtypes())
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))


@settings(max_examples=100, deadline=None)
@given(arrays)
def test_array_round_trip_and_layouts(store, a):
    oid = store_value(store, a)
    back = load_value(store, oid)
    assert back.dtype == a.dtype and back.shape == a.shape and back.tobytes() == a.tobytes()
    assert hash_value(np.asarray(a, order="F")) == oid
    if a.ndim >= 1 and a.shape[0] > 1:
        assert hash_value(a[::-1][::-1]) == oid  # a strided view of equal elements


@settings(max_examples=100, deadline=None)
@given(arrays.filter(lambda a: a.size > 0), st.data())
def test_array_changes_change_the_id(a, data):
    oid = hash_value(a)
    flat = a.reshape(-1).copy()
    i = data.draw(st.integers(0, flat.size - 1))
    raw = flat.view(np.uint8).reshape(flat.size, -1)
    raw[i, 0] ^= 1  # flip one bit of one element
    assert hash_value(flat.view(a.dtype).reshape(a.shape)) != oid
    assert hash_value(a.reshape(-1)) != oid or a.ndim == 1
    if a.ndim >= 1:
        assert hash_value(a[np.newaxis]) != oid
    same_size = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64, 16: np.complex128}
    other = same_size[a.dtype.itemsize]
    if np.dtype(other) != a.dtype:
        assert hash_value(a.view(other)) != oid  # same bytes, other dtype


def test_array_dtype_and_shape_matter():
    a = np.arange(6, dtype=np.int64)
    ids = {hash_value(x) for x in [a, a.astype(np.int32), a.astype(np.float64), a.reshape(2, 3),
                                   a.reshape(3, 2), a.astype(">i8"), a.view(np.float64), list(a)]}
    assert len(ids) == 8


def test_large_array_hashed_without_copy(monkeypatch):
    a = np.random.default_rng(0).random(3 << 20)
    calls = []
    real = np.ascontiguousarray

    def spy(x, *args, **kw):
        calls.append(x.nbytes)
        return real(x, *args, **kw)

    monkeypatch.setattr(np, "ascontiguousarray", spy)
    hash_value(a)
    assert calls == []  # C-contiguous: hashed in place


# -- across processes ------------------------------------------------------------------------------


def sample_values():
    """Deterministic, varied values: sets of strings iterate differently under other hash seeds."""
    r = random.Random(7)
    words = [f"w{r.randrange(10**6)}" for _ in range(50)]
    out = [
        {"a": [1, 2.5, None]}, set(words), frozenset(words[:10]), {w: i for i, w in enumerate(words)},
        {frozenset(words[:5]): {"nested": set(words[5:9])}, ("t", 1): [b"x", -0.0, float("nan")]},
        np.arange(1000).reshape(10, 100), np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        pd.DataFrame({"s": pd.Series(words, dtype="str"), "c": pd.Categorical(words[:25] * 2),
                      "x": np.linspace(0, 1, 50)}).set_index("s"),
        pd.Series([1, None, 3], dtype="Int64", name="n"),
    ]
    for _ in range(20):
        out.append({r.choice(words): [r.random(), r.randrange(-(2**70), 2**70), r.choice(words)]
                    for _ in range(r.randrange(5))})
    return out


CHILD = textwrap.dedent("""
    import pickle, sys
    from terra.serialize import hash_value
    with open(sys.argv[1], "rb") as f:
        values = pickle.load(f)
    print(" ".join(str(hash_value(v)) for v in values))
""")


@pytest.mark.slow
def test_ids_stable_across_processes_and_hash_seeds(tmp_path):
    values = sample_values()
    path = tmp_path / "values.pkl"
    path.write_bytes(pickle.dumps(values))
    here = [str(hash_value(v)) for v in values]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True,
                             text=True, check=True, timeout=120)
        assert out.stdout.split() == here
