"""The one small thread pool for hashing, compressing and decompressing.

xxhash and zstd release the GIL, so a few threads speed up large payloads.
The pool is per process: a forked child (whose copy of the pool has no
threads) makes its own on first use.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["WORKERS", "run_all", "shared_pool"]

#: Threads in the pool: at least two, at most four.
WORKERS = max(2, min(4, os.cpu_count() or 1))

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_lock = threading.Lock()


def shared_pool() -> ThreadPoolExecutor:
    """The process's pool (made on first use, and again in a forked child)."""
    global _pool, _pool_pid
    pool = _pool
    if pool is not None and _pool_pid == os.getpid():
        return pool
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            from concurrent.futures import ThreadPoolExecutor  # (and logging): not at import

            _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="terra-pool")
            _pool_pid = os.getpid()
        return _pool


def run_all(fn: Callable, jobs: list[tuple], helpers: int | None = None) -> None:
    """Run ``fn(*job)`` for every job, on this thread and up to ``helpers`` pool threads.

    Workers take jobs from a shared counter and this thread works too, so a
    busy machine (no core free for a helper) degrades to serial work rather
    than waiting on one, and a call from inside a pool thread cannot
    deadlock. Nothing runs after this returns, not even after a failure (jobs
    may read buffers that close next).

    Args:
        fn: the work for one job.
        jobs: argument tuples, one per call.
        helpers: pool threads to enlist (default: all but one, at most one per extra job).

    Raises:
        BaseException: the first failure of ``fn``, once every started job has ended.
    """
    n = len(jobs)
    helpers = min(WORKERS - 1 if helpers is None else helpers, n - 1)
    if helpers <= 0:
        for job in jobs:
            fn(*job)
        return
    errors: list[BaseException] = []
    counter = itertools.count()  # next() is atomic: each job is handed out once

    def work():
        for i in counter:
            if i >= n or errors:
                return
            try:
                fn(*jobs[i])
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

    futures = [shared_pool().submit(work) for _ in range(helpers)]
    work()
    for f in futures:
        if not f.cancel():  # never started: nothing left for it
            f.result()
    if errors:
        raise errors[0]
