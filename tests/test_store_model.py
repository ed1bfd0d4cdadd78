"""A Hypothesis state machine: a real LMDB store checked against a plain dict model."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from terra.errors import AmbiguousPrefix, NotFound
from terra.objects import CHUNK_SIZE, Tree, object_id, split_payload
from terra.store import LMDBBackend, MemoryBackend, Store

payloads = st.one_of(
    st.binary(max_size=300),
    st.integers(0, 3).map(lambda k: bytes([k]) * (CHUNK_SIZE + 17)),  # chunked, compressible
)


class _Boom(Exception):
    pass


class StoreModel(RuleBasedStateMachine):
    """Puts, deletes and ref updates; after each step the store must equal the model."""

    backend_kind = "lmdb"
    ids = Bundle("ids")

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="terra-model-")
        self.backend = LMDBBackend(self.tmp) if self.backend_kind == "lmdb" else MemoryBackend()
        self.store = Store(self.backend)
        self.objects: dict[bytes, bytes] = {}  # value id -> payload
        self.stored: set[bytes] = set()  # every id (values, chunks, chunk lists)
        self.refs: dict[bytes, bytes] = {}

    def teardown(self):
        self.backend.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(target=ids, data=payloads, codec=st.sampled_from(["raw", "text"]))
    def put_payload(self, data, codec):
        res = self.store.put_payload(codec, {"n": len(data)}, data)
        assert res.new == (res.id not in self.stored)
        self.objects[res.id] = data
        self.stored.update(oid for oid, _ in split_payload(codec, {"n": len(data)}, data))
        return res.id

    @rule(target=ids, entries=st.lists(st.integers() | st.text(max_size=5), max_size=4))
    def put_tree(self, entries):
        tree = Tree("list", tuple(entries))
        res = self.store.put(tree)
        assert res.new == (res.id not in self.stored) and res.id == object_id(tree)
        self.stored.add(res.id)
        return res.id

    @rule(oid=ids)
    def delete(self, oid):
        n, _ = self.store.delete([oid])
        assert n == (1 if oid in self.stored else 0)
        self.stored.discard(oid)
        self.objects.pop(oid, None)

    @rule(oid=ids)
    def read(self, oid):
        if oid not in self.stored:
            with pytest.raises(NotFound):
                self.store.get(oid)
        elif oid in self.objects and all(c in self.stored for c in self._chunks(oid)):
            assert self.store.read_payload(oid)[1].tobytes() == self.objects[oid]

    def _chunks(self, oid):
        obj = self.store.get(oid)
        return getattr(obj, "chunks", ())

    @rule(oid=ids, n=st.integers(4, 32))
    def resolve(self, oid, n):
        prefix = str(oid)[:n]
        matches = [i for i in self.stored if str(i).startswith(prefix)]
        if len(matches) == 1:
            assert self.store.resolve(prefix) == matches[0]
        elif matches:
            with pytest.raises(AmbiguousPrefix):
                self.store.resolve(prefix)
        else:
            with pytest.raises(NotFound):
                self.store.resolve(prefix)

    @rule(key=st.binary(min_size=1, max_size=8).filter(lambda k: not k.startswith(b"meta/")), value=st.binary(max_size=20), fail=st.booleans())
    def update_refs(self, key, value, fail):
        def fn(txn):
            txn.put(key, value)
            if fail:
                raise _Boom

        if fail:
            with pytest.raises(_Boom):
                self.store.update_refs(fn)
        else:
            self.store.update_refs(fn)
            self.refs[key] = value

    @invariant()
    def same_ids(self):
        assert set(self.store.iter_ids()) == self.stored

    @invariant()
    def same_refs(self):
        with self.store.refs() as txn:
            got = {k: v for k, v in txn.scan(b"") if not k.startswith(b"meta/")}
        assert got == self.refs


class MemoryStoreModel(StoreModel):
    backend_kind = "memory"


_settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestLMDBStoreModel = StoreModel.TestCase
TestLMDBStoreModel.settings = _settings
TestMemoryStoreModel = MemoryStoreModel.TestCase
TestMemoryStoreModel.settings = _settings
