"""Task.map on Ray through terra.executors.RayExecutor (skipped when Ray is not installed)."""

from __future__ import annotations

import os
import sys

import pytest

import terra

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _parallel_tasks import REFUSED, Counting, produce, scale  # noqa: E402


@pytest.fixture
def ray_executor(store, subprocess_env):
    from terra.executors import RayExecutor

    env = {"PYTHONPATH": HERE + os.pathsep + subprocess_env["PYTHONPATH"],
           "TERRA_CONFIG_OVERRIDES": os.environ["TERRA_CONFIG_OVERRIDES"]}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    ex = RayExecutor()
    yield ex
    ex.shutdown()
    ray.shutdown()


def test_map_on_ray(ray_executor):
    arts = produce.map(range(20))
    c = Counting(ray_executor)
    out = scale.map(arts, [2] * 20, executor=c)
    assert [v.load().tolist() for v in out] == [[2 * i] * 3 for i in range(20)] and c.n == 20
    assert scale.map(arts, [2] * 20, executor=c) == out and c.n == 20  # 20 hits, nothing submitted
    with pytest.raises(ValueError, match="refused"):
        scale.map(arts, [REFUSED] + [3] * 19, executor=c)
    runs = terra.get_runs(task="_parallel_tasks:scale")
    assert sorted(runs["status"]).count("failure") == 1 and len(runs) == 40
