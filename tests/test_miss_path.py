"""The work of a cache miss done once: what is cached or skipped must still be right.

A miss records the git commit (cached on the stat signature of the files it
was read from), encodes its record once (map key orders cached), captures
output through one shared log handler, and reads the committed run counter
with one get. Each shortcut is checked against the slow answer it replaces.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading

import pytest

import terra
from terra import gitinfo
from terra import runs as R
from terra.capture import Capture
from terra.objects import ObjectId, Run, canonical_pack, encode
from terra.session import current_store


@pytest.fixture(autouse=True)
def store(tmp_path):
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True)
    yield current_store()
    terra.configure(quiet=False)


# -- git commit recorded with each run --------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(cwd, *args) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@needs_git
def test_git_commit_follows_new_commits_checkouts_and_worktrees(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.py").write_text("1")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    first = _git(repo, "rev-parse", "HEAD")
    assert gitinfo.git_info(str(repo))["commit"] == first
    assert gitinfo.git_info(str(repo))["commit"] == first  # from the cache
    (repo / "a.py").write_text("2")
    _git(repo, "commit", "-q", "-am", "two")
    second = _git(repo, "rev-parse", "HEAD")
    assert gitinfo.git_info(str(repo))["commit"] == second
    _git(repo, "checkout", "-q", first)  # detached HEAD
    assert gitinfo.git_info(str(repo))["commit"] == first
    _git(repo, "checkout", "-q", "main")
    _git(repo, "pack-refs", "--all")  # the branch moves into packed-refs
    assert gitinfo.git_info(str(repo))["commit"] == second
    (repo / "a.py").write_text("3")
    _git(repo, "commit", "-q", "-am", "three")  # a loose ref shadows the packed one again
    assert gitinfo.git_info(str(repo))["commit"] == _git(repo, "rev-parse", "HEAD")
    wt = tmp_path / "wt"
    _git(repo, "worktree", "add", "-q", "-b", "side", str(wt))
    assert gitinfo.git_info(str(wt))["commit"] == _git(wt, "rev-parse", "HEAD")
    (wt / "a.py").write_text("4")
    _git(wt, "commit", "-q", "-am", "four")
    assert gitinfo.git_info(str(wt))["commit"] == _git(wt, "rev-parse", "HEAD")
    assert gitinfo.git_info(str(repo))["commit"] == _git(repo, "rev-parse", "HEAD")


# -- the record's encoding -----------------------------------------------------------------


def test_cached_key_order_encodes_like_a_fresh_sort():
    fields = {"task": "g", "status": "success", "a": 1, "zz": None, "versions": {"python": "3", "b": "x"}}
    first = canonical_pack(fields)
    again = canonical_pack(dict(fields))  # same keys, same insertion order: the cached order
    reordered = canonical_pack(dict(reversed(list(fields.items()))))  # other insertion order
    assert first == again == reordered
    # A map whose keys only equal the cached ones (a str subclass) is refused as before, not served.

    class Name(str):
        pass

    with pytest.raises(TypeError):
        canonical_pack({Name(k): v for k, v in fields.items()})
    assert canonical_pack({k: 0 for k in fields}) != canonical_pack({k: 1 for k in fields})


def test_record_committed_is_the_encoding_its_id_names(store):
    @terra.task
    def inc(i):
        return i + 1

    inc(1)
    ref = R.run_ref(store, inc.last_run_id)
    rec = store.get(ObjectId(ref["record"]))  # verified against its id on read
    assert isinstance(rec, Run) and rec.fields["output"] == 2
    assert encode(rec)[0] == encode(Run(dict(rec.fields)))[0]


# -- output capture ------------------------------------------------------------------------


def test_capture_leaves_logging_as_it_found_it():
    root = logging.getLogger()
    before = list(root.handlers)
    with Capture() as outer:
        logging.getLogger("terra.test").warning("outer")
        with Capture() as inner:
            logging.getLogger("terra.test").warning("both")
        logging.getLogger("terra.test").warning("outer again")
    assert root.handlers == before
    assert inner.text == "WARNING:terra.test:both\n"
    assert outer.text.splitlines() == ["WARNING:terra.test:outer", "WARNING:terra.test:both",
                                       "WARNING:terra.test:outer again"]


def test_capture_of_a_thread_gets_only_its_own_log_records():
    ready, done = threading.Event(), threading.Event()
    texts = {}

    def worker():
        with Capture() as c:
            ready.set()
            done.wait(10)
            logging.getLogger("terra.test").warning("from worker")
        texts["worker"] = c.text

    th = threading.Thread(target=worker)
    th.start()
    ready.wait(10)
    with Capture() as mine:
        logging.getLogger("terra.test").warning("from main")
        done.set()
        th.join(10)
    assert mine.text == "WARNING:terra.test:from main\n"
    assert texts["worker"] == "WARNING:terra.test:from worker\n"
    assert not any(type(h).__module__ == "terra.capture" for h in logging.getLogger().handlers)


# -- run ids --------------------------------------------------------------------------------


def test_lost_committed_counter_never_reuses_run_ids(store):
    calls = []

    @terra.task
    def inc(i):
        calls.append(i)
        return i + 1

    for i in range(3):
        inc(i)
    store.update_refs(lambda txn: txn.delete(R.K_COMMITTED))  # the counter lost...
    store.update_state(lambda txn: txn.delete(R.K_COUNTER))  # ...and the short-lived one reset (a reboot)
    rid, out = inc(10, return_run_id=True)
    assert rid == 4 and out == 11 and calls == [0, 1, 2, 10]
    assert [terra.get_run(r)["output"] for r in (1, 2, 3)] == [1, 2, 3]  # none overwritten
    assert store.get_ref(R.K_COMMITTED) == R.rid8(4)  # and the counter is back


def test_forked_child_runs_as_itself(store):
    """The pid a run records and its store environment are the child's own after fork()."""
    from terra.store import process_id

    @terra.task
    def whoami(i):
        return os.getpid()

    whoami(0)  # the parent has its environment open and its pid cached
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            rid, out = whoami(1, return_run_id=True)
            ok = process_id() == os.getpid() == out == terra.get_run(rid)["pid"]
            ok = ok and current_store().backend._env().pid == os.getpid()
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    assert os.read(r, 1) == b"1"
    os.close(r)
    assert process_id() == os.getpid()
    rid, out = whoami(2, return_run_id=True)
    assert out == os.getpid() and terra.get_run(rid)["pid"] == os.getpid()


# -- the data file kept ahead of LMDB's pages ---------------------------------------------------


def test_data_file_runs_ahead_with_zeros_and_every_process_reads_the_store(store, subprocess_env):
    """Commits write inside the file (no new file size to journal); the room past LMDB's pages is zeros."""
    import sys

    @terra.task
    def inc(i):
        return i + 1

    for i in range(40):
        inc(i)
    info = store.backend.info()
    used = (info["last_pgno"] + 1) * info["psize"]
    data = os.path.join(store.backend.path, "data.mdb")
    size = os.path.getsize(data)
    assert size >= used + (256 << 10)
    with open(data, "rb") as f:
        f.seek(used)
        assert f.read() == bytes(size - used)  # never anything LMDB would read
    script = f"""
import terra
terra.configure(storage_dir={os.path.dirname(store.backend.path)!r}, quiet=True)
from terra import get_runs, out
runs = get_runs()
assert len(runs) == 40 and sorted(out(r) for r in runs.run_id) == list(range(1, 41)), runs
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], env=subprocess_env, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "ok", r.stderr
