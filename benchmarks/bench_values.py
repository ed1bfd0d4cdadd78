"""Values: encode+hash, store and load through ``terra.serialize``, beside joblib.

For a 1 MB and a 10 MB float64 array, a 1M-row mixed DataFrame (ints,
floats, strings, categorical, datetime) and a dict of 1,000 small values it
measures, as interleaved medians:

* terra: ``hash_value`` (encode + hash, nothing stored), ``store_value`` into
  a fresh LMDB store (a miss: everything written), ``load_value``, and the
  bytes the value takes in the store (after its compression);
* floor: one xxh3-128 pass over an array's bytes (hashing cannot beat it);
* joblib: ``joblib.hash`` of the same value, a ``joblib.Memory`` cache hit
  (load) and the disk footprint of that cache entry (its default settings).

Targets (issue 3): hashing the 10 MB array >= 50x faster than ``joblib.hash``;
hashing the 1M-row DataFrame >= 10x faster; the DataFrame takes at most half
the disk of joblib.Memory's entry.

Run alone with ``python -m benchmarks.bench_values [--quick]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np
import xxhash

from terra.serialize import hash_value, load_value, store_value
from terra.store import open_store

from ._report import MB, fmt_bytes, fmt_ratio, fmt_time, make_reporter, mixed_frame, paired, warm_memory

try:
    import joblib
except ImportError:  # pragma: no cover
    joblib = None

__all__ = ["run"]


def _cases(quick: bool):
    rng = np.random.default_rng(0)
    yield "float64 array 1 MB", rng.random(MB // 8), MB
    yield "float64 array 10 MB", rng.random(10 * MB // 8), 10 * MB
    rows = 200_000 if quick else 1_000_000
    df = mixed_frame(rows)
    yield f"DataFrame {rows // 1000}k rows mixed", df, int(df.memory_usage(deep=False).sum())
    small = {f"key{i}": (i if i % 3 == 0 else i / 7 if i % 3 == 1 else f"v{i}") for i in range(1000)}
    yield "dict of 1,000 small values", small, 0


def _du(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def _identity(x):
    return x


def _joblib_entry(value, tmp: str):
    """Cache ``value`` with joblib.Memory; returns (hit function, bytes of the entry)."""
    location = os.path.join(tmp, "joblib")
    mem = joblib.Memory(location, verbose=0)
    cached = mem.cache(_identity)
    cached(value)
    entry = [root for root, _d, files in os.walk(location) if "output.pkl" in files]
    size = sum(_du(d) for d in entry)
    return (lambda: cached(value)), size


def _stored_bytes(store) -> int:
    return sum(size for _key, size, _t in store.backend.iter_ids())


def run(report, quick: bool = False) -> None:
    """Measure every case and print one table (plus the targets)."""
    reps = 3 if quick else 7
    rows, checks = [], []
    tmp = tempfile.mkdtemp(prefix="terra-bench-values-")
    try:
        for label, value, nbytes in _cases(quick):
            warm_memory(max(nbytes, MB) * 3)
            state: dict = {}

            def fresh():
                path = os.path.join(tmp, "fresh")
                shutil.rmtree(path, ignore_errors=True)
                state["s"] = open_store(path)

            def close():
                state["s"].backend.close()

            # Hashes are paired with each other (both read the same memory), stores apart.
            fns = {}
            if isinstance(value, np.ndarray):  # the floor: one pass of xxh3 over the bytes
                fns["xxh3"] = lambda: xxhash.xxh3_128(value.reshape(-1).view(np.uint8)).digest()
            # Each runs right after another pass over the same memory, so all see the same caches.
            fns["hash"] = lambda: hash_value(value)
            if joblib is not None:
                fns["joblib.hash"] = lambda: joblib.hash(value)
            t = paired(fns, reps)
            t.update(paired({"store": lambda: store_value(state["s"], value)}, reps,
                            setup={"store": fresh}, teardown={"store": close}))

            # Load and size from one kept store.
            kept = open_store(os.path.join(tmp, "kept"))
            oid = store_value(kept, value)
            size = _stored_bytes(kept)
            loads = {"load": lambda: load_value(kept, oid)}
            jl_size = None
            if joblib is not None:
                hit, jl_size = _joblib_entry(value, tmp)
                loads["joblib load"] = hit
            lt = paired(loads, reps)
            kept.backend.close()
            shutil.rmtree(os.path.join(tmp, "kept"), ignore_errors=True)
            shutil.rmtree(os.path.join(tmp, "joblib"), ignore_errors=True)

            jh = t.get("joblib.hash")
            rows.append([
                label, fmt_time(t["hash"]), fmt_time(t["xxh3"]) if "xxh3" in t else "-", fmt_time(t["store"]), fmt_time(lt["load"]), fmt_bytes(size),
                fmt_time(jh) if jh else "-", fmt_ratio(jh / t["hash"], 1) if jh else "-",
                fmt_time(lt["joblib load"]) if jh else "-",
                fmt_ratio(lt["joblib load"] / lt["load"], 1) if jh else "-",
                fmt_bytes(jl_size) if jl_size else "-", f"{size / jl_size:.2f}" if jl_size else "-",
            ])
            if jh and label.startswith("float64 array 10 MB"):
                checks.append(["hash 10 MB array vs joblib.hash", ">= 50x", fmt_ratio(jh / t["hash"], 1),
                               "yes" if jh / t["hash"] >= 50 else "NO"])
            if jh and label.startswith("DataFrame"):
                checks.append(["hash DataFrame vs joblib.hash", ">= 10x", fmt_ratio(jh / t["hash"], 1),
                               "yes" if jh / t["hash"] >= 10 else "NO"])
                checks.append(["DataFrame stored size / joblib.Memory entry", "<= 0.50",
                               f"{size / jl_size:.2f}", "yes" if size <= jl_size / 2 else "NO"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report("Values: terra.serialize beside joblib (medians)",
           ["value", "hash", "xxh3 floor", "store (miss)", "load", "stored", "joblib.hash", "hash speedup",
            "joblib hit", "load speedup", "joblib disk", "disk ratio"], rows)
    if checks:
        report("Values: targets (issue 3)", ["target", "want", "measured", "met"], checks)


if __name__ == "__main__":
    run(make_reporter(plain="--plain" in sys.argv), quick="--quick" in sys.argv)
