"""Printing tables and timing things fairly on noisy shared machines.

``make_reporter()`` returns the ``report(title, columns, rows)`` callable
handed to every bench module: a rich table when rich is installed, plain
aligned text otherwise. The timing helpers take medians over several
repetitions and interleave the variants they compare (A, B, A, B ...) so a
slow phase of the machine hits all of them alike.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable, Mapping, Sequence

__all__ = [
    "MB",
    "fmt_bytes",
    "fmt_rate",
    "fmt_ratio",
    "fmt_time",
    "make_reporter",
    "mixed_frame",
    "paired",
    "time_once",
    "warm_memory",
]

MB = 1_000_000  # decimal, as the tables print it

Report = Callable[[str, Sequence[str], Sequence[Sequence[object]]], None]


def make_reporter(plain: bool = False) -> Report:
    """A ``report(title, columns, rows)`` that prints one table."""
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        return _plain_report
    import shutil
    import sys

    # Wide tables stay readable when the output goes to a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else max(160, shutil.get_terminal_size().columns))

    def report(title, columns, rows):
        table = Table(title=title, title_justify="left")
        for i, c in enumerate(columns):
            table.add_column(str(c), justify="left" if i == 0 else "right", no_wrap=True)
        for row in rows:
            table.add_row(*[str(v) for v in row])
        console.print(table)

    return report


def _plain_report(title, columns, rows) -> None:
    cells = [[str(c) for c in columns]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(columns))]
    print(f"\n{title}")
    for n, r in enumerate(cells):
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(flush=True)


def time_once(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (gc paused so it does not land inside)."""
    gc.disable()
    try:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    finally:
        gc.enable()


def paired(
    fns: Mapping[str, Callable[[], object]],
    reps: int,
    setup: Mapping[str, Callable[[], object]] | None = None,
    teardown: Mapping[str, Callable[[], object]] | None = None,
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds of each of ``fns``, run interleaved ``reps`` times.

    ``setup[name]`` / ``teardown[name]`` run untimed before / after each call
    of ``fns[name]`` (a fresh store, say, or deleting it). The first
    ``warmup`` rounds are discarded.
    """
    setup, teardown = setup or {}, teardown or {}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + reps):
        for name, fn in fns.items():
            if name in setup:
                setup[name]()
            t = time_once(fn)
            if name in teardown:
                teardown[name]()
            if i >= warmup:
                times[name].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def warm_memory(nbytes: int) -> None:
    """Fault in and free ``nbytes`` of memory, so later fresh allocations run at full speed.

    On these VMs writing to fresh memory slows down ~10x after a few idle
    seconds; touching the working size first evens that out.
    """
    import numpy as np

    a = np.empty(max(nbytes, 1), dtype=np.uint8)
    a.fill(1)
    del a


def fmt_time(s: float) -> str:
    """``s`` seconds in a readable unit."""
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_bytes(n: float) -> str:
    """``n`` bytes in a readable unit (decimal: 1 MB = 10**6 B)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def fmt_rate(nbytes: int, s: float) -> str:
    """Throughput of ``nbytes`` in ``s`` seconds."""
    if s <= 0:
        return "-"
    r = nbytes / s
    return f"{r / 1e9:.2f} GB/s" if r >= 1e8 else f"{r / 1e6:.1f} MB/s"


def fmt_ratio(x: float, digits: int = 2) -> str:
    """A ratio such as ``1.23x``."""
    return f"{x:.{digits}f}x"


def mixed_frame(n: int):
    """The mixed ``n``-row DataFrame the tables use: ints, floats, text, a categorical, times."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    words = np.array([f"item-{i:05d}" for i in range(5000)])
    return pd.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "count": rng.integers(0, 1000, n),
        "x": rng.random(n),
        "name": pd.Series(words[rng.integers(0, len(words), n)], dtype="str"),
        "color": pd.Categorical(rng.choice(["red", "green", "blue", "cyan"], n)),
        "when": pd.date_range("2020-01-01", periods=n, freq="s"),
    })
