"""The small API a researcher touches: terra.load on structures, notebook previews, get_meta, the demo."""

from __future__ import annotations

import datetime as dt
import os
import tomllib
import typing
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest

import terra
from terra import Task, demo
from terra.io import TaskOutput

import _ui_store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Pair = namedtuple("Pair", "left right")


@Task.make_task
def parts(n: int):
    return {"a": np.arange(n), "b": [np.ones(n), "label"], "c": 3}


def test_load_takes_artifacts_ids_and_nested_structures(store):
    out = parts(4)
    loaded = terra.load(out)
    np.testing.assert_array_equal(loaded["a"], np.arange(4))
    np.testing.assert_array_equal(loaded["b"][0], np.ones(4))
    assert loaded["b"][1] == "label" and loaded["c"] == 3  # inline leaves come back as they are
    np.testing.assert_array_equal(terra.load(out["a"]), np.arange(4))
    np.testing.assert_array_equal(terra.load(out["a"].id[:10]), np.arange(4))
    pair = terra.load(Pair(out["a"], (out["b"][0], "x")))
    assert isinstance(pair, Pair) and pair.right[1] == "x"
    np.testing.assert_array_equal(pair.right[0], np.ones(4))
    with pytest.raises(TypeError, match="terra.load takes an Artifact"):
        terra.load(3.5)


def test_repr_html_previews_without_unpickling(tmp_path):
    ids = _ui_store.build(str(tmp_path / "store"))
    frame = terra.get_artifact(ids["data"])._repr_html_()
    assert "<table" in frame and "sepal_length" in frame and "150 rows" in frame
    arr = terra.get_artifact(ids["weights"])._repr_html_()
    assert "shape" in arr and "float64" in arr and "mean" in arr
    fig = terra.get_artifact(ids["figure"])._repr_html_()
    assert '<img class="figure"' in fig and "data:image/png;base64," in fig
    _ui_store.UNPICKLED.clear()
    pickled = terra.get_artifact(ids["pickle"])._repr_html_()
    assert "pickled object, not previewed" in pickled and _ui_store.UNPICKLED == []
    terra.configure(quiet=False)


def test_get_meta_is_readable(store):
    parts(2)
    meta = terra.get_meta(parts.last_run_id)
    assert isinstance(meta["start_time"], dt.datetime) and meta["start_time"].tzinfo is not None
    assert meta["start_time"] <= meta["end_time"] and meta["duration"] >= 0
    assert isinstance(meta["cache_key"], str) and len(meta["cache_key"]) == 32
    int(meta["cache_key"], 16)
    raw = terra.get_run(parts.last_run_id)
    assert isinstance(raw["start_time"], float)  # the raw record keeps epoch seconds


def test_demo_says_which_steps_ran_and_which_came_from_the_cache(store, capsys):
    demo.main()
    out = capsys.readouterr().out
    assert "pass 1:" in out and "(4 of 4 steps ran, 0 from the cache)" in out
    assert "pass 2:" in out and "(all from the cache)" in out
    demo.main()  # the same store again: nothing runs, and the first pass says so
    again = capsys.readouterr().out
    assert "4 of 4 steps ran" not in again and again.count("(all from the cache)") == 2


def test_typing_marker_license_and_call_annotation():
    assert os.path.exists(os.path.join(REPO, "terra", "py.typed"))
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["terra"]
    assert project["project"]["license"] == "MIT"
    with open(os.path.join(REPO, "LICENSE")) as f:
        assert f.readline().strip() == "MIT License"
    hints = typing.get_type_hints(Task.__call__)
    assert terra.Artifact in typing.get_args(hints["return"]) and dict[typing.Any, typing.Any] in typing.get_args(TaskOutput)


def test_frames_preview_in_notebooks_shows_a_head(store):
    @Task.make_task
    def frame(n: int):
        return pd.DataFrame({"x": range(n)})

    html = frame(30)._repr_html_()
    assert "30 rows × 1 columns" in html and html.count("<tr") <= 12  # a head, not the whole frame
