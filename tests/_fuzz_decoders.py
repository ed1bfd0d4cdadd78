"""Child program of the decoder fuzz test: load mutated-but-rehashed pandas/numpy objects.

    python tests/_fuzz_decoders.py SEED FIRST COUNT LOG MEMORY_BYTES

Builds a corpus of pandas and numpy values in an in-memory store, then for each
trial FIRST..FIRST+COUNT-1 mutates one to three objects of one value that the
pandas and numpy codecs read (headers, entries, payload bytes, Arrow schema
bytes, the schema's pandas metadata and field types; the builtin codecs'
objects, such as an attrs dict, are left alone), re-hashes every object above
them up to a new root (so the store's id checks pass and the decoders see the
damage), and loads and summarizes that root. Before a trial it appends
``start N`` to LOG, after it ``N OUTCOME`` where OUTCOME is ``ok``, ``terra
ErrorName`` or ``other ErrorName: message``; a trial that kills the process
(a signal) is the one with a start and no outcome. The address space is
capped (``RLIMIT_AS``) so a length that slips through fails here, not on the
machine.
"""

from __future__ import annotations

import os
import random
import resource
import sys
import traceback


def corpus():
    import numpy as np
    import pandas as pd

    n = 12
    frame = pd.DataFrame({
        "i": np.arange(n, dtype=np.int64) - 3,
        "f": np.linspace(-1, 1, n),
        "b": np.arange(n) % 3 == 0,
        "s": pd.array([None if i % 4 == 0 else f"s{i}" for i in range(n)], dtype="str"),
        "cat": pd.Categorical(["x", "y", None, "z"] * 3, categories=["z", "y", "x"]),
        "tz": pd.date_range("2021-03-27", periods=n, freq="h", tz="Europe/Paris"),
        "Int64": pd.array([None if i % 3 == 0 else i for i in range(n)], dtype="Int64"),
        "string": pd.array([None if i % 5 == 0 else str(i) * 3 for i in range(n)], dtype="string"),
        "boolean": pd.array([None if i % 2 else i % 4 == 0 for i in range(n)], dtype="boolean"),
    }, index=pd.Index([f"r{i}" for i in range(n)], name="k"))
    frame.attrs = {"unit": "m"}
    padded = np.zeros(3, np.dtype([("a", "u1"), ("b", "<i8"), ("c", [("x", "u1"), ("y", "<f4")])], align=True))
    padded["b"] = [1, 2, 3]
    return [
        frame,
        frame.set_index(["i", "cat"]),
        pd.DataFrame(np.arange(6.0).reshape(2, 3)),
        pd.DataFrame(index=pd.RangeIndex(0, 10, 3)),
        pd.Series(np.arange(5.0), index=pd.date_range("2020", periods=5, freq="D"), name=0),
        pd.Index([-(2**63), 2**63 - 1]),
        pd.CategoricalIndex(["a", "b", "a"]),
        pd.MultiIndex.from_product([[1, 2], ["a", "b"]], names=["n", None]),
        np.arange(20, dtype=np.int32).reshape(4, 5),
        np.array(["ab", "c"]),
        padded,
        padded[1],
        np.float32(1.5),
    ]


INTS = [0, 1, -1, 2, 3, 7, 8, 9, 63, 64, 65, 255, 256, 4095, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1,
        -(2**63), 2**64 - 1]
VALUES = INTS + [None, True, False, "", "x", "D", "2h", "|O", "O", "<U0", "|V0", "T", "<U1000000000",
                 "S0", "V8", "<f8", "|b1", "<M8[ns]", "pandas.DataFrame", "pandas.Series", "pandas.Index",
                 [], [0], [1, 2], [None], [2**62, 2**62], [["a", "|O"]], [["a", "<f8", [2**40]]],
                 {}, 1.5, float("nan"), {"names": ["a"], "formats": ["O"], "offsets": [0], "itemsize": 8,
                                         "aligned": False}]
KEYS = ["length", "null_count", "dictionary", "shape", "type", "name", "names", "freq", "allows_duplicate_labels",
        "nbytes", "columns", "dtype", "descr", "layout"]
TREE_TYPES = ["pandas.v2", "pandas", "pandas.attrs", "arrow.array"]
CODECS = ["numpy", "numpy.scalar", "arrow.buffer", "arrow.schema"]


def mutate_value(r: random.Random, v):
    if type(v) is int and r.random() < 0.5:
        return v + r.choice([-1, 1, 8, -8, 1 << 20, 1 << 40])
    return r.choice(VALUES)


def mutate_meta(r: random.Random, meta):
    if not isinstance(meta, dict) or r.random() < 0.05:
        return r.choice([5, [], "x", None]) if r.random() < 0.5 else {}
    meta = dict(meta)
    op = r.random()
    if op < 0.15 and meta:
        del meta[r.choice(list(meta))]
    elif op < 0.3:
        meta[r.choice(KEYS)] = r.choice(VALUES)
    elif meta:
        k = r.choice(list(meta))
        v = meta[k]
        if isinstance(v, list) and v and r.random() < 0.7:
            v = list(v)
            i = r.randrange(len(v))
            v[i] = mutate_value(r, v[i]) if not isinstance(v[i], (list, dict)) else r.choice(VALUES)
            meta[k] = v
        else:
            meta[k] = mutate_value(r, v)
    return meta


def mutate_payload(r: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = r.random()
    if op < 0.5 and b:
        for _ in range(r.randint(1, 8)):
            b[r.randrange(len(b))] = r.choice([0, 0xFF, 0x7F, 0x80, r.randrange(256)])
    elif op < 0.65:
        del b[r.randrange(len(b) + 1):]
    elif op < 0.8:
        b += bytes(r.randrange(256) for _ in range(r.choice([1, 7, 8, 64])))
    elif op < 0.9 and b:
        i = r.randrange(len(b))
        b[i:i + 4] = (r.choice(INTS[:16]) % (1 << 32)).to_bytes(4, "little")
    else:
        b = bytearray(len(b))
    return bytes(b)


JSON_VALUES = VALUES[:40] + ["object", "int64", "datetimetz", "categorical", "unicode", "Int64", "range",
                            "Europe/Paris", "+01:00", "../../etc/passwd", "datetime64[ns]", "bytes", "empty",
                            {"kind": "range", "start": 0, "stop": 2**62, "step": 1, "name": None}]


def mutate_json(r: random.Random, x):
    """``x`` (parsed JSON) with one leaf, list item or key replaced."""
    if isinstance(x, dict) and x and r.random() < 0.8:
        k = r.choice(list(x))
        x = dict(x)
        if r.random() < 0.15:
            del x[k]
        else:
            x[k] = mutate_json(r, x[k])
        return x
    if isinstance(x, list) and x and r.random() < 0.8:
        x = list(x)
        i = r.randrange(len(x))
        if r.random() < 0.15:
            x.pop(i)
        else:
            x[i] = mutate_json(r, x[i])
        return x
    v = r.choice(JSON_VALUES)
    return None if isinstance(v, float) and v != v else v


def mutate_schema(r: random.Random, data: bytes) -> bytes:
    """Arrow schema bytes with their pandas metadata or one field's type changed (still valid IPC)."""
    import json

    import pyarrow as pa

    try:
        schema = pa.ipc.read_schema(pa.py_buffer(data))
        md = json.loads(schema.metadata[b"pandas"])
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError):  # mangled by an earlier mutation
        return mutate_payload(r, data)
    if r.random() < 0.7 or not len(schema):
        schema = schema.with_metadata({b"pandas": json.dumps(mutate_json(r, md)).encode()})
    else:
        types = [pa.int8(), pa.int64(), pa.uint64(), pa.float16(), pa.float64(), pa.bool_(), pa.string(),
                 pa.large_string(), pa.binary(), pa.timestamp("ns", "Europe/Paris"), pa.timestamp("s"),
                 pa.date32(), pa.time64("ns"), pa.duration("ms"), pa.decimal128(38, 3), pa.binary(3),
                 pa.dictionary(pa.int8(), pa.string()), pa.dictionary(pa.int32(), pa.int64()), pa.null(),
                 pa.list_(pa.int64()), pa.struct([("a", pa.int8())]), pa.month_day_nano_interval()]
        i = r.randrange(len(schema))
        schema = schema.set(i, schema.field(i).with_type(r.choice(types)))
    return schema.serialize().to_pybytes()


def mutate(r: random.Random, obj, others: list, root: bool):
    from terra.objects import Blob, ObjectId, Tree

    if isinstance(obj, Tree):
        op = r.random()
        entries = list(obj.entries)
        if op < 0.45:
            return Tree(obj.type, obj.entries, mutate_meta(r, obj.meta))
        if op < 0.9 or root:
            sub = r.random()
            if sub < 0.2 and entries:
                entries.pop(r.randrange(len(entries)))
            elif sub < 0.35 and entries:
                entries.insert(r.randrange(len(entries)), r.choice(entries))
            elif sub < 0.5 and len(entries) > 1:
                i, j = r.sample(range(len(entries)), 2)
                entries[i], entries[j] = entries[j], entries[i]
            elif sub < 0.6 and entries:
                entries[r.randrange(len(entries))] = r.choice([None, 3, "x", b"x"])
            elif sub < 0.9 and entries:
                entries[r.randrange(len(entries))] = r.choice(others)
            elif sub < 0.95:
                entries.append(r.choice(others))
            elif entries:
                entries[r.randrange(len(entries))] = ObjectId(r.randbytes(16))
            return Tree(obj.type, tuple(entries), obj.meta)
        return Tree(r.choice(TREE_TYPES), obj.entries, obj.meta)
    op = r.random()
    if obj.codec == "arrow.schema" and op < 0.5:
        return Blob(obj.codec, obj.meta, mutate_schema(r, bytes(obj.data)))
    if op < 0.55:
        return Blob(obj.codec, obj.meta, mutate_payload(r, bytes(obj.data)))
    if op < 0.9 or root:
        return Blob(obj.codec, mutate_meta(r, obj.meta), obj.data)
    return Blob(r.choice(CODECS), obj.meta, obj.data)


def graph(store, root):
    """Every object below ``root`` (Trees and Blobs; small values have no chunks)."""
    from terra.objects import references

    objs, todo = {}, [root]
    while todo:
        oid = todo.pop()
        if oid in objs:
            continue
        objs[oid] = store.get(oid)
        todo.extend(references(objs[oid]))
    return objs


def rewrite(store, objs: dict, root, replaced: dict):
    """Put every ancestor of a replaced object again with its children's new ids; the new root's id."""
    from terra.objects import ObjectId, Tree

    memo: dict = {}

    def sub(x):
        if type(x) is ObjectId:
            return new_id(x)
        if type(x) in (list, tuple):
            return type(x)(sub(v) for v in x)
        if isinstance(x, dict):
            return {k: sub(v) for k, v in x.items()}
        return x

    def new_id(oid):
        if oid in memo:
            return memo[oid]
        memo[oid] = oid  # cycles (an entry pointing at an ancestor) stay as they are
        if oid in replaced:
            obj = replaced[oid]
        else:
            obj = objs.get(oid)
        if isinstance(obj, Tree):
            obj = Tree(obj.type, sub(obj.entries), sub(obj.meta))
        if obj is None:
            return oid
        memo[oid] = store.put(obj).id
        return memo[oid]

    return new_id(root)


def main(seed: int, first: int, count: int, log_path: str, memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    import warnings

    warnings.simplefilter("ignore")
    from terra.errors import TerraError
    from terra.serialize import load_value, store_value, summarize
    from terra.store import MemoryBackend, Store

    store = Store(MemoryBackend())
    roots = [store_value(store, v) for v in corpus()]
    graphs = [graph(store, root) for root in roots]
    with open(log_path, "a", buffering=1) as log:
        for trial in range(first, first + count):
            r = random.Random(seed * 1_000_003 + trial)
            k = r.randrange(len(roots))
            root, objs = roots[k], graphs[k]
            ids = list(objs)
            mine = [oid for oid in ids if getattr(objs[oid], "type", getattr(objs[oid], "codec", None))
                    in TREE_TYPES + CODECS]
            if not mine:  # stored with pickle (by a terra that could not store it natively)
                log.write(f"{trial} skipped pickled\n")
                continue
            replaced = {}
            try:
                for _ in range(r.choice([1, 1, 1, 2, 3])):
                    target = r.choice(mine)
                    replaced[target] = mutate(r, replaced.get(target, objs[target]), ids, target == root)
                mutant = rewrite(store, objs, root, replaced)
            except Exception as e:  # the mutation itself failed (e.g. a meta value objects cannot encode)
                log.write(f"{trial} skipped {type(e).__name__} {e}\n")
                continue
            log.write(f"start {trial}\n")
            try:
                summarize(store, mutant)
                load_value(store, mutant)
                outcome = "ok"
            except TerraError as e:
                outcome = f"terra {type(e).__name__}"
                if os.environ.get("TERRA_FUZZ_VERBOSE"):
                    outcome += f" {str(e)[:150]!r}"
            except Exception as e:  # noqa: BLE001 - what the test counts
                outcome = f"other {type(e).__name__}: {str(e)[:200]!r}"
                traceback.print_exc(limit=-4)
            log.write(f"{trial} {outcome}\n")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
