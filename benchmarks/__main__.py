"""Run terra's benchmarks: ``python -m benchmarks [--quick] [--plain] [NAME ...]``.

Every ``benchmarks/bench_*.py`` module is found and run in turn (``store``
first); a module that cannot be imported (its optional dependencies missing,
or not written yet) is reported and skipped. ``NAME`` limits the run to
modules such as ``store`` or ``values``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import time
import traceback

from ._report import make_reporter


def _modules() -> list[str]:
    import benchmarks

    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(benchmarks.__path__)
                   if m.name.startswith("bench_"))
    return sorted(names, key=lambda n: n != "store")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="modules to run (default: all), e.g. store values")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, skip the largest sizes")
    ap.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    args = ap.parse_args(argv)

    report = make_reporter(plain=args.plain)
    available = _modules()
    names = args.names or available
    unknown = [n for n in names if n not in available]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; have: {', '.join(available)}")
    failed = 0
    for name in names:
        try:
            mod = importlib.import_module(f"benchmarks.bench_{name}")
        except Exception as e:  # noqa: BLE001 - optional modules may not import
            print(f"skipping bench_{name}: cannot import it ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        run = getattr(mod, "run", None)
        if run is None:
            print(f"skipping bench_{name}: it has no run(report)", file=sys.stderr)
            continue
        kwargs = {"quick": args.quick} if "quick" in inspect.signature(run).parameters else {}
        t = time.perf_counter()
        try:
            run(report, **kwargs)
        except Exception:  # noqa: BLE001 - report and go on with the others
            failed += 1
            print(f"bench_{name} failed:", file=sys.stderr)
            traceback.print_exc()
        print(f"bench_{name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
