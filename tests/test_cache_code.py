"""Code fingerprints: helper edits invalidate, comments and docstrings do not, version= pins."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

import terra

MODULE = '''
import terra
from terra import Task

CALLS = []
SCALE = {scale}

def helper(x):
    {helper_body}

@Task
def job(x):
    """{doc}"""
    # {comment}
    CALLS.append(x)
    return helper(x) * SCALE

@terra.task(version="{version}")
def pinned(x):
    CALLS.append(("pinned", x))
    return helper(x)
'''


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True)
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(scale=1, helper_body="return x + 1", doc="doc", comment="c", version="1"):
        (tmp_path / "usermod.py").write_text(textwrap.dedent(MODULE.format(
            scale=scale, helper_body=helper_body, doc=doc, comment=comment, version=version)))
        sys.modules.pop("usermod", None)
        importlib.invalidate_caches()
        return importlib.import_module("usermod")

    yield make
    sys.modules.pop("usermod", None)
    terra.configure(quiet=False)


def test_code_changes(make_module):
    m = make_module()
    assert m.job(1) == 2 and len(m.CALLS) == 1
    m = make_module(doc="another docstring", comment="another comment")
    assert m.job(1) == 2 and m.CALLS == []  # hit: a new module object, no call
    m = make_module(helper_body="return x + 2")
    assert m.job(1) == 3 and m.CALLS == [1]  # helper edited: miss
    m = make_module(helper_body="return x + 2", scale=10)
    assert m.job(1) == 30 and m.CALLS == [1]  # module constant edited: miss


def test_version_pins(make_module):
    m = make_module()
    assert m.pinned(1) == 2 and len(m.CALLS) == 1
    m = make_module(helper_body="return x + 5")
    assert m.pinned(1) == 2 and m.CALLS == []  # pinned: the stale result is served by request
    m = make_module(helper_body="return x + 5", version="2")
    assert m.pinned(1) == 6 and len(m.CALLS) == 1


def test_notebook_redefinition_invalidates(make_module):
    m = make_module()
    m.job(3)
    m.CALLS.clear()
    m.helper = lambda x: x * 100  # rebinding a global in place, as a notebook cell does
    assert m.job(3) == 300 and m.CALLS == [3]
