"""``Task.map`` beside a plain loop of calls, and a CPU-bound map beside the machine's 2-process ceiling.

Per-call overhead: a trivial task ``g(i) = i + 1`` called in a loop vs through
``g.map`` (in-process, and on a warm 2-process spawn pool), for hits and for
misses. Speedup: a pure-Python loop of about 0.2 s per call, run 8 times one
after another as plain Python, then as terra misses on the same 2-process pool,
beside the same plain function mapped on that pool (the ceiling two processes
reach on this machine, whatever its cores are worth), interleaved in one run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import terra

from ._report import fmt_ratio, fmt_time

_COUNT = {"n": 3_000_000}


@terra.task
def g(i):
    return i + 1


def burn_plain(n: int, salt: int = 0) -> int:
    x = salt
    for i in range(n):
        x = (x * 31 + i) % 1_000_003
    return x


@terra.task
def burn(n: int, salt: int) -> int:
    return burn_plain(n, salt)


def _per_call(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / n


def _overheads(pool, n: int) -> list[list]:
    base = 10_000_000
    rows = []
    # Misses: fresh inputs for every variant.
    loop_miss = _per_call(lambda: [g(i) for i in range(base, base + n)], n)
    map_miss = _per_call(lambda: g.map(range(base + n, base + 2 * n)), n)
    pool_miss = _per_call(lambda: g.map(range(base + 2 * n, base + 3 * n), executor=pool), n)
    # Hits: the same inputs again, the three variants interleaved, median of 5.
    hits: dict[str, list] = {"loop": [], "map": [], "pool": []}
    for _ in range(5):
        hits["loop"].append(_per_call(lambda: [g(i) for i in range(base, base + n)], n))
        hits["map"].append(_per_call(lambda: g.map(range(base, base + n)), n))
        hits["pool"].append(_per_call(lambda: g.map(range(base, base + n), executor=pool), n))
    loop_hit, map_hit, pool_hit = (statistics.median(hits[k]) for k in ("loop", "map", "pool"))
    rows.append(["hit", fmt_time(loop_hit), fmt_time(map_hit), fmt_ratio(map_hit / loop_hit),
                 fmt_time(pool_hit), fmt_ratio(pool_hit / loop_hit)])
    rows.append(["miss", fmt_time(loop_miss), fmt_time(map_miss), fmt_ratio(map_miss / loop_miss),
                 fmt_time(pool_miss), fmt_ratio(pool_miss / loop_miss)])
    return rows


def _speedup(pool, calls: int, reps: int, salt0: int) -> list[list]:
    n = _COUNT["n"]
    seq, plain2, terra2 = [], [], []
    for r in range(reps):  # interleaved, so a slow phase of the machine hits all three alike
        t = time.perf_counter()
        for i in range(calls):
            burn_plain(n, i)
        seq.append(time.perf_counter() - t)
        t = time.perf_counter()
        list(pool.map(burn_plain, [n] * calls, range(calls)))
        plain2.append(time.perf_counter() - t)
        t = time.perf_counter()
        burn.map([n] * calls, range(salt0 + r * calls, salt0 + (r + 1) * calls), executor=pool)  # all misses
        terra2.append(time.perf_counter() - t)
    s, p, m = (statistics.median(x) for x in (seq, plain2, terra2))
    return [["one process, plain loop", fmt_time(s), "1.00x"],
            ["2 processes, plain function (ceiling)", fmt_time(p), fmt_ratio(s / p)],
            ["2 processes, terra burn.map (misses)", fmt_time(m), fmt_ratio(s / m)]]


def run(report, quick: bool = False) -> None:
    root = tempfile.mkdtemp(prefix="terra-bench-parallel-")
    try:
        terra.configure(storage_dir=os.path.join(root, "terra"), quiet=True)
        g(-1)  # opens the store and imports lazily: not part of a call
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(burn_plain, [10, 10], [0, 1]))  # workers started
            g.map([-2, -3], executor=pool)  # and terra imported in them
            n = 100 if quick else 500
            report(f"per-call time, {n} calls of a trivial task (map time / loop time)",
                   ["", "loop", "map", "map/loop", "map on 2-process pool", "pool/loop"], _overheads(pool, n))
            calls = 4 if quick else 8
            report(f"CPU-bound, {calls} calls of ~{_COUNT['n'] / 1e6:.0f}M loop steps (speedup over one process)",
                   ["", "time", "speedup"], _speedup(pool, calls, 1 if quick else 3, 1_000))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    from ._report import make_reporter

    run(make_reporter(), quick="--quick" in sys.argv)
