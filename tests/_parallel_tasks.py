"""Tasks of the parallel suite, importable by workers (spawned, Dask) by name."""

from __future__ import annotations

import concurrent.futures as cf
import os
import time

import numpy as np

import terra

REFUSED = 113  # the input scale refuses


@terra.task
def produce(i):
    return np.full(3, i, dtype=np.int64)


@terra.task
def scale(a, k, workers=1):
    print(f"scaling by {k}")
    if k == REFUSED:
        raise ValueError(f"k={k} is refused")
    return a * k * workers


@terra.task
def die(x):
    if x == 3:
        os._exit(7)  # the worker process dies mid-run
    return x


@terra.task
def slow(x, marks):
    open(os.path.join(marks, str(x)), "w").close()
    time.sleep(1.5)
    return x


class Counting(cf.Executor):
    """An executor that counts what is submitted to the one it wraps."""

    def __init__(self, inner, rewrite=None):
        self.inner, self.rewrite, self.n = inner, rewrite, 0

    def submit(self, fn, /, *args, **kwargs):
        self.n += 1
        if self.rewrite is not None:
            args = tuple(self.rewrite(a) for a in args)
        return self.inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, **kw):
        self.inner.shutdown(wait, **kw)


def elsewhere(storage_dir: str) -> None:
    """Worker initializer: a process whose terra store is its own (as on another host)."""
    from terra import config

    os.environ.pop("TERRA_CONFIG_OVERRIDES", None)
    os.environ["TERRA_STORAGE_DIR"] = storage_dir
    config.reset()
    terra.configure(quiet=True)


@terra.task
def size(p):
    with open(p, "rb") as f:
        return len(f.read())


@terra.task
def die_beside(x, marks):
    """x == 3 dies once the other call is running (its worker is then terminated with the broken pool)."""
    if x == 3:
        deadline = time.time() + 60
        while not os.listdir(marks) and time.time() < deadline:
            time.sleep(0.01)
        os._exit(7)
    open(os.path.join(marks, str(x)), "w").close()
    time.sleep(60)
    return x
