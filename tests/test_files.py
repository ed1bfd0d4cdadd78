"""File inputs: ``pathlib.Path`` and ``terra.File`` arguments are keyed by content."""

from __future__ import annotations

import os
import pathlib

import pandas as pd
import pytest

import terra
import terra.serialize
from terra import files as F
from terra.errors import TaskError

CALLS: list = []


@pytest.fixture(autouse=True)
def _fresh(store):
    CALLS.clear()
    yield store


@terra.task
def read_csv(path):
    CALLS.append(path)
    return pd.read_csv(path)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_editing_a_path_argument_runs_again(tmp_path):
    p = tmp_path / "d.csv"
    _write(p, "a,b\n1,2\n")
    assert read_csv(p).load()["a"].tolist() == [1]
    assert read_csv(p).load()["a"].tolist() == [1]
    assert len(CALLS) == 1
    _write(p, "a,b\n5,6\n")
    assert read_csv(p).load()["a"].tolist() == [5]
    assert len(CALLS) == 2
    assert CALLS == [p, p]  # the function received the Path as given


def test_file_wraps_a_string_and_the_function_gets_the_string(tmp_path):
    p = str(tmp_path / "d.csv")
    _write(p, "a\n1\n")
    read_csv(terra.File(p))
    _write(p, "a\n2\n")
    assert read_csv(terra.File(p)).load()["a"].tolist() == [2]
    assert CALLS == [p, p] and all(type(c) is str for c in CALLS)


def test_a_plain_string_stays_a_string(tmp_path):
    p = str(tmp_path / "d.csv")
    _write(p, "a\n1\n")
    read_csv(p)
    _write(p, "a\n2\n")
    assert read_csv(p).load()["a"].tolist() == [1]  # keyed by the string, as documented
    assert len(CALLS) == 1


def test_same_content_elsewhere_is_the_same_input(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _write(a, "a\n1\n")
    _write(b, "a\n1\n")
    assert read_csv(a).id == read_csv(b).id and len(CALLS) == 1


def test_a_directory_is_keyed_by_its_tree(tmp_path):
    @terra.task
    def count(d):
        CALLS.append(d)
        return sorted(os.listdir(d))

    d = tmp_path / "data"
    d.mkdir()
    _write(d / "x.txt", "1")
    assert count(d) == ["x.txt"]
    assert count(d) == ["x.txt"] and len(CALLS) == 1
    _write(d / "y.txt", "2")
    assert count(d) == ["x.txt", "y.txt"] and len(CALLS) == 2
    _write(d / "y.txt", "3")
    count(d)
    assert len(CALLS) == 3


def test_file_inputs_in_var_arguments(tmp_path):
    @terra.task
    def cat(*paths, **named):
        CALLS.append((paths, named))
        return "".join(pathlib.Path(p).read_text() for p in paths + tuple(named.values()))

    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "A")
    _write(b, "B")
    assert cat(a, extra=terra.File(str(b))) == "AB"
    _write(b, "C")
    assert cat(a, extra=terra.File(str(b))) == "AC"
    assert len(CALLS) == 2 and CALLS[1] == ((a,), {"extra": str(b)})
    meta = terra.get_run(cat.last_run_id)
    tree = terra.get_artifact(meta["inputs"].hex()).store.get(meta["inputs"])
    assert tree.meta["files"] == {"paths[0]": str(a), "named['extra']": str(b)}


def test_the_run_records_the_content(tmp_path):
    p = tmp_path / "d.csv"
    _write(p, "a\n1\n")
    rid = read_csv(p).run_id
    _write(p, "a\n2\n")
    art = terra.inp(rid)["path"]
    twin = tmp_path / "twin.csv"
    _write(twin, "a\n1\n")
    assert isinstance(art, terra.Artifact) and art.id == terra.serialize.hash_path(twin).hex()
    restored = art.load()
    assert isinstance(restored, pathlib.Path) and restored.read_text() == "a\n1\n"


def test_why_names_the_changed_file(tmp_path):
    p = tmp_path / "d.csv"
    _write(p, "a\n1\n")
    read_csv(p)
    _write(p, "a\n22\n")
    rid = read_csv(p).run_id
    w = terra.why(rid)
    assert [(a.name, a.path) for a in w.args] == [("path", str(p))]
    assert f"the content of file path ({p}) changed" in w.reason
    assert f"~ file path ({p}):" in str(w)


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(TaskError, match=r"task read_csv: file argument path = .*nope.csv' does not exist"):
        read_csv(tmp_path / "nope.csv")
    assert CALLS == []


def test_a_file_changed_between_key_and_record_is_refused(tmp_path, store):
    p = tmp_path / "d.csv"
    _write(p, "a\n1\n")
    fi = F.FileInput(p, "read_csv", "path")
    _write(p, "a\n2\n")
    with pytest.raises(TaskError, match="changed while the run was starting"):
        fi.store(store, "read_csv", "path")


def test_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    from terra.serialize import _files

    reads = []
    real = _files._file_blob
    monkeypatch.setattr(_files, "_file_blob", lambda enc, path: reads.append(path) or real(enc, path))
    monkeypatch.setattr(F, "RACY_NS", 0)  # the file was written just now
    F._known.clear()
    d = tmp_path / "big"
    d.mkdir()
    for i in range(3):
        _write(d / f"{i}.txt", str(i) * 1000)

    @terra.task
    def size(d):
        CALLS.append(d)
        return sum(f.stat().st_size for f in d.iterdir())

    assert size(d) == 3000
    first = len(reads)
    assert first == 6  # hashed for the key, then stored with the run
    assert size(d) == 3000 and len(CALLS) == 1
    assert len(reads) == first  # the hit re-read nothing
    _write(d / "1.txt", "x" * 999)
    size(d)
    assert len(CALLS) == 2 and sorted(map(os.path.basename, reads[first:])) == ["1.txt", "1.txt"]


def test_a_file_rewritten_in_the_same_tick_is_read_again(tmp_path):
    """Same size, mtime put back: only the racy-timestamp rule stands between this and a stale hit."""
    p = tmp_path / "d.csv"
    _write(p, "a\n1\n")
    read_csv(p)
    st = os.stat(p)
    _write(p, "a\n2\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert read_csv(p).load()["a"].tolist() == [2]
    assert len(CALLS) == 2


def test_file_repr_and_type_check():
    assert repr(terra.File("x.csv")) == "terra.File('x.csv')"
    assert os.fspath(terra.File("x.csv")) == "x.csv"
    with pytest.raises(TaskError, match="terra.File needs a str or path, got int: 3"):
        terra.File(3)
    assert "File" in terra.__all__
    import pickle

    assert pickle.loads(pickle.dumps(terra.File("x.csv"))) == terra.File("x.csv")


CHILD = """
import sys
sys.path.insert(0, {dir!r})
import terra, terra.files
from terra.serialize import _files
terra.configure(storage_dir={store!r}, quiet=True)
terra.files.RACY_NS = 0  # the files were written just now
reads = []
real = _files._file_blob
_files._file_blob = lambda enc, path: reads.append(path) or real(enc, path)
import sizes
print(sizes.size(__import__("pathlib").Path({data!r})), len(reads), sizes.CALLS)
"""


def test_a_new_process_does_not_read_unchanged_files_again(tmp_path, subprocess_env, python):
    import subprocess

    (tmp_path / "sizes.py").write_text(
        "import terra\nCALLS = []\n\n@terra.task\ndef size(d):\n"
        "    CALLS.append(1)\n    return sum(f.stat().st_size for f in d.iterdir())\n")
    d = tmp_path / "data"
    d.mkdir()
    for i in range(3):
        _write(d / f"{i}.txt", "x" * (i + 1))
    script = CHILD.format(dir=str(tmp_path), store=str(tmp_path / "store2"), data=str(d))

    def child():
        out = subprocess.run([python, "-c", script], env=subprocess_env, capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert child() == ["6", "6", "[1]"]  # hashed, then stored with the run
    assert child() == ["6", "0", "[]"]  # a hit, and not one file read
    _write(d / "1.txt", "yy")
    assert child() == ["6", "2", "[1]"]  # only the changed file read (hash, store)
