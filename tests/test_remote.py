"""Remotes: push from one store, pull into another (separate processes) over s3 (moto on loopback),
file:// and memory://; corruption refused; concurrent pushers; tag compare-and-swap."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import uuid

import numpy as np
import pytest

import terra
from terra.remote import RemoteConflict, RemoteCorrupt, add_remote, pull, push
from terra.session import current_store


PIPE = '''
import os, numpy as np, terra

def _count(name):
    if os.environ.get("CALLS_FILE"):
        with open(os.environ["CALLS_FILE"], "a") as f:
            f.write(name + "\\n")

@terra.task
def make(n: int):
    _count("make")
    return np.arange(n, dtype=np.float64)

@terra.task
def split(a, frac: float = 0.5):
    _count("split")
    k = int(len(a) * frac)
    return {"lo": a[:k], "hi": a[k:] * 2, "n": len(a)}

@terra.task
def total(a, parts):
    _count("total")
    return {"sum": float(a.sum() + parts["lo"].sum()), "text": "x" * 1000}

@terra.task
def extra(parts, k: int):
    _count("extra")
    return parts["hi"][:k].copy()

def run(n=700_000):
    a = make(n)
    p = split(a)
    return total(a, p)
'''

# Prints what must match between stores, keyed by origin (local run ids differ).
SNAPSHOT = '''
import json, terra
from terra.io import Artifact

def snapshot():
    df = terra.get_runs()
    origin = {int(r): ":".join(map(str, terra.get_run(int(r))["origin"])) for r in df.run_id}
    runs, edges = {}, set()
    for row in df.itertuples():
        out = terra.out(row.run_id) if row.status == "success" else None
        leaves = {}
        stack = [("", out)]
        while stack:
            path, v = stack.pop()
            if isinstance(v, dict):
                stack += [(f"{path}.{k}", x) for k, x in v.items()]
            elif isinstance(v, Artifact):
                leaves[path] = [v.id, terra.hash(v.load())]
            else:
                leaves[path] = repr(v)
        runs[origin[row.run_id]] = {"task": row.task, "status": row.status,
                                    "parents": sorted(origin[p] for p in row.parents), "out": leaves}
        for e in terra.provenance(int(row.run_id)).edges:
            edges.add((origin[e.producer], origin[e.consumer], e.artifact))
    return {"runs": runs, "edges": sorted(edges)}
'''


def _script(body: str) -> str:
    return PIPE + SNAPSHOT + textwrap.dedent(body)


def _py(python, env, workdir, body, *args, check=True):
    path = os.path.join(workdir, f"step_{uuid.uuid4().hex[:8]}.py")
    with open(path, "w") as f:
        f.write(_script(body))
    p = subprocess.run([python, path, *args], capture_output=True, text=True, env=env, cwd=workdir, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"step failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


# -- remotes under test ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto():
    """A real S3 protocol server on loopback, and the environment that reaches it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ALLOW_HTTP": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def _bucket(moto) -> str:
    import boto3

    name = f"terra-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return f"s3://{name}/team"


@pytest.fixture(params=["s3", "file"])
def remote_url(request, tmp_path):
    if request.param == "s3":
        return _bucket(request.getfixturevalue("moto"))
    return f"file://{tmp_path / 'remote'}"


@pytest.fixture
def env(subprocess_env, tmp_path):
    e = dict(subprocess_env)
    e.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    e["PYTHONPATH"] = str(tmp_path) + os.pathsep + e["PYTHONPATH"]
    return e


# -- the round trip ---------------------------------------------------------------------------


def test_push_then_pull_in_another_process(remote_url, tmp_path, python, env):
    a, b = str(tmp_path / "A"), str(tmp_path / "B")
    pushed = _py(python, env, str(tmp_path), """
        import sys
        terra.configure(storage_dir=sys.argv[1], quiet=True)
        from terra.remote import add_remote, push
        run()
        extra(split(make(700_000)), 5)
        terra.tag(3, "best")
        add_remote("team", sys.argv[2])
        first = push(all=True)
        second = push(all=True)
        print(json.dumps({"snap": snapshot(), "first": first.to_dict(), "second": second.to_dict(),
                          "summary": second.summary()}))
    """, a, remote_url)
    A = json.loads(pushed.stdout.strip().splitlines()[-1])
    assert A["first"]["runs"] == 4 and A["first"]["objects"] > 10 and A["first"]["bytes"] > 1_000_000
    # A second push of an unchanged store transfers nothing, and says so.
    assert A["second"]["objects"] == 0 and A["second"]["bytes"] == 0 and A["second"]["runs"] == 0
    assert A["second"]["runs_skipped"] == 4 and A["summary"].startswith("nothing to push")

    calls = tmp_path / "calls.txt"
    pulled = _py(python, {**env, "CALLS_FILE": str(calls)}, str(tmp_path), """
        import sys
        terra.configure(storage_dir=sys.argv[1], quiet=True)
        from terra.remote import add_remote, pull
        add_remote("team", sys.argv[2])
        res = pull(all=True)
        snap = snapshot()
        runs_before = len(terra.get_runs())
        out = run()                      # the same calls: cache hits here
        x = extra(split(make(700_000)), 5)
        assert out["sum"] == float(np.arange(700_000).sum() + np.arange(350_000).sum())
        np.testing.assert_array_equal(x.load(), np.arange(350_000, 350_005, dtype=np.float64) * 2)
        print(json.dumps({"snap": snap, "pull": res.to_dict(), "runs_after": len(terra.get_runs()),
                          "runs_before": runs_before, "fsck": terra.fsck().ok}))
    """, b, remote_url)
    B = json.loads(pulled.stdout.strip().splitlines()[-1])
    assert B["pull"]["runs"] == 4 and B["pull"]["run_ids"] == [1, 2, 3, 4]
    assert B["snap"] == A["snap"]  # runs, parents, outputs (ids and loaded values), lineage: same by origin
    assert B["runs_after"] == B["runs_before"] == 4
    assert not calls.exists() or calls.read_text() == ""  # every call in B was a cache hit
    assert B["fsck"]


def test_memory_remote_round_trip(store, tmp_path):
    """memory:// lives in this process: push from one store, pull into another."""
    ns: dict = {}
    exec(PIPE, ns)
    url = "memory://"
    ns["run"](n=1000)
    a = current_store()
    add_remote("mem", url)
    assert push(all=True).runs == 3
    assert push(all=True).objects == 0
    origins = sorted(tuple(terra.get_run(r)["origin"]) for r in (1, 2, 3))
    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    add_remote("mem", url)
    res = pull(all=True)
    assert res.runs == 3 and current_store() is not a
    assert sorted(tuple(terra.get_run(r)["origin"]) for r in (1, 2, 3)) == origins
    np.testing.assert_array_equal(terra.out(1).load(), np.arange(1000, dtype=np.float64))
    assert terra.get_meta(3)["parents"] == [1, 2]


def test_records_only_pull_then_lazy_loads(tmp_path):
    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["run"]()
    url = f"file://{tmp_path / 'remote'}"
    add_remote("team", url)
    push(all=True)
    want = terra.out(1).load()
    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    add_remote("team", url)
    res = pull(all=True, records_only=True)
    b = current_store()
    n_before = sum(1 for _ in b.iter_ids())
    assert res.runs == 3 and res.bytes < 200_000  # the 5.6 MB array stayed on the remote
    art = terra.out(1)
    np.testing.assert_array_equal(art.load(), want)  # fetched on demand, verified
    assert sum(1 for _ in b.iter_ids()) > n_before
    assert tuple(terra.out(2)["hi"].summary["shape"]) == (350_000,)  # summaries fetch on demand too
    for part in terra.out(2).values():  # the rest, on demand too; then nothing is missing
        if isinstance(part, terra.Artifact):
            part.load()
    assert terra.fsck().ok


# -- trust: corruption is refused, nothing partial ingested ------------------------------------


def test_corrupt_object_on_remote_is_refused(remote_url, tmp_path):
    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["run"](n=50_000)
    add_remote("team", remote_url)
    push(all=True)
    target = terra.out(2)["lo"]
    path = f"objects/{target.id[:2]}/{target.id[2:]}"
    _corrupt(remote_url, path)
    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    add_remote("team", remote_url)
    b = current_store()
    with pytest.raises(RemoteCorrupt) as e:
        pull(all=True)
    assert target.id in str(e.value) and remote_url in str(e.value)
    assert sum(1 for _ in b.iter_ids()) == 0 and len(terra.get_runs()) == 0  # B unchanged


def _corrupt(url: str, path: str) -> None:
    if url.startswith("file://"):
        full = os.path.join(url[len("file://"):], path)
        data = bytearray(open(full, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(full, "wb").write(bytes(data))
        return
    import boto3

    bucket, prefix = url[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    key = f"{prefix}/{path}"
    data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))


# -- concurrency: create-only writes, compare-and-swap tags -------------------------------------


def test_three_concurrent_pushers_of_overlapping_runs(moto, tmp_path, python, env):
    import shutil

    url = _bucket(moto)
    a = str(tmp_path / "A")
    _py(python, env, str(tmp_path), """
        import sys
        terra.configure(storage_dir=sys.argv[1], quiet=True)
        run(n=200_000)
        extra(split(make(200_000)), 3)
        extra(split(make(200_000)), 4)
    """, a)
    copies = []
    for i in range(3):  # copies of one store: each pushes from an empty index, the runs overlap
        dst = str(tmp_path / f"A{i}")
        shutil.copytree(a, dst, ignore=shutil.ignore_patterns("state", "lock.mdb"))
        copies.append(dst)
    go = tmp_path / "go"
    body = """
        import sys, time
        terra.configure(storage_dir=sys.argv[1], quiet=True)
        from terra.remote import push
        while not os.path.exists(sys.argv[3]):
            time.sleep(0.005)
        sel = sys.argv[4].split(",")
        r = push(all=True, remote=sys.argv[2]) if sel == ["all"] else push([int(x) for x in sel], remote=sys.argv[2])
        print(json.dumps(r.to_dict()))
    """
    path = tmp_path / "pusher.py"
    path.write_text(_script(body))
    procs = [subprocess.Popen([python, str(path), c, url, str(go), sel], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for c, sel in zip(copies, ["3", "4,5", "all"])]
    go.write_text("go")
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert sum(r["objects"] for r in results) >= 1
    # A fresh pull is complete and fsck is clean.
    terra.configure(storage_dir=str(tmp_path / "fresh"), quiet=True)
    res = pull(all=True, remote=url)
    assert res.runs == 5
    assert terra.fsck().ok
    assert sorted(terra.get_run(r)["origin"][1] for r in range(1, 6)) == [1, 2, 3, 4, 5]


def test_tag_moved_concurrently_one_wins(moto, tmp_path, python, env):
    url = _bucket(moto)
    go = tmp_path / "go"
    body = """
        import sys, time
        terra.configure(storage_dir=sys.argv[1], quiet=True)
        from terra.remote import push, RemoteConflict
        make(int(sys.argv[4]))
        terra.tag(1, "best")
        while not os.path.exists(sys.argv[3]):
            time.sleep(0.005)
        try:
            push(tag="best", remote=sys.argv[2])
            print("won")
        except RemoteConflict as e:
            print("conflict:", e)
    """
    path = tmp_path / "tagger.py"
    path.write_text(_script(body))
    procs = [subprocess.Popen([python, str(path), str(tmp_path / f"S{i}"), url, str(go), str(10 + i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    go.write_text("go")
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = sorted(o.strip().splitlines()[-1] for o, _ in outs)
    assert lines[1] == "won" and lines[0].startswith("conflict:") and "best" in lines[0], lines


@pytest.mark.parametrize("kind", ["s3", "file", "memory"])
def test_tag_compare_and_swap_refuses_a_stale_value(kind, tmp_path, request):
    from terra.remote.client import Client

    url = {"s3": lambda: _bucket(request.getfixturevalue("moto")), "file": lambda: f"file://{tmp_path}/r",
           "memory": lambda: "memory://"}[kind]()
    c = Client(url)
    c.swap("refs/tags/t", None, b"1")
    with pytest.raises(RemoteConflict):
        c.swap("refs/tags/t", None, b"2")  # created meanwhile
    c.swap("refs/tags/t", b"1", b"3")
    with pytest.raises(RemoteConflict):
        c.swap("refs/tags/t", b"1", b"4")  # stale
    assert c.get("refs/tags/t") == b"3"


def test_push_and_pull_by_tag_sets_tags(tmp_path):
    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["run"](n=100)
    terra.tag(3, "paper")
    url = f"file://{tmp_path / 'remote'}"
    res = push(tag="paper", remote=url)
    assert res.runs == 3  # the run and its whole ancestry
    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    res = pull(tag="paper", remote=url)
    assert res.runs == 3
    from terra.retention import tags

    assert tags() == {"paper": 3}
    assert terra.provenance("paper").parents(3) == [1, 2]


def test_pickled_artifact_finds_its_run_under_another_local_id(tmp_path):
    import pickle

    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["run"](n=100)
    url = f"file://{tmp_path / 'remote'}"
    push(all=True, remote=url)
    data = pickle.dumps(terra.out(2)["lo"])  # produced by run 2 in A
    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    ns["make"](7)  # B's own run 1: pulled runs get the next ids
    res = pull(all=True, remote=url)
    assert res.run_ids == [2, 3, 4]
    art = pickle.loads(data)
    assert art.run_id == 3 and terra.get_run(3)["task"] == "split"
    np.testing.assert_array_equal(art.load(), np.arange(50, dtype=np.float64))
    # A removed run is pulled again, under a new id.
    terra.rm([4])
    assert pull(all=True, remote=url).run_ids == [5]


def test_cli_remote_push_pull_clone(tmp_path):
    from click.testing import CliRunner

    from terra.cli import cli

    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["run"](n=100)
    url = f"file://{tmp_path / 'remote'}"
    r = CliRunner()
    a = ["--store", str(tmp_path / "A")]
    assert r.invoke(cli, a + ["remote", "add", "team", url]).exit_code == 0
    out = r.invoke(cli, a + ["remote", "list", "--json"])
    assert json.loads(out.output) == [{"name": "team", "url": url, "default": True}]
    out = r.invoke(cli, a + ["push", "--all", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["runs"] == 3
    out = r.invoke(cli, a + ["push", "team", "--all"])
    assert out.exit_code == 0 and out.output.startswith("nothing to push")
    out = r.invoke(cli, a + ["push", "team", "99"])
    assert out.exit_code == 3 and "99" in out.output  # 3: not found
    out = r.invoke(cli, a + ["push"])
    assert out.exit_code == 1 and "say what to push" in out.output
    out = r.invoke(cli, ["--store", str(tmp_path / "C"), "clone", url, "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["run_ids"] == [1, 2, 3]
    c = ["--store", str(tmp_path / "C")]
    out = r.invoke(cli, c + ["pull", "--all"])
    assert out.exit_code == 0 and out.output.startswith("nothing to pull")
    out = r.invoke(cli, c + ["lineage", "3", "--format", "json"])
    assert {(e["producer"], e["consumer"]) for e in json.loads(out.output)["edges"]} == {(1, 2), (1, 3), (2, 3)}
    assert r.invoke(cli, c + ["remote", "remove", "origin"]).exit_code == 0
    out = r.invoke(cli, c + ["pull", "--all"])
    assert out.exit_code == 3 and "no remote configured" in out.output


def test_a_manifest_that_omits_objects_is_refused(tmp_path):
    """A run whose manifest does not list everything it needs is never ingested with holes."""
    from terra.remote.client import client
    from terra.remote.layout import Manifest, run_path

    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["make"](100)
    url = f"file://{tmp_path / 'remote'}"
    push(all=True, remote=url)
    cl = client(url)
    (path, _), = cl.list("runs/")
    rec = bytes.fromhex(path.rsplit("/", 1)[1])
    m = Manifest.decode(cl.get(path), rec, path)
    out = terra.out(1).id
    m.objects = [o for o in m.objects if o.hex() != out]
    os.remove(os.path.join(str(tmp_path / "remote"), path))
    cl.create(run_path(rec), m.encode())
    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    with pytest.raises(RemoteCorrupt, match=out):
        pull(all=True, remote=url)
    assert len(terra.get_runs()) == 0


def test_bad_tag_names_never_reach_the_remote(tmp_path):
    url = f"file://{tmp_path / 'remote'}"
    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["make"](3)
    push(all=True, remote=url)
    for bad in ("../../etc", "a/b", ""):
        with pytest.raises(terra.NotFound, match="bad tag name"):
            pull(tag=bad, remote=url)
    assert not (tmp_path / "etc").exists()


@pytest.mark.soak
@pytest.mark.parametrize("trial", range(10))
def test_soak_concurrent_pushers_and_tag_races(trial, moto, tmp_path, python, env):
    """The two races above, again and again (``python -m pytest -m soak tests/test_remote.py``)."""
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    test_three_concurrent_pushers_of_overlapping_runs(moto, tmp_path / "p", python, env)
    test_tag_moved_concurrently_one_wins(moto, tmp_path / "t", python, env)


def test_large_pull_stages_in_files_and_cleans_up(tmp_path, monkeypatch):
    import importlib

    pull_mod = importlib.import_module("terra.remote.pull")
    staged_files: list = []
    close = pull_mod._Staged.close
    monkeypatch.setattr(pull_mod._Staged, "close", lambda self: (staged_files.append(len(self.files)), close(self)))

    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["run"](n=200_000)
    url = f"file://{tmp_path / 'remote'}"
    push(all=True, remote=url)
    ids = sorted(a.id for a in terra.out(2).values() if isinstance(a, terra.Artifact))
    monkeypatch.setattr(pull_mod, "STAGE_MEMORY", 10_000)  # everything past 10 kB goes to files
    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    assert pull(all=True, remote=url).runs == 3
    assert sorted(a.id for a in terra.out(2).values() if isinstance(a, terra.Artifact)) == ids
    np.testing.assert_array_equal(terra.out(2)["hi"].load(), np.arange(100_000, 200_000) * 2.0)
    assert terra.fsck().ok
    assert staged_files and staged_files[0] >= 2 and not os.listdir(tmp_path / "B" / "tmp")
