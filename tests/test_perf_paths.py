"""What the fast paths must (not) do: syncs and writes per miss, lazy imports.

No timings here (those are in ``benchmarks/``): these count LMDB write
transactions on a real store and look at ``sys.modules`` in fresh interpreters.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import terra
from terra.session import current_store
from terra.store import MemoryBackend, Store, _lmdb, hold_key
from terra.store._store import HOLD_PREFIX


class _Writes:
    """LMDB write transactions by kind: synced (main env), unsynced main env, short-lived state env."""

    def __init__(self, monkeypatch):
        self.synced = self.unsynced = self.state = 0
        orig = _lmdb.LMDBBackend._write

        def write(backend, fn, need=0, durable=True):
            if backend._volatile:
                self.state += 1
            elif durable:
                self.synced += 1
            else:
                self.unsynced += 1
            return orig(backend, fn, need, durable)

        monkeypatch.setattr(_lmdb.LMDBBackend, "_write", write)


def test_trivial_miss_is_one_synced_commit_and_two_state_writes(store, monkeypatch):
    calls = []

    @terra.task
    def g(i):
        calls.append(i)
        return i + 1

    assert g(0) == 1  # opens the store and the state environment
    writes = _Writes(monkeypatch)
    assert g(1) == 2
    # The lease and running ref (one write), the record with its objects and refs
    # (the one synced commit), the end of the run (one write); no hold of its own.
    assert (writes.synced, writes.unsynced, writes.state) == (1, 0, 2)
    assert g(1) == 2 and calls == [0, 1]  # the commit is what the hit reads
    assert (writes.synced, writes.unsynced, writes.state) == (1, 0, 2)  # a hit writes nothing


def test_state_environment_never_syncs(store):
    @terra.task
    def g(i):
        return i

    g(0)
    backend = current_store().backend
    state = backend._state_backend()
    if state is None:
        pytest.skip("no boot id here: the state shares the durable environment")
    assert state._env().env.flags()["sync"] is False
    assert backend._env().env.flags()["sync"] is True  # the durable commit keeps its fsync


def test_miss_with_stored_values_has_one_durable_commit(store, monkeypatch):
    @terra.task
    def scale(a):
        return a * 2.0

    scale(np.zeros(3))
    writes = _Writes(monkeypatch)
    x = np.arange(1000.0)
    out = scale(x)
    # Argument and result are written as they come without the meta-page sync (LMDB still flushes
    # their data pages); the final commit is the one durable commit.
    assert writes.synced == 1
    assert np.array_equal(out.load(), x * 2.0)
    assert np.array_equal(scale.inp()["a"].load(), x)


def test_commit_holds_what_it_writes_ahead_of_its_refs():
    """A backend that writes objects before the refs (here: the base one) holds them first."""
    store = Store(MemoryBackend())
    from terra.objects import Blob, object_id

    blob = Blob("raw", {}, b"x" * 100)
    seen = []

    def refs(txn):
        with store.state_refs() as st:
            seen.extend(k for k, _ in st.scan(HOLD_PREFIX))
        txn.put(b"ref/x", bytes(object_id(blob)))

    with store.holding(7):
        store.commit([blob], refs)
    assert seen == [hold_key(7, bytes(object_id(blob)))]


def _run(code: str, env) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_import_and_task_path_do_not_load_pandas_or_maintenance(tmp_path, subprocess_env):
    out = _run(f"""
        import sys
        import terra
        loaded = lambda: sorted(m for m in ("pandas", "pyarrow", "terra.gc", "terra.fsck", "terra.retention",
                                            "terra.provenance", "terra.why", "terra.query", "terra.fingerprint",
                                            "terra.environment", "terra.capture", "logging", "concurrent.futures",
                                            "socket") if m in sys.modules)
        print(loaded())
        import numpy as np
        terra.configure(storage_dir={str(tmp_path)!r}, quiet=True)

        @terra.task
        def g(i, a):
            return a * i

        g(2, np.ones(3)).load(); g(2, np.ones(3)).load()
        import terra.cli
        print(sorted(m for m in ("pandas", "pyarrow") if m in sys.modules))
    """, subprocess_env)
    assert out.splitlines() == ["[]", "[]"]


def test_lazy_public_names_resolve_to_the_functions(subprocess_env):
    out = _run("""
        import terra
        import terra.gc, terra.fsck, terra.why, terra.provenance
        names = ["gc", "fsck", "why", "provenance", "compact", "du", "rm", "tag", "untag", "select_runs",
                 "get_runs", "get_artifact", "load"]
        print(all(callable(getattr(terra, n)) and getattr(terra, n).__name__ == n for n in names))
        print(sorted(set(terra.__all__) - set(dir(terra)) - set(terra._LAZY)))
        try:
            terra.no_such_name
        except AttributeError as e:
            print(type(e).__name__)
    """, subprocess_env)
    assert out.splitlines() == ["True", "[]", "AttributeError"]


def test_import_terra_and_terra_ls_do_not_load_numpy(tmp_path, subprocess_env):
    store = str(tmp_path / "store")
    _run(f"""
        import terra
        terra.configure(storage_dir={store!r}, quiet=True)

        @terra.task
        def g(i):
            return {{"i": i, "name": "x" * 300}}

        for i in range(3):
            g(i)
    """, subprocess_env)
    out = _run(f"""
        import sys
        import terra
        print("numpy" in sys.modules)
        from terra.cli import main
        try:
            main(["--store", {store!r}, "ls"])
        except SystemExit as e:
            assert not e.code, e.code
        print("numpy" in sys.modules)
    """, subprocess_env)
    lines = out.splitlines()
    assert lines[0] == "False" and lines[-1] == "False", out
    assert "g" in out
