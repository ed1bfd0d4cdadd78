"""Task overheads beside joblib.Memory, measured in the same run.

Workloads: a trivial task ``g(i) = i + 1`` (hit and durable miss), a call with
a 10 MB array argument whose 10 MB result is loaded on a hit, and the hit
latency of a store holding 100 runs vs 100,000 runs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from ._report import fmt_ratio, fmt_time, warm_memory

sys.setrecursionlimit(10000)


def _median_per_call(fn, args_list, reps=5):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for a in args_list:
            fn(a)
        times.append((time.perf_counter() - t) / len(args_list))
    return statistics.median(times)


def _trivial(root: str, n: int):
    import joblib

    import terra

    terra.configure(storage_dir=os.path.join(root, "terra"), quiet=True)

    @terra.task
    def g(i):
        return i + 1

    mem = joblib.Memory(os.path.join(root, "joblib"), verbose=0)

    def jg(i):
        return i + 1

    jg = mem.cache(jg)
    g(-1), jg(-1)  # first calls open stores and import lazily: not part of a miss
    miss_t = _median_per_call(g, range(1000, 1000 + n), reps=1)
    miss_j = _median_per_call(jg, range(1000, 1000 + n), reps=1)
    hit_t = _median_per_call(g, range(1000, 1000 + n))
    hit_j = _median_per_call(jg, range(1000, 1000 + n))
    return hit_t, hit_j, miss_t, miss_j


def _array(root: str, reps: int):
    import joblib

    import terra

    terra.configure(storage_dir=os.path.join(root, "terra"), quiet=True)
    x = np.random.default_rng(0).random(10_000_000 // 8)

    @terra.task
    def scale(a):
        return a * 2.0

    mem = joblib.Memory(os.path.join(root, "joblib"), verbose=0)

    def jscale(a):
        return a * 2.0

    jscale = mem.cache(jscale)
    scale(x).load()
    jscale(x)
    warm_memory(50 << 20)
    tt, tj = [], []
    for _ in range(reps):
        t = time.perf_counter()
        scale(x).load()
        tt.append(time.perf_counter() - t)
        t = time.perf_counter()
        jscale(x)
        tj.append(time.perf_counter() - t)
    return statistics.median(tt), statistics.median(tj)


def _hit_vs_store_size(root: str, sizes):
    import terra
    from terra import runs as R
    from terra.session import current_store

    out = {}
    for n in sizes:
        terra.configure(storage_dir=os.path.join(root, f"size{n}"), quiet=True)

        @terra.task
        def h(i):
            return i

        h(-1)
        store = current_store()
        # Synthetic runs with cache entries, written in bulk (same keys and layout as real runs).
        ref = R.pack({"status": "success", "task": "x", "identity": "bench:x", "start_time": 0.0, "record": None})
        for start in range(0, n, 20_000):
            def fill(txn, start=start):
                for i in range(start, min(start + 20_000, n)):
                    rid = i + 10
                    key = os.urandom(16)
                    txn.put(R.k_run(rid), ref)
                    txn.put(R.k_task("bench:x", rid), R.status_byte("success"))
                    txn.put(R.k_cache(key), R.rid8(rid) + R.pack_entry(i))
            store.update_refs(fill)
        out[n] = _median_per_call(lambda _: h(-1), range(2000), reps=7)
    return out


def run(report, quick: bool = False) -> None:
    root = tempfile.mkdtemp(prefix="terra-bench-")
    try:
        hit_t, hit_j, miss_t, miss_j = _trivial(os.path.join(root, "trivial"), 100 if quick else 300)
        arr_t, arr_j = _array(os.path.join(root, "array"), 5 if quick else 15)
        sizes = (100, 10_000) if quick else (100, 100_000)
        lat = _hit_vs_store_size(os.path.join(root, "sizes"), sizes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        ["trivial task, cache hit", fmt_time(hit_t), fmt_time(hit_j), fmt_ratio(hit_j / hit_t), ">= 10x"],
        ["trivial task, miss (durable)", fmt_time(miss_t), fmt_time(miss_j), fmt_ratio(miss_j / miss_t), ">= 1x"],
        ["10 MB array arg, hit + load 10 MB", fmt_time(arr_t), fmt_time(arr_j), fmt_ratio(arr_j / arr_t), ">= 10x"],
    ]
    report("tasks vs joblib.Memory (joblib time / terra time)",
           ["workload", "terra", "joblib.Memory", "speedup", "target"], rows)
    small, big = sizes
    report("cache-hit latency vs store size",
           ["runs in store", "hit latency", "vs smallest", "target"],
           [[f"{small:,}", fmt_time(lat[small]), "1.00x", ""],
            [f"{big:,}", fmt_time(lat[big]), fmt_ratio(lat[big] / lat[small]), "<= 1.5x"]])


if __name__ == "__main__":
    from ._report import make_reporter

    run(make_reporter(), quick="--quick" in sys.argv)
