"""Fixtures the value-serialization suites share; a module imports the ones it uses."""

from __future__ import annotations

import pytest

from terra.store import MemoryBackend, Store, open_store


@pytest.fixture(name="store", params=["lmdb", "memory"])
def backend_store(request, tmp_path):
    """A bare object store, once on LMDB and once in memory."""
    if request.param == "lmdb":
        s = open_store(str(tmp_path / "store"))
        yield s
        s.backend.close()
    else:
        yield Store(MemoryBackend())


@pytest.fixture(autouse=True)
def fresh_pickle_warnings():
    """Each type warns once per process; tests that expect the warning need a clean slate."""
    from terra.serialize.codecs import pandas as pd_codec
    from terra.serialize.codecs import pickle as pk

    pk._warned.clear()
    pd_codec._warned.clear()
