"""A run on another host stays "running" for as long as it renews its lease; rm and gc leave it alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import terra
from terra import runs as R
from terra.retention import RemovalRefused

# A holder that reports another hostname: only its renewed expiry tells this
# process that it is alive (its pid means nothing here).
ELSEWHERE = r'''
import os, sys, time
import numpy as np
import terra
from terra import runs as R
R.HOST = "another-host.example"
terra.configure(storage_dir=sys.argv[1], quiet=True, lease_seconds=float(sys.argv[3]))

@terra.task(cache=%s)
def long_job(x):
    print("started", flush=True)
    deadline = time.time() + 120
    while not os.path.exists(sys.argv[2]) and time.time() < deadline:
        time.sleep(0.02)
    return float(x.sum())

print(long_job(np.arange(10_000.0)), flush=True)
'''


@pytest.mark.parametrize("cache", [True, False])
def test_live_run_on_another_host_is_not_declared_interrupted(store, tmp_path, subprocess_env, cache):
    lease = 0.6
    go = tmp_path / "go"
    p = subprocess.Popen([sys.executable, "-c", ELSEWHERE % cache, store.root, str(go), str(lease)],
                         env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "started"
        ref = R.run_ref(store, 1)
        assert ref["host"] == "another-host.example" and ref["status"] == "running"
        first_expiry = ref["expires"]
        # Wait past several lease periods: the entry must have been renewed meanwhile.
        while time.time() < first_expiry + 3 * lease:
            time.sleep(0.05)
        ref = R.run_ref(store, 1)
        assert ref["expires"] > first_expiry + 2 * lease
        assert terra.get_run(1)["status"] == "running"
        assert terra.select_runs() == []
        with pytest.raises(RemovalRefused, match="still running"):
            terra.rm(1)
        terra.gc(grace_period=0)  # its stored input survives
        assert terra.fsck().running == [1]
    finally:
        go.touch()
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert float(out.split()[-1]) == np.arange(10_000.0).sum()
    assert terra.get_run(1)["status"] == "success"
    np.testing.assert_array_equal(terra.inp(1)["x"].load(), np.arange(10_000.0))
    assert terra.fsck().ok
