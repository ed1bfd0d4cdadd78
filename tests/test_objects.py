"""The object model: golden ids, canonical encoding, round trips, chunking.

The golden ids and encodings below are the storage format. If one of these
tests fails, an edit changed the id of stored objects: every existing store
and cache would silently miss. Change the constants only together with a
format version bump and a migration.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terra import objects
from terra.objects import (
    CHUNK_SIZE,
    HASH_ALGORITHM,
    Blob,
    Chunk,
    Chunked,
    ObjectId,
    Run,
    Tree,
    canonical_pack,
    decode,
    encode,
    object_id,
    references,
    split_payload,
)

A = ObjectId(bytes(range(16)))
B = ObjectId(bytes(range(16, 32)))


def golden_blob() -> Blob:
    return Blob("numpy", {"dtype": "<f8", "shape": [3], "order": "C"}, np.arange(3.0).tobytes())


def golden_tree() -> Tree:
    return Tree(
        "dict",
        (
            ("a", A), ("b", 1), ("big", 2**100), ("neg", -(2**70)), ("nan", float("nan")),
            ("f", 1.5), ("none", None), ("t", True), ("s", "text"), ("raw", b"\x00\xff"),
            ("nested", (B, (2, 3.0))),
        ),
        {"keys": ["a", "b"], "n": 11},
    )


def golden_run() -> Run:
    return Run({
        "task": "pkg.mod.train", "version": None, "inputs": {"x": A, "lr": 0.01}, "output": B,
        "status": "success", "started": 1700000000.25, "host": "h", "pid": 42,
    })


def golden_payload() -> np.ndarray:
    """9 MiB of deterministic bytes: three chunks."""
    return (np.arange(9 << 20, dtype=np.uint64) * 2654435761 % 251).astype(np.uint8)


GOLDEN_IDS = {
    "blob": "612ef9a0d8e8b506080c3927a28ab904",
    "tree": "f2414e96eafa410fedf571dab12d5f4a",
    "run": "8bbe849c396f69fb535ae173b993e994",
}
GOLDEN_ENCODINGS = {
    "blob": "94a4626c6f62a56e756d707983a56474797065a33c6638a56f72646572a143a573686170659103"
            "c4180000000000000000000000000000f03f0000000000000040",
    "run": "92a372756e88a37069642aa4686f7374a168a47461736bad706b672e6d6f642e747261696ea6696e"
           "7075747382a178d800000102030405060708090a0b0c0d0e0fa26c72cb3f847ae147ae147ba66f7574"
           "707574d800101112131415161718191a1b1c1d1e1fa6737461747573a773756363657373a7737461"
           "72746564cb41d954fc40100000a776657273696f6ec0",
}
GOLDEN_CHUNKED = [
    "886af76a7a1c5855fd25e6feeece4398",
    "4c572b88da5e5e307e2d7cef76c6e5a8",
    "77dd41acea32051a1aa45f0710aa7c06",
    "adef5862dc3c1bdbb825c64726d30500",  # the Chunked object listing the three
]
GOLDEN_SMALL_PAYLOAD = "fe72c9c4735126cc1584b7461bd30e6c"  # split_payload("raw", {}, b"hello")

GOLDEN_OBJECTS = {"blob": golden_blob, "tree": golden_tree, "run": golden_run}


def _encoding(obj) -> bytes:
    header, payload = encode(obj)
    return header + (bytes(payload) if payload is not None else b"")


# -- golden ids -------------------------------------------------------------------


def test_format_constants():
    assert HASH_ALGORITHM == "xxh3-128"
    assert CHUNK_SIZE == 4 << 20
    assert objects.MIN_PREFIX == 4 and objects.HEX_CHARS == 32


@pytest.mark.parametrize("name", sorted(GOLDEN_IDS))
def test_golden_ids(name):
    obj = GOLDEN_OBJECTS[name]()
    assert str(object_id(obj)) == GOLDEN_IDS[name]


@pytest.mark.parametrize("name", sorted(GOLDEN_ENCODINGS))
def test_golden_encodings(name):
    assert _encoding(GOLDEN_OBJECTS[name]()).hex() == GOLDEN_ENCODINGS[name]


def test_golden_chunked_payload():
    parts = split_payload("raw", {}, golden_payload())
    assert [str(oid) for oid, _ in parts] == GOLDEN_CHUNKED
    assert str(split_payload("raw", {}, b"hello")[-1][0]) == GOLDEN_SMALL_PAYLOAD


def test_id_is_xxh3_128_of_the_encoding():
    import xxhash

    obj = golden_tree()
    assert object_id(obj) == xxhash.xxh3_128(_encoding(obj)).digest()
    assert len(object_id(obj)) == 16 and str(object_id(obj)) == object_id(obj).hex()


def test_encoding_layout_is_type_tagged_msgpack():
    """A msgpack array: kind first, fields in fixed order, payload last as bin."""
    items = msgpack.unpackb(_encoding(golden_blob()), raw=False)
    assert items == ["blob", "numpy", {"dtype": "<f8", "order": "C", "shape": [3]}, np.arange(3.0).tobytes()]
    items = msgpack.unpackb(_encoding(golden_tree()), raw=False, strict_map_key=False)
    assert items[0] == "tree" and items[1] == "dict" and items[2] == {"keys": ["a", "b"], "n": 11}


# -- ids and ObjectId ---------------------------------------------------------------------


def test_object_id_type():
    oid = ObjectId.from_hex(GOLDEN_IDS["blob"])
    assert oid == object_id(golden_blob()) and isinstance(oid, bytes)
    assert repr(oid) == f"ObjectId('{GOLDEN_IDS['blob']}')"
    with pytest.raises(ValueError):
        ObjectId(b"short")
    with pytest.raises(ValueError):
        ObjectId.from_hex("abcd")


def test_ids_differ_with_every_field():
    base = golden_blob()
    variants = [
        Blob("numpy2", base.meta, base.data),
        Blob(base.codec, {**base.meta, "order": "F"}, base.data),
        Blob(base.codec, base.meta, base.data + b"\0"),
        Chunk(base.data),
        Tree("list", ()), Tree("tuple", ()), Tree("list", (), {"x": 1}), Tree("list", (1,)),
        Run({}), Run({"a": 1}),
    ]
    ids = {object_id(base)} | {object_id(v) for v in variants}
    assert len(ids) == len(variants) + 1


def test_payload_given_as_bytes_memoryview_or_array_hashes_alike():
    data = np.arange(1000, dtype=np.int32)
    ids = {
        object_id(Blob("x", {}, data.tobytes())),
        object_id(Blob("x", {}, memoryview(data).cast("B"))),
        split_payload("x", {}, data)[-1][0],
        split_payload("x", {}, data.tobytes())[-1][0],
        split_payload("x", {}, bytearray(data.tobytes()))[-1][0],
    }
    assert len(ids) == 1


# -- canonical encoding -----------------------------------------------------------------


def test_map_order_does_not_matter():
    a = {"b": 1, "a": [1, {"y": 2, "x": 3}], 3: "int key", "": None}
    b = {"": None, 3: "int key", "a": [1, {"x": 3, "y": 2}], "b": 1}
    assert list(a) != list(b)
    assert canonical_pack(a) == canonical_pack(b)
    assert object_id(Tree("dict", (), a)) == object_id(Tree("dict", (), b))
    assert object_id(Run(a)) == object_id(Run(b))


def test_maps_sorted_by_encoded_key():
    packed = canonical_pack({"bb": 1, "a": 2, "c": 3, 1: 4})
    keys = list(msgpack.unpackb(packed, strict_map_key=False))
    # Encoded: 1 -> 0x01 sorts first, then fixstr by length byte, then bytes.
    assert keys == [1, "a", "c", "bb"]


def test_one_nan():
    payloaded = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000123))[0]
    neg = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]
    assert all(math.isnan(x) for x in (payloaded, neg))
    assert canonical_pack(float("nan")) == canonical_pack(payloaded) == canonical_pack(neg)
    assert canonical_pack(float("nan")) == b"\xcb\x7f\xf8" + bytes(6)


def test_types_are_distinguished():
    values = [1, 1.0, True, "1", b"1", None, [1], {1: 1}, A, 2**64, -(2**63) - 1]
    assert len({canonical_pack(v) for v in values}) == len(values)


def test_tuples_encode_as_lists():
    assert canonical_pack((1, (2, 3))) == canonical_pack([1, [2, 3]])


def test_floats_are_float64():
    assert canonical_pack(0.5) == b"\xcb" + struct.pack(">d", 0.5)
    assert canonical_pack(1e300) == b"\xcb" + struct.pack(">d", 1e300)


@pytest.mark.parametrize("n", [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**40, -(10**40)])
def test_int_boundaries_round_trip(n):
    t = Tree("list", (n,))
    assert decode(_encoding(t)).entries == (n,)


def test_unsupported_types_refused():
    for bad in (object(), {1, 2}, np.float64(1.0), np.int64(1), frozenset()):
        with pytest.raises(TypeError):
            canonical_pack(bad)
        with pytest.raises(TypeError):
            object_id(Tree("list", (bad,)))


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["blob", "run"])
def test_decode_encode_round_trip(name):
    obj = GOLDEN_OBJECTS[name]()
    back = decode(_encoding(obj))
    assert back == obj and type(back) is type(obj)
    assert object_id(back) == object_id(obj)


def test_tree_round_trip_with_nan():
    obj = golden_tree()
    back = decode(_encoding(obj))
    assert object_id(back) == object_id(obj)
    assert back.type == "dict" and back.meta == obj.meta
    got, want = dict(back.entries), dict(obj.entries)
    assert math.isnan(got.pop("nan")) and math.isnan(want.pop("nan"))
    assert got == want and isinstance(got["a"], ObjectId)


def test_chunk_and_chunked_round_trip():
    for obj in split_payload("raw", {"k": 1}, golden_payload()):
        back = decode(_encoding(obj[1]))
        assert back == obj[1] and object_id(back) == obj[0]


def test_large_payload_decodes_zero_copy():
    data = bytes(range(256)) * 4096  # 1 MiB, beyond the small-decode path
    enc = bytearray(_encoding(Blob("raw", {"x": 1}, data)))
    back = decode(enc)
    assert back.data == data and isinstance(back.data, memoryview)
    enc[-1] ^= 0xFF  # a view of the buffer, not a copy
    assert back.data[-1] == data[-1] ^ 0xFF


@pytest.mark.parametrize("bad", [
    b"", b"\x90", msgpack.packb(["nope", 1]), msgpack.packb(["blob", "c", {}, "not bytes"]),
    msgpack.packb(["run", {}]) + b"\x00",
])
def test_decode_rejects_garbage(bad):
    with pytest.raises((ValueError, TypeError)):
        decode(bad)


def test_references():
    tree = golden_tree()
    assert sorted(references(tree)) == sorted([A, B])
    assert sorted(references(golden_run())) == sorted([A, B])
    chunked = split_payload("raw", {}, golden_payload())[-1][1]
    assert list(references(chunked)) == list(chunked.chunks)
    assert list(references(golden_blob())) == []
    assert list(references(Tree("dict", (), {"ref": A}))) == [A]


def test_objects_are_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        golden_blob().codec = "other"


# -- chunking ---------------------------------------------------------------------------


@pytest.mark.parametrize("n,chunks", [(0, 0), (1, 0), (CHUNK_SIZE, 0), (CHUNK_SIZE + 1, 2), (3 * CHUNK_SIZE, 3)])
def test_split_payload_sizes(n, chunks):
    data = np.zeros(n, np.uint8)
    parts = split_payload("raw", {}, data)
    if chunks == 0:
        assert len(parts) == 1 and isinstance(parts[0][1], Blob) and parts[0][1].data.nbytes == n
        return
    *cs, (top_id, top) = parts
    assert isinstance(top, Chunked) and top.size == n and len(cs) == chunks
    assert list(top.chunks) == [oid for oid, _ in cs]
    assert sum(c.data.nbytes for _, c in cs) == n
    assert all(c.data.nbytes == CHUNK_SIZE for _, c in cs[:-1])


def test_split_payload_hashes_in_place_and_accepts_views(rng):
    a = rng.random((300, 200))
    for view in (a, np.ascontiguousarray(a.T), a.reshape(-1)):
        parts = split_payload("raw", {}, view)
        assert parts[-1][1].data.obj is not None  # a view, not a copy
    with pytest.raises((ValueError, TypeError, BufferError)):
        split_payload("raw", {}, a[:, ::2])  # non-contiguous: the caller makes it contiguous


def test_equal_regions_share_chunks(rng):
    a = rng.random(3 * CHUNK_SIZE // 8)
    b = a.copy()
    b[len(b) // 2] += 1.0
    ca = {oid for oid, _ in split_payload("raw", {}, a)[:-1]}
    cb = {oid for oid, _ in split_payload("raw", {}, b)[:-1]}
    assert len(ca) == len(cb) == 3 and len(ca & cb) == 2


# -- properties ---------------------------------------------------------------------------

ids = st.binary(min_size=16, max_size=16).map(ObjectId)
scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**130), max_value=2**130)
    | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=20) | ids
)
keys = st.text(max_size=8) | st.integers(min_value=-1000, max_value=2**70)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


def _reordered(v):
    """``v`` with every map's insertion order reversed."""
    if type(v) is dict:
        return {k: _reordered(v[k]) for k in reversed(list(v))}
    if type(v) in (list, tuple):
        return type(v)(_reordered(x) for x in v)
    return v


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(values)
def test_canonical_pack_properties(v):
    packed = canonical_pack(v)
    # Independent of map insertion order.
    assert canonical_pack(_reordered(v)) == packed
    # Valid msgpack whose re-encoding is itself (canonical form is a fixed point).
    back = msgpack.unpackb(packed, raw=False, strict_map_key=False, ext_hook=_ext_hook)
    assert canonical_pack(back) == packed
    # Through an object: the id survives decode(encode(x)).
    t = Tree("list", (v,), {"v": v})
    assert object_id(decode(_encoding(t))) == object_id(t)


def _reference_pack(v) -> bytes:
    """The canonical encoding written the slow, obvious way: the spec the fast packer must match."""
    t = type(v)
    if t is dict:
        items = sorted((_reference_pack(k), _reference_pack(x)) for k, x in v.items())
        n = len(items)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
        return head + b"".join(k + x for k, x in items)
    if t in (list, tuple):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        return head + b"".join(_reference_pack(x) for x in v)
    if t is float:
        return b"\xcb" + (bytes.fromhex("7ff8000000000000") if math.isnan(v) else struct.pack(">d", v))
    if t is ObjectId:
        return msgpack.packb(msgpack.ExtType(0, bytes(v)))
    if t is int and not -(2**63) <= v < 2**64:
        n = (v.bit_length() + 8) // 8
        return msgpack.packb(msgpack.ExtType(1, v.to_bytes(n, "big", signed=True)))
    return msgpack.packb(v, use_bin_type=True)


@settings(max_examples=300, deadline=None)
@given(values)
def test_canonical_pack_matches_reference(v):
    assert canonical_pack(v) == _reference_pack(v)


def test_reference_pack_matches_goldens():
    for name in ("blob", "run"):
        obj = GOLDEN_OBJECTS[name]()
        header, payload = encode(obj)
        fields = [obj.kind, *obj._fields()]
        ref = bytes([0x90 | (len(fields) + (payload is not None))]) + b"".join(_reference_pack(f) for f in fields)
        assert header.startswith(ref)


def _ext_hook(code, data):
    if code == 0:
        return ObjectId(data)
    if code == 1:
        return int.from_bytes(data, "big", signed=True)
    raise AssertionError(code)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=6), scalars, max_size=8), st.randoms())
def test_map_order_property(d, random):
    items = list(d.items())
    random.shuffle(items)
    assert canonical_pack(dict(items)) == canonical_pack(d)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), st.text(max_size=10), st.dictionaries(st.text(max_size=5), scalars, max_size=4))
def test_blob_round_trip_property(data, codec, meta):
    blob = Blob(codec, meta, data)
    back = decode(_encoding(blob))
    assert bytes(back.data) == data and back.codec == codec
    assert object_id(back) == object_id(blob)


# -- across processes -----------------------------------------------------------------

_CHILD = r"""
import json, numpy as np
from terra.objects import Blob, Run, Tree, ObjectId, object_id, split_payload
A = ObjectId(bytes(range(16)))
meta = {f"k{i}": i for i in range(50)}  # many keys: dict/set order would show
out = {
    "tree": str(object_id(Tree("dict", tuple((f"e{i}", i) for i in range(30)), meta))),
    "run": str(object_id(Run({"task": "t", "inputs": {f"x{i}": A for i in range(20)}, "tags": ["a", "b"]}))),
    "blob": str(object_id(Blob("text", meta, "héllo".encode()))),
    "array": str(split_payload("numpy", {"dtype": "<f8", "shape": [5]}, np.linspace(0, 1, 5))[-1][0]),
    "golden": str(object_id(Blob("numpy", {"dtype": "<f8", "shape": [3], "order": "C"}, np.arange(3.0).tobytes()))),
}
print(json.dumps(out, sort_keys=True))
"""


def test_same_ids_in_processes_with_different_hash_seeds(python, subprocess_env):
    outputs = set()
    for seed in ("0", "1", "4242", "random"):
        env = {**subprocess_env, "PYTHONHASHSEED": seed}
        res = subprocess.run([python, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        outputs.add(res.stdout.strip())
    assert len(outputs) == 1
    got = json.loads(outputs.pop())
    assert got["golden"] == GOLDEN_IDS["blob"]
    # And the same as in this process.
    ns: dict = {}
    exec(_CHILD.replace("print(json.dumps(out, sort_keys=True))", ""), ns)  # noqa: S102 - our own code
    assert ns["out"] == got
