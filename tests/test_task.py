"""Tasks: the README contract, caching, runs, failures and the accessors."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import terra
from terra import Task
from terra.errors import NotFound, SerializationError, TaskError
from terra.io import Artifact

IRIS = os.path.join(os.path.dirname(terra.__file__), "data", "iris.csv")
CALLS: dict[str, int] = {}


def _count(name):
    CALLS[name] = CALLS.get(name, 0) + 1


@pytest.fixture(autouse=True)
def store(tmp_path):
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=False)
    CALLS.clear()
    yield tmp_path / "store"


@Task.make_task
def download_iris(url: str, run_dir: str = None):
    _count("download_iris")
    return pd.read_csv(url)


@Task.make_task
def split_data(df: pd.DataFrame, train_frac: float = 0.8, run_dir: str = None):
    _count("split_data")
    mask = np.random.rand(len(df)) < train_frac
    return {"train": mask, "test": ~mask}


def test_readme_contract(capsys):
    data_df = download_iris(IRIS)
    assert capsys.readouterr().out.strip() == "task: download_iris, run_id=1"
    assert isinstance(data_df, terra.io.Artifact)
    pd.testing.assert_frame_equal(data_df.load(), pd.read_csv(IRIS))

    splits = split_data(df=data_df, train_frac=0.7)
    assert capsys.readouterr().out.strip() == "task: split_data, run_id=2"
    assert set(splits) == {"train", "test"}
    train = splits["train"].load()
    assert train.dtype == bool and len(train) == 150
    assert (splits["test"].load() == ~train).all()

    inputs = terra.inp(run_id=2)
    assert inputs["train_frac"] == 0.7
    assert isinstance(inputs["df"], Artifact) and inputs["df"].id == data_df.id
    assert inputs["df"].run_id == 1
    assert terra.out(run_id=1).id == data_df.id
    meta = terra.get_meta(run_id=1)
    assert meta["task"] == "download_iris" and meta["status"] == "success"
    assert meta["start_time"] <= meta["end_time"]
    assert isinstance(terra.get_log(run_id=1), str)
    assert os.path.isdir(terra.get_run_dir(run_id=1))

    # Same calls again: cache hits, nothing runs, original run ids come back.
    again = download_iris(IRIS)
    assert capsys.readouterr().out.strip() == "task: download_iris, run_id=1 (cached)"
    assert again.id == data_df.id and again.run_id == 1
    s2 = split_data(df=again, train_frac=0.7)
    assert s2["train"].id == splits["train"].id
    assert CALLS == {"download_iris": 1, "split_data": 1}
    # A different argument is a miss.
    split_data(df=again, train_frac=0.5)
    assert CALLS["split_data"] == 2
    assert terra.get_meta(3)["parents"] == [1]


@Task
def add(a, b=1):
    _count("add")
    return a + b


def test_bare_task_keeps_function_identity():
    assert isinstance(add, Task)
    assert add.__name__ == "add" and add.__doc__ is None
    import inspect

    assert list(inspect.signature(add).parameters) == ["a", "b"]
    assert add(2) == 3 and add(2, b=1) == 3 and add(a=2) == 3
    assert CALLS["add"] == 1  # defaults applied: all three are the same call


def test_force_and_return_run_id():
    rid, out = add(5, return_run_id=True)
    assert out == 6
    rid2, _ = add(5, return_run_id=True)
    assert rid2 == rid and CALLS["add"] == 1
    rid3, _ = add(5, force=True, return_run_id=True)
    assert rid3 == rid + 1 and CALLS["add"] == 2
    add(5, skip_terra_cache=True)
    assert CALLS["add"] == 3
    n_runs = len(terra.get_runs())
    assert add(5, silence_task=True) == 6
    assert CALLS["add"] == 4 and len(terra.get_runs()) == n_runs


@terra.task(no_dump_args=["verbose"], cache_ignored_args=["note"])
def scaled(x, factor=2, verbose=False, note=""):
    _count("scaled")
    return np.asarray(x) * factor


def test_options():
    a = scaled([1, 2], verbose=True, note="first")
    b = scaled([1, 2], verbose=True, note="second")
    assert a.id == b.id and CALLS["scaled"] == 1
    inputs = terra.inp(a.run_id)
    assert "verbose" not in inputs and inputs["note"] == "first"
    scaled([1, 2], verbose=False)  # not stored, but still part of the key
    assert CALLS["scaled"] == 2
    scaled([1, 2], factor=3)
    assert CALLS["scaled"] == 3


def test_generators_and_coroutines_are_refused():
    def gen():
        yield 1

    async def coro():
        return 1

    for fn in (gen, coro):
        with pytest.raises(TaskError, match=fn.__name__):
            Task(fn)


def test_unknown_option_argument_is_rejected():
    with pytest.raises(TaskError, match="nope"):
        Task.make(no_dump_args=["nope"])(lambda x: x)


@Task.make(cache=False)
def uncached(x):
    _count("uncached")
    return x


def test_cache_false_runs_every_time():
    uncached(1)
    uncached(1)
    assert CALLS["uncached"] == 2
    assert len(terra.get_runs(task=uncached)) == 2


@Task
def returns_structures(n):
    return {"arr": np.arange(n), "pair": (n, np.ones(n)), "nested": [None, {"k": "v"}], "n": n}


def test_output_structure_kept():
    out = returns_structures(3)
    assert out["n"] == 3 and out["nested"][0] is None and out["nested"][1] == {"k": "v"}
    assert isinstance(out["arr"], Artifact) and (out["arr"].load() == np.arange(3)).all()
    assert isinstance(out["pair"], tuple) and out["pair"][0] == 3
    assert (out["pair"][1].load() == 1).all()
    assert terra.out(out["arr"].run_id)["n"] == 3


@Task
def mutate_me():
    return np.zeros(4)


def test_load_returns_independent_values():
    a = mutate_me()
    v = a.load()
    v[:] = 7
    assert (a.load() == 0).all()
    assert (mutate_me().load() == 0).all()


@Task
def consume_nested(data):
    return sum(float(np.sum(v)) for v in data["arrays"])


def test_artifacts_inside_containers_are_loaded_and_linked():
    a = mutate_me()
    b = returns_structures(2)["arr"]
    total = consume_nested({"arrays": [a, b]})
    assert total == 1.0
    rid = consume_nested.last_run_id
    assert sorted(terra.get_meta(rid)["parents"]) == sorted({a.run_id, b.run_id})
    # The artifact's id is used as is: a hit without rehashing, even with the same value stored again.
    consume_nested({"arrays": [a, b]})
    assert consume_nested.last_run_id == rid


class Boom(RuntimeError):
    pass


@Task
def fails(x):
    print("about to fail")
    raise Boom(f"bad {x}")


def test_failure_recorded_and_reraised_and_never_cached():
    with pytest.raises(Boom, match="bad 1"):
        fails(1)
    runs = terra.get_runs(task=fails)
    assert list(runs["status"]) == ["failure"]
    meta = terra.get_meta(int(runs["run_id"][0]))
    assert meta["error"]["type"].endswith("Boom") and "bad 1" in meta["error"]["traceback"]
    assert "about to fail" in terra.get_log(int(runs["run_id"][0]))
    with pytest.raises(Boom):
        fails(1)
    assert len(terra.get_runs(task=fails)) == 2
    with pytest.raises(NotFound):
        terra.out(int(runs["run_id"][0]))


@Task
def interrupted(x):
    raise KeyboardInterrupt


def test_interrupt_recorded():
    with pytest.raises(KeyboardInterrupt):
        interrupted(1)
    assert list(terra.get_runs(task=interrupted)["status"]) == ["interrupted"]


@Task
def unstorable(x):
    import threading

    return {"ok": 1, "lock": threading.Lock()}


def test_unserializable_output_fails_cleanly():
    with pytest.raises(SerializationError) as ei:
        unstorable(1)
    msg = str(ei.value)
    assert "unstorable" in msg and "lock" in msg
    runs = terra.get_runs(task=unstorable)
    assert list(runs["status"]) == ["failure"]
    assert terra.get_meta(int(runs["run_id"][0]))["output"] if "output" in terra.get_meta(int(runs["run_id"][0])) else True
    assert terra.get_run(int(runs["run_id"][0]))["output"] is None


@Task
def logs(x):
    print("to stdout", x)
    import sys

    print("to stderr", file=sys.stderr)
    logging.getLogger("terra.test").warning("a warning %s", x)
    inner_log(x)
    return x


@Task
def inner_log(x):
    print("inner only", x)
    return x


def test_log_capture_nested_and_restored(capsys):
    import sys

    before = sys.stdout, sys.stderr
    logs(7)
    assert (sys.stdout, sys.stderr) == before
    rid = logs.last_run_id
    text = terra.get_log(rid)
    assert "to stdout 7" in text and "to stderr" in text and "a warning 7" in text
    inner = terra.get_log(inner_log.last_run_id)
    assert "inner only 7" in inner and "to stdout" not in inner
    assert "to stdout 7" in capsys.readouterr().out  # still shown live


@Task
def writes_files(n, run_dir=None):
    with open(os.path.join(run_dir, "a.txt"), "w") as f:
        f.write("x" * n)
    os.makedirs(os.path.join(run_dir, "sub"))
    with open(os.path.join(run_dir, "sub", "b.bin"), "wb") as f:
        f.write(bytes(range(n)))
    return n


def test_run_dir_snapshot_restored():
    writes_files(10)
    rid = writes_files.last_run_id
    path = terra.get_run_dir(rid)
    assert open(os.path.join(path, "a.txt")).read() == "x" * 10
    shutil.rmtree(path)
    restored = terra.get_run_dir(rid)
    assert open(os.path.join(restored, "a.txt")).read() == "x" * 10
    assert open(os.path.join(restored, "sub", "b.bin"), "rb").read() == bytes(range(10))


def test_quiet_silences_print(capsys):
    terra.configure(quiet=True)
    try:
        add(100)
        assert capsys.readouterr().out == ""
    finally:
        terra.configure(quiet=False)


def test_bad_run_ids():
    with pytest.raises(NotFound):
        terra.get_meta(12345)
    with pytest.raises(NotFound):
        terra.inp("abc")


def test_record_has_environment():
    add(41)
    rec = terra.get_run(add.last_run_id)
    assert rec["host"] and rec["pid"] == os.getpid()
    assert rec["versions"]["numpy"] == np.__version__
    assert rec["module"] == __name__ and rec["fn"] == "add"
    assert "slack_web_client_id" not in str(rec)


@Task.make(cache=False)
def chatty(name, n):
    import time as _time

    for i in range(n):
        print(f"{name} line {i}")
        logging.getLogger("terra.test").warning("%s log %d", name, i)
        _time.sleep(0.001)
    return name


def test_log_capture_in_threads_is_separate_and_restored():
    import sys
    from concurrent.futures import ThreadPoolExecutor

    before = sys.stdout, sys.stderr
    with ThreadPoolExecutor(4) as pool:
        rids = list(pool.map(lambda name: chatty(name, 20, return_run_id=True)[0], ["a", "b", "c", "d"]))
    assert (sys.stdout, sys.stderr) == before
    for rid, name in zip(rids, "abcd"):
        log = terra.get_log(rid)
        lines = [x for x in log.splitlines() if x]
        assert len(lines) == 40, log
        assert all(name in x for x in lines), log


@Task
def mutates(a):
    a[:] = -1
    return float(a.sum())


def test_inputs_recorded_as_given_even_if_mutated():
    x = np.arange(5.0)
    assert mutates(x) == -5.0
    assert (terra.inp(mutates.last_run_id)["a"].load() == np.arange(5.0)).all()


@Task
def plot(n):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(np.arange(n), np.arange(n) ** 2)
    return {"fig": fig, "arr": np.arange(n)}


def test_artifact_views_for_notebooks(tmp_path):
    out = plot(5)
    png = tmp_path / "fig.png"
    out["fig"].save_png(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = out["fig"].load()
    assert len(fig.axes) == 1 and list(fig.axes[0].lines[0].get_ydata()) == [0, 1, 4, 9, 16]
    arr = out["arr"]
    assert "int64" in repr(arr) and "(5,)" in repr(arr) and f"run_id={arr.run_id}" in repr(arr)
    html = arr._repr_html_()
    assert arr.id[:12] in html and "numpy.ndarray" in html
    import pickle

    again = pickle.loads(pickle.dumps(arr))  # handed to worker processes as an id, not a value
    assert again == arr and (again.load() == np.arange(5)).all()


@Task
def links_out(n, run_dir=None):
    data = os.path.join(os.path.dirname(run_dir), "..", "shared-data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "big.bin"), "wb") as f:
        f.write(b"\0" * 100_000)
    os.symlink(os.path.abspath(data), os.path.join(run_dir, "data"))  # a dataset it only points at
    os.symlink(".", os.path.join(run_dir, "loop"))  # would never end if followed
    with open(os.path.join(run_dir, "result.txt"), "w") as f:
        f.write(str(n))
    return n


def test_run_dir_keeps_symlinks_as_links():
    links_out(3)
    rid = links_out.last_run_id
    tree = terra.get_run(rid)["run_dir_tree"]
    from terra.session import current_store

    snap = current_store().get(tree)
    assert [name for name, _ in snap.entries] == ["result.txt"]  # the 100 kB behind the link is not copied
    assert set(snap.meta["links"]) == {"data", "loop"}
    path = terra.get_run_dir(rid)
    shutil.rmtree(path)
    restored = terra.get_run_dir(rid)
    assert os.readlink(os.path.join(restored, "loop")) == "."
    assert os.path.islink(os.path.join(restored, "data"))
    assert open(os.path.join(restored, "result.txt")).read() == "3"


def test_no_load_args_follow_positional_only_and_var_positional_parameters():
    @Task
    def make(x):
        return np.arange(x)

    a, b = make(3), make(4)
    seen = {}

    @Task.make(no_load_args=["raw", "rest"])
    def mixed(loaded, raw, /, other, *rest):
        seen.update(loaded=type(loaded), raw=type(raw), other=type(other), rest=[type(r) for r in rest])
        return 1

    mixed(a, b, a, b, a)
    # Positional-only `raw` and everything in `*rest` stay Artifacts; the others are loaded.
    assert seen == {"loaded": np.ndarray, "raw": Artifact, "other": np.ndarray, "rest": [Artifact, Artifact]}
