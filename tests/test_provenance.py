"""Lineage of the iris pipeline from the edge indexes, its renderings, and terra.why."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap

import numpy as np
import pytest

import terra
from terra import demo
from terra.errors import AmbiguousPrefix, NotFound
from terra.provenance import Edge


def _edges(iris, *pairs):
    art = {(1, 2): "data", (1, 3): "data", (1, 4): "data", (2, 3): "train", (2, 4): "test", (3, 4): "weights"}
    return [Edge(p, c, iris[art[(p, c)]]) for p, c in sorted(pairs)]


ALL = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]


def test_upstream_of_the_metrics(iris):
    dag = terra.provenance(4)
    assert list(dag.runs) == [1, 2, 3, 4]
    assert [dag.runs[r].task for r in dag.runs] == ["download_iris", "split_data", "train", "evaluate"]
    assert all(n.status == "success" for n in dag)
    assert dag.edges == _edges(iris, *ALL)
    assert dag.roots == [1] and dag.leaves == [4] and dag.focus == 4
    assert dag.parents(4) == [1, 2, 3] and dag.children(1) == [2, 3, 4]
    # the same lineage from the artifact itself, by full id and by prefix
    assert terra.provenance(iris["metrics"]).edges == dag.edges
    assert terra.provenance(iris["weights"][:10]).runs.keys() == {1, 2, 3}


def test_upstream_of_inner_runs(iris):
    dag = terra.provenance(3)
    assert list(dag.runs) == [1, 2, 3]
    assert dag.edges == _edges(iris, (1, 2), (1, 3), (2, 3))
    one = terra.provenance(1)
    assert list(one.runs) == [1] and one.edges == [] and one.roots == [1]


def test_downstream(iris):
    dag = terra.provenance(1, downstream=True)
    assert list(dag.runs) == [1, 2, 3, 4] and dag.edges == _edges(iris, *ALL)
    assert dag.roots == [1]
    dag = terra.provenance(2, downstream=True)
    assert list(dag.runs) == [2, 3, 4]
    assert dag.edges == _edges(iris, (2, 3), (2, 4), (3, 4))
    # from one artifact: only the runs that consumed it, and what followed
    dag = terra.provenance(iris["test"], downstream=True)
    assert list(dag.runs) == [2, 4] and dag.edges == _edges(iris, (2, 4))
    assert dag.artifact == iris["test"] and dag.focus == 2
    assert list(terra.provenance(4, downstream=True).runs) == [4]


def test_consumers_of_a_run_and_of_one_output(iris, store):
    from terra.listing import consumers
    from terra.objects import ObjectId

    assert consumers(store, 1) == [2, 3, 4] and consumers(store, 2) == [3, 4] and consumers(store, 4) == []
    assert consumers(store, 2, ObjectId.from_hex(iris["test"])) == [4]
    assert consumers(store, 2, ObjectId.from_hex(iris["train"])) == [3]
    assert consumers(store, 1, ObjectId.from_hex(iris["weights"])) == []  # not one of run 1's outputs


def test_shared_runs_across_pipelines(iris):
    # A second pipeline reuses the cached download (run 1) and adds runs 5-7.
    data = demo.download_iris(demo.IRIS_CSV)
    splits = demo.split_data(df=data, train_frac=0.5)
    model = demo.train(data, splits["train"])
    demo.evaluate(data, splits["test"], model)
    assert demo.evaluate.last_run_id == 7
    assert list(terra.provenance(7).runs) == [1, 5, 6, 7]
    assert list(terra.provenance(1, downstream=True).runs) == [1, 2, 3, 4, 5, 6, 7]
    # the demo's own pipeline() is served from the cache: same lineage
    demo.pipeline()
    assert list(terra.provenance(4).runs) == [1, 2, 3, 4]


def test_renderings(iris):
    dag = terra.provenance(4)
    dot = dag.to_dot()
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    dot_edges = set(re.findall(r"r(\d+) -> r(\d+) \[label=\"([^\"]*)\"\]", dot))
    assert dot_edges == {("1", "2", "df"), ("1", "3", "df"), ("1", "4", "df"), ("2", "3", "mask"),
                         ("2", "4", "mask"), ("3", "4", "model.weights")}
    assert set(re.findall(r"^  r(\d+) \[label=\"(\w+)", dot, re.M)) == {
        ("1", "download_iris"), ("2", "split_data"), ("3", "train"), ("4", "evaluate")}
    mer = dag.to_mermaid()
    assert mer.splitlines()[0] == "flowchart LR"
    assert set(re.findall(r"r(\d+) -->\|([^|]*)\| r(\d+)", mer)) == {
        ("1", "df", "2"), ("1", "df", "3"), ("1", "df", "4"), ("2", "mask", "3"), ("2", "mask", "4"),
        ("3", "model.weights", "4")}
    assert 'r3["train<br/>run 3 · success"]' in mer
    text = dag.to_text()
    assert text.splitlines()[0].startswith("run 4  evaluate  [success]")
    assert "model.weights ← run 3  train" in text and "df ← run 1  download_iris" in text
    html = dag._repr_html_()
    assert "<svg" in html and html.count("<rect") == 4 and html.count("<line") == 6
    d = dag.to_dict()
    assert d["roots"] == [1] and len(d["edges"]) == 6 and {e["input"] for e in d["edges"]} == {
        "df", "mask", "model.weights"}
    down = terra.provenance(2, downstream=True).to_text()
    assert "mask → run 3  train" in down and "mask → run 4  evaluate" in down


def test_queries_use_the_edge_indexes_only(iris, store, monkeypatch):
    scanned = []
    real = store.backend.refs

    class Spy:
        def __init__(self, txn):
            self.txn = txn

        def get(self, key):
            return self.txn.get(key)

        def scan(self, prefix, reverse=False):
            scanned.append(prefix)
            return self.txn.scan(prefix, reverse)

    from contextlib import contextmanager

    @contextmanager
    def spy_refs():
        with real() as txn:
            yield Spy(txn)

    monkeypatch.setattr(store.backend, "refs", spy_refs)
    terra.provenance(4)
    terra.provenance(1, downstream=True)
    assert scanned and all(p[:7] in (b"edge/c/", b"edge/p/") and len(p) == 15 for p in scanned)


def test_bad_references(iris, store):
    with pytest.raises(NotFound):
        terra.provenance(99)
    with pytest.raises(NotFound):
        terra.provenance("no-such-tag")
    with pytest.raises(NotFound):
        terra.provenance("ffffffffffff")
    # two objects sharing a 4-hex prefix make that prefix ambiguous
    ids = sorted(o.hex() for o in store.iter_ids())
    pair = next(((a, b) for a, b in zip(ids, ids[1:]) if a[:4] == b[:4]), None)
    if pair is None:
        from terra.objects import Blob

        seen = {}
        for i in range(5000):
            oid = store.put(Blob("raw", {}, b"%d" % i)).id.hex()
            if oid[:4] in seen:
                pair = (seen[oid[:4]], oid)
                break
            seen[oid[:4]] = oid
    with pytest.raises(AmbiguousPrefix):
        terra.provenance(pair[0][:4])


def test_tag_names_resolve(iris):
    terra.tag(3, "best")
    assert terra.provenance("best").focus == 3


def test_artifact_without_producer(store):
    from terra.serialize import store_value

    oid = store_value(store, list(range(1000)))
    dag = terra.provenance(oid.hex())
    assert len(dag) == 0 and dag.focus is None and "no recorded run" in dag.to_text()


# -- why ---------------------------------------------------------------------------

MODULE = '''
import terra

def helper(x):
    {helper_body}

@terra.task
def step(x, k=1):
    return helper(x) * k
'''


@pytest.fixture
def make_module(store, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def make(helper_body="return x + 1"):
        (tmp_path / "whymod.py").write_text(textwrap.dedent(MODULE.format(helper_body=helper_body)))
        sys.modules.pop("whymod", None)
        importlib.invalidate_caches()
        return importlib.import_module("whymod")

    yield make
    sys.modules.pop("whymod", None)


def test_why_names_arguments_and_code(make_module):
    m = make_module()
    m.step(1)  # run 1
    first = terra.why(1)
    assert first.baseline is None and "first recorded run" in str(first)
    m.step(1, k=3)  # run 2: an argument changed
    w = terra.why(2)
    assert w.baseline == 1 and [(a.name, a.before, a.after) for a in w.args] == [("k", "1", "3")]
    assert w.code_changed == [] and "arguments k changed" in w.reason
    assert "~ argument k: 1 -> 3" in str(w)
    m = make_module("return x + 2")
    m.step(1, k=3)  # run 3: same arguments as run 2, helper edited
    w = terra.why(3)
    assert w.baseline == 2 and w.args == []
    assert w.code_changed == ["whymod.helper"] and "the code changed" in w.reason
    m.step(np.arange(300), k=1)  # run 4: a stored (non-inline) argument
    w = terra.why(4)
    assert w.baseline == 3 and {a.name for a in w.args} == {"x", "k"}
    x = next(a for a in w.args if a.name == "x")
    assert x.before == "1" and x.after.endswith("(numpy.ndarray 300)")


def test_why_explains_a_forced_rerun(make_module):
    m = make_module()
    m.step(2)
    m.step(2, force=True)
    w = terra.why(2)
    assert w.baseline == 1 and w.same_key and not w.args and "forced" in w.reason
