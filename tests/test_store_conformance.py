"""The conformance suite every store backend passes.

A backend joins by subclassing :class:`StoreConformance` and providing two
hooks, as the in-memory and LMDB backends do at the bottom of this file::

    class TestMyBackend(StoreConformance):
        def make_backend(self, tmp_path):
            return MyBackend(...)

        def corrupt(self, backend, key, fn):
            ...  # replace the stored bytes of ``key`` by ``fn(old_bytes)``
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from terra.errors import AmbiguousPrefix, CorruptObject, NotFound, TerraError, UnsupportedFormat
from terra.objects import CHUNK_SIZE, Blob, Chunk, Chunked, ObjectId, Run, Tree, object_id, split_payload
from terra.store import FORMAT_VERSION, LMDBBackend, MemoryBackend, PutResult, Store

MiB = 1 << 20


class StoreConformance:
    """Behaviour every :class:`terra.store.Backend` must show through :class:`Store`."""

    # -- hooks for each backend ---------------------------------------------------------

    def make_backend(self, tmp_path):
        raise NotImplementedError

    def corrupt(self, backend, key: bytes, fn) -> None:
        """Replace the stored (framed) bytes of ``key`` by ``fn(old)``."""
        raise NotImplementedError

    # -- fixtures -----------------------------------------------------------------------

    @pytest.fixture
    def store(self, tmp_path):
        backend = self.make_backend(tmp_path)
        yield Store(backend)
        backend.close()

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def sizes(store) -> dict[bytes, int]:
        return {k: size for k, size, _ in store.backend.iter_ids()}

    @staticmethod
    def roundtrip(store, arr: np.ndarray) -> np.ndarray:
        c = np.ascontiguousarray(arr)
        res = store.put_payload("numpy", {"dtype": c.dtype.str, "shape": list(c.shape)}, c)
        head, data = store.read_payload(res.id)
        assert head.meta == {"dtype": c.dtype.str, "shape": list(c.shape)}
        return data.view(np.dtype(head.meta["dtype"])).reshape(head.meta["shape"])

    # -- put / get / dedup ----------------------------------------------------------------

    def test_put_get_round_trip(self, store):
        objs = [
            Blob("text", {"encoding": "utf-8"}, "héllo".encode()),
            Tree("dict", (("a", 1), ("b", ObjectId(bytes(16))), ("c", 2**80)), {"n": 2}),
            Run({"task": "t", "status": "success", "started": 1.5}),
            Chunk(b"x" * 1000),
        ]
        for obj in objs:
            res = store.put(obj)
            assert isinstance(res, PutResult) and res.new and res.id == object_id(obj)
            back = store.get(res.id)
            assert back == obj and type(back) is type(obj)
            assert store.get(str(res.id)) == obj  # hex form works too
        blob = store.get(object_id(objs[0]))
        assert isinstance(blob.data, bytes)  # copied out of the store

    def test_put_is_idempotent(self, store):
        obj = Blob("raw", {}, b"same bytes")
        first, second = store.put(obj), store.put(Blob("raw", {}, b"same bytes"))
        assert first.new and not second.new and first.id == second.id
        assert list(store.iter_ids()) == [first.id]

    def test_put_many_reports_each(self, store):
        a, b = Blob("raw", {}, b"a"), Blob("raw", {}, b"b")
        store.put(a)
        res = store.put_many([a, b, (object_id(b), b)])
        assert [r.new for r in res] == [False, True, False]
        assert store.put_many([]) == []

    def test_duplicate_ids_in_one_call_stored_once(self, store):
        obj = Blob("raw", {}, b"dup")
        res = store.put_many([obj, obj, obj])
        assert [r.new for r in res] == [True, False, False]
        assert list(store.iter_ids()) == [object_id(obj)]
        # A zero-filled payload repeats one chunk: stored once.
        res = store.put_payload("raw", {}, np.zeros(3 * CHUNK_SIZE, np.uint8))
        assert res.new
        head, data = store.read_payload(res.id)
        assert len(set(head.chunks)) == 1 and data.nbytes == 3 * CHUNK_SIZE and not data.any()
        assert len(list(store.iter_ids())) == 3  # dup blob, one chunk, the chunk list

    def test_put_restores_object_deleted_after_has(self, store, monkeypatch):
        """If an object vanishes between the presence check and the write (a
        concurrent gc), put stores it again instead of trusting the check."""
        obj = Blob("raw", {}, b"racy")
        monkeypatch.setattr(store.backend, "has_many", lambda keys: [True] * len(list(keys)))
        res = store.put(obj)
        monkeypatch.undo()
        assert res.new and store.get(res.id) == obj

    # -- payloads ---------------------------------------------------------------------

    @pytest.mark.parametrize("n", [0, 1, 127, 128, 4096, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 7])
    def test_bytes_round_trip(self, store, n):
        data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
        res = store.put_payload("bytes", {"n": n}, data)
        head, out = store.read_payload(res.id)
        assert out.dtype == np.uint8 and out.tobytes() == data
        assert head.codec == "bytes" and head.meta == {"n": n}
        assert isinstance(head, Chunked if n > CHUNK_SIZE else Blob)
        out[:1] = 7 if n else 0  # writable, owned by the caller
        assert store.read_payload(res.id)[1].tobytes() == data

    @pytest.mark.parametrize("dtype", ["float64", "float32", "int8", "int64", "uint16", "complex128", "bool", ">i4"])
    def test_numpy_round_trip(self, store, dtype, rng):
        a = (rng.standard_normal((64, 33)) * 100).astype(dtype)
        for view in (a, a.T, a[::2, 1::3], a[:, 5], a[::-1]):
            back = self.roundtrip(store, view)
            assert back.dtype == view.dtype and back.shape == view.shape
            np.testing.assert_array_equal(back, view)

    def test_datetime_and_empty_arrays(self, store):
        t = np.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]")
        back = self.roundtrip(store, t.view("i8")).view(t.dtype)
        np.testing.assert_array_equal(back, t)
        assert self.roundtrip(store, np.empty((0, 3))).shape == (0, 3)

    def test_large_arrays_share_chunks(self, store, rng):
        a = rng.random(10 * MiB // 8)  # 10 MiB: three chunks
        b = a.copy()
        b[len(b) // 2] = -1.0  # one element differs: one chunk differs
        ra = store.put_many(split_payload("numpy", {}, a))
        assert all(r.new for r in ra) and len(ra) == 4
        rb = store.put_many(split_payload("numpy", {}, b))
        assert [r.new for r in rb] == [False, True, False, True]
        assert len(list(store.iter_ids())) == 6  # 3 + 1 chunks, 2 chunk lists
        np.testing.assert_array_equal(store.read_payload(ra[-1].id)[1].view(np.float64), a)
        np.testing.assert_array_equal(store.read_payload(rb[-1].id)[1].view(np.float64), b)
        again = store.put_payload("numpy", {}, b)
        assert not again.new and again.id == rb[-1].id

    def test_dataframe_arrow_ipc_round_trip(self, store, rng):
        pd = pytest.importorskip("pandas")
        pa = pytest.importorskip("pyarrow")
        n = 200_000
        df = pd.DataFrame({
            "i": np.arange(n), "x": rng.random(n), "s": [f"row {i % 97}" for i in range(n)],
            "t": pd.date_range("2024-01-01", periods=n, freq="min"),
        })
        sink = io.BytesIO()
        table = pa.Table.from_pandas(df, preserve_index=False)
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        res = store.put_payload("arrow", {"rows": n}, sink.getbuffer())
        _, data = store.read_payload(res.id)
        back = pa.ipc.open_stream(pa.py_buffer(data)).read_all().to_pandas()
        pd.testing.assert_frame_equal(back, df)

    def test_read_payload_refuses_other_kinds(self, store):
        tid = store.put(Tree("list", (1, 2))).id
        with pytest.raises(CorruptObject):
            store.read_payload(tid)

    @staticmethod
    def _payload_kinds(store, rng) -> dict:
        """One payload of every stored form: raw and compressed, small and large, blob and chunked."""
        data = {
            "empty": np.zeros(0, np.uint8),
            "tiny": np.frombuffer(b"abc", np.uint8),
            "raw blob": rng.integers(0, 256, 300_000, dtype=np.uint8),
            "small zstd blob": np.zeros(20_000, np.uint8),
            "zstd blob": (np.arange(500_000) % 251).astype(np.uint8),
            "raw chunked": rng.integers(0, 256, 2 * CHUNK_SIZE + 7, dtype=np.uint8),
            "zstd chunked": (np.arange(2 * CHUNK_SIZE + 7) % 253).astype(np.uint8),
        }
        return {k: (store.put_payload("raw", {"k": k}, v).id, v) for k, v in data.items()}

    @pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
    def test_read_payloads_returns_fresh_verified_copies(self, store, rng, monkeypatch, parallel):
        from terra.store import _store

        monkeypatch.setattr(_store, "_PARALLEL_READ_WORK", 0 if parallel else 1 << 62)
        kinds = self._payload_kinds(store, rng)
        sizes = self.sizes(store)
        assert sizes[kinds["small zstd blob"][0]] < 1000 and sizes[kinds["zstd blob"][0]] < 100_000
        ids = [oid for oid, _ in kinds.values()] * 2  # an id asked twice gets two copies
        got = store.read_payloads(ids)
        assert len(got) == len(ids)
        for (head, out), (k, (oid, want)) in zip(got, list(kinds.items()) * 2):
            assert head.meta == {"k": k} and out.dtype == np.uint8
            np.testing.assert_array_equal(out, want)
            assert out.flags.writeable and out.flags.c_contiguous
        for i, (_, a) in enumerate(got):  # no two results share memory: each is the caller's own
            for _, b in got[i + 1 :]:
                assert not np.shares_memory(a, b)
        got[2][1][:] = 0  # writing a result changes neither the store nor the other copy
        np.testing.assert_array_equal(store.read_payload(ids[2])[1], kinds["raw blob"][1])
        np.testing.assert_array_equal(got[2 + len(kinds)][1], kinds["raw blob"][1])

    @pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
    @pytest.mark.parametrize("victim", ["raw blob", "small zstd blob", "zstd blob", "raw chunked", "zstd chunked"])
    def test_read_payloads_detects_a_flipped_byte_in_any(self, store, rng, monkeypatch, parallel, victim):
        from terra.store import _store

        monkeypatch.setattr(_store, "_PARALLEL_READ_WORK", 0 if parallel else 1 << 62)
        kinds = self._payload_kinds(store, rng)
        oid = kinds[victim][0]
        named = store.get(oid).chunks[-1] if victim.endswith("chunked") else oid
        self._flip(store.backend, named, 0.7)
        with pytest.raises(CorruptObject, match=str(named)):
            store.read_payloads([i for i, _ in kinds.values()])

    def test_read_payloads_missing_chunk_before_allocating(self, store, rng, monkeypatch):
        kinds = self._payload_kinds(store, rng)
        oid = kinds["raw chunked"][0]
        chunk = store.get(oid).chunks[1]
        store.delete([chunk])
        allocated = []
        real_empty = np.empty
        monkeypatch.setattr(np, "empty", lambda n, *a, **kw: allocated.append(n) or real_empty(n, *a, **kw))
        with pytest.raises(NotFound, match=str(chunk)):
            store.read_payloads([oid])
        assert 2 * CHUNK_SIZE + 7 not in allocated

    # -- has / delete / iterate -------------------------------------------------------

    def test_has_delete_iter(self, store):
        res = store.put_many([Blob("raw", {}, bytes([i]) * 50) for i in range(20)])
        ids = sorted(r.id for r in res)
        assert list(store.iter_ids()) == ids
        assert all(store.has(i) for i in ids)
        n, size = store.delete(ids[:5])
        assert n == 5 and size > 0
        assert not any(store.has(i) for i in ids[:5])
        assert list(store.iter_ids()) == ids[5:]
        assert store.delete(ids[:5]) == (0, 0)  # already gone
        with pytest.raises(NotFound):
            store.get(ids[0])
        with pytest.raises(KeyError):  # the builtin a caller would catch
            store.read_payload(ids[0])
        assert not store.has(ObjectId(bytes(16)))

    def test_iter_ids_prefix_and_many(self, store):
        res = store.put_many([Blob("raw", {}, i.to_bytes(4, "big")) for i in range(5000)])
        ids = sorted(r.id for r in res)
        assert list(store.iter_ids()) == ids  # more than one batch, in order
        for prefix in ("0", "ab", "f3c", "7e1d"):
            assert list(store.iter_ids(prefix)) == [i for i in ids if str(i).startswith(prefix)]
        rows = list(store.backend.iter_ids(ids[10][:1]))
        assert [k for k, _, _ in rows] == [i for i in ids if i[:1] == ids[10][:1]]
        assert all(size > 0 and t > 0 for _, size, t in rows)

    def test_bad_ids(self, store):
        for bad in ("xyz", "00" * 15, b"short", 12, "g" * 32):
            with pytest.raises(NotFound):
                store.get(bad)

    # -- resolve prefix -----------------------------------------------------------------

    @staticmethod
    def colliding_pair():
        """Two blobs whose ids share their first four hex characters."""
        seen = {}
        for i in range(100_000):
            blob = Blob("raw", {}, str(i).encode())
            p = str(object_id(blob))[:4]
            if p in seen:
                return seen[p], blob
            seen[p] = blob
        raise AssertionError("no collision")

    def test_resolve(self, store):
        a, b = self.colliding_pair()
        ia, ib = store.put(a).id, store.put(b).id
        full = str(ia)
        assert store.resolve(full) == ia
        k = next(n for n in range(5, 33) if full[:n] != str(ib)[:n])
        assert store.resolve(full[:k]) == ia
        assert store.resolve(full[:k].upper()) == ia
        with pytest.raises(AmbiguousPrefix) as e:
            store.resolve(full[:4])
        assert full[:4] in str(e.value)
        assert isinstance(e.value, NotFound) and isinstance(e.value, TerraError)
        other = next(h for h in ("0000", "ffff", "1234", "abcd") if not full.startswith(h) and not str(ib).startswith(h))
        for bad in (other, full[:3], "", "zzzz", full[:4] + "g", full + "0", "0x" + full[:6], " " + full[:6]):
            with pytest.raises(NotFound) as e:
                store.resolve(bad)
            assert not isinstance(e.value, AmbiguousPrefix)

    # -- refs ---------------------------------------------------------------------------

    def test_refs_read_update_scan(self, store):
        def fill(txn):
            for i in range(5):
                txn.put(b"tag/%d" % i, b"v%d" % i)
            txn.put(b"other", b"x")
            return "done"

        assert store.update_refs(fill) == "done"
        with store.refs() as txn:
            assert txn.get(b"tag/3") == b"v3" and txn.get(b"missing") is None
            assert [k for k, _ in txn.scan(b"tag/")] == [b"tag/%d" % i for i in range(5)]
            assert [k for k, _ in txn.scan(b"tag/", reverse=True)] == [b"tag/%d" % i for i in reversed(range(5))]
            assert list(txn.scan(b"zz")) == [] and list(txn.scan(b"zz", reverse=True)) == []
        assert store.update_refs(lambda txn: txn.delete(b"tag/0")) is True
        assert store.update_refs(lambda txn: txn.delete(b"tag/0")) is False

    def test_refs_scan_reverse_edges(self, store):
        keys = [b"a", b"a\xff", b"a\xff\xff", b"b", b"\xff", b"\xff\xff"]
        store.update_refs(lambda txn: [txn.put(k, k) for k in keys])
        with store.refs() as txn:
            assert [k for k, _ in txn.scan(b"a", reverse=True)] == [b"a\xff\xff", b"a\xff", b"a"]
            assert [k for k, _ in txn.scan(b"\xff", reverse=True)] == [b"\xff\xff", b"\xff"]
            assert [k for k, _ in txn.scan(b"a\xff")] == [b"a\xff", b"a\xff\xff"]

    def test_update_refs_is_atomic(self, store):
        store.update_refs(lambda txn: txn.put(b"keep", b"1"))

        def half(txn):
            txn.put(b"new", b"2")
            txn.put(b"keep", b"changed")
            txn.delete(b"keep")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            store.update_refs(half)
        with store.refs() as txn:
            assert txn.get(b"new") is None and txn.get(b"keep") == b"1"

    def test_format_recorded_and_newer_refused(self, store):
        with store.refs() as txn:
            assert txn.get(b"meta/format") == str(FORMAT_VERSION).encode()
            assert txn.get(b"meta/hash") == b"xxh3-128"
        Store(store.backend)  # reopening the same version is fine
        store.update_refs(lambda txn: txn.put(b"meta/format", str(FORMAT_VERSION + 1).encode()))
        with pytest.raises(UnsupportedFormat):
            Store(store.backend)
        store.update_refs(lambda txn: txn.put(b"meta/format", str(FORMAT_VERSION).encode()))
        store.update_refs(lambda txn: txn.put(b"meta/hash", b"sha256"))
        with pytest.raises(UnsupportedFormat):
            Store(store.backend)

    # -- write times and gc's grace period ------------------------------------------------

    def test_delete_older_than_honours_write_times(self, store):
        old = store.put(Blob("raw", {}, b"old")).id
        kept = store.put(Blob("raw", {}, b"kept")).id
        time.sleep(0.02)
        cut = time.time()
        time.sleep(0.02)
        new = store.put(Blob("raw", {}, b"new")).id
        # Re-putting an existing object refreshes its time: gc must not take it.
        assert not store.put(Blob("raw", {}, b"kept")).new
        times = {k: t for k, _, t in store.backend.iter_ids()}
        assert times[old] < cut < times[new] and times[kept] > cut
        size_old = self.sizes(store)[old]
        assert store.delete([old, kept, new], older_than=cut) == (1, size_old)
        assert not store.has(old) and store.has(kept) and store.has(new)

    def test_delete_spares_what_keep_names_inside_the_transaction(self, store):
        a, b = (store.put(Blob("raw", {}, x)).id for x in (b"spared", b"taken"))
        store.update_refs(lambda txn: txn.put(b"note", b"seen"))
        seen = []

        def keep(reader, refs, state):
            seen.append((reader.get(bytes(a)) is not None, refs.get(b"note")))
            return {bytes(a)}

        assert store.delete([a, b], keep=keep)[0] == 1
        assert store.has(a) and not store.has(b) and seen and seen[0] == (True, b"seen")

    def test_holding_records_ids_before_they_are_written(self, store):
        from terra.store import hold_key

        with store.holding(7):
            oid = store.put(Blob("raw", {}, b"held")).id
            with store.holding(8):  # a nested run holds its own
                inner = store.put(Blob("raw", {}, b"inner")).id
            again = store.put(Blob("raw", {}, b"again")).id
        store.put(Blob("raw", {}, b"not held"))
        with store.refs() as txn:
            held = [k for k, _ in txn.scan(b"hold/")]
        assert sorted(held) == sorted([hold_key(7, oid), hold_key(8, inner), hold_key(7, again)])

    def test_re_put_payload_refreshes_every_chunk(self, store, rng):
        a = rng.random(2 * CHUNK_SIZE // 8 + 10)
        res = store.put_payload("numpy", {}, a)
        time.sleep(0.02)
        cut = time.time()
        assert not store.put_payload("numpy", {}, a).new
        ids = list(store.iter_ids())
        assert len(ids) == 4 and store.delete(ids, older_than=cut) == (0, 0)
        assert store.delete([res.id], older_than=time.time() + 1)[0] == 1

    # -- compression --------------------------------------------------------------------

    def test_compressible_stored_compressed_random_raw(self, store, rng):
        text = ("the quick brown fox jumps over the lazy dog " * 40_000).encode()
        zeros = np.zeros(10 * MiB, np.uint8)
        noise = rng.random(2 * MiB // 8)
        small_noise = rng.integers(0, 256, 1000, dtype=np.uint8)
        rt = store.put_payload("text", {}, text)
        rz = store.put_payload("raw", {}, zeros)
        rn = store.put_payload("raw", {}, noise)
        rs = store.put_payload("raw", {}, small_noise)
        sizes = self.sizes(store)
        assert sizes[rt.id] < len(text) / 10
        assert sum(sizes.values()) < 2.2 * MiB + 2000 + len(text) / 10
        assert len(noise.tobytes()) <= sizes[rn.id] <= noise.nbytes + 64
        assert small_noise.nbytes <= sizes[rs.id] <= small_noise.nbytes + 64
        for r, want in ((rt, text), (rz, zeros.tobytes()), (rn, noise.tobytes()), (rs, small_noise.tobytes())):
            assert store.read_payload(r.id)[1].tobytes() == want

    # -- verify on read -------------------------------------------------------------------

    def _flip(self, backend, key, where=0.5):
        def fn(old):
            b = bytearray(old)
            i = min(len(b) - 1, max(1, int(len(b) * where)))
            b[i] ^= 0x40
            return bytes(b)

        self.corrupt(backend, key, fn)

    @pytest.mark.parametrize("compressible", [False, True], ids=["raw", "zstd"])
    def test_flipped_byte_in_small_object_detected(self, store, rng, compressible):
        data = np.zeros(20_000, np.uint8) if compressible else rng.integers(0, 256, 20_000, dtype=np.uint8)
        oid = store.put_payload("raw", {}, data).id
        size = self.sizes(store)[oid]
        assert (size < 5_000) == compressible
        self._flip(store.backend, oid)
        for read in (store.get, store.read_payload):
            with pytest.raises(CorruptObject) as e:
                read(oid)
            assert str(oid) in str(e.value)

    @pytest.mark.parametrize("compressible", [False, True], ids=["raw", "zstd"])
    @pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
    def test_flipped_byte_in_chunk_detected(self, store, rng, compressible, where):
        n = 2 * CHUNK_SIZE + 1000
        data = (np.arange(n, dtype=np.uint64) % 1000).astype(np.uint16) if compressible else rng.random(n // 8)
        res = store.put_payload("raw", {}, data)
        head = store.get(res.id)
        victim = head.chunks[1]
        assert (self.sizes(store)[victim] < CHUNK_SIZE // 2) == compressible
        self._flip(store.backend, victim, where)
        with pytest.raises(CorruptObject) as e:
            store.read_payload(res.id)
        assert str(victim) in str(e.value)
        with pytest.raises(CorruptObject, match=str(victim)):
            store.get(victim)
        store.get(head.chunks[0])  # the others are intact

    def test_flipped_byte_in_chunk_list_detected(self, store, rng):
        res = store.put_payload("raw", {}, rng.random(CHUNK_SIZE // 4))
        self._flip(store.backend, res.id)
        with pytest.raises(CorruptObject, match=str(res.id)):
            store.read_payload(res.id)

    @pytest.mark.parametrize("damage", ["flag", "truncate", "empty", "extend"])
    def test_damaged_frames_detected(self, store, rng, damage):
        small = store.put_payload("raw", {}, rng.integers(0, 256, 300, dtype=np.uint8)).id
        big = store.put_payload("raw", {}, rng.random(CHUNK_SIZE // 4))
        chunk = store.get(big.id).chunks[0]
        fn = {
            "flag": lambda b: b"\x07" + b[1:],
            "truncate": lambda b: b[: len(b) // 2],
            "empty": lambda b: b"",
            "extend": lambda b: b + b"\x00",
        }[damage]
        self.corrupt(store.backend, small, fn)
        self.corrupt(store.backend, chunk, fn)
        checks = [(store.read_payload, small, small), (store.get, small, small),
                  (store.get, chunk, chunk), (store.read_payload, big.id, chunk)]
        for read, arg, named in checks:
            with pytest.raises(CorruptObject) as e:
                read(arg)
            assert str(named) in str(e.value)

    # -- threads --------------------------------------------------------------------------

    def test_threads_share_a_store(self, store):
        errors = []

        def work(t):
            try:
                for i in range(30):
                    oid = store.put_payload("raw", {"t": t}, np.full(1000 + i, t, np.int32)).id
                    assert store.read_payload(oid)[1].view(np.int32)[0] == t
                    store.update_refs(lambda txn: txn.put(b"t/%d/%d" % (t, i), b"1"))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert len(list(store.iter_ids())) == 120
        with store.refs() as txn:
            assert len(list(txn.scan(b"t/"))) == 120


# -- the backends ------------------------------------------------------------------------


class TestMemoryStore(StoreConformance):
    def make_backend(self, tmp_path):
        return MemoryBackend()

    def corrupt(self, backend, key, fn):
        backend._objects[bytes(key)] = fn(backend._objects[bytes(key)])


class TestLMDBStore(StoreConformance):
    def make_backend(self, tmp_path):
        return LMDBBackend(str(tmp_path / "store"))

    def corrupt(self, backend, key, fn):
        e = backend._env()
        with e.lock, e.env.begin(write=True) as txn:
            old = bytes(txn.get(bytes(key), db=e.objects))
            txn.put(bytes(key), fn(old), db=e.objects)
