"""Lineage: which runs an artifact or run came from, and what was derived from it.

Queries walk the edge indexes kept beside the runs (``edge/c/<consumer>...``
lists a run's producers, ``edge/p/<producer>...`` its consumers), so their
cost grows with the size of the lineage, not of the store. The result is a
:class:`Lineage` DAG that renders as a text tree, Graphviz DOT, Mermaid, or
SVG in a notebook.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

from . import runs as R
from .errors import CorruptRef, NotFound
from .objects import HEX_CHARS, ObjectId, Tree
from .store import Store

__all__ = ["Edge", "Lineage", "RunNode", "provenance", "resolve_ref"]


@dataclass(frozen=True, order=True)
class RunNode:
    """A run in a lineage: its id, task, status and start time (epoch seconds)."""

    run_id: int
    task: str | None
    status: str
    start_time: float | None = None


@dataclass(frozen=True, order=True)
class Edge:
    """``consumer`` took ``artifact`` (a 32-hex id), which ``producer`` output, as an input."""

    producer: int
    consumer: int
    artifact: str


def resolve_ref(ref, store: Store | None = None) -> tuple[str, int | ObjectId]:
    """What a reference names: ``("run", run_id)`` or ``("artifact", object_id)``.

    A reference is an int or a string of decimal digits (a run id), a tag
    name, an :class:`~terra.io.Artifact`, or a hex object id or unique prefix
    of at least 4 characters. All-digit strings are always run ids; write a
    longer prefix to reach an object whose id starts with digits only.

    Raises:
        NotFound: nothing matches. AmbiguousPrefix: a prefix matches several objects.
    """
    from .retention import resolve_run

    store = store or _store()
    oid = getattr(ref, "__terra_ref__", None)
    if isinstance(oid, ObjectId):
        return "artifact", oid
    if isinstance(ref, ObjectId):
        return "artifact", ref
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit() and len(ref.strip()) < HEX_CHARS):
        return "run", resolve_run(ref, store)
    if not isinstance(ref, str):
        raise NotFound(f"not a run or artifact reference: {ref!r}")
    try:
        return "run", resolve_run(ref, store)
    except NotFound:
        pass
    try:
        oid = store.resolve(ref) if len(ref) != HEX_CHARS else store.as_id(ref)
    except NotFound as e:
        if type(e) is not NotFound:  # AmbiguousPrefix
            raise
        raise NotFound(f"no run, tag or object matches {ref!r}") from None
    if not store.has(oid):
        raise NotFound(f"no object {ref}")
    return "artifact", oid


def provenance(ref, downstream: bool = False, store: Store | None = None) -> "Lineage":
    """The lineage of a run or artifact, read from the edge indexes.

    Upstream (the default) holds the run — for an artifact, the run that
    produced it — and every run it was derived from, back to the roots.
    ``downstream=True`` holds the run and every run derived from it (for an
    artifact: the runs that consumed that artifact, and everything after).

    Args:
        ref: a run id, tag name, Artifact, or object id / unique prefix.
        downstream: follow consumers instead of producers.
        store: defaults to the configured store.

    Returns:
        A :class:`Lineage`.

    Raises:
        NotFound: the reference matches nothing. AmbiguousPrefix: the prefix matches several objects.
    """
    store = store or _store()
    kind, value = resolve_ref(ref, store)
    artifact = None
    if kind == "artifact":
        artifact = ObjectId(value)
        focus = R.producer_of(store, artifact)
        hint = getattr(ref, "run_id", None)  # an Artifact knows the run it came from
        if focus is None and isinstance(hint, int):
            with store.refs() as txn:
                focus = hint if txn.get(R.k_run(hint)) is not None else None
        if focus is None:  # an input given directly, not produced by any recorded run
            return Lineage(store, {}, [], None, artifact.hex(), downstream)
    else:
        focus = int(value)
    edges: set[tuple[int, int, bytes]] = set()  # plain tuples: hashing and sorting dataclasses is slow
    seen = {focus}
    with store.refs() as txn:
        if downstream:
            frontier = []
            if artifact is not None:  # only the consumers of this artifact
                for k, _ in txn.scan(b"edge/p/" + R.rid8(focus)):
                    if k[23:] == artifact:
                        c = int.from_bytes(k[15:23], "big")
                        edges.add((focus, c, bytes(artifact)))
                        if c not in seen:
                            seen.add(c)
                            frontier.append(c)
            else:
                frontier = [focus]
            _walk(txn, frontier, seen, edges, b"edge/p/", downstream=True)
        else:
            _walk(txn, [focus], seen, edges, b"edge/c/", downstream=False)
        nodes = {rid: _node(txn, rid) for rid in seen}
    return Lineage(store, nodes, [Edge(p, c, a.hex()) for p, c, a in sorted(edges)], focus,
                   artifact.hex() if artifact else None, downstream)


def _walk(txn, frontier: list[int], seen: set[int], edges: set, prefix: bytes, downstream: bool) -> None:
    while frontier:
        rid = frontier.pop()
        for k, _ in txn.scan(prefix + R.rid8(rid)):
            other = int.from_bytes(k[15:23], "big")
            edges.add((rid, other, k[23:]) if downstream else (other, rid, k[23:]))
            if other not in seen:
                seen.add(other)
                frontier.append(other)


def _node(txn, rid: int) -> RunNode:
    try:
        raw = txn.get(R.k_run(rid))
        ref = None if raw is None else R.decode_run_ref(rid, raw)
    except CorruptRef:  # one damaged entry must not hide the rest of the lineage
        return RunNode(rid, None, "damaged")
    if ref is None:
        return RunNode(rid, None, "missing")
    return RunNode(rid, ref.get("task"), R.live_status(ref, ref), ref.get("start_time"))


_COLORS = {"success": "#d4edda", "failure": "#f8d7da", "interrupted": "#ffe5b4", "running": "#fff3cd",
           "missing": "#e2e3e5", "damaged": "#f8d7da"}


class Lineage:
    """A DAG of runs joined by the artifacts they passed on.

    Attributes:
        runs: ``{run_id: RunNode}``.
        edges: sorted :class:`Edge` list (producer, consumer, artifact).
        focus: the run asked about (the producer, when asked about an artifact).
        artifact: the artifact asked about, if any (32 hex characters).
        downstream: whether the DAG follows consumers rather than producers.
    """

    def __init__(self, store: Store, runs: dict[int, RunNode], edges: list[Edge], focus: int | None,
                 artifact: str | None, downstream: bool):
        self._store = store
        self.runs = dict(sorted(runs.items()))
        self.edges = edges
        self.focus = focus
        self.artifact = artifact
        self.downstream = downstream
        self._names: dict[tuple[int, str], str] | None = None
        # Adjacency built once, so renderings stay linear in the size of the DAG.
        self._up: dict[int, list[int]] = {}
        self._down: dict[int, list[int]] = {}
        self._by_pair: dict[tuple[int, int], list[Edge]] = {}
        for e in edges:
            pair = self._by_pair.setdefault((e.producer, e.consumer), [])
            if not pair:
                self._up.setdefault(e.consumer, []).append(e.producer)
                self._down.setdefault(e.producer, []).append(e.consumer)
            pair.append(e)

    # -- structure --------------------------------------------------------------

    @property
    def roots(self) -> list[int]:
        """Runs with no producer inside this DAG (where the lineage starts)."""
        has_parent = {e.consumer for e in self.edges}
        return [rid for rid in self.runs if rid not in has_parent]

    @property
    def leaves(self) -> list[int]:
        """Runs with no consumer inside this DAG."""
        has_child = {e.producer for e in self.edges}
        return [rid for rid in self.runs if rid not in has_child]

    def parents(self, run_id: int) -> list[int]:
        """Runs whose outputs ``run_id`` consumed (within this DAG)."""
        return sorted(self._up.get(run_id, ()))

    def children(self, run_id: int) -> list[int]:
        """Runs that consumed outputs of ``run_id`` (within this DAG)."""
        return sorted(self._down.get(run_id, ()))

    def __len__(self) -> int:
        return len(self.runs)

    def __contains__(self, run_id) -> bool:
        return run_id in self.runs

    def __iter__(self):
        return iter(self.runs.values())

    def to_dict(self) -> dict:
        """Plain data (for JSON): runs, edges, roots, focus, artifact, direction."""
        return {
            "focus": self.focus, "artifact": self.artifact,
            "direction": "downstream" if self.downstream else "upstream",
            "runs": [{"run_id": n.run_id, "task": n.task, "status": n.status, "start_time": n.start_time}
                     for n in self.runs.values()],
            "edges": [{"producer": e.producer, "consumer": e.consumer, "artifact": e.artifact,
                       "input": self.input_name(e)} for e in self.edges],
            "roots": self.roots,
        }

    # -- labels -----------------------------------------------------------------

    def input_name(self, edge: Edge) -> str | None:
        """The argument name under which the consumer received the edge's artifact, if known."""
        if self._names is None:
            self._names = self._load_names()
        return self._names.get((edge.consumer, edge.artifact))

    def _load_names(self) -> dict[tuple[int, str], str]:
        # Reads one record and its inputs tree per consumer (and containers
        # inside arguments): only done to label renderings.
        from ._walk import read_structure

        names: dict[tuple[int, str], str] = {}
        wanted: dict[int, set[str]] = {}
        for e in self.edges:
            wanted.setdefault(e.consumer, set()).add(e.artifact)
        for consumer, arts in wanted.items():
            try:
                rec = R.get_run(consumer, self._store)
                tree = read_structure(self._store, rec["inputs"]) if rec.get("inputs") is not None else None
            except Exception:  # noqa: BLE001 - labels are optional
                continue
            stack = [(name, entry) for name, entry in tree.entries] if isinstance(tree, Tree) else []
            budget = 256  # containers looked into per run, so a huge argument cannot stall a rendering
            while stack and budget:
                path, entry = stack.pop()
                if not isinstance(entry, ObjectId):
                    continue
                if entry.hex() in arts:
                    names.setdefault((consumer, entry.hex()), path)
                    continue
                budget -= 1
                try:
                    sub = read_structure(self._store, entry)
                except Exception:  # noqa: BLE001
                    continue
                if isinstance(sub, Tree) and sub.type in ("dict", "list", "tuple"):
                    items = (sub.entries if sub.type == "dict" else enumerate(sub.entries))
                    stack.extend((f"{path}.{k}" if isinstance(k, str) else f"{path}[{k}]", v) for k, v in items)
        return names

    def _label(self, producer: int, consumer: int) -> str:
        arts = self._by_pair.get((producer, consumer), [])
        return ", ".join(self.input_name(e) or e.artifact[:8] for e in arts)

    def _pairs(self) -> list[tuple[int, int]]:
        return sorted(self._by_pair)

    def _title(self, n: RunNode) -> str:
        return f"{n.task or '?'} (run {n.run_id})"

    # -- renderings ----------------------------------------------------------------

    def to_text(self) -> str:
        """A readable tree from the focus run: producers (upstream) or consumers (downstream)."""
        if self.focus is None:
            return f"artifact {self.artifact[:12]}: no recorded run produced it"
        lines: list[str] = []
        if self.artifact:
            lines.append(f"artifact {self.artifact[:12]}, output of run {self.focus}")
        done: set[int] = set()

        def line(n: RunNode) -> str:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(n.start_time)) if n.start_time else ""
            return f"run {n.run_id}  {n.task or '?'}  [{n.status}]  {when}".rstrip()

        def walk(rid: int, prefix: str) -> None:
            nxt = self.children(rid) if self.downstream else self.parents(rid)
            for i, other in enumerate(nxt):
                last = i == len(nxt) - 1
                label = self._label(rid, other) if self.downstream else self._label(other, rid)
                arrow = f"{label} →" if self.downstream else f"{label} ←"
                again = other in done
                lines.append(f"{prefix}{'└── ' if last else '├── '}{arrow} {line(self.runs[other])}"
                             + ("  (see above)" if again and (self.children(other) if self.downstream
                                                              else self.parents(other)) else ""))
                if not again:
                    done.add(other)
                    walk(other, prefix + ("    " if last else "│   "))

        lines.append(line(self.runs[self.focus]))
        done.add(self.focus)
        walk(self.focus, "")
        return "\n".join(lines)

    def to_dot(self) -> str:
        """Graphviz DOT source (``dot -Tsvg``): runs as boxes colored by status, edges labeled by input."""
        out = ["digraph lineage {", "  rankdir=LR;",
               '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
               '  edge [fontname="Helvetica", fontsize=10];']
        for n in self.runs.values():
            pen = ", penwidth=2" if n.run_id == self.focus else ""
            out.append(f'  r{n.run_id} [label="{_dot_escape(n.task or "?")}\\nrun {n.run_id} · {n.status}", '
                       f'fillcolor="{_COLORS.get(n.status, "#ffffff")}"{pen}];')
        for p, c in self._pairs():
            out.append(f'  r{p} -> r{c} [label="{_dot_escape(self._label(p, c))}"];')
        out.append("}")
        return "\n".join(out)

    def to_mermaid(self) -> str:
        """Mermaid flowchart source (renders in GitHub markdown and many notebooks)."""
        out = ["flowchart LR"]
        for n in self.runs.values():
            out.append(f'  r{n.run_id}["{_mermaid_escape(n.task or "?")}<br/>run {n.run_id} · {n.status}"]')
        for p, c in self._pairs():
            out.append(f"  r{p} -->|{_mermaid_escape(self._label(p, c))}| r{c}")
        for status in sorted({n.status for n in self.runs.values()}):
            ids = ",".join(f"r{n.run_id}" for n in self.runs.values() if n.status == status)
            out.append(f"  classDef {status} fill:{_COLORS.get(status, '#ffffff')}")
            out.append(f"  class {ids} {status}")
        return "\n".join(out)

    def to_svg(self) -> str:
        """A standalone SVG drawing, columns by depth (used for notebooks)."""
        depth = self._depths()
        cols: dict[int, list[int]] = {}
        for rid in self.runs:
            cols.setdefault(depth[rid], []).append(rid)
        w, h, gx, gy = 170, 40, 60, 18
        pos = {rid: (10 + d * (w + gx), 10 + i * (h + gy)) for d, ids in cols.items() for i, rid in enumerate(ids)}
        width = 20 + (max(cols, default=0) + 1) * (w + gx) - gx
        height = 20 + max((len(v) for v in cols.values()), default=1) * (h + gy) - gy
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 'font-family="Helvetica, Arial, sans-serif" font-size="12">',
                 '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
                 'orient="auto"><path d="M0,0L10,5L0,10z" fill="#555"/></marker></defs>']
        for p, c in self._pairs():
            (x1, y1), (x2, y2) = pos[p], pos[c]
            parts.append(f'<line x1="{x1 + w}" y1="{y1 + h / 2}" x2="{x2}" y2="{y2 + h / 2}" stroke="#555" '
                         f'marker-end="url(#a)"><title>{html.escape(self._label(p, c))}</title></line>')
        for rid, n in self.runs.items():
            x, y = pos[rid]
            stroke = 2 if rid == self.focus else 1
            parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" '
                         f'fill="{_COLORS.get(n.status, "#fff")}" stroke="#333" stroke-width="{stroke}"/>')
            parts.append(f'<text x="{x + 8}" y="{y + 16}">{html.escape((n.task or "?")[:22])}</text>')
            parts.append(f'<text x="{x + 8}" y="{y + 32}" fill="#555">run {rid} · {html.escape(n.status)}</text>')
        parts.append("</svg>")
        return "".join(parts)

    def _depths(self) -> dict[int, int]:
        """Longest distance from a root, so producers always sit left of their consumers."""
        parents = {rid: self.parents(rid) for rid in self.runs}
        depth: dict[int, int] = {}
        for rid in self.runs:  # run ids grow with time, so producers come first
            depth[rid] = 1 + max((depth.get(p, 0) for p in parents[rid]), default=-1)
        return depth

    def _repr_html_(self) -> str:
        if not self.runs:
            return f"<div>{html.escape(self.to_text())}</div>"
        head = "downstream of" if self.downstream else "lineage of"
        what = f"artifact <code>{self.artifact[:12]}</code>" if self.artifact else f"run {self.focus}"
        body = self.to_svg() if len(self.runs) <= 200 else self._html_table()
        return f"<div><b>terra {head} {what}</b> — {len(self.runs)} runs<br/>{body}</div>"

    def _html_table(self) -> str:
        rows = "".join(f"<tr><td>{n.run_id}</td><td>{html.escape(n.task or '?')}</td><td>{n.status}</td>"
                       f"<td>{', '.join(map(str, self.parents(n.run_id)))}</td></tr>" for n in self.runs.values())
        return f"<table><tr><th>run</th><th>task</th><th>status</th><th>inputs from</th></tr>{rows}</table>"

    def __repr__(self) -> str:
        what = f"artifact {self.artifact[:12]}" if self.artifact else f"run {self.focus}"
        way = "downstream" if self.downstream else "upstream"
        return f"<terra.Lineage {way} of {what}: {len(self.runs)} runs, {len(self.edges)} edges>"

    def __str__(self) -> str:
        return self.to_text()


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _mermaid_escape(s: str) -> str:
    return html.escape(s).replace("|", "&#124;")


def _store() -> Store:
    from .session import current_store

    return current_store()
