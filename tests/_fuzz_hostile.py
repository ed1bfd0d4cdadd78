"""Fuzz the decoders with mutated-but-rehashed objects; run as a script in a memory-limited process.

    python tests/_fuzz_hostile.py STORE_DIR EXAMPLES SECONDS ADDRESS_SPACE_BYTES

Values are stored, then one of their objects is mutated (its fields, or its
encoded bytes) and stored under its new id, so the store's hash check passes
and the decoders see the crafted object; a parent may be rewritten to point
at it. Loading and summarizing must give a value or a terra error, nothing
else. Mutated objects are written unsigned (as a copied store's would be), so
pickles among them must be refused, not run. Prints one JSON line:
``{"trials": n, "failures": [...]}``; the parent test counts signals.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import datetime as dt
import decimal
import enum
import json
import random
import resource
import sys
import time
import uuid
import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import terra
from terra import trust
from terra.errors import TerraError
from terra.objects import Blob, Chunk, Chunked, ObjectId, Run, Tree, decode, digest, encode, object_id
from terra.serialize import load_value, plain_value, store_value, summarize
from terra.serialize._encode import Encoder
from terra.session import current_store

warnings.simplefilter("ignore")


class Colour(enum.Enum):
    RED = 1
    BLUE = "b"


@dataclasses.dataclass
class Pair:
    a: object
    b: object


Pt = collections.namedtuple("Pt", "x y")


class Opaque:  # pickled
    def __init__(self, v):
        self.v = v


MARKER_CMD = "touch /nonexistent-dir/terra-fuzz-marker"
KNOWN = ["py", "str", "bytes", "datetime", "path", "decimal", "uuid", "complex", "range", "user", "pickle",
         "pickle.buffer", "png", "torch", "file", "dict", "list", "tuple", "set", "frozenset", "OrderedDict",
         "Counter", "defaultdict", "dataclass", "namedtuple", "enum", "dir", "figure", "ndarray"]
CLASS_PATHS = ["os:system", "subprocess:Popen", "builtins:eval", "collections:OrderedDict", "__main__:Colour",
               "__main__:Pair", "__main__:Pt", "nonexistent.module:X", "os", ":", 5, None]

leaf = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**80), max_value=2**80)
        | st.floats() | st.text(max_size=300) | st.binary(max_size=300)
        | st.sampled_from([Colour.RED, Colour.BLUE]) | st.decimals(allow_nan=True) | st.uuids()
        | st.datetimes(timezones=st.none() | st.timezones()) | st.dates() | st.timedeltas()
        | st.complex_numbers(allow_nan=False) | st.builds(range, st.integers(-5, 5), st.integers(-5, 5)))
hashable = st.none() | st.integers() | st.text(max_size=20) | st.binary(max_size=20)


def _extend(children):
    return (st.lists(children, max_size=5) | st.tuples(children, children)
            | st.dictionaries(hashable, children, max_size=5) | st.frozensets(hashable, max_size=5)
            | st.sets(hashable, max_size=5) | st.builds(Pair, children, children)
            | st.builds(Pt, children, children) | st.builds(Opaque, children)
            | st.builds(lambda d: collections.defaultdict(list, d), st.dictionaries(hashable, children, max_size=3))
            | st.builds(collections.OrderedDict, st.dictionaries(hashable, children, max_size=3)))


values = st.recursive(leaf, _extend, max_leaves=12)
junk = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
                    | st.text(max_size=20) | st.binary(max_size=40) | st.sampled_from(KNOWN + CLASS_PATHS[:-2]),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=8)


def objects_of(value) -> list[tuple[ObjectId, object]]:
    pairs: list = []
    oid = Encoder(pairs.extend).value(value)
    return pairs + [(oid, None)]


def mutate_fields(obj, rnd: random.Random, draw_junk, others: list[ObjectId]):
    """A copy of ``obj`` with one field replaced by junk or a plausible wrong value."""
    kind = obj.kind
    if kind == "tree":
        choice = rnd.randrange(5)
        if choice == 0:
            return Tree(rnd.choice(KNOWN), obj.entries, obj.meta)
        if choice == 1:
            meta = dict(obj.meta)
            key = rnd.choice(list(meta) or ["class", "type", "factory", "name"])
            meta[key] = rnd.choice([draw_junk(), rnd.choice(CLASS_PATHS[:-2])])
            return Tree(obj.type, obj.entries, meta)
        if choice == 2 and obj.entries:
            entries = list(obj.entries)
            i = rnd.randrange(len(entries))
            entries[i] = rnd.choice([draw_junk(), rnd.choice(others)] if others else [draw_junk()])
            return Tree(obj.type, tuple(_fix(e) for e in entries), obj.meta)
        if choice == 3:
            entries = list(obj.entries)
            if entries and rnd.random() < 0.5:
                entries.pop(rnd.randrange(len(entries)))
            else:
                entries.append(_fix(draw_junk()))
            return Tree(obj.type, tuple(_fix(e) for e in entries), obj.meta)
        return Tree(obj.type, tuple(_fix(e) for e in obj.entries), _fix(draw_junk()) if rnd.random() < 0.5 else {})
    if kind == "blob":
        choice = rnd.randrange(4)
        if choice == 0:
            return Blob(rnd.choice(KNOWN), obj.meta, obj.data)
        if choice == 1:
            meta = dict(obj.meta)
            meta[rnd.choice(list(meta) or ["type", "codec"])] = _fix(draw_junk())
            return Blob(obj.codec, meta, obj.data)
        data = bytearray(obj.data)
        for _ in range(rnd.randint(1, 4)):
            if data and rnd.random() < 0.7:
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            else:
                data[rnd.randrange(len(data) + 1):0] = bytes([rnd.randrange(256)])
        if choice == 3 and data:
            del data[rnd.randrange(len(data)):]
        return Blob(obj.codec, obj.meta, bytes(data))
    return None


def _fix(v):
    """Junk as the canonical packer accepts it (tuples for lists, ObjectIds as they are)."""
    if isinstance(v, list):
        return tuple(_fix(x) for x in v)
    if isinstance(v, dict):
        return {k: _fix(x) for k, x in v.items()}
    return v


def mutate_bytes(enc: bytes, rnd: random.Random) -> bytes:
    data = bytearray(enc)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(4)
        if op == 0 and data:
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        elif op == 1 and data:
            data[rnd.randrange(len(data))] = rnd.choice([0x00, 0xFF, 0x7F, 0x80, 0xC1, 0xDD, 0xDF, 0xC6, 0xCF])
        elif op == 2:
            data[rnd.randrange(len(data) + 1):0] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        elif data:
            i = rnd.randrange(len(data))
            del data[i : i + rnd.randint(1, 8)]
    return bytes(data)


def put_raw(store, enc: bytes) -> ObjectId:
    oid = digest((enc,))
    store.backend.put_many([(oid, b"\x00" + enc)], durable=False)
    return oid


def _replace(entries, old: ObjectId, new: ObjectId):
    if isinstance(entries, ObjectId):
        return new if entries == old else entries
    if isinstance(entries, tuple):
        return tuple(_replace(e, old, new) for e in entries)
    return entries


def check(store, oid: ObjectId, what: str, failures: list) -> None:
    for fn in (load_value, summarize, plain_value):
        try:
            fn(store, oid)
        except TerraError:
            pass
        except RecursionError:
            failures.append(f"{what}: {fn.__name__} RecursionError")
        except Exception as e:  # noqa: BLE001 - the property under test
            failures.append(f"{what}: {fn.__name__} raised {type(e).__name__}: {str(e)[:200]}")
    try:
        store.get(oid)
    except TerraError:
        pass
    except Exception as e:  # noqa: BLE001
        failures.append(f"{what}: get raised {type(e).__name__}: {str(e)[:200]}")


def main() -> None:
    root, examples, seconds, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    terra.configure(storage_dir=root, quiet=True)
    store = current_store()
    importlib.import_module("terra.serialize.codecs")  # before the limit, like a warm process

    vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + limit, vm + limit))
    deadline = time.monotonic() + seconds
    stats = {"trials": 0}
    failures: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(value=values, junks=st.lists(junk, min_size=4, max_size=4), seed=st.integers(0, 2**32 - 1))
    def trial(value, junks, seed):
        # Everything is drawn by @given: skipping work past the deadline must not change what is drawn.
        if time.monotonic() > deadline:
            return
        rnd = random.Random(seed)

        def draw_junk():
            return rnd.choice(junks)

        try:
            store_value(store, value)
        except TerraError:
            return
        pairs = [(o, obj) for o, obj in objects_of(value) if obj is not None]
        if not pairs:
            return
        target_id, target = rnd.choice(pairs)
        others = [o for o, _ in pairs]
        with trust.writing_foreign():  # crafted objects come from elsewhere
            if rnd.random() < 0.5:
                header, payload = encode(target)
                enc = header + (bytes(payload) if payload is not None else b"")
                new_id = put_raw(store, mutate_bytes(enc, rnd))
                new = None
            else:
                new = mutate_fields(target, rnd, draw_junk, others)
                if new is None:
                    return
                try:
                    new_id = store.put(new).id
                except (TypeError, ValueError):
                    return  # junk the canonical packer refuses cannot be stored at all
            targets = [new_id]
            parents = [(o, obj) for o, obj in pairs if isinstance(obj, Tree) and target_id in _ids(obj.entries)]
            for pid, parent in parents[:1]:
                try:
                    targets.append(store.put(Tree(parent.type, _replace(parent.entries, target_id, new_id),
                                                  parent.meta)).id)
                except (TypeError, ValueError):
                    pass
            if rnd.random() < 0.2:  # a record: a Run of junk fields, its bytes mutated too
                enc = encode(Run({"task": "t", "inputs": new_id, "junk": _fix(draw_junk())}))[0]
                targets.append(put_raw(store, mutate_bytes(enc, rnd) if rnd.random() < 0.5 else enc))
        for t in targets:
            stats["trials"] += 1
            check(store, t, f"{type(target).__name__}->{new!r}"[:300], failures)

    trial()
    print(json.dumps({"trials": stats["trials"], "failures": failures[:20], "nfailures": len(failures)}))


def _ids(entries):
    if isinstance(entries, ObjectId):
        yield entries
    elif isinstance(entries, tuple):
        for e in entries:
            yield from _ids(e)


if __name__ == "__main__":
    sys.modules.setdefault("_fuzz_hostile", sys.modules["__main__"])
    main()
