"""Hostile stores and fuzzed decoders, in memory-limited subprocesses (issue 10: the fault suite's trust part).

Both run the code under test in a child process with ``RLIMIT_AS`` a bounded
amount above what the opened store already maps, so a bomb shows up as an
error rather than a swapped machine, and a crash shows up as a signal.
The default run is CI-sized; ``-m soak`` runs the long variants.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
LIMIT = 1 << 30  # address space the child may add beyond the opened store


def _fuzz(python, env, tmp_path, examples: int, seconds: float) -> dict:
    res = subprocess.run([python, os.path.join(TESTS, "_fuzz_hostile.py"), str(tmp_path / "fuzz"),
                          str(examples), str(seconds), str(LIMIT)],
                         env=env, capture_output=True, text=True, timeout=seconds * 4 + 120)
    assert res.returncode >= 0, f"decoder fuzzing crashed the interpreter (signal {-res.returncode})"
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"decoder fuzzing: {out['trials']} trials, {out['nfailures']} failures, 0 crashes")
    return out


def test_fuzzed_objects_give_values_or_terra_errors(python, subprocess_env, tmp_path):
    out = _fuzz(python, subprocess_env, tmp_path, examples=150, seconds=20)
    assert out["trials"] >= 50 and out["failures"] == []


@pytest.mark.soak
def test_fuzzed_objects_soak(python, subprocess_env, tmp_path):
    out = _fuzz(python, subprocess_env, tmp_path, examples=20000, seconds=480)
    assert out["failures"] == []


# -- a store copied from someone else ------------------------------------------------------

_BUILD = r"""
import os, sys, warnings
warnings.simplefilter("ignore")
import zstandard
import terra
from terra.objects import Blob, Tree, digest
from terra.session import current_store

marker = sys.argv[2]
touch = f"touch {marker}"
terra.configure(storage_dir=sys.argv[1], quiet=True)


class Exploit:
    def __reduce__(self):
        return (os.system, (touch,))


class Sneaky(Exploit):
    pass


Sneaky.__module__, Sneaky.__qualname__ = "builtins", "int"  # its pickle's meta claims "int"


@terra.task
def evil(n):
    return {"plain": n, "exploit": Exploit(), "looks_like_int": Sneaky(), "listed": [Sneaky(), 3]}


evil(1)
evil(2)
st = current_store()
crafted = [
    Tree("enum", (touch,), {"class": "os:system", "name": "X"}),
    Tree("dataclass", (("args", touch),), {"class": "subprocess:Popen"}),
    Tree("namedtuple", (touch,), {"class": "os:system"}),
    Tree("defaultdict", (), {"factory": "subprocess:Popen"}),
    Tree("dir", (), {"class": "os:system", "path_kind": "dir"}),
    Blob("pickle", {"type": "int"}, __import__("pickle").dumps(Exploit())),
]
for obj in crafted:
    st.put(obj)
c = zstandard.ZstdCompressor(write_content_size=True).compressobj(size=1 << 30)
bomb = b"".join(c.compress(bytes(1 << 20)) for _ in range(1024)) + c.flush()
magic = (0xFD2FB528).to_bytes(4, "little") + bytes([0xE0]) + (1 << 40).to_bytes(8, "little")
claim = magic + ((10 << 3) | 1).to_bytes(3, "little") + b"x" * 10
st.backend.put_many([(digest((b"bomb",)), b"\x01" + bomb), (digest((b"claim",)), b"\x01" + claim)], durable=True)
print("built")
"""

_OPEN = r"""
import json, os, resource, sys, traceback
from click.testing import CliRunner
import terra
from terra.cli import cli
from terra.serialize import load_value, summarize
from terra.session import current_store

root = sys.argv[1]
terra.configure(storage_dir=root, quiet=True)
st = current_store()
import terra.serialize.codecs
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (vm + limit, vm + limit))
report = {"commands": 0, "tracebacks": [], "loads": 0, "raw_errors": [], "refused": 0}
runner = CliRunner()

def cmd(*args):
    report["commands"] += 1
    res = runner.invoke(cli, ["--store", root, *args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        report["tracebacks"].append(f"{args}: {type(res.exception).__name__}: {res.exception}")
    return res

cmd("ls")
cmd("fsck")
for run in ("1", "2"):
    cmd("out", run)
    cmd("inp", run)
    cmd("show", run)
ids = [oid.hex() for oid in st.iter_ids()]
for hex_ in ids:
    cmd("cat", hex_)
    report["loads"] += 1
    try:
        load_value(st, hex_)
    except terra.TerraError:
        report["refused"] += 1
    except BaseException as e:
        report["raw_errors"].append(f"{hex_}: {type(e).__name__}: {str(e)[:200]}")
    try:
        summarize(st, hex_)
    except terra.TerraError:
        pass
    except BaseException as e:
        report["raw_errors"].append(f"summarize {hex_}: {type(e).__name__}: {str(e)[:200]}")
out = terra.out(1)
report["out_types"] = sorted(type(v).__name__ for v in out.values())
print(json.dumps(report))
"""


def _hostile_store(python, env, tmp_path):
    marker = tmp_path / "marker"
    theirs = tmp_path / "theirs"
    env_them = {**env, "TERRA_PICKLE_KEY": str(tmp_path / "colleague" / "pickle.key")}
    subprocess.run([python, "-c", _BUILD, str(theirs), str(marker)], env=env_them, check=True, timeout=300)
    assert not marker.exists()  # building it ran nothing either
    mine = tmp_path / "copied"
    shutil.copytree(theirs, mine)
    return mine, marker


def test_hostile_store_runs_nothing_crashes_nothing(python, subprocess_env, tmp_path):
    root, marker = _hostile_store(python, subprocess_env, tmp_path)
    res = subprocess.run([python, "-c", _OPEN, str(root), str(LIMIT)], env=subprocess_env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode >= 0, f"opening a hostile store crashed the interpreter (signal {-res.returncode})"
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"hostile store: {report['commands']} commands, {report['loads']} loads, "
          f"{report['refused']} refused, 0 crashes")
    assert not marker.exists(), "a crafted object ran code"
    assert report["tracebacks"] == [] and report["raw_errors"] == []
    assert report["refused"] >= 10
    # The pickle claiming "int" stays an Artifact in `terra out`; plain values show inline.
    assert report["out_types"] == ["Artifact", "Artifact", "int", "list"]
