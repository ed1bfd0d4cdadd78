"""The command line as a user meets it: listings, exit codes, file output, no tracebacks, no pandas."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import terra
from terra import Task
from terra.cli import EXIT_NOT_FOUND, EXIT_PROBLEMS, EXIT_USAGE, cli


def run(root, *args, code=0):
    result = CliRunner().invoke(cli, ["--store", root, *map(str, args)])
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


@Task.make_task
def step(i: int, lr: float = 0.1):
    return {"loss": 1.0 / (i + 1), "i": i, "weights": np.arange(3.0) * i}


@Task.make_task
def bad(x: int):
    raise ValueError(f"bad {x}")


@pytest.fixture
def root(tmp_path):
    root = str(tmp_path / "store")
    terra.configure(storage_dir=root, quiet=True)
    for i in range(25):
        step(i)
    yield root
    terra.configure(quiet=False)


def test_ls_newest_20_by_default_with_n_and_all(root):
    rows = json.loads(run(root, "ls", "--json").stdout)
    assert [r["run_id"] for r in rows] == list(range(25, 5, -1))
    assert "5 older runs not shown (-n N or --all" in run(root, "ls").stdout
    assert [r["run_id"] for r in json.loads(run(root, "ls", "-n", "3", "--json").stdout)] == [25, 24, 23]
    assert len(json.loads(run(root, "ls", "--all", "--json").stdout)) == 25
    assert "older runs not shown" not in run(root, "ls", "--all").stdout


def test_ls_scalars_tags_and_iso_times(root):
    run(root, "tag", 25, "best")
    row = json.loads(run(root, "ls", "-n", "1", "--json").stdout)[0]
    assert row["inputs"] == {"i": 24, "lr": 0.1}
    assert row["outputs"] == {"loss": 1 / 25, "i": 24}  # the array is not a scalar column
    assert row["tags"] == ["best"]
    assert row["start_time"].endswith("+00:00") and "T" in row["start_time"]
    text = run(root, "ls", "-n", "1").stdout
    assert "i=24 lr=0.1" in text and "best" in text and "loss=0.04" in text
    assert [r["run_id"] for r in json.loads(run(root, "ls", "--tag", "best", "--json").stdout)] == [25]
    shown = json.loads(run(root, "show", 25, "--json").stdout)
    assert shown["start_time"].endswith("+00:00") and shown["inputs"]["i"] == 24
    assert shown["outputs"]["loss"] == 1 / 25 and shown["outputs"]["weights"]["run_id"] == 25


def test_ls_names_the_module_when_two_tasks_share_a_name(root):
    ns: dict = {"__name__": "labmod"}
    exec("def step(i):\n    return i\n", ns)
    Task.make_task(ns["step"])(7)
    text = run(root, "ls", "-n", "2").stdout
    assert "labmod:step" in text and f"{__name__}:step" in text
    alone = run(root, "ls", "-n", "1", "--task", "labmod:step").stdout
    assert "labmod:step" not in alone  # one task of that name in view: the short name suffices


def test_show_lists_inputs_and_outputs(root):
    out = run(root, "show", 3).stdout
    assert "inputs" in out and "outputs" in out and "loss" in out and "ndarray" in out


def test_exit_codes_and_flag_names(root):
    for cmd in ("show", "rm", "why", "log", "inp", "out", "lineage"):
        r = run(root, cmd, "99999999999999999999999", code=EXIT_NOT_FOUND)
        assert "no run" in r.stderr and "Overflow" not in r.output
    assert "bad tag name" in run(root, "tag", 3, "best\n", code=EXIT_PROBLEMS).stderr
    assert "for --since: not a date" in run(root, "ls", "--since", "whenever", code=EXIT_USAGE).stderr
    assert "for --older-than" in run(root, "rm", "--older-than", "whenever", code=EXIT_USAGE).stderr
    bad_ref = run(root, "show", "nothing-here", code=EXIT_NOT_FOUND)
    assert bad_ref.stderr.startswith("terra: error:")
    # the library's advice names the command's flags
    ns: dict = {"__name__": "chain"}
    exec("def use(a):\n    return 1\n", ns)
    Task.make_task(ns["use"])(terra.out(3)["weights"])
    err = run(root, "rm", 3, code=EXIT_PROBLEMS).stderr
    assert "--force" in err and "--cascade" in err


def test_every_listing_and_report_takes_json_with_iso_times(root):
    data = json.loads(run(root, "lineage", 3, "--json").stdout)
    assert data["runs"][0]["start_time"].endswith("+00:00")
    for args in (["ls"], ["show", 3], ["inp", 3], ["out", 3], ["why", 3], ["tags"], ["rm", 3, "--dry-run"],
                 ["gc", "--dry-run"], ["fsck"], ["du"], ["cat", terra.out(3)["weights"].id], ["log", 3],
                 ["tag", 3, "t3"], ["untag", "t3"]):
        times = list(_time_fields(json.loads(run(root, *args, "--json").stdout)))
        assert all(t is None or (isinstance(t, str) and t.endswith("+00:00")) for t in times), (args, times)


def _time_fields(data):
    """Every value under a key ending in ``_time``, anywhere in a JSON document."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k.endswith("_time"):
                yield v
            yield from _time_fields(v)
    elif isinstance(data, list):
        for v in data:
            yield from _time_fields(v)


def test_rm_dry_run_removes_nothing(root):
    out = json.loads(run(root, "rm", "--task", "step", "--keep-last", "20", "--dry-run", "--json").stdout)
    assert out["removed"] == [1, 2, 3, 4, 5] and out["dry_run"] is True
    assert len(json.loads(run(root, "ls", "--all", "--json").stdout)) == 25
    assert "removed 5 runs" in run(root, "rm", "--task", "step", "--keep-last", "20").stdout
    assert len(json.loads(run(root, "ls", "--all", "--json").stdout)) == 20


def test_why_task_name_means_its_latest_run(root):
    out = run(root, "why", "step").stdout
    assert out.startswith("run 25 (step): compared with run 24") and "argument i: 23 -> 24" in out
    data = json.loads(run(root, "why", "step", "--json").stdout)
    assert data["run_id"] == 25 and data["baseline"] == 24
    assert "no run, tag or task 'nope'" in run(root, "why", "nope", code=EXIT_NOT_FOUND).stderr


def test_cat_writes_natural_formats_or_refuses(root, tmp_path):
    from terra.serialize import store_value
    from terra.session import current_store

    store = current_store()
    arr = terra.out(3)["weights"].id
    frame = store_value(store, pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})).hex()
    blob = store_value(store, b"\x00\x01raw" * 100).hex()
    mapping = store_value(store, {"k": [1, 2, 3], "s": "text" * 100}).hex()
    run(root, "cat", arr, "-o", tmp_path / "a.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3.0) * 2)
    run(root, "cat", arr, "-o", tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text()) == [0.0, 2.0, 4.0]
    run(root, "cat", frame, "-o", tmp_path / "f.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    run(root, "cat", mapping, "-o", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["k"] == [1, 2, 3]
    run(root, "cat", blob, "-o", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01raw" * 100
    # refused: never pickle bytes under a .json name, never a frame as .npy
    assert "JSON cannot hold" in run(root, "cat", blob, "-o", tmp_path / "b.json", code=EXIT_PROBLEMS).stderr
    err = run(root, "cat", frame, "-o", tmp_path / "f.npy", code=EXIT_PROBLEMS).stderr
    assert "use -o with one of .csv, .json, .parquet, .pkl" in err
    assert not (tmp_path / "b.json").exists() and not (tmp_path / "f.npy").exists()
    # OS errors: one line naming the file, no partial file left behind
    missing = tmp_path / "no" / "such" / "dir.npy"
    assert "does not exist" in run(root, "cat", arr, "-o", missing, code=EXIT_PROBLEMS).stderr
    long_name = tmp_path / ("x" * 300 + ".npy")
    assert "File name too long" in run(root, "cat", arr, "-o", long_name, code=EXIT_PROBLEMS).stderr
    (tmp_path / "file").write_text("")
    run(root, "cat", arr, "-o", tmp_path / "file" / "a.npy", code=EXIT_PROBLEMS)
    assert "cannot write" in run(root, "cat", arr, "-o", "/proc/terra-test.npy", code=EXIT_PROBLEMS).stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".terra-cat-")]


def test_python_dash_m_terra_and_no_pandas_for_ls_show_log_cat(root):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    probe = (
        "import sys\nfrom terra.cli import main\n"
        "for argv in (['ls'], ['ls', '--all', '--json'], ['show', '3'], ['log', '3'], ['why', 'step'],\n"
        "             ['cat', sys.argv[2]], ['cat', sys.argv[2], '-o', sys.argv[3]]):\n"
        "    try:\n        main(['--store', sys.argv[1], *argv])\n    except SystemExit as e:\n"
        "        assert not e.code, (argv, e.code)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'pyarrow'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    weights = terra.out(3)["weights"].id
    r = subprocess.run([sys.executable, "-c", probe, root, weights, os.path.join(root, "..", "w.npy")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stderr
    r = subprocess.run([sys.executable, "-m", "terra", "--store", root, "ls", "-n", "1"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0 and "step" in r.stdout
    r = subprocess.run([sys.executable, "-m", "terra", "--help"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert "Exit codes: 0 ok" in r.stdout and "3 not found" in r.stdout


def test_failed_runs_list_with_their_error(root):
    with pytest.raises(ValueError):
        bad(1)
    row = json.loads(run(root, "ls", "-n", "1", "--status", "failure", "--json").stdout)[0]
    assert row["task"] == "bad" and row["error"].endswith("ValueError") and row["outputs"] == {}


REPORTING = ("ls", "show", "log", "inp", "out", "cat", "lineage", "why", "rm", "tag", "untag", "tags", "gc", "fsck",
             "du")


def test_every_command_that_lists_or_reports_has_json():
    """Consistency: each of these commands lists or reports something, so each takes --json."""
    without = [name for name in REPORTING
               if not any("--json" in p.opts for p in cli.commands[name].params if hasattr(p, "opts"))]
    assert without == []


def test_help_of_every_command_works_without_a_store(tmp_path):
    for name in cli.commands:
        r = CliRunner().invoke(cli, ["--store", str(tmp_path / "none"), name, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, (name, r.output)
    assert not (tmp_path / "none").exists()
