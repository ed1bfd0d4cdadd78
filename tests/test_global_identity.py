"""Global identity: store uuids, record origin, parents by record id, migration, Artifact pickles."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import tarfile

import numpy as np

import terra
from terra import runs as R
from terra.objects import ObjectId
from terra.session import current_store

HERE = os.path.dirname(os.path.abspath(__file__))

# Golden: the fields of a record in store format 2 (a change here is a format change: bump it).
RECORD_FIELDS_V2 = ["cache_key", "code", "end_time", "error", "fingerprint", "fn", "git", "host", "identity",
                    "inputs", "module", "origin", "output", "parents", "pid", "start_time", "status", "task",
                    "user", "versions"]


@terra.task
def make(n: int):
    return np.arange(n, dtype=np.int64)


@terra.task
def double(a):
    return {"twice": a * 2}


@terra.task
def total(a, b):
    return float(a.sum() + b["twice"].sum())


def _pipeline():
    a = make(10)
    b = double(a)
    return a, b, total(a, b)


def test_records_carry_origin_and_parents_by_record_id(store):
    _pipeline()
    uuid = store.uuid
    assert len(uuid) == 32 and int(uuid, 16) >= 0
    with store.refs() as txn:
        assert txn.get(b"meta/format") == b"3"
        recs = {rid: R.record_of(txn, rid) for rid in (1, 2, 3)}
    fields = dict(store.get(ObjectId(recs[3])).fields)
    assert fields["origin"] == [uuid, 3]
    assert fields["parents"] == sorted([recs[1].hex(), recs[2].hex()])
    assert dict(store.get(ObjectId(recs[1])).fields)["parents"] == []
    # Readers see local run ids.
    assert terra.get_meta(3)["parents"] == [1, 2]
    assert terra.get_runs()["parents"].tolist() == [[1, 2], [1], []]
    assert sorted(fields) == RECORD_FIELDS_V2


def test_golden_record_encoding():
    """The id of a v2 record is pinned: origin and hex parents are plain data, not references."""
    from terra.objects import Run, object_id, references

    rec = Run({"task": "t", "origin": ["0" * 32, 3], "parents": ["ab" * 16, "cd" * 16], "status": "success"})
    assert object_id(rec).hex() == GOLDEN_RECORD_ID
    # Parents are not object references: gc and push must not follow a removed parent's record.
    assert list(references(rec)) == []


GOLDEN_RECORD_ID = "8fa78583cc9ca9c0302481fd1ecf0484"


def test_each_store_has_its_own_uuid(tmp_path):
    terra.configure(storage_dir=str(tmp_path / "a"), quiet=True)
    a = current_store().uuid
    terra.configure(storage_dir=str(tmp_path / "b"), quiet=True)
    b = current_store().uuid
    terra.configure(storage_dir=str(tmp_path / "a"), quiet=True)
    assert a != b and current_store().uuid == a  # persistent


def test_old_format_store_is_migrated_on_open(tmp_path):
    """A store written by terra before format 2 (tests/data/store_v1_make.py, main at 5245033)."""
    with tarfile.open(os.path.join(HERE, "data", "store_v1.tar.gz")) as tf:
        tf.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    path = str(tmp_path / "v1store")
    from terra.store import open_store

    raw = open_store(os.path.join(path, "objects.lmdb"))
    with raw.refs() as txn:
        assert txn.get(b"meta/format") == b"1"
        old3 = R.record_of(txn, 3)
    assert dict(raw.get(ObjectId(old3)).fields)["parents"] == [1, 2]  # the old form
    raw.backend.close()

    terra.configure(storage_dir=path, quiet=True)
    store = current_store()
    with store.refs() as txn:
        assert txn.get(b"meta/format") == b"3"
        recs = {rid: R.record_of(txn, rid) for rid in (1, 2, 3)}
    fields = dict(store.get(ObjectId(recs[3])).fields)
    assert fields["origin"] == [store.uuid, 3]
    assert fields["parents"] == sorted([recs[1].hex(), recs[2].hex()])
    assert terra.get_meta(3)["parents"] == [1, 2]
    assert terra.get_runs()["parents"].tolist() == [[1, 2], [1], []]
    dag = terra.provenance("final")
    assert sorted(dag.runs) == [1, 2, 3] and dag.parents(3) == [1, 2]
    np.testing.assert_array_equal(terra.out(1).load(), np.arange(10))
    assert terra.out(3) == float(np.arange(10).sum() * 3)
    assert terra.fsck().ok
    terra.gc(grace_period=0)  # the replaced records are garbage, nothing else is
    assert terra.fsck().ok and terra.get_meta(2)["parents"] == [1]


def test_artifact_pickles_without_its_store_path(store, tmp_path, python, subprocess_env):
    a, b, _ = _pipeline()
    data = pickle.dumps(b["twice"])
    assert str(store.root).encode() not in data and os.path.basename(store.root).encode() not in data
    # Another path to the same store (a copy): the Artifact loads there and finds its producer.
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy, ignore=shutil.ignore_patterns("state", "lock.mdb"))
    code = (
        "import pickle, sys, terra\n"
        f"terra.configure(storage_dir={str(copy)!r}, quiet=True)\n"
        "a = pickle.loads(sys.stdin.buffer.read())\n"
        "print(a.run_id, a.load().tolist())\n"
    )
    out = subprocess.run([python, "-c", code], input=data, capture_output=True, env=subprocess_env, check=True)
    assert out.stdout.decode().split(None, 1) == ["2", f"{(np.arange(10) * 2).tolist()}\n"]
    # In a store that never saw the producer, the run is unknown (never a wrong local id).
    terra.configure(storage_dir=str(tmp_path / "other"), quiet=True)
    assert pickle.loads(data).run_id is None


def test_copies_of_an_artifact_keep_their_store(store, tmp_path):
    import copy

    a, b, _ = _pipeline()
    terra.configure(storage_dir=str(tmp_path / "elsewhere"), quiet=True)
    c = copy.deepcopy({"x": b["twice"]})["x"]
    assert c.run_id == 2 and c.store is store
    np.testing.assert_array_equal(c.load(), np.arange(10) * 2)
