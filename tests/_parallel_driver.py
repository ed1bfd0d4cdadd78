"""Driver script of the parallel suite, run as ``__main__``: ``python _parallel_driver.py KIND STORE``.

Runs the same scenarios with a task imported from a module (sent by name) and a
task defined here in ``__main__`` (sent by value) on KIND = spawn, forkserver or dask, and
prints what it saw as JSON for the test to check against the store.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor

import terra
from _parallel_tasks import REFUSED, Counting, die, produce, scale


@terra.task
def main_scale(a, k, workers=1):
    print(f"scaling by {k}")
    if k == REFUSED:
        raise ValueError(f"k={k} is refused")
    return a * k * workers


def scenario(t, arts, ex) -> dict:
    c = Counting(ex)
    out = {}
    first = t.map(arts, [2] * 20, executor=c)
    out["values"] = [v.load().tolist() for v in first]
    out["first"] = c.n
    again = t.map(arts, [2] * 20, executor=c)
    out["second"] = c.n - out["first"]
    out["same"] = [a.id for a in again] == [a.id for a in first]
    n = c.n
    try:
        t.map(arts, range(100, 120), executor=c)
    except ValueError as e:
        out["error"] = str(e)
        out["remote_traceback"] = "Traceback" in str(e.__cause__)
    out["third"] = c.n - n
    n = c.n
    dup = t.map([arts[0]] * 5, [7] * 5, executor=c)
    out["duplicates"] = c.n - n, [v.load().tolist() for v in dup]
    # Executor keywords (Dask's workers=, pure=...) never meet the task's own arguments.
    out["submit"] = t.submit(arts[1], 5, workers=3, executor=c).result().load().tolist()
    return out


def main():
    kind, store = sys.argv[1], sys.argv[2]
    terra.configure(storage_dir=store, quiet=True)
    arts = produce.map(range(20))  # in this process, one after another
    res = {}
    if kind in ("spawn", "forkserver"):
        with ProcessPoolExecutor(2, mp_context=mp.get_context(kind)) as ex:
            res = {name: scenario(t, arts, ex) for name, t in (("module", scale), ("main", main_scale))}
    else:
        import dask
        from distributed import Client, LocalCluster

        dask.config.set({"distributed.scheduler.allowed-failures": 0})  # a dying call fails at once
        with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            ex = client.get_executor(pure=False)
            res = {name: scenario(t, arts, ex) for name, t in (("module", scale), ("main", main_scale))}
            try:
                die.map(range(6), executor=client)  # the Client itself works too
            except Exception as e:  # noqa: BLE001
                res["died"] = type(e).__name__
            res["after_death"] = die.map([0, 1, 2, 4, 5], executor=client)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
