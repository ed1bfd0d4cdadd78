"""One rule (``terra.objects.is_inline``) decides what is held inline.

A value sits inline in a Tree entry, in a run record's inputs and in a cache
key exactly when ``is_inline`` says so; otherwise it is an object of its own
in all three places. The values tried are the ones at the rule's edges: ints
around 2**63 and 2**64, strings of 60 to 300 UTF-8 bytes (multibyte, lone
surrogates) and bytes of 250 to 260.
"""

from __future__ import annotations

import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import terra
import terra.serialize
from terra.objects import INLINE_MAX, ObjectId, Tree, is_inline

CALLS: list = []


@terra.task
def echo(a):
    CALLS.append(a)
    return 0


def _text(unit: str):
    """Strings of 60-300 UTF-8 bytes made of ``unit`` (1-4 bytes each), some with a lone surrogate."""
    width = len(unit.encode("utf-8", "surrogatepass"))
    return st.integers(60 // width, 300 // width).map(lambda n: unit * n)


edges = st.one_of(
    st.integers(-(2**63) - 3, -(2**63) + 3),
    st.integers(2**63 - 3, 2**63 + 3),
    st.integers(2**64 - 3, 2**64 + 3),
    _text("a"), _text("é"), _text("€"), _text("𝄞"),
    st.tuples(_text("a"), st.sampled_from(["\ud800", "\udfff", ""])).map("".join),
    st.integers(250, 260).map(lambda n: b"x" * n),
)


def _tree_entry(store, value):
    """The entry ``value`` gets inside a list, read back from the stored Tree."""
    tree = store.get(terra.serialize.store_value(store, [value]))
    assert isinstance(tree, Tree)
    (entry,) = tree.entries
    return entry


def test_the_rule_at_its_edges():
    assert is_inline(2**64 - 1) and not is_inline(2**64)
    assert is_inline(-(2**63)) and not is_inline(-(2**63) - 1)
    assert is_inline("a" * INLINE_MAX) and not is_inline("a" * (INLINE_MAX + 1))
    assert is_inline("€" * (INLINE_MAX // 3)) and not is_inline("€" * (INLINE_MAX // 3 + 1))
    assert not is_inline("\ud800")
    assert is_inline(b"x" * INLINE_MAX) and not is_inline(b"x" * (INLINE_MAX + 1))
    assert not is_inline(bytearray(b"x")) and not is_inline([1])


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=edges)
def test_inline_in_a_tree_a_record_and_a_cache_key_alike(store, monkeypatch, value):
    inline = is_inline(value)

    # Inside a container.
    entry = _tree_entry(store, value)
    if inline:
        assert type(entry) is type(value) and entry == value
    else:
        assert entry == ObjectId.from_hex(terra.hash(value))

    # In a cache key: the value is hashed as an object exactly when it is not inline.
    hashed = []
    real = terra.serialize.hash_value
    monkeypatch.setattr(terra.serialize, "hash_value", lambda v: hashed.append(v) or real(v))
    echo(value)
    echo(value)
    monkeypatch.undo()
    assert len(hashed) == (0 if inline else 2)
    assert CALLS.count(value) == 1  # the second call (and any later example) hits the cache

    # At the top level of the run record.
    recorded = echo.inp()["a"]
    if inline:
        assert type(recorded) is type(value) and recorded == value
    else:
        assert isinstance(recorded, terra.Artifact) and recorded.load() == value
        assert bytes(recorded.__terra_ref__) == bytes(entry)


def test_a_lone_surrogate_in_a_container_hashes_and_round_trips(store):
    value = ["\ud800", {"k": "x\udfff"}]
    oid = terra.hash(value)
    stored = terra.serialize.store_value(store, value)
    assert stored.hex() == oid
    assert terra.serialize.load_value(store, stored) == value


def test_a_lone_surrogate_hashes_the_same_in_another_process(subprocess_env):
    code = "import terra; print(terra.hash(['\\ud800', 'a' * 300, 2**64]))"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == terra.hash(["\ud800", "a" * 300, 2**64])
