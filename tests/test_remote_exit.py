"""A process that used a remote exits cleanly: no obstore (tokio) thread is left inside Python
when the interpreter finalizes. Such a thread is pthread_exit'ed by CPython as it retakes the
GIL, the unwind cannot cross Rust frames, and glibc aborts the process (SIGABRT, empty stderr)
after the push or pull itself succeeded. Real subprocesses, counted exits."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

# Transfers through the remote client, checked, then an immediate exit. With SLOW set, any
# event loop's call_soon_threadsafe lingers in Python after waking the loop when called from a
# thread other than the main one: the window the scheduler opens under load, made wide.
CHILD = r'''
import asyncio, os, sys, threading, time

if os.environ.get("SLOW"):
    class _Loop(asyncio.SelectorEventLoop):
        def call_soon_threadsafe(self, *a, **kw):
            h = super().call_soon_threadsafe(*a, **kw)
            if threading.current_thread() is not threading.main_thread():
                time.sleep(0.2)
            return h

    class _Policy(asyncio.DefaultEventLoopPolicy):
        _loop_factory = _Loop

    asyncio.set_event_loop_policy(_Policy())

from terra.remote.client import Client

c = Client("memory://")
n = int(sys.argv[1])
items = [(f"o/{i}", os.urandom(64)) for i in range(n)]
assert c.create_many(items) == [True] * n
assert c.create_many(items[:8]) == [False] * 8  # create-only: already there
assert c.get_many([p for p, _ in items] + ["o/absent"]) == [d for _, d in items] + [None]
print("ok", flush=True)
'''


def _exits(python, env, tmp_path, runs: int, parallel: int, **extra) -> list[tuple[int, str, str]]:
    path = tmp_path / "child.py"
    path.write_text(CHILD)

    def one(_):
        p = subprocess.run([python, str(path), "200"], capture_output=True, text=True, timeout=120,
                           env={**env, **extra})
        return p.returncode, p.stdout, p.stderr

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(runs)))


def _abnormal(results):
    return [r for r in results if r[0] != 0 or r[1].strip() != "ok"]


def test_no_remote_thread_is_inside_python_when_the_process_exits(python, subprocess_env, tmp_path):
    # Deterministic on the old async client: every run aborted (-6) after printing "ok".
    results = _exits(python, subprocess_env, tmp_path, runs=3, parallel=3, SLOW="1")
    assert _abnormal(results) == [], results


def test_remote_children_under_load_all_exit_cleanly(python, subprocess_env, tmp_path):
    results = _exits(python, subprocess_env, tmp_path, runs=8, parallel=4)
    assert _abnormal(results) == [], results


@pytest.mark.soak
def test_remote_children_under_load_all_exit_cleanly_soak(python, subprocess_env, tmp_path):
    results = _exits(python, subprocess_env, tmp_path, runs=400, parallel=8)
    assert _abnormal(results) == [], f"{len(_abnormal(results))} abnormal exits of {len(results)}: {results[:3]}"
