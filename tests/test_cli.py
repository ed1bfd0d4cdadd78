"""The `terra` command, through click's test runner: every command, bad references, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import terra
from terra import demo
from terra.cli import EXIT_NOT_FOUND as NOT_FOUND, cli
from terra.objects import Blob
from terra.session import current_store


@pytest.fixture
def env(tmp_path):
    """A store holding the iris pipeline (runs 1-4) and one failed run (5)."""
    root = str(tmp_path / "store")
    terra.configure(storage_dir=root, quiet=True)
    data = demo.download_iris(demo.IRIS_CSV)
    splits = demo.split_data(df=data, train_frac=0.7)
    model = demo.train(data, splits["train"])
    demo.evaluate(data, splits["test"], model)
    with pytest.raises(ValueError):
        demo.evaluate(data, splits["test"], {"classes": ["x"]})  # run 5 fails
    arts = {"data": data.id, "train": splits["train"].id, "weights": model["weights"].id}
    yield root, arts
    terra.configure(quiet=False)


def run(root, *args, code=0):
    result = CliRunner().invoke(cli, ["--store", root, *map(str, args)])
    assert result.exit_code == code, (result.output, result.exception)
    if code:  # errors: one line on stderr, no traceback
        assert "Traceback" not in result.output
    return result


def _ambiguous_prefix(store) -> str:
    ids = sorted(o.hex() for o in store.iter_ids())
    for a, b in zip(ids, ids[1:]):
        if a[:4] == b[:4]:
            return a[:4]
    seen = set()
    for i in range(5000):
        p = store.put(Blob("raw", {}, b"filler %d" % i)).id.hex()[:4]
        if p in seen:
            return p
        seen.add(p)
    raise AssertionError("no shared prefix found")


def test_ls(env):
    root, _ = env
    out = run(root, "ls").stdout
    for task in ("download_iris", "split_data", "train", "evaluate"):
        assert task in out
    rows = json.loads(run(root, "ls", "--json").stdout)
    assert [r["run_id"] for r in rows] == [5, 4, 3, 2, 1]
    assert rows[0]["status"] == "failure" and rows[3]["parents"] == [1]
    assert [r["run_id"] for r in json.loads(run(root, "ls", "--task", "train", "--json").stdout)] == [3]
    assert [r["run_id"] for r in json.loads(run(root, "ls", "--status", "failure", "--json").stdout)] == [5]
    assert len(json.loads(run(root, "ls", "--since", "1h", "--json").stdout)) == 5
    assert json.loads(run(root, "ls", "--until", "2000-01-01", "--json").stdout) == []
    assert len(json.loads(run(root, "ls", "-n", "2", "--json").stdout)) == 2
    run(root, "ls", "--status", "bogus", code=2)
    assert "for --since: not a date" in run(root, "ls", "--since", "yesterday-ish", code=2).stderr


def test_show_log_inp_out(env):
    root, arts = env
    out = run(root, "show", 3).stdout
    assert "train" in out and "success" in out and "used by" in out and "inputs from │ 1, 2" in out
    meta = json.loads(run(root, "show", 3, "--json").stdout)
    assert meta["task"] == "train" and meta["consumers"] == [4] and meta["parents"] == [1, 2]
    failed = run(root, "show", 5).stdout
    assert "failure" in failed and "ValueError" in failed
    assert "epoch 0: loss" in run(root, "log", 3).stdout
    inp = run(root, "inp", 3).stdout
    assert "df" in inp and arts["data"][:12] in inp and "mask" in inp
    inputs = json.loads(run(root, "inp", 3, "--json").stdout)
    assert inputs["df"] == {"artifact": arts["data"], "run_id": 1} and inputs["lr"] == 0.1
    out = run(root, "out", 2).stdout
    assert "train" in out and "test" in out and arts["train"][:12] in out
    assert json.loads(run(root, "out", 3, "--json").stdout)["classes[0]"] == "setosa"
    assert "has no output" in run(root, "out", 5, code=NOT_FOUND).stderr


def test_bad_references(env):
    root, _ = env
    for cmd in ("show", "log", "inp", "out", "why", "lineage"):
        r = run(root, cmd, 99, code=NOT_FOUND)
        assert r.stderr.strip() == "terra: error: no run with run_id=99"
    assert "no run or tag 'nosuchtag'" in run(root, "show", "nosuchtag", code=NOT_FOUND).stderr
    assert "no object matches 'abcdef12'" in run(root, "cat", "abcdef12", code=NOT_FOUND).stderr
    assert "no run, tag or object matches" in run(root, "lineage", "abcdef12", code=NOT_FOUND).stderr
    prefix = _ambiguous_prefix(current_store())
    assert "is ambiguous" in run(root, "cat", prefix, code=NOT_FOUND).stderr
    assert "is ambiguous" in run(root, "lineage", prefix, code=NOT_FOUND).stderr
    assert "not an id" in run(root, "cat", "xyz", code=NOT_FOUND).stderr


def test_missing_store(tmp_path):
    r = CliRunner().invoke(cli, ["--store", str(tmp_path / "nothing"), "ls"])
    assert r.exit_code == NOT_FOUND and "no terra store at" in r.stderr


def test_cat(env, tmp_path):
    root, arts = env
    out = run(root, "cat", arts["weights"][:10]).stdout
    assert "numpy.ndarray" in out and "produced by run" in out and "float64" in out
    path = tmp_path / "w.npy"
    assert "(npy)" in run(root, "cat", arts["weights"][:10], "-o", path).stdout
    np.testing.assert_array_equal(np.load(path), terra.load(arts["weights"]))
    run(root, "cat", arts["data"], "-o", tmp_path / "df.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "df.parquet"), pd.read_csv(demo.IRIS_CSV))
    run(root, "cat", arts["data"], "-o", tmp_path / "df.csv")
    assert (tmp_path / "df.csv").read_text().splitlines()[0].endswith("species")
    run(root, "cat", arts["train"], "-o", tmp_path / "mask.pkl")
    assert pd.read_pickle(tmp_path / "mask.pkl").dtype == bool
    from terra.serialize import store_value

    text_id = store_value(current_store(), "epoch 0 " * 100).hex()
    assert "(text)" in run(root, "cat", text_id, "-o", tmp_path / "log.txt").stdout
    assert (tmp_path / "log.txt").read_text() == "epoch 0 " * 100


def test_lineage_and_why(env):
    root, arts = env
    tree = run(root, "lineage", 4).stdout
    assert tree.startswith("run 4  evaluate") and "model.weights ← run 3  train" in tree
    dot = run(root, "lineage", 4, "--format", "dot").stdout
    assert "digraph lineage" in dot and 'r3 -> r4 [label="model.weights"]' in dot
    mer = run(root, "lineage", 2, "--format", "mermaid", "--downstream").stdout
    assert mer.startswith("flowchart LR") and "r2 -->|mask| r3" in mer and "r1" not in mer
    data = json.loads(run(root, "lineage", arts["train"][:8], "--format", "json").stdout)
    assert [r["run_id"] for r in data["runs"]] == [1, 2] and data["roots"] == [1]
    assert "first recorded run" in run(root, "why", 3).stdout
    assert "run 5 (evaluate): compared with run 4: arguments model changed" in run(root, "why", 5).stdout
    run(root, "lineage", 4, "--format", "png", code=2)


def test_tag_untag_rm(env):
    root, _ = env
    assert run(root, "tag", 3, "best").stdout.strip() == "tagged run 3 as best"
    assert json.loads(run(root, "tags", "--json").stdout) == {"best": 3}
    assert "already names run 3" in run(root, "tag", 4, "best", code=1).stderr
    assert "run 3  train" in run(root, "lineage", "best").stdout
    err = run(root, "rm", 2, code=1).stderr
    assert "run 2 is used by run 3 (train), run 4 (evaluate)" in err and "cascade" in err
    assert "tags removed: best" in run(root, "rm", 3, "--force", "--dry-run").stdout  # force overrides the pin
    assert "run 3 is tagged 'best'" in run(root, "rm", 2, "--cascade", code=1).stderr
    assert "removed tag best (run 3)" in run(root, "untag", "best").stdout
    dry = run(root, "rm", 2, "--cascade", "--dry-run").stdout
    assert "would remove 4 runs: 2, 3, 4, 5" in dry  # the failed run 5 consumed run 2's output too
    assert "no tag 'best'" in run(root, "untag", "best", code=NOT_FOUND).stderr
    out = run(root, "rm", "--failed").stdout
    assert "removed 1 run: 5" in out and "terra gc" in out
    assert "no runs match" in run(root, "rm", "--failed").stdout
    assert "removed 3 runs: 2, 3, 4" in run(root, "rm", 2, "--cascade").stdout
    assert "give run ids" in run(root, "rm", code=2).stderr
    assert "not both" in run(root, "rm", 1, "--failed", code=2).stderr
    assert "removed 1 run: 1" in run(root, "rm", "--task", "download_iris", "--keep-last", "0").stdout
    assert json.loads(run(root, "ls", "--json").stdout) == []


def test_gc_fsck_du(env, tmp_path):
    root, arts = env
    out = run(root, "gc", "--dry-run", "--grace", "0").stdout
    assert "would delete 0 objects" in out
    run(root, "rm", 4, 5)
    out = run(root, "gc", "--grace", "0s", "--compact").stdout
    assert "deleted" in out and "compacted" in out
    assert "for --grace: not a duration" in run(root, "gc", "--grace", "soon", code=2).stderr
    assert "no problems found" in run(root, "fsck").stdout
    report = json.loads(run(root, "fsck", "--json").stdout)
    assert report["ok"] and report["runs"] == 3
    du = run(root, "du").stdout
    assert "terra.demo:train" in du and "dedup ratio" in du
    usage = json.loads(run(root, "du", "--json").stdout)
    assert {t["task"] for t in usage["tasks"]} == {"terra.demo:download_iris", "terra.demo:split_data",
                                                   "terra.demo:train"}
    current_store().delete([bytes.fromhex(arts["weights"])])
    bad = run(root, "fsck", code=1).stdout
    assert f"missing object {arts['weights']}" in bad and "run 3 is damaged" in bad


def test_help_and_version():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for cmd in ("ls", "show", "log", "inp", "out", "cat", "lineage", "why", "rm", "tag", "untag", "gc", "fsck",
                "du"):
        assert cmd in r.stdout
    assert terra.__version__ in CliRunner().invoke(cli, ["--version"]).stdout
