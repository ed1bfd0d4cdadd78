"""One thread pool (``terra.objects.pool``) serves hashing and the store's chunk work."""

from __future__ import annotations

import os
import re
import threading

import numpy as np
import pytest

from terra.objects import CHUNK_SIZE, split_payload
from terra.objects.pool import WORKERS, run_all, shared_pool
from terra.serialize import load_value, store_value


def _pool_prefixes() -> set[str]:
    """Name prefixes of terra's executor threads (``ThreadPoolExecutor`` names them ``<prefix>_<n>``)."""
    return {t.name.rsplit("_", 1)[0] for t in threading.enumerate()
            if re.fullmatch(r"terra-[\w-]+_\d+", t.name)}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="hashing runs serially on one core")
def test_hashing_and_store_reads_share_one_pool(store):
    big = np.random.default_rng(0).random(7 * CHUNK_SIZE // 8)  # 7 chunks: hashed and read on threads
    pairs = split_payload("raw", {}, memoryview(big).cast("B"))
    assert len(pairs) == 8
    oid = store_value(store, big)
    np.testing.assert_array_equal(load_value(store, oid), big)
    names = _pool_prefixes()
    assert names == {"terra-pool"}, names  # no second pool (formerly terra-hash and terra-io)
    assert sum(t.name.startswith("terra-pool") for t in threading.enumerate()) <= WORKERS


def test_run_all_runs_every_job_once_and_raises_the_first_failure():
    seen = []
    lock = threading.Lock()

    def job(i):
        with lock:
            seen.append(i)

    run_all(job, [(i,) for i in range(100)])
    assert sorted(seen) == list(range(100))

    def failing(i):
        if i == 3:
            raise KeyError(i)

    with pytest.raises(KeyError):
        run_all(failing, [(i,) for i in range(10)])


def test_a_run_all_inside_a_pool_thread_does_not_deadlock():
    out = []

    def outer():
        run_all(out.append, [(i,) for i in range(20)])
        return len(out)

    futures = [shared_pool().submit(outer) for _ in range(WORKERS)]  # every pool thread busy
    assert [f.result(timeout=60) for f in futures] and sorted(out) == sorted(list(range(20)) * WORKERS)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_working_pool():
    parent = shared_pool()
    run_all(lambda i: None, [(i,) for i in range(8)])  # the parent's pool has threads
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the inherited pool has no threads; a new one must serve
        try:
            done = []
            run_all(done.append, [(i,) for i in range(50)])
            ok = shared_pool() is not parent and sorted(done) == list(range(50))
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    answer = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert shared_pool() is parent
