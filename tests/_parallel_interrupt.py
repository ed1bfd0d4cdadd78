"""Driver interrupted by the test (SIGINT) while a map runs on a spawn pool: ``python ... STORE MARKS``."""

from __future__ import annotations

import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor

import terra
from _parallel_tasks import slow

if __name__ == "__main__":
    terra.configure(storage_dir=sys.argv[1], quiet=True)
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        slow.map(range(12), [sys.argv[2]] * 12, executor=ex)
