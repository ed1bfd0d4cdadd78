"""Trust after pulls: fsck tells payloads left on a remote from lost ones; gc racing a pull loses nothing."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import terra
from terra.remote import add_remote, pull, push, remove_remote
from terra.session import current_store

from test_remote import PIPE, _bucket, moto  # noqa: F401 - moto is a fixture


def _missing_here(b) -> set:
    """Ids the runs here refer to that are not stored here."""
    from terra.gc import live_roots, reachable

    return reachable(b, live_roots(b))[1]


def test_fsck_after_a_records_only_pull(moto, tmp_path):  # noqa: F811
    url = _bucket(moto)
    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["run"](n=200_000)
    add_remote("team", url)
    push(all=True)
    want = {rid: terra.out(rid) for rid in (1, 2)}
    want = {1: want[1].load(), 2: {k: v.load() for k, v in want[2].items() if isinstance(v, terra.Artifact)}}

    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    add_remote("elsewhere", f"file://{tmp_path / 'empty'}", default=True)  # loads must not depend on the default
    add_remote("team", url)
    res = pull(all=True, records_only=True, remote="team")
    b = current_store()
    left = sorted(o.hex() for o in _missing_here(b))
    assert res.objects_left == len(left) >= 3 and "left on the remote" in res.summary()

    rep = terra.fsck()
    assert rep.ok and rep.missing == [] and rep.affected_runs == {}, str(rep)
    assert rep.remote_only == {"team": len(left)} and rep.remote_checked
    assert f"{len(left)} object(s) are on remote team only" in str(rep) and "no problems found" in str(rep)
    from click.testing import CliRunner

    from terra.cli import cli

    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "B"), "fsck"])
    assert out.exit_code == 0 and "on remote team only" in out.output, out.output

    # What fsck calls available, a load fetches: from the remote the pull left it on, not the default.
    np.testing.assert_array_equal(terra.out(1).load(), want[1])
    rep = terra.fsck()
    first = len(left) - len(_missing_here(b))
    assert first >= 1 and rep.ok and rep.remote_only == {"team": len(left) - first}, str(rep)

    # Gone from the remote too: damage, named, with the run that needs it.
    import boto3

    bucket, prefix = url[len("s3://"):].split("/", 1)
    gone = sorted(o.hex() for o in _missing_here(b))[0]
    boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"]).delete_object(
        Bucket=bucket, Key=f"{prefix}/objects/{gone[:2]}/{gone[2:]}")
    rep = terra.fsck()
    assert not rep.ok and rep.missing == [gone] and rep.remote_only == {"team": len(left) - first - 1}
    assert rep.affected_runs and all(v == [gone] for v in rep.affected_runs.values())
    assert any(gone in p and "gone from it too" in p for p in rep.remote_problems), str(rep)
    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "B"), "fsck"])
    assert out.exit_code == 1 and f"missing object {gone}" in out.output
    # Without asking the remote, fsck goes by the records (and says so).
    unchecked = terra.fsck(check_remotes=False)
    assert unchecked.ok and not unchecked.remote_checked and "not checked" in str(unchecked)

    # A remote no longer configured holds nothing for this store: every object left there is missing.
    remove_remote("team")
    rep = terra.fsck()
    assert not rep.ok and rep.remote_only == {} and len(rep.missing) == len(left) - first
    assert any("no configured remote points there" in p for p in rep.remote_problems), str(rep)
    add_remote("team", url)
    assert terra.fsck().missing == [gone]


def _records_only_pull(tmp_path, url: str):
    """Store A runs the pipeline and pushes it to ``url``; store B (current after) pulls its records only."""
    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    ns["run"](n=200_000)
    push(all=True, remote=url)
    terra.configure(storage_dir=str(tmp_path / "B"), quiet=True)
    add_remote("team", url)
    return pull(all=True, records_only=True)


def test_fsck_reports_an_object_missing_that_no_remote_has(tmp_path):
    _records_only_pull(tmp_path, f"file://{tmp_path / 'remote'}")
    b = current_store()
    assert terra.fsck().ok
    # An object the pull did fetch (run 3's output, small): lost here, and no record says a remote has it.
    lost = terra.get_run(3)["output"]
    assert b.delete([lost])[0] == 1
    rep = terra.fsck()
    assert not rep.ok and rep.missing == [lost.hex()] and rep.affected_runs == {3: [lost.hex()]}
    assert rep.remote_only == {"team": rep.remote_only["team"]} and rep.remote_only["team"] >= 3


# -- gc racing a pull ----------------------------------------------------------------------------

GC_LOOP = '''
import json, os, sys, terra
terra.configure(storage_dir=sys.argv[1], quiet=True)
passes = deleted = 0
while not os.path.exists(sys.argv[2]):
    deleted += terra.gc(grace_period=0).deleted_objects
    passes += 1
print(json.dumps({"passes": passes, "deleted": deleted}))
'''


def _load_all(value) -> int:
    """Load every Artifact in a run's output; how many there were."""
    n, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, terra.Artifact):
            v.load()
            n += 1
    return n


def race_pulls_with_gc(tmp_path, python, subprocess_env, cycles: int) -> dict:
    """Pull every run, check each loads, remove them all (garbage for gc), again; gc --grace 0 loops meanwhile."""
    url = f"file://{tmp_path / 'remote'}"
    terra.configure(storage_dir=str(tmp_path / "A"), quiet=True)
    ns: dict = {}
    exec(PIPE, ns)
    for n in range(20_000, 20_008):
        ns["run"](n=n)
    push(all=True, remote=url)
    # B has no remote configured: a load cannot quietly fetch what gc deleted.
    b = str(tmp_path / "B")
    terra.configure(storage_dir=b, quiet=True)
    current_store()
    stop = tmp_path / "stop"
    script = tmp_path / "gc_loop.py"
    script.write_text(GC_LOOP)
    gc_proc = subprocess.Popen([python, str(script), b, str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=subprocess_env)
    lost, loaded = [], 0
    try:
        for cycle in range(cycles):
            res = pull(all=True, remote=url)
            assert res.runs == 24
            for rid in res.run_ids:
                try:
                    loaded += _load_all(terra.out(rid))
                except terra.NotFound as e:
                    lost.append((cycle, rid, str(e)))
            if cycle < cycles - 1:
                terra.rm(res.run_ids, force=True)
    finally:
        stop.touch()
        out, err = gc_proc.communicate(timeout=120)
    assert gc_proc.returncode == 0, err[-3000:]
    stats = json.loads(out.strip().splitlines()[-1])
    rep = terra.fsck()
    return {"lost": lost, "loaded": loaded, "fsck": rep, **stats}


def test_gc_racing_pulls_never_deletes_a_pulled_object(tmp_path, python, subprocess_env):
    got = race_pulls_with_gc(tmp_path, python, subprocess_env, cycles=12)
    assert got["lost"] == [], got["lost"][:3]
    assert got["fsck"].ok, str(got["fsck"])
    assert got["loaded"] == 12 * 8 * 3 and got["passes"] > 0 and got["deleted"] > 0  # gc did run and collect


def test_fsck_cannot_confirm_what_an_unreachable_remote_holds(tmp_path, monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                     "AWS_ALLOW_HTTP": "true"}.items():
            monkeypatch.setenv(k, v)
        url = _bucket({"AWS_ENDPOINT_URL": f"http://{host}:{port}"})
        n = _records_only_pull(tmp_path, url).objects_left
        assert terra.fsck().remote_only == {"team": n}
    finally:
        server.stop()
    rep = terra.fsck()  # the remote is gone: what it holds cannot be confirmed, nor called lost
    assert not rep.ok and rep.missing == [] and rep.affected_runs == {} and rep.remote_only == {}
    assert any(f"could not reach remote team to confirm {n} object(s)" in p for p in rep.remote_problems), str(rep)
    assert terra.fsck(check_remotes=False).ok
    from click.testing import CliRunner

    from terra.cli import cli

    assert CliRunner().invoke(cli, ["fsck"]).exit_code == 1
    offline = CliRunner().invoke(cli, ["fsck", "--offline"])
    assert offline.exit_code == 0, offline.output


@pytest.mark.soak
@pytest.mark.parametrize("trial", range(10))
def test_soak_gc_racing_pulls(trial, tmp_path, python, subprocess_env):
    """The race above, longer (``python -m pytest -m soak tests/test_remote_trust.py``)."""
    got = race_pulls_with_gc(tmp_path, python, subprocess_env, cycles=40)
    assert got["lost"] == [] and got["fsck"].ok, (got["lost"][:3], str(got["fsck"]))
