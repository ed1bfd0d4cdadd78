"""Tasks shared by the fault suite and the processes it starts (kept free of pytest: children import it)."""

from __future__ import annotations

import time

import numpy as np

import terra


def expected(i: int) -> np.ndarray:
    """The value ``produce(i)`` returns: 8 KB .. 1.6 MB of floats."""
    n = 1000 + (i * 7919) % 200_000
    return np.random.default_rng(i).random(n)


@terra.task
def produce(i: int):
    return expected(i)


@terra.task
def big(i):
    time.sleep((i * 7919 % 10) / 100)  # killed inside the body too
    return np.random.default_rng(i).random(3_000_000)  # 24 MB: six chunks


@terra.task
def small(i):
    return i * 3
