"""The original terra API: task objects and accessors, class tasks, hooks, **kwargs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import terra
from terra import Task
from terra.io import Artifact

CALLS: list = []


@pytest.fixture(autouse=True)
def store(tmp_path):
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True)
    CALLS.clear()
    yield
    terra.configure(quiet=False)


def test_numpy_pipeline_with_accessors():
    @Task.make_task
    def fn_a(n, run_dir=None):
        CALLS.append("a")
        return np.arange(n)

    @Task
    def fn_b(n):
        CALLS.append("b")
        return np.ones(n) * 2

    @Task.make(no_load_args=["y"])
    def fn_c(x, y):
        CALLS.append("c")
        assert isinstance(y, Artifact)  # no_load_args: handed over unloaded
        return x * y.load()

    assert isinstance(fn_a, Task) and isinstance(fn_c, Task)
    fn_a(4)
    fn_b(4)
    out = fn_c(fn_a.out(), fn_b.out())
    assert (out.load() == np.arange(4) * 2).all()
    assert fn_c.last_run_id == 3
    assert fn_c.inp()["x"].id == fn_a.out().id
    assert fn_c.get_meta()["parents"] == [1, 2]
    assert isinstance(fn_a.run_dir(), str) and os.path.isdir(fn_a.run_dir())
    assert fn_a.get_log() == ""
    runs = fn_a.get_runs()
    assert list(runs["run_id"]) == [1]
    assert runs["fn"][0] == "test_numpy_pipeline_with_accessors.<locals>.fn_a"
    fn_c(fn_a.out(), fn_b.out())
    assert CALLS == ["a", "b", "c"]


def test_pandas_and_scalar_pipelines_and_tuples():
    @Task
    def make_df(n):
        return pd.DataFrame({"a": range(n), "b": [float(i) / 2 for i in range(n)]})

    @Task
    def stats(df):
        return df["a"].sum(), float(df["b"].mean())

    @Task
    def combine(total, mean):
        CALLS.append((total, mean))
        return f"{total}:{mean}"

    total, mean = stats(make_df(5))
    assert total.load() == 10 if isinstance(total, Artifact) else total == 10
    result = combine(total, mean)
    assert result == "10:1.0"
    assert CALLS == [(10, 1.0)]


def test_nested_dict_list_outputs_fed_forward():
    @Task
    def produce():
        return {"xs": [np.zeros(2), np.ones(2)], "meta": {"name": "z"}}

    @Task
    def consume(xs, meta):
        return float(sum(x.sum() for x in xs)) + len(meta["name"])

    out = produce()
    assert consume(out["xs"], out["meta"]) == 3.0
    assert consume.get_meta()["parents"] == [produce.last_run_id]


def test_closures_told_apart_by_qualname():
    def factory(k):
        @Task
        def fn(x):
            return x + k
        return fn

    f1 = factory(1)

    def other():
        @Task
        def fn(x):
            return x * 10
        return fn

    f2 = other()
    assert f1(1) == 2 and f2(1) == 10
    fns = set(terra.get_runs()["fn"])
    assert fns == {"test_closures_told_apart_by_qualname.<locals>.factory.<locals>.fn",
                   "test_closures_told_apart_by_qualname.<locals>.other.<locals>.fn"}
    f3 = factory(5)  # same code, different closure value: a different result, not a stale hit
    assert f3(1) == 6


class Point:
    def __init__(self, x, y=0):
        CALLS.append("init")
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def test_class_task():
    from terra.serialize import PickleWarning

    with pytest.warns(PickleWarning, match="Point"):  # a plain class: stored by the pickle fallback
        p = Task(Point)(x=15, y=4)
    assert isinstance(p, Artifact)
    assert p.load() == Point(15, 4)
    CALLS.clear()
    Task(Point)(x=15, y=4)
    assert CALLS == []  # cached constructor call
    assert terra.get_meta(p.run_id)["task"] == "Point"


class Model:
    """A user type that saves itself as a directory of files."""

    def __init__(self, weights):
        self.weights = weights

    def __terra_write__(self, path):
        os.makedirs(path)
        np.save(os.path.join(path, "w.npy"), self.weights)
        with open(os.path.join(path, "README"), "w") as f:
            f.write("model")

    @classmethod
    def __terra_read__(cls, path):
        assert open(os.path.join(path, "README")).read() == "model"
        return cls(np.load(os.path.join(path, "w.npy")))


def test_custom_hook_class_in_and_out():
    @Task
    def fit(n):
        return Model(np.arange(n, dtype=float))

    @Task
    def predict(model, x):
        assert isinstance(model, Model)
        return float(model.weights @ x)

    m = fit(3)
    assert isinstance(m.load(), Model) and (m.load().weights == [0, 1, 2]).all()
    assert predict(m, np.ones(3)) == 3.0
    assert predict(Model(np.ones(2)), np.ones(2)) == 2.0


def test_kwargs_and_varargs_inputs():
    @Task
    def kw(run_dir=None, **kwargs):
        return sum(kwargs.values())

    @Task
    def va(*args):
        return sum(args)

    assert kw(x=3, y=2) == 5
    assert kw.inp() == {"kwargs": {"x": 3, "y": 2}}
    assert va(1, 2, 3) == 6
    assert va.inp() == {"args": (1, 2, 3)}
    assert va(1, 2, 3) == 6 and len(va.get_runs()) == 1


def test_failing_task_and_listing_columns():
    @Task
    def bad():
        raise ValueError("nope")

    with pytest.raises(ValueError):
        bad()
    runs = terra.get_runs()
    for col in ["run_id", "module", "fn", "status", "start_time", "end_time", "hostname", "git_commit", "parents"]:
        assert col in runs.columns
    assert runs["status"][0] == "failure" and runs["module"][0] == __name__
    assert terra.get_runs(status="failure")["run_id"].tolist() == [1]
    bad2 = Task(lambda: 1)
    bad2()
    assert terra.get_runs(limit=1)["run_id"].tolist() == [2]
    assert bad.last_run_id is None  # accessors default to the latest *successful* run
    assert bad.get_meta(run_id=1)["error"]["message"] == "nope"
