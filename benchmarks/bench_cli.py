"""Wall time of ``terra ls``/``show``/``log`` as a user types them, on 100- and 10,000-run stores.

Each command is a fresh ``python -m terra`` process (what a user waits for),
measured beside ``python -c pass`` in the same run, interleaved, medians.
``import terra`` alone is timed too: it is the floor every command pays
before it reads anything. The stores are built with real task calls (one small task printing a line,
so every run has a log and scalar inputs/outputs). Run alone:
``python -m benchmarks cli``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import fmt_ratio, fmt_time  # noqa: E402

SIZES = (100, 10_000)
_BUILD = """
import sys, terra
from terra import Task
terra.configure(storage_dir=sys.argv[1], quiet=True)

@Task.make_task
def step(i: int, lr: float = 0.1):
    print(f"step {i}: training")
    return {"loss": 1.0 / (i + 1), "i": i}

for i in range(int(sys.argv[2])):
    step(i)
"""


def _env() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _build(root: str, n: int) -> None:
    subprocess.run([sys.executable, "-c", _BUILD, root, str(n)], check=True, env=_env(),
                   stdout=subprocess.DEVNULL)


def _wall(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=_env(), stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def run(report, quick: bool = False) -> None:
    reps = 3 if quick else 7
    tmp = tempfile.mkdtemp(prefix="terra-bench-cli-")
    try:
        stores = {}
        for n in SIZES:
            stores[n] = os.path.join(tmp, f"s{n}")
            t = time.perf_counter()
            _build(stores[n], n)
            print(f"built a {n}-run store in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        py = [sys.executable]
        cases = [("python -c pass", None, py + ["-c", "pass"]),
                 ("python -c 'import terra' (the floor of any command)", None, py + ["-c", "import terra"])]
        for n, root in stores.items():
            terra = py + ["-m", "terra", "--store", root]
            mid = str(n // 2)
            cases += [(f"terra ls ({n:,} runs)", n, terra + ["ls"]),
                      (f"terra show {mid} ({n:,} runs)", n, terra + ["show", mid]),
                      (f"terra log {mid} ({n:,} runs)", n, terra + ["log", mid]),
                      (f"terra ls --all --json ({n:,} runs)", n, terra + ["ls", "--all", "--json"])]
        for _, _, argv in cases:  # warm the page cache and the bytecode cache
            _wall(argv)
        times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(reps):  # interleaved: a slow phase of the machine hits every case alike
            for name, _, argv in cases:
                times[name].append(_wall(argv))
        base = statistics.median(times["python -c pass"])
        rows = []
        for name, _, _ in cases:
            med = statistics.median(times[name])
            rows.append((name, fmt_time(med), fmt_time(max(med - base, 0.0)), fmt_ratio(med / base)))
        report(f"terra commands, wall time per process (median of {reps}, interleaved)",
               ["command", "wall", "minus python -c pass", "vs python -c pass"], rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from benchmarks._report import make_reporter

    run(make_reporter(plain="--plain" in sys.argv), quick="--quick" in sys.argv)
