"""Codecs register through one explicit table (``terra.serialize.codecs.TABLE``).

Importing a codec module declares what it provides and registers nothing; the
encoder installs the table on first use, and finders are tried in its order.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import terra
from terra.serialize import _encode, codecs, registry

MODULES = ["terra.serialize._files", "terra.serialize._user"] + [
    f"terra.serialize.codecs.{m}" for m in ("builtins", "numpy", "pandas", "torch", "figure", "pickle")]

COUNT_TABLES = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from terra.serialize import _encode, registry
print(json.dumps([len(_encode.FINDERS), len(_encode.EXACT), len(registry.BLOB_DECODERS),
                  len(registry.TREE_DECODERS), len(registry.SUMMARIZERS)]))
"""


def _table_sizes(subprocess_env, *modules) -> list[int]:
    out = subprocess.run([sys.executable, "-c", COUNT_TABLES, *modules], env=subprocess_env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_importing_codec_modules_registers_nothing(subprocess_env):
    for name in MODULES:
        assert _table_sizes(subprocess_env, name) == [0, 0, 0, 0, 0], name
    assert _table_sizes(subprocess_env, "terra.serialize.codecs", *MODULES) == [0, 0, 0, 0, 0]


def test_first_use_installs_the_whole_table(subprocess_env):
    sizes = _table_sizes(subprocess_env, "terra")  # nothing used yet
    assert sizes == [0, 0, 0, 0, 0]
    code = COUNT_TABLES.replace("from terra.serialize", "import terra; terra.hash(1)\nfrom terra.serialize")
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == [
        sum(c.finder is not None for c in codecs.TABLE),
        sum(len(c.exact) + len(c.containers) for c in codecs.TABLE),
        sum(len(c.blobs) for c in codecs.TABLE),
        sum(len(c.trees) for c in codecs.TABLE),
        sum(len(c.summaries) for c in codecs.TABLE),
    ]


def test_dispatch_order_is_the_table_order():
    terra.hash(0)  # installs the table
    assert _encode.FINDERS == [c.finder for c in codecs.TABLE if c.finder is not None]
    modules = [f.__module__.rsplit(".", 1)[-1] for f in _encode.FINDERS]
    assert modules == ["_files", "_user", "numpy", "pandas", "torch", "figure", "builtins", "pickle"]
    for c in codecs.TABLE:
        for name, fn in c.blobs.items():
            assert registry.BLOB_DECODERS[name] is fn
        for name, fn in c.trees.items():
            assert registry.TREE_DECODERS[name] is fn


def test_installing_a_codec_that_takes_a_taken_name_is_refused():
    terra.hash(0)
    clash = registry.Codec(finder=lambda enc, v: None, blobs={"numpy": lambda dec, blob, payload: None,
                                                              "fresh": lambda dec, blob, payload: None})
    with pytest.raises(ValueError, match="numpy"):
        _encode.install(clash)
    assert "fresh" not in registry.BLOB_DECODERS and clash.finder not in _encode.FINDERS
    assert registry.BLOB_DECODERS["numpy"] is codecs.numpy.PROVIDES.blobs["numpy"]
