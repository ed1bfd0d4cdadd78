"""The cache hit path: what a hit does (one ref read, no binding), and what it must never skip.

A hit of a plain call (every parameter by position, inline values) is keyed
without binding and answered before anything a miss needs is built; entries are
confirmed by their records once per process. These tests hold that fast path to
the same answers as the general one: the same keys (existing stores still hit),
and nothing served from memory that the store no longer says: a run removed by
another process, a damaged entry, another store, code or a global changed.
No timings here (see ``benchmarks/bench_tasks.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import msgpack
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

import terra
from terra import _keys as keys_module
from terra import _lifecycle as lifecycle_module
from terra import runs as R
from terra.errors import DamagedRefWarning
from terra.session import current_store

task_module = sys.modules["terra.task"]  # the module; terra.task is the decorator


@pytest.fixture
def counted(store):
    calls = []

    @terra.task
    def add(a, b):
        calls.append((a, b))
        return a + b

    return add, calls


def _key_of(rid: int) -> bytes:
    return bytes(terra.get_run(rid)["cache_key"])


def test_plain_calls_have_the_documented_key_and_share_it_with_other_spellings(store):
    calls = []

    @terra.task(version=3)
    def pinned(a, b="x"):
        calls.append(a)
        return a

    pinned(1, "y")
    # The key format of the general path, written out: a fast path must not change it.
    want = xxhash.xxh3_128_digest(msgpack.packb(
        ["terra-call-2", pinned.identity, "version:3", [["a", 1], ["b", "y"]], [], []], use_bin_type=True))
    assert _key_of(1) == want
    assert pinned(a=1, b="y") == 1 and pinned(1, b="y") == 1 and calls == [1]  # bound: the same call
    pinned(2)  # a default applied (general path), then the same call spelled in full (plain path)
    assert pinned(2, "x") == 2 and calls == [1, 2]


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.binary(max_size=300),
    st.text(max_size=300), st.sampled_from(["\ud800", "é" * 200, 2**64, -(2**63) - 1, 1.0, True]),
)


@pytest.fixture(scope="module")
def plain_tasks(tmp_path_factory):
    terra.configure(storage_dir=str(tmp_path_factory.mktemp("plain") / "store"), quiet=True)

    @terra.task
    def one(x):
        return x

    @terra.task(cache_ignored_args=["b"])
    def three(zeta, b, alpha):  # key order (by name) is not the order they are passed in
        return zeta

    return one, three, current_store()


@given(args=st.lists(_VALUES, min_size=1, max_size=3))
def test_the_plain_key_is_the_bound_key(plain_tasks, args):
    one, three, store = plain_tasks
    for t, a in ((one, args[:1]), (three, (args * 3)[:3])):
        a = tuple(a)
        plain = keys_module._plain_key(t, a)
        bound = keys_module._call_key(t, t._bind(a, {}), store)
        assert plain is None or plain == bound
        assert (plain is None) == (not all(map(keys_module.is_inline, a)))  # else hashed as objects


def test_a_plain_hit_reads_one_ref_and_binds_nothing(counted, monkeypatch):
    add, calls = counted
    add(1, 2)
    assert add(1, 2) == 3  # confirmed once against its record

    def refused(*a, **k):
        raise AssertionError("a hit of a plain call must not get here")

    monkeypatch.setattr(task_module.Task, "_bind", refused)
    for module in (task_module, keys_module, lifecycle_module):  # wherever each is looked up
        for name in ("_prepare", "_file_inputs", "_call_key", "_execute_keyed"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refused)
    backend = current_store().backend
    reads, pids = [], []
    real_get, real_getpid = type(backend).get_ref, os.getpid
    monkeypatch.setattr(type(backend), "get_ref", lambda self, key: reads.append(key) or real_get(self, key))
    monkeypatch.setattr(os, "getpid", lambda: pids.append(1) or real_getpid())
    assert add(1, 2) == 3
    assert reads == [b"cache/" + _key_of(1)] and calls == [(1, 2)]
    assert pids == []  # a system call per hit once cost a fifth of it


def test_call_options_are_honoured_after_a_hit(counted):
    add, calls = counted
    add(1, 2)
    add(1, 2)
    assert add(1, 2, return_run_id=True) == (1, 3)
    assert add(1, 2, force=True) == 3 and len(calls) == 2
    assert add(1, 2, silence_task=True) == 3 and len(calls) == 3
    assert add.last_run_id == 2


def test_a_run_removed_by_another_process_is_not_answered_from_memory(counted, store, subprocess_env):
    add, calls = counted
    assert add(1, 2) == 3 and add(1, 2) == 3 and calls == [(1, 2)]  # confirmed: remembered in this process
    subprocess.run([sys.executable, "-c", "import sys, terra; terra.rm(1); terra.gc(grace_period=0)"],
                   env={**subprocess_env, "TERRA_STORAGE_DIR": store.root}, check=True)
    assert add(1, 2) == 3 and calls == [(1, 2), (1, 2)]
    assert add.last_run_id == 2 and add(1, 2) == 3 and len(calls) == 2


_SHARED_TASK = """
import terra

CALLS = []


@terra.task
def mul(a, b):
    CALLS.append((a, b))
    return a * b
"""


def test_an_entry_replaced_by_another_process_answers_its_new_run(store, tmp_path, monkeypatch, subprocess_env):
    (tmp_path / "hit_shared.py").write_text(_SHARED_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    import hit_shared

    assert hit_shared.mul(6, 7) == 42 and hit_shared.mul(6, 7) == 42 and len(hit_shared.CALLS) == 1
    # Another process removes run 1 and computes the same call again: run 2 holds the entry now.
    env = {**subprocess_env, "TERRA_STORAGE_DIR": store.root,
           "PYTHONPATH": str(tmp_path) + os.pathsep + subprocess_env["PYTHONPATH"]}
    subprocess.run([sys.executable, "-c", "import terra, hit_shared; terra.rm(1); "
                    "assert hit_shared.mul(6, 7, return_run_id=True) == (2, 42)"], env=env, check=True)
    assert hit_shared.mul(6, 7, return_run_id=True) == (2, 42)
    assert hit_shared.mul(6, 7) == 42 and hit_shared.mul.last_run_id == 2 and len(hit_shared.CALLS) == 1


def test_an_entry_damaged_after_a_confirmed_hit_is_not_served(counted, store, tmp_path):
    add, calls = counted
    assert add(20, 3) == 23 and add(20, 3) == 23 and len(calls) == 1
    key = R.k_cache(_key_of(1))
    script = tmp_path / "flip.py"
    script.write_text(textwrap.dedent('''
        import sys, lmdb
        env = lmdb.open(sys.argv[1], max_dbs=4)
        db = env.open_db(b"refs")
        key = bytes.fromhex(sys.argv[2])
        with env.begin(write=True, db=db) as txn:
            v = bytearray(txn.get(key))
            v[v.index(23)] ^= 0x01  # the inline output 23 -> 22, one bit, checksum left as it was
            txn.put(key, bytes(v))
    '''))
    subprocess.run([sys.executable, str(script), store.backend.path, key.hex()], check=True)
    with pytest.warns(DamagedRefWarning, match="checksum"):
        assert add(20, 3) == 23
    assert len(calls) == 2  # recomputed, never the remembered confirmation of the old bytes
    assert add(20, 3) == 23 and len(calls) == 2


def test_switching_stores_never_answers_from_the_other(counted, tmp_path):
    add, calls = counted
    first = current_store().root
    add(1, 2)
    add(1, 2)
    terra.configure(storage_dir=str(tmp_path / "other"))
    assert add(1, 2) == 3 and len(calls) == 2
    terra.configure(storage_dir=first)
    assert add(1, 2) == 3 and len(calls) == 2


SCALE = [2]


def test_code_and_mutated_globals_are_seen_on_the_next_plain_call(store):
    calls = []

    @terra.task
    def scaled(x):
        calls.append(x)
        return x * SCALE[0]

    assert scaled(5) == 10 and scaled(5) == 10 and len(calls) == 1
    SCALE[0] = 3  # in place: the task keeps its fingerprint only while its guards hold
    try:
        assert scaled(5) == 15 and len(calls) == 2
        scaled.fn.__code__ = (lambda x: calls.append(x) or x * SCALE[0] + 1).__code__
        assert scaled(5) == 16 and len(calls) == 3
        assert scaled(5) == 16 and len(calls) == 3
    finally:
        SCALE[0] = 2


def test_a_plain_miss_looks_up_before_and_after_its_lease_only(counted, monkeypatch):
    add, calls = counted
    looked = []
    real = R.cached
    monkeypatch.setattr(R, "cached", lambda store, key: looked.append(key) or real(store, key))
    add(7, 8)
    # The first lookup before the lease, one more after taking it (a call that finished meanwhile).
    assert len(looked) == 2 and len(set(looked)) == 1 and calls == [(7, 8)]
