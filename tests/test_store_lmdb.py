"""The LMDB backend beyond the shared suite: growth, processes, fork, format, filesystems.

Multi-process tests run real interpreters (``subprocess``) against one store
directory; data is random so sizes are real (nothing compresses away).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from terra.errors import StoreError, TerraError, UnsupportedFilesystem, UnsupportedFormat
from terra.objects import CHUNK_SIZE, Blob, object_id
from terra.store import FORMAT_VERSION, LMDBBackend, Store, check_local_filesystem, open_store
from terra.store import _disk

MiB = 1 << 20


def _verify_all(store: Store) -> int:
    """Read (and so verify) every stored object; return how many."""
    n = 0
    for oid in store.iter_ids():
        store.get(oid)
        n += 1
    return n


def _file_digest(path) -> str:
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _run(python, env, code, *args, timeout=120):
    res = subprocess.run([python, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    return res


# -- growth -------------------------------------------------------------------------------


@pytest.mark.slow
def test_200_mib_into_a_1_mib_map(tmp_path):
    store = open_store(str(tmp_path / "s"), map_size=1 * MiB)
    assert store.backend.info()["map_size"] == 1 * MiB
    written = {}
    for i in range(20):  # 20 x 10 MiB of random float64
        a = np.random.default_rng(i).random(10 * MiB // 8)
        written[store.put_payload("numpy", {"i": i}, a).id] = i
    assert store.backend.info()["map_size"] >= 200 * MiB
    for oid, i in written.items():
        _, data = store.read_payload(oid)
        np.testing.assert_array_equal(data.view(np.float64), np.random.default_rng(i).random(10 * MiB // 8))
    assert _verify_all(store) == 20 * 4  # three chunks and a chunk list each
    store.backend.close()


_WRITER = r"""
import json, os, sys, time
import numpy as np
from terra.store import open_store
path, seed, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = open_store(path, map_size=1 << 20)
while not os.path.exists(go):  # start together
    time.sleep(0.005)
out = []
rng = np.random.default_rng(seed)
for i in range(10):
    n = (5 << 20) // 8 + int(rng.integers(0, 10000))  # ~5 MiB: two chunks
    oid = store.put_payload("numpy", {"seed": seed, "i": i}, np.random.default_rng([seed, i]).random(n)).id
    store.update_refs(lambda txn: txn.put(b"w/%d/%d" % (seed, i), bytes(oid)))
    out.append([str(oid), i, n])
    if i % 3 == 0:  # read back while others write and grow
        store.read_payload(oid)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_four_writer_processes_grow_one_store(tmp_path, python, subprocess_env):
    path, go = str(tmp_path / "s"), str(tmp_path / "go")
    procs = [subprocess.Popen([python, "-c", _WRITER, path, str(seed), go], env=subprocess_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in range(4)]
    time.sleep(0.3)
    open(go, "w").close()
    results = {}
    for seed, p in enumerate(procs):
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results[seed] = json.loads(out)
    store = open_store(path)
    total = 0
    for seed, rows in results.items():
        for oid, i, n in rows:
            _, data = store.read_payload(oid)
            np.testing.assert_array_equal(data.view(np.float64), np.random.default_rng([seed, i]).random(n))
            total += data.nbytes
    assert total >= 200 * MiB
    assert _verify_all(store) == 4 * 10 * 3
    with store.refs() as txn:
        assert len(list(txn.scan(b"w/"))) == 40
    store.backend.close()


_GROWER = r"""
import sys, numpy as np
from terra.store import open_store
store = open_store(sys.argv[1])
for i in range(6):
    print(store.put_payload("numpy", {}, np.random.default_rng(i).random((5 << 20) // 8)).id)
"""


def test_adopts_a_map_grown_by_another_process(tmp_path, python, subprocess_env):
    path = str(tmp_path / "s")
    store = open_store(path, map_size=1 * MiB)
    mine = store.put(Blob("raw", {}, b"before")).id
    res = _run(python, subprocess_env, _GROWER, path)
    assert res.returncode == 0, res.stderr
    for i, line in enumerate(res.stdout.split()):  # ~30 MiB beyond our 1 MiB map
        _, data = store.read_payload(line)
        np.testing.assert_array_equal(data.view(np.float64), np.random.default_rng(i).random((5 << 20) // 8))
    store.put_payload("numpy", {}, np.random.default_rng(99).random(3 * MiB // 8))
    assert store.get(mine).data == b"before"
    store.backend.close()


def test_cannot_grow_under_an_open_snapshot_but_fails_cleanly(tmp_path):
    """set_mapsize with a read transaction open would leave its buffers dangling."""
    store = open_store(str(tmp_path / "s"), map_size=1 * MiB)
    big = np.random.default_rng(0).random(2 * MiB // 8)
    with store.backend.reading():
        with pytest.raises(StoreError, match="read snapshot"):
            store.put_payload("numpy", {}, big)
    oid = store.put_payload("numpy", {}, big).id  # fine once the snapshot is closed
    np.testing.assert_array_equal(store.read_payload(oid)[1].view(np.float64), big)
    store.backend.close()


# -- fork -----------------------------------------------------------------------------------


def _fork(child) -> int:
    """Run ``child()`` in a forked process; return its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child()
            code = 0
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.slow
@pytest.mark.parametrize("inside_snapshot", [False, True], ids=["idle", "fork-inside-read"])
def test_child_after_fork_uses_the_store(tmp_path, inside_snapshot):
    store = open_store(str(tmp_path / "s"))
    a = store.put(Blob("raw", {}, b"parent before fork")).id
    big = np.random.default_rng(1).random(2 * CHUNK_SIZE // 8)
    big_id = store.put_payload("numpy", {}, big).id
    child_obj = Blob("raw", {}, b"written by the child")

    def child():
        assert store.get(a).data == b"parent before fork"
        np.testing.assert_array_equal(store.read_payload(big_id)[1].view(np.float64), big)
        store.put(child_obj)
        store.put_payload("numpy", {}, np.arange(10.0))
        store.update_refs(lambda txn: txn.put(b"child", b"1"))
        assert store.backend._env().pid == os.getpid()

    env = store.backend._env().env

    def my_slots():
        return [line.split() for line in env.readers().splitlines()[1:] if line.split()[0] == str(os.getpid())]

    if inside_snapshot:
        with store.backend.reading() as r:
            before = my_slots()
            assert any(txnid != "-" for _, _, txnid in before)
            status = _fork(child)
            # The child left the parent's reader slots (and so its snapshot) alone.
            assert my_slots() == before
            assert r.get(a) is not None
    else:
        before = my_slots()
        status = _fork(child)
        assert my_slots() == before
    assert status == 0
    # The parent is unaffected and sees what the child wrote.
    assert store.get(object_id(child_obj)).data == b"written by the child"
    np.testing.assert_array_equal(store.read_payload(big_id)[1].view(np.float64), big)
    with store.refs() as txn:
        assert txn.get(b"child") == b"1"
    store.put(Blob("raw", {}, b"parent after fork"))
    assert _verify_all(store) == 7
    assert store.backend._env().pid == os.getpid()
    store.backend.close()


# -- readers --------------------------------------------------------------------------------

def _reader_pids(env) -> set[int]:
    """Pids holding slots in the reader table (``env.readers()``: a header, then "pid thread txnid")."""
    rows = [line.split() for line in env.readers().splitlines()[1:]]
    return {int(r[0]) for r in rows if r and r[0].isdigit()}


_READER = r"""
import sys, time
from terra.store import open_store
store = open_store(sys.argv[1])
with store.backend.reading() as r:
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_stale_reader_slot_cleared_at_open(tmp_path, python, subprocess_env):
    path = str(tmp_path / "s")
    store = open_store(path)
    store.put(Blob("raw", {}, b"x"))
    p = subprocess.Popen([python, "-c", _READER, path], env=subprocess_env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        env = store.backend._env().env
        assert p.pid in _reader_pids(env)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        assert p.pid in _reader_pids(env)  # the dead reader still holds its slot
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    store.backend.close()
    store = open_store(path)  # reopening clears it
    assert p.pid not in _reader_pids(store.backend._env().env)
    store.put(Blob("raw", {}, b"y"))
    store.backend.close()


# -- format and files --------------------------------------------------------------------

_OPEN = r"""
import sys
from terra.errors import UnsupportedFormat
from terra.store import open_store
try:
    open_store(sys.argv[1], readonly=sys.argv[2] == "ro")
except UnsupportedFormat as e:
    print("UnsupportedFormat:", e)
    sys.exit(3)
print("opened")
"""


@pytest.mark.parametrize("key,value", [(b"meta/format", str(FORMAT_VERSION + 1).encode()), (b"meta/hash", b"blake3")])
def test_newer_format_refused_and_files_untouched(tmp_path, python, subprocess_env, key, value):
    path = str(tmp_path / "s")
    store = open_store(path)
    store.put_payload("numpy", {}, np.random.default_rng(0).random(1000))
    store.update_refs(lambda txn: txn.put(key, value))
    store.backend.close()
    before = _file_digest(path), os.path.getsize(os.path.join(path, "data.mdb"))
    for mode in ("rw", "ro"):
        res = _run(python, subprocess_env, _OPEN, path, mode)
        assert res.returncode == 3, res.stdout + res.stderr
        assert "UnsupportedFormat" in res.stdout
    assert (_file_digest(path), os.path.getsize(os.path.join(path, "data.mdb"))) == before
    with pytest.raises(UnsupportedFormat) as e:
        open_store(path)
    assert isinstance(e.value, TerraError)
    assert (_file_digest(path), os.path.getsize(os.path.join(path, "data.mdb"))) == before


def test_readonly_store(tmp_path):
    path = str(tmp_path / "s")
    with pytest.raises(StoreError):
        open_store(path, readonly=True)  # nothing there
    assert not os.path.exists(path)
    store = open_store(path)
    oid = store.put(Blob("raw", {}, b"hello")).id
    store.backend.close()
    before = _file_digest(path)
    ro = open_store(path, readonly=True)
    assert ro.get(oid).data == b"hello" and list(ro.iter_ids()) == [oid]
    with pytest.raises(StoreError, match="read-only"):
        ro.put(Blob("raw", {}, b"new"))
    with pytest.raises(TerraError):
        ro.update_refs(lambda txn: txn.put(b"k", b"v"))
    assert _file_digest(path) == before
    # A writable handle in the same process replaces the read-only environment
    # (LMDB allows one per file per process); the read-only handle keeps reading.
    rw = open_store(path)
    rw.put(Blob("raw", {}, b"written"))
    assert ro.get(oid).data == b"hello" and len(list(ro.iter_ids())) == 2
    with pytest.raises(StoreError, match="read-only"):
        ro.put(Blob("raw", {}, b"still refused"))
    rw.backend.close()


def test_handles_share_one_environment_and_reopen_after_close(tmp_path):
    path = str(tmp_path / "s")
    s1, s2 = open_store(path), open_store(str(tmp_path / "." / "s"))
    assert s1.backend._env() is s2.backend._env()
    oid = s1.put(Blob("raw", {}, b"shared")).id
    s1.backend.close()
    assert s2.get(oid).data == b"shared"  # reopened transparently
    assert s1.has(oid)
    s2.backend.close()


def test_close_inside_a_snapshot_refused(tmp_path):
    store = open_store(str(tmp_path / "s"))
    oid = store.put(Blob("raw", {}, b"x")).id
    with store.backend.reading() as r:
        with pytest.raises(StoreError, match="inside a read snapshot"):
            store.backend.close()
        assert bytes(r.get(oid))  # the snapshot's buffers are still valid
    store.backend.close()
    ro = open_store(str(tmp_path / "s"), readonly=True)
    with ro.backend.reading():
        with pytest.raises(StoreError, match="inside a read snapshot"):
            open_store(str(tmp_path / "s"))
    ro.backend.close()


def test_store_is_durable_by_default(tmp_path):
    """Every commit syncs its data (integrity); durable writes also sync the meta page."""
    store = open_store(str(tmp_path / "s"))
    e = store.backend._env()
    flags = e.env.flags()
    assert flags["sync"] and not flags["metasync"] and not flags["writemap"]

    class Counting:
        def __init__(self, env):
            self.env, self.syncs = env, 0

        def sync(self, force=False):
            self.syncs += 1
            return self.env.sync(force)

        def __getattr__(self, name):
            return getattr(self.env, name)

    e.env = counting = Counting(e.env)
    try:
        store.put(Blob("raw", {}, b"durable"))
        assert counting.syncs == 1
        with store.deferred():
            store.put(Blob("raw", {}, b"deferred"))
        assert counting.syncs == 1
        store.update_refs(lambda txn: txn.put(b"k", b"v"))
        assert counting.syncs == 2
        store.update_refs(lambda txn: txn.put(b"k", b"w"), durable=False)
        store.commit([Blob("raw", {}, b"with refs")], lambda txn: txn.put(b"k", b"x"))
        assert counting.syncs == 3
    finally:
        e.env = counting.env
    with store.refs() as txn:
        assert txn.get(b"k") == b"x"
    store.backend.close()


def test_lmdb_errors_become_store_errors(tmp_path):
    store = open_store(str(tmp_path / "s"))
    with pytest.raises(StoreError):
        store.update_refs(lambda txn: txn.put(b"k" * 600, b"v"))  # LMDB keys stop at 511 bytes
    store.backend.close()


# -- filesystems ------------------------------------------------------------------------------

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 27 0:45 / /mnt/data rw,relatime shared:7 - nfs4 server:/export rw,vers=4.2,addr=10.0.0.2
32 27 0:46 / /mnt/data/local rw,relatime - ext4 /dev/vdb rw
33 27 0:47 / /srv/my\\040share rw,relatime - cifs //host/share rw
34 27 0:48 / /overlay rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b
"""


@pytest.mark.parametrize("path,fstype", [
    ("/home/me/store", "ext4"),
    ("/mnt/database/store", "ext4"),  # a sibling of the NFS mount, not inside it
    ("/mnt/data/local/store", "ext4"),  # a local disk mounted inside the NFS tree
    ("/overlay/terra", "overlay"),
])
def test_local_filesystems_pass(path, fstype):
    assert check_local_filesystem(path, MOUNTINFO) == fstype


@pytest.mark.parametrize("path", ["/mnt/data", "/mnt/data/store", "/srv/my share/x"])
def test_network_filesystems_refused(path):
    with pytest.raises(UnsupportedFilesystem) as e:
        check_local_filesystem(path, MOUNTINFO)
    assert isinstance(e.value, TerraError) and "network" in str(e.value)


def test_opening_on_nfs_refused_before_creating_anything(tmp_path, monkeypatch):
    fake = MOUNTINFO + f"40 27 0:50 / {tmp_path} rw,relatime - nfs server:/x rw\n"
    monkeypatch.setattr(_disk, "_mountinfo", lambda: fake)
    with pytest.raises(UnsupportedFilesystem):
        open_store(str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_real_mountinfo_is_local(tmp_path):
    assert check_local_filesystem(str(tmp_path)) not in _disk.NETWORK_FILESYSTEMS


def test_open_fails_cleanly_on_garbage(tmp_path):
    path = tmp_path / "s"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"not an lmdb file" * 1000)
    with pytest.raises(StoreError):
        LMDBBackend(str(path))
