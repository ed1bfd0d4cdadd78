"""Issue 10.2 (the Arrow part): crafted pandas/numpy objects never crash the interpreter.

A child process (``_fuzz_decoders.py``) loads mutated-but-rehashed objects: the
store's id checks pass, so the decoders see every kind of damage (lengths,
offsets, null counts, buffer sizes, schema bytes, dtypes, shapes, entries that
point at the wrong object). The parent counts signals (interpreter crashes) and
exceptions that are not terra errors; both must be zero. Each child runs with
its address space capped and the whole run is bounded in trials and time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fuzz_decoders.py")
MEMORY = 4 << 30  # RLIMIT_AS of a child: pandas + pyarrow map ~1.6 GiB of address space at import


@dataclass
class Fuzz:
    trials: int = 0
    outcomes: dict = field(default_factory=dict)
    crashes: list = field(default_factory=list)  # (trial, signal name)
    others: list = field(default_factory=list)  # (trial, "Error: message")


def fuzz(tmp_path, env, seed: int, trials: int, budget_s: float, per_child: int = 2000) -> Fuzz:
    """Run ``trials`` trials in children (a new child after each crash), within ``budget_s`` seconds."""
    out = Fuzz()
    log = tmp_path / f"fuzz-{seed}.log"
    deadline = time.monotonic() + budget_s
    first = 0
    while first < trials and time.monotonic() < deadline:
        count = min(per_child, trials - first)
        log.write_text("")
        proc = subprocess.run([sys.executable, CHILD, str(seed), str(first), str(count), str(log), str(MEMORY)],
                              env=env, capture_output=True, text=True,
                              timeout=max(30.0, deadline - time.monotonic() + 30))
        started, last = None, first - 1
        for line in log.read_text().splitlines():
            head, _, rest = line.partition(" ")
            if head == "start":
                started = int(rest)
                continue
            last = int(head)
            started = None
            kind = rest.split(" ")[0]
            if kind == "skipped":
                continue
            out.trials += 1
            out.outcomes[kind] = out.outcomes.get(kind, 0) + 1
            if kind == "other":
                out.others.append((last, rest[6:]))
        if proc.returncode < 0:
            out.trials += 1
            out.crashes.append((started if started is not None else last + 1, signal.Signals(-proc.returncode).name))
            first = (started if started is not None else last) + 1
        elif proc.returncode != 0:
            raise AssertionError(f"fuzz child failed outside a trial:\n{proc.stderr[-2000:]}")
        else:
            first += count
    return out


def report(result: Fuzz) -> str:
    return (f"{result.trials} trials, {len(result.crashes)} crashes {result.crashes[:10]}, "
            f"{len(result.others)} non-terra exceptions {result.others[:5]}, outcomes {result.outcomes}")


def test_crafted_objects_never_crash_the_decoders(tmp_path, subprocess_env):
    result = fuzz(tmp_path, subprocess_env, seed=1, trials=3000, budget_s=90)
    print(report(result))
    assert result.trials >= 1000, report(result)
    assert result.crashes == [] and result.others == [], report(result)
    assert result.outcomes.get("terra", 0) > result.trials // 3  # the mutations really reach the decoders


@pytest.mark.soak
def test_crafted_objects_never_crash_the_decoders_soak(tmp_path, subprocess_env):
    result = fuzz(tmp_path, subprocess_env, seed=int(os.environ.get("TERRA_FUZZ_SEED", "7")),
                  trials=int(os.environ.get("TERRA_FUZZ_TRIALS", "100000")), budget_s=900)
    print(report(result))
    assert result.crashes == [] and result.others == [], report(result)


def test_crafted_arrow_object_is_a_corrupt_object_for_terra_cat(tmp_path, subprocess_env):
    """An Arrow column claiming more values than its buffers hold: ``terra cat`` reports it, no segfault."""
    code = r'''
import sys
import numpy as np, pandas as pd
import terra
from terra.objects import Tree
from terra.serialize import store_value
from terra.session import current_store

terra.configure(storage_dir=sys.argv[1], quiet=True)
store = current_store()
root = store_value(store, pd.DataFrame({"s": ["a", "bb"] * 4, "f": np.arange(8.0)}))
tree = store.get(root)
cols = list(tree.entries)
for i, c in enumerate(cols[2:], 2):  # every column claims 2**20 values over its 8
    t = store.get(c)
    cols[i] = store.put(Tree(t.type, t.entries, dict(t.meta, length=1 << 20))).id
meta = dict(tree.meta, shape=[1 << 20, 2])
print(store.put(Tree(tree.type, tuple(cols), meta)).id)
'''
    store_dir = str(tmp_path / "store")
    made = subprocess.run([sys.executable, "-c", code, store_dir], env=subprocess_env, capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    oid = made.stdout.split()[-1]
    cat = subprocess.run([sys.executable, "-c", "from terra.cli import cli; cli()", "--store", store_dir, "cat", oid],
                         env=subprocess_env,
                         capture_output=True, text=True, timeout=120)
    assert cat.returncode > 0, (cat.returncode, cat.stderr[-2000:])  # an error exit, not a signal
    assert "CorruptObject" in cat.stderr + cat.stdout or "not a valid stored pandas value" in cat.stderr + cat.stdout
    load = subprocess.run([sys.executable, "-c",
                           "import sys, terra; terra.configure(storage_dir=sys.argv[1], quiet=True); "
                           "from terra.serialize import load_value; from terra.session import current_store; "
                           "load_value(current_store(), sys.argv[2])", store_dir, oid],
                          env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert load.returncode == 1, (load.returncode, load.stderr[-2000:])  # an exception, not a signal
    assert "terra.errors.CorruptObject: object " in load.stderr
    assert "has 72 bytes, the array needs 8388616" in load.stderr  # the Arrow column names itself
