"""Code fingerprints see what a task reads: mutated and rebound globals, arrays, large values, sourceless classes."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import terra
from terra import _guards


@pytest.fixture
def load(store, tmp_path, monkeypatch):
    """Write ``text`` as module ``name`` and import it afresh (as a new process would)."""
    d = tmp_path / "mods"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    names = []

    def load(name, text):
        (d / f"{name}.py").write_text(textwrap.dedent(text))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        names.append(name)
        return importlib.import_module(name)

    yield load
    for n in names:
        sys.modules.pop(n, None)


CONFIG_MODULE = """
    import numpy as np
    from terra import Task

    CALLS = []
    CONFIG = {"scale": 2}
    SCALE = 2.5
    ARR = np.arange(10)
    BIG = np.zeros(1_000_000)

    @Task
    def scaled(x):
        CALLS.append(x)
        return x * CONFIG["scale"]

    @Task
    def by_float(x):
        CALLS.append(x)
        return x * SCALE

    @Task
    def dot(x):
        CALLS.append(x)
        return float((ARR * x).sum())

    @Task
    def big_first(x):
        CALLS.append(x)
        return float(BIG[0] + x)
"""


def test_in_place_mutation_of_a_global_dict_is_seen(load):
    m = load("cfg", CONFIG_MODULE)
    assert m.scaled(3) == 6
    m.CONFIG["scale"] = 5
    assert m.scaled(3) == 15 and m.CALLS == [3, 3]
    m.CONFIG["scale"] = 5.0  # equal in Python, a different value
    assert m.scaled(3) == 15.0 and type(m.scaled(3)) is float and m.CALLS == [3, 3, 3]
    m.CONFIG["scale"] = 2
    assert m.scaled(3) == 6 and m.CALLS == [3, 3, 3]  # back to the first value: its entry again


def test_rebinding_a_global_is_seen_even_when_the_id_is_reused(load):
    m = load("cfg", CONFIG_MODULE)
    assert m.by_float(2) == 5.0
    old = id(m.SCALE)
    m.SCALE = None  # frees 2.5 unless something holds it; the next float then takes its address
    m.SCALE = float("3.5")
    reused = id(m.SCALE) == old  # noqa: F841 - either way the result must be right
    assert m.by_float(2) == 7.0 and m.CALLS == [2, 2]


def test_numpy_arrays_are_hashed_and_guarded(load):
    m = load("cfg", CONFIG_MODULE)
    assert m.dot(1) == 45.0
    m.ARR[0] = 100  # in place, in this process
    assert m.dot(1) == 145.0 and m.CALLS == [1, 1]
    assert m.big_first(1) == 1.0
    m.BIG[0] = 9  # a large array: its guard samples the first bytes
    assert m.big_first(1) == 10.0 and m.CALLS == [1, 1, 1, 1]
    # A fresh import (as in a new process) with a different array value misses too.
    m = load("cfg", CONFIG_MODULE.replace("np.arange(10)", "np.arange(10) * 2"))
    assert m.dot(1) == 90.0 and m.CALLS == [1]


def test_large_constants_are_hashed_by_value(load):
    text = """
        from terra import Task
        CALLS = []
        TABLE = list(range(20_000))  # its repr is over 64 KiB

        @Task
        def lookup(i):
            CALLS.append(i)
            return TABLE[i]
    """
    m = load("tab", text)
    assert m.lookup(7) == 7
    m = load("tab", text.replace("list(range(20_000))", "[i * 3 for i in range(20_000)]"))
    assert m.lookup(7) == 21 and m.CALLS == [7]


def test_values_over_the_limit_are_recorded_and_named_by_why(load, monkeypatch):
    monkeypatch.setattr(_guards, "MAX_CONST_BYTES", 1024)
    m = load("cfg", CONFIG_MODULE)
    m.big_first(1)
    rid = m.big_first.last_run_id
    assert terra.get_run(rid)["code"]["const:BIG"].startswith("unhashed: ndarray over")
    assert "value BIG was not hashed" in str(terra.why(rid))


def test_globals_a_task_writes_into_are_state_not_inputs(load):
    m = load("cfg", CONFIG_MODULE)
    m.scaled(1)
    m.scaled(1)  # CALLS changed between the calls: it is the task's log, not its input
    assert m.CALLS == [1]
    assert "const:CALLS" not in terra.get_run(1)["code"] and "const:CONFIG" in terra.get_run(1)["code"]
    seen = []

    @terra.task
    def inc(x):
        seen.append(x)  # a closure cell it writes into: state too
        return x + 1

    assert inc(1) == 2 and inc(1) == 2 and seen == [1]


SOURCELESS = """
import sys, terra
from terra import Task
terra.configure(storage_dir=sys.argv[1])

class Model:
    def predict(self, x):
        return x * {k}

@Task
def run(x):
    return Model().predict(x)

print(run(2))
"""


def test_methods_of_classes_without_source_are_hashed(tmp_path, python, subprocess_env):
    store = str(tmp_path / "s")

    def go(k):
        out = subprocess.run([python, "-c", SOURCELESS.format(k=k), store], env=subprocess_env,
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert go(3) == ["task:", "run,", "run_id=1", "6"]
    assert go(3) == ["task:", "run,", "run_id=1", "(cached)", "6"]
    assert go(4) == ["task:", "run,", "run_id=2", "8"]  # the method changed: a miss


def test_content_guard_is_exact_for_small_values():
    a = {"k": [1, 2, {"x": 1.0}]}
    g = _guards.content_guard(a)
    a["k"][2]["x"] = 1
    assert _guards.content_guard(a) != g
    a["k"][2]["x"] = 1.0
    assert _guards.content_guard(a) == g
    arr = np.arange(100)
    g = _guards.content_guard(arr)
    arr[57] = -1
    assert _guards.content_guard(arr) != g
