"""Shared fixtures: kept small and generic; suites add their own next to their tests."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Timing is not what these properties test: a slow CI machine must not fail them.
settings.register_profile("terra", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("terra")

# Subprocess tests run helper code that imports terra from this checkout.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The pickle-signing key of the test session (and of its subprocesses, which
# inherit the environment): never the user's real key in ~/.config.
_KEY_DIR = tempfile.mkdtemp(prefix="terra-test-key-")
os.environ["TERRA_PICKLE_KEY"] = os.path.join(_KEY_DIR, "pickle.key")
atexit.register(shutil.rmtree, _KEY_DIR, True)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator, so failures reproduce."""
    return np.random.default_rng(12345)


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for a child ``python`` that imports terra from this checkout."""
    env = dict(os.environ)
    env.pop("TERRA_CONFIG_OVERRIDES", None)  # settings of the test process are not the child's
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture
def python() -> str:
    """The interpreter running the tests, for subprocesses."""
    return sys.executable


@pytest.fixture(autouse=True)
def _never_the_home_store(tmp_path_factory):
    """A test that forgets to choose a store writes to a temporary one, never to ~/.terra."""
    import terra

    terra.configure(storage_dir=str(tmp_path_factory.getbasetemp() / "default-store"))
    yield


# -- a terra store with runs, for the lineage, gc and fsck suites ------------------------


@pytest.fixture
def store(tmp_path):
    """A fresh store made current (quiet); suites with other needs define their own."""
    import terra
    from terra.session import current_store

    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True)
    yield current_store()
    terra.configure(quiet=False)


@pytest.fixture
def iris(store):
    """Runs 1-4 of the demo pipeline and the artifacts passed between them."""
    import terra
    from terra import demo

    data = demo.download_iris(demo.IRIS_CSV)
    splits = demo.split_data(df=data, train_frac=0.7)
    model = demo.train(data, splits["train"])
    demo.evaluate(data, splits["test"], model)
    assert [demo.download_iris.last_run_id, demo.split_data.last_run_id, demo.train.last_run_id,
            demo.evaluate.last_run_id] == [1, 2, 3, 4]
    return {"data": data.id, "train": splits["train"].id, "test": splits["test"].id,
            "weights": model["weights"].id, "metrics": terra.get_run(4)["output"].hex()}
