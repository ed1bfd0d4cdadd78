"""Round trips, summaries, errors and the pickle policy of terra.serialize."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import os
import pathlib
import socket
import threading
import uuid
import warnings
import zoneinfo
from typing import NamedTuple

import numpy as np
import pytest

import terra.config
from terra.errors import CorruptObject, PickleRefused, SerializationError
from terra.objects import CHUNK_SIZE, Blob, ObjectId, Tree, object_id, split_payload
from terra.serialize import (
    figure_png,
    hash_value,
    load_value,
    register_codec,
    restore_path,
    store_path,
    store_value,
    summarize,
)
from terra.serialize.codecs.pickle import PickleWarning
from terra.store import MemoryBackend, Store

from _value_fixtures import backend_store, fresh_pickle_warnings  # noqa: F401 - fixtures "store" and autouse




@pytest.fixture
def no_pickle():
    terra.config.configure(allow_pickle=False)
    yield
    terra.config.reset()


def roundtrip(store, value):
    oid = store_value(store, value)
    assert oid == hash_value(value), "store_value and hash_value disagree"
    return load_value(store, oid)


# -- module-level types (importable by path, as stored values need) --------------------------


@dataclasses.dataclass
class Point:
    x: float
    y: float
    tags: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Frozen:
    name: str
    data: np.ndarray = dataclasses.field(compare=False, default=None)


class Color(enum.Enum):
    RED = 1
    GREEN = (2, "g")


class Perm(enum.IntFlag):
    R = 4
    W = 2


class Pair(NamedTuple):
    a: int
    b: str


class Opaque:
    """No __eq__: pickled without a round-trip check."""

    def __init__(self, v):
        self.v = v


class Lossy:
    """Its pickle drops state, so the copy is not equal: must be refused."""

    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return isinstance(other, Lossy) and other.v == self.v

    def __reduce__(self):
        return (Lossy, (None,))


class HoldsLock:
    def __init__(self):
        self.lock = threading.Lock()


class FileModel:
    """Writes itself as one JSON file."""

    def __init__(self, weights):
        self.weights = weights

    def __terra_write__(self, path):
        with open(path, "w") as f:
            json.dump(self.weights, f)

    @classmethod
    def __terra_read__(cls, path):
        with open(path) as f:
            return cls(json.load(f))


class DirModel:
    """Writes itself as a directory tree."""

    def __init__(self, weights, blob):
        self.weights, self.blob = weights, blob

    def __terra_write__(self, path):
        os.makedirs(os.path.join(path, "nested", "deeper"))
        os.makedirs(os.path.join(path, "empty"))
        with open(os.path.join(path, "weights.json"), "w") as f:
            json.dump(self.weights, f)
        with open(os.path.join(path, "nested", "deeper", "blob.bin"), "wb") as f:
            f.write(self.blob)

    @classmethod
    def __terra_read__(cls, path):
        assert os.path.isdir(os.path.join(path, "empty"))
        with open(os.path.join(path, "weights.json")) as f:
            w = json.load(f)
        with open(os.path.join(path, "nested", "deeper", "blob.bin"), "rb") as f:
            return cls(w, f.read())


class Celsius:
    def __init__(self, deg):
        self.deg = deg

    def __eq__(self, other):
        return isinstance(other, Celsius) and other.deg == self.deg


class Ref:
    """Stands in for terra.io.Artifact: anything with __terra_ref__."""

    def __init__(self, oid):
        self._oid = oid

    @property
    def __terra_ref__(self):
        return self._oid


# -- golden ids: a format change must be deliberate ------------------------------------------

GOLDEN_DICT = "a7709aae94dd8117c8c39b3fab3b7c4d"  # {"a": [1, 2.5, None]}
GOLDEN_ARRAY = "ab14396461bbd6adfa586286a09938c3"  # np.arange(10, dtype=np.int64)
GOLDEN_INT = "62c65ae1ca3172b9a13e25dc3ebca577"  # 5


def test_golden_ids():
    assert str(hash_value({"a": [1, 2.5, None]})) == GOLDEN_DICT
    assert str(hash_value(np.arange(10, dtype=np.int64))) == GOLDEN_ARRAY
    assert str(hash_value(5)) == GOLDEN_INT


def test_tree_layout_of_containers(store):
    oid = store_value(store, {"b": (1, "x"), "a": [None, 2.5]})
    tree = store.get(oid)
    assert isinstance(tree, Tree) and tree.type == "dict"
    keys = [k for k, _ in tree.entries]
    assert keys == ["a", "b"]  # sorted by canonical encoding of the key
    child = store.get(tree.entries[1][1])
    assert child.type == "tuple" and child.entries == (1, "x")
    assert isinstance(store.get(store_value(store, 5)), Blob)


# -- round trips ------------------------------------------------------------------------------

BUILTINS = [
    None, True, False, 0, 1, -1, 2**64, -(2**200), 1.5, -0.0, math.inf, -math.inf, "", "héllo",
    "x" * 10_000, "\ud800 lone surrogate", b"", b"\x00\xff", bytes(range(256)) * 100, bytearray(b"ab"),
    [], (), {}, set(), frozenset(), [1, [2, [3, (4,)]]], (1, "a", None), {1, 2, "x"},
    frozenset({(1, 2), frozenset({3})}), {(1, 2): "tuple key", frozenset({1}): "fs", 3: None, "big" * 100: 1},
    {"nested": {"list": [1.0, 2, True], "set": {b"x"}}}, 1 + 2j, range(2, 10, 3),
    collections.OrderedDict([("b", 1), ("a", 2)]), collections.Counter("hello"),
    collections.defaultdict(list, {"a": [1]}),
]


@pytest.mark.parametrize("value", BUILTINS, ids=lambda v: type(v).__name__)
def test_builtin_round_trip(store, value):
    back = roundtrip(store, value)
    assert back == value and type(back) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, back) == math.copysign(1, value)


def test_nan_round_trip(store):
    back = roundtrip(store, {"x": [float("nan")]})
    assert math.isnan(back["x"][0])


def test_defaultdict_keeps_factory(store):
    back = roundtrip(store, collections.defaultdict(list, {"a": [1]}))
    back["new"].append(1)
    assert back["new"] == [1]


STDLIB = [
    dt.datetime(2024, 5, 1, 12, 30, 1, 999),
    dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-3), "BRT")),
    dt.datetime(2021, 11, 7, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
    dt.date(1999, 12, 31), dt.time(23, 59, 59, 1), dt.timedelta(days=-1, seconds=5, microseconds=7),
    decimal.Decimal("1.10"), decimal.Decimal("-0"), decimal.Decimal("NaN"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    pathlib.PurePosixPath("/a/b"), pathlib.Path("rel/x.txt"), pathlib.PureWindowsPath(r"C:\x"),
    Point(1.0, 2.0, ["a"]), Color.RED, Color.GREEN, Perm.R | Perm.W, Pair(1, "x"),
]


@pytest.mark.parametrize("value", STDLIB, ids=lambda v: type(v).__name__)
def test_stdlib_round_trip(store, value):
    back = roundtrip(store, value)
    assert type(back) is type(value)
    assert back == value or (isinstance(value, decimal.Decimal) and value.is_nan())
    if isinstance(value, (dt.datetime, dt.time)):
        assert back.fold == value.fold and repr(back.tzinfo) == repr(value.tzinfo)
    if isinstance(value, decimal.Decimal):
        assert str(back) == str(value)


def test_frozen_dataclass_with_array(store):
    v = Frozen("w", np.arange(3))
    back = roundtrip(store, v)
    assert back.name == "w" and np.array_equal(back.data, v.data)
    assert store.get(hash_value(v)).meta["class"].endswith(":Frozen")


def test_datetime_distinguishes_zone():
    a = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert hash_value(a) != hash_value(a.replace(tzinfo=None))
    assert hash_value(dt.date(2024, 1, 1)) != hash_value(dt.datetime(2024, 1, 1))


ARRAYS = [
    np.arange(10), np.zeros((3, 4), dtype=np.float32), np.array(5.0), np.zeros((0, 3)), np.array([True, False]),
    np.array(["ab", "c"]), np.array([b"x", b"yz"]), np.arange(6, dtype=">i4").reshape(2, 3),
    np.array(["2020-01-01", "NaT"], dtype="datetime64[ns]"), np.array([1, 2], dtype="timedelta64[s]"),
    np.array([1 + 2j]), np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
    np.arange(24, dtype=np.float16).reshape(2, 3, 4),
]


@pytest.mark.parametrize("value", ARRAYS, ids=lambda a: a.dtype.str)
def test_array_round_trip(store, value):
    back = roundtrip(store, value)
    assert type(back) is np.ndarray and back.dtype == value.dtype and back.shape == value.shape
    assert back.tobytes() == value.tobytes()
    assert back.flags.writeable and back.flags.aligned


def test_large_array_is_chunked_and_round_trips(store):
    a = np.random.default_rng(0).random(CHUNK_SIZE // 8 * 2 + 5)
    oid = store_value(store, a)
    assert store.get(oid).kind == "chunked"
    assert np.array_equal(load_value(store, oid), a)


def test_array_layouts_share_an_id(store):
    c = np.arange(12.0).reshape(3, 4)
    f = np.asfortranarray(c)
    wide = np.zeros((3, 8))
    wide[:, ::2] = c
    view = wide[:, ::2]
    assert hash_value(c) == hash_value(f) == hash_value(np.ascontiguousarray(view))
    assert np.array_equal(roundtrip(store, view), view)
    assert np.array_equal(roundtrip(store, f), c)


def test_numpy_scalars(store):
    for v in [np.float32(1.5), np.int8(-3), np.bool_(True), np.datetime64("2020-01-01"), np.str_("hi")]:
        back = roundtrip(store, v)
        assert type(back) is type(v) and back == v and back.dtype == v.dtype
    assert hash_value(np.float32(1)) != hash_value(np.float64(1)) != hash_value(1.0)


def test_object_array_falls_back_to_pickle(store):
    a = np.array([1, "x", None], dtype=object)
    with pytest.warns(PickleWarning, match="numpy.ndarray"):
        back = roundtrip(store, a)
    assert list(back) == [1, "x", None]


def test_load_is_fresh_and_independent(store):
    value = {"a": np.arange(5), "l": [1, 2]}
    oid = store_value(store, value)
    one, two = load_value(store, oid), load_value(store, oid)
    one["a"][0] = 100
    one["l"].append(3)
    assert two["a"][0] == 0 and two["l"] == [1, 2]
    assert load_value(store, oid)["a"][0] == 0


def test_load_accepts_hex(store):
    oid = store_value(store, [1, 2])
    assert load_value(store, str(oid)) == [1, 2]


def test_shared_and_repeated_children(store):
    a = np.arange(1000)
    value = [a, a, {"again": a}]
    back = roundtrip(store, value)
    assert all(np.array_equal(x, a) for x in (back[0], back[1], back[2]["again"]))


def test_cycle_is_an_error():
    a = [1]
    a.append(a)
    with pytest.raises(SerializationError, match="contains itself"):
        hash_value(a)


# -- refs (Artifacts) -------------------------------------------------------------------------


def test_terra_ref_is_used_as_is(store):
    inner = store_value(store, np.arange(100))
    ref = Ref(inner)
    assert hash_value(ref) == inner
    assert store_value(store, ref) == inner
    outer = store_value(store, {"x": ref, "y": [ref]})
    assert outer == hash_value({"x": np.arange(100), "y": [np.arange(100)]})
    assert np.array_equal(load_value(store, outer)["y"][0], np.arange(100))


def test_terra_ref_is_not_restored(store):
    ghost = ObjectId(b"\x01" * 16)  # not in the store: must not be looked up or stored
    oid = store_value(store, [Ref(ghost)])
    assert store.get(oid).entries == (ghost,)
    assert not store.has(ghost)


# -- summaries --------------------------------------------------------------------------------


def test_summaries(store):
    s = summarize(store, store_value(store, np.zeros((2, 3), np.float32)))
    assert s == {"type": "numpy.ndarray", "shape": [2, 3], "dtype": "float32", "nbytes": 24}
    assert summarize(store, store_value(store, {"a": 1, "b": 2})) == {"type": "dict", "len": 2}
    assert summarize(store, store_value(store, [1, 2, 3]))["len"] == 3
    assert summarize(store, store_value(store, 5))["type"] == "int"
    assert summarize(store, store_value(store, None))["type"] == "NoneType"
    assert summarize(store, store_value(store, "abc"))["type"] == "str"
    assert summarize(store, store_value(store, Point(1, 2)))["type"].endswith("Point")
    big = np.zeros(CHUNK_SIZE, np.float64)
    assert summarize(store, store_value(store, big))["nbytes"] == big.nbytes


# -- user codecs and self-writing objects ------------------------------------------------------


def test_register_codec(store):
    register_codec(Celsius, lambda c: str(c.deg).encode(), lambda b: Celsius(float(b)), name="test.celsius")
    oid = store_value(store, {"t": Celsius(21.5)})
    assert load_value(store, oid) == {"t": Celsius(21.5)}
    assert hash_value(Celsius(1.0)) != hash_value(Celsius(2.0))


class Day(dt.date):
    pass


def test_register_codec_beats_builtin(store):
    register_codec(Day, lambda d: d.isoformat().encode(), lambda b: Day.fromisoformat(b.decode()), name="t.day")
    back = roundtrip(store, Day(2020, 1, 2))
    assert type(back) is Day and back == Day(2020, 1, 2)


def test_terra_write_file(store):
    oid = store_value(store, {"m": FileModel([1, 2, 3])})
    tree = store.get(store.get(oid).entries[0][1])
    assert tree.type == "dir" and tree.meta["class"].endswith(":FileModel") and tree.meta["path_kind"] == "file"
    back = load_value(store, oid)["m"]
    assert isinstance(back, FileModel) and back.weights == [1, 2, 3]
    assert hash_value(FileModel([1, 2, 3])) == hash_value(FileModel([1, 2, 3]))
    assert hash_value(FileModel([1, 2, 3])) != hash_value(FileModel([1, 2]))


def test_terra_write_directory(store):
    m = DirModel({"w": 1}, os.urandom(1000))
    oid = store_value(store, m)
    tree = store.get(oid)
    assert [name for name, _ in tree.entries] == ["nested/deeper/blob.bin", "weights.json"]
    back = load_value(store, oid)
    assert back.weights == {"w": 1} and back.blob == m.blob


def test_store_and_restore_path(store, tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a" / "b" / "f.txt").write_text("hello")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "big.bin").write_bytes(os.urandom(CHUNK_SIZE + 10))
    oid = store_path(store, src)
    dest = tmp_path / "dest"
    restore_path(store, oid, dest)
    assert (dest / "a" / "b" / "f.txt").read_text() == "hello"
    assert (dest / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert (dest / "empty").is_dir() and os.access(dest / "run.sh", os.X_OK)
    assert store_path(store, dest) == oid  # same contents, same id
    one = tmp_path / "one.txt"
    one.write_text("x")
    fid = store_path(store, one)
    restore_path(store, fid, tmp_path / "copy.txt")
    assert (tmp_path / "copy.txt").read_text() == "x"


# -- bad input --------------------------------------------------------------------------------


def test_lock_names_its_path():
    with pytest.raises(SerializationError) as e:
        hash_value({"models": [1, 2, 3, threading.Lock()]})
    assert 'value["models"][3]' in str(e.value) and "lock" in str(e.value)


def test_lock_inside_object_names_attribute():
    with pytest.raises(SerializationError, match=r'value\["m"\]\.lock of type _thread\.lock'):
        hash_value({"m": HoldsLock()})


def test_socket_and_generator_refused():
    with socket.socket() as s:
        with pytest.raises(SerializationError, match=r"value\[1\].*socket"):
            hash_value([0, s])
    with pytest.raises(SerializationError, match="generator"):
        hash_value({"g": (i for i in range(3))})


def test_unequal_round_trip_refused():
    with pytest.raises(SerializationError, match="not equal"):
        hash_value([Lossy(1)])


def test_pickle_fallback_warns_once(store):
    with pytest.warns(PickleWarning, match="Opaque"):
        oid = store_value(store, Opaque(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store_value(store, Opaque(4))
    assert load_value(store, oid).v == 3


def test_pickle_out_of_band_buffers(store):
    arr = np.arange(CHUNK_SIZE // 4, dtype=np.float64)  # 2 MiB buffer inside a pickled object
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PickleWarning)
        oid = store_value(store, Opaque(arr))
    tree = store.get(oid)
    assert tree.type == "pickle" and len(tree.entries) == 2
    back = load_value(store, oid)
    assert np.array_equal(back.v, arr) and back.v.flags.writeable


def test_allow_pickle_false_refuses_write(no_pickle):
    with pytest.raises(PickleRefused, match=r"value\[0\] of type .*Opaque"):
        hash_value([Opaque(1)])
    assert hash_value({"fine": np.arange(3)})  # codecs other than pickle still work


def test_allow_pickle_false_refuses_read(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PickleWarning)
        oid = store_value(store, {"o": Opaque(1)})
    terra.config.configure(allow_pickle=False)
    try:
        with pytest.raises(PickleRefused):
            load_value(store, oid)
    finally:
        terra.config.reset()


def test_missing_user_codec_on_load(store):
    class Temp:
        pass

    register_codec(Temp, lambda t: b"", lambda b: Temp(), name="test.temp-unregistered")
    oid = store_value(store, Temp())
    from terra.serialize import registry

    registry.USER_BY_NAME.pop("test.temp-unregistered")
    registry.USER_TYPES.pop(Temp)
    with pytest.raises(SerializationError, match="test.temp-unregistered"):
        load_value(store, oid)


def test_corruption_is_detected(tmp_path):
    store = Store(MemoryBackend())
    oid = store_value(store, {"a": "x" * 1000})
    child = store.get(oid).entries[0][1]
    data = store.backend._objects[child] if hasattr(store.backend, "_objects") else None
    if data is None:
        pytest.skip("memory backend layout unknown")
    store.backend._objects[child] = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(CorruptObject):
        load_value(store, oid)


# -- the chunking this package relies on ---------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1])
def test_payload_ids_match_split_payload(n):
    buf = np.arange(n, dtype=np.uint8)
    a = np.frombuffer(buf.tobytes(), np.uint8)
    assert hash_value(a) == split_payload("numpy", {"dtype": "|u1", "shape": [n]}, buf)[-1][0]
    assert object_id(Blob("py", {"type": "int"}, b"\x05")) == hash_value(5)


# -- optional libraries --------------------------------------------------------------------------


def test_figure_round_trip_and_png(store, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([1, 2, 3], [3, 1, 2])
    oid = store_value(store, {"fig": fig})
    back = load_value(store, oid)["fig"]
    assert isinstance(back, Figure) and len(back.axes) == 1
    back.savefig(tmp_path / "again.png")  # usable
    fid = store.get(oid).entries[0][1]
    png = figure_png(store, fid)
    assert png.startswith(b"\x89PNG")
    assert summarize(store, fid)["type"] == "matplotlib.figure.Figure"


def test_figure_without_pickle(store, no_pickle):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([1, 2])
    oid = store_value(store, fig)
    assert store.get(oid).entries[0] is None  # PNG only
    back = load_value(store, oid)
    assert isinstance(back, Figure) and figure_png(store, oid).startswith(b"\x89PNG")


def test_torch_tensor_and_state_dict(store):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    back = roundtrip(store, t)
    assert torch.equal(back, t) and back.dtype == t.dtype
    sd = collections.OrderedDict([("w", torch.randn(2, 2)), ("b", torch.zeros(2, dtype=torch.bfloat16))])
    back = roundtrip(store, sd)
    assert list(back) == ["w", "b"] and all(torch.equal(back[k], sd[k]) for k in sd)
    assert hash_value(t) != hash_value(t.double())
    assert hash_value(t[:, 1]) == hash_value(t[:, 1].contiguous())
