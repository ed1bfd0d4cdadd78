"""Property: distinct callables never share a cache entry; equal ones, in a fresh process, do.

Hypothesis generates small callables that differ in their body, defaults,
closure values, partial arguments or bound instance, all written as one module
``gen`` whose ``T`` is the task (so identities collide as much as they can: a
notebook redefining a cell). A model maps each callable's description to the
run that first computed it: a call of a described callable must return that
run (a hit), a new description must get a new run, and the value must be what
the plain function returns.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

import terra

KINDS = ("function", "lambda", "closure", "partial", "partial_kw", "method", "object")

TEMPLATES = {
    "function": "def f(x, k={d}):\n    return (x {op} {c}) + k\n",
    "lambda": "f = lambda x, k={d}: (x {op} {c}) + k\n",
    "closure": "def make(c, d):\n    def f(x):\n        return (x {op} c) + d\n    return f\n\nf = make({c}, {d})\n",
    "partial": "from functools import partial\n\ndef base(c, d, x):\n    return (x {op} c) + d\n\n"
               "f = partial(base, {c}, {d})\n",
    "partial_kw": "from functools import partial\n\ndef base(x, c=0, d=0):\n    return (x {op} c) + d\n\n"
                  "f = partial(base, c={c}, d={d})\n",
    "method": "class M:\n    def __init__(self, c, d):\n        self.c, self.d = c, d\n\n"
              "    def g(self, x):\n        return (x {op} self.c) + self.d\n\nf = M({c}, {d}).g\n",
    "object": "class M:\n    def __init__(self, c, d):\n        self.c, self.d = c, d\n\n"
              "    def __call__(self, x):\n        return (x {op} self.c) + self.d\n\nf = M({c}, {d})\n",
}

specs = st.tuples(st.sampled_from(KINDS), st.sampled_from(["+", "*", "-"]), st.integers(0, 3), st.integers(0, 2))


def render(spec) -> str:
    kind, op, c, d = spec
    return "from terra import Task\n\n" + TEMPLATES[kind].format(op=op, c=c, d=d) + "\nT = Task(f)\n"


def _load(directory, source: str):
    (directory / "gen.py").write_text(source)
    sys.modules.pop("gen", None)
    importlib.invalidate_caches()
    return importlib.import_module("gen")


def test_distinct_callables_never_share_an_entry(store, tmp_path, monkeypatch, python, subprocess_env):
    d = tmp_path / "mods"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # each rewrite of gen.py is compiled afresh
    model: dict[tuple, int] = {}  # (spec, x) -> run id that computed it
    stats = {"examples": 0, "hits": 0, "misses": 0}

    @settings(max_examples=150, database=None)
    @given(a=specs, b=specs, x=st.integers(0, 2))
    def prop(a, b, x):
        stats["examples"] += 1
        for spec in (a, b):
            m = _load(d, render(spec))
            rid, out = m.T(x, return_run_id=True)
            assert out == m.f(x), spec
            known = model.get((spec, x))
            if known is None:
                assert rid not in model.values(), f"{spec} reused run {rid} of another callable"
                model[(spec, x)] = rid
                stats["misses"] += 1
            else:
                assert rid == known, f"{spec} should have hit run {known}"
                stats["hits"] += 1

    try:
        prop()
    finally:
        sys.modules.pop("gen", None)
    assert stats["misses"] > 20 and stats["hits"] > 0, stats

    # Equal callables in a fresh process: every one is a hit on the run recorded here.
    sample = sorted(model.items())[:: max(1, len(model) // 25)]
    script = (
        "import importlib, json, sys, terra\n"
        "terra.configure(storage_dir=sys.argv[1], quiet=True)\n"
        "sys.path.insert(0, sys.argv[2]); sys.dont_write_bytecode = True\n"
        "out = []\n"
        "for source, x in json.loads(sys.stdin.read()):\n"
        "    open(sys.argv[2] + '/gen.py', 'w').write(source)\n"
        "    sys.modules.pop('gen', None); importlib.invalidate_caches()\n"
        "    out.append(importlib.import_module('gen').T(x, return_run_id=True)[0])\n"
        "print(json.dumps(out))\n"
    )
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    payload = json.dumps([(render(spec), x) for (spec, x), _ in sample])
    res = subprocess.run([python, "-c", script, terra.get_config().storage_dir, str(fresh)], input=payload,
                         env=subprocess_env, capture_output=True, text=True, check=True)
    assert json.loads(res.stdout) == [rid for _, rid in sample]
    print(f"identity property: {stats['examples']} examples, {stats['misses']} distinct callables, "
          f"{stats['hits']} hits; {len(sample)} re-checked in a fresh process")
