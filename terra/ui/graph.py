"""A layered drawing of a lineage as SVG: producers left of consumers, edges routed around nodes.

The layout is the classic layered one (Sugiyama): a run's layer is its
longest distance from a root; an edge spanning several layers gets a
waypoint in every layer it crosses, and waypoints take a slot of their own
in that layer, so no edge is drawn through a node. Slots within a layer are
ordered by the mean position of their neighbours (a few sweeps down and up)
to keep crossings few. Straight segments then only run through the gaps
between layers or along a waypoint's own slot.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

__all__ = ["Layout", "layout", "to_svg"]

NODE_W, NODE_H, WAY_H = 180, 44, 10
GAP_X, GAP_Y, PAD = 70, 18, 12
COLORS = {"success": "#d9f2d9", "failure": "#f8d0d0", "interrupted": "#fbe3c0", "running": "#d6e6fb"}


@dataclass
class Layout:
    """Positions: ``nodes[run_id] = (x, y, w, h)``; ``edges`` as point lists from producer to consumer."""

    nodes: dict[int, tuple[float, float, float, float]]
    edges: list[tuple[int, int, list[tuple[float, float]]]]
    width: float
    height: float


def layout(runs: list[int], pairs: list[tuple[int, int]]) -> Layout:
    """Lay out ``runs`` with edges ``(producer, consumer)``; producers have smaller ids.

    Args:
        runs: the run ids to place.
        pairs: distinct (producer, consumer) pairs, both in ``runs``.
    """
    parents: dict[int, list[int]] = {r: [] for r in runs}
    for p, c in pairs:
        parents[c].append(p)
    layer = _longest_path_layers(runs, pairs)
    # Slots per layer: ("n", run) for nodes, ("w", edge index, layer) for waypoints.
    layers: dict[int, list] = {}
    for r in sorted(runs):
        layers.setdefault(layer[r], []).append(("n", r))
    chains: list[list] = []  # per edge: the slots it passes through, producer first
    for i, (p, c) in enumerate(pairs):
        chain = [("n", p)]
        for d in range(layer[p] + 1, layer[c]):
            slot = ("w", i, d)
            layers.setdefault(d, []).append(slot)
            chain.append(slot)
        chain.append(("n", c))
        chains.append(chain)
    up: dict = {}
    down: dict = {}
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            down.setdefault(a, []).append(b)
            up.setdefault(b, []).append(a)
    depth = max(layers, default=0)
    for _ in range(4):  # barycenter sweeps
        for d in range(1, depth + 1):
            _order(layers.setdefault(d, []), layers.setdefault(d - 1, []), up)
        for d in range(depth - 1, -1, -1):
            _order(layers[d], layers[d + 1], down)
    pos: dict = {}
    height = 0.0
    for d, slots in layers.items():
        y = PAD
        for s in slots:
            h = NODE_H if s[0] == "n" else WAY_H
            pos[s] = (PAD + d * (NODE_W + GAP_X), y, NODE_W, h)
            y += h + GAP_Y
        height = max(height, y - GAP_Y + PAD)
    nodes = {s[1]: pos[s] for s in pos if s[0] == "n"}
    edges = []
    for (p, c), chain in zip(pairs, chains):
        pts = []
        for k, s in enumerate(chain):
            x, y, w, h = pos[s]
            mid = y + h / 2
            if k == 0:
                pts.append((x + w, mid))
            elif k == len(chain) - 1:
                pts.append((x, mid))
            else:  # a waypoint: enter on its left, leave on its right, along its own slot
                pts += [(x, mid), (x + w, mid)]
        edges.append((p, c, pts))
    width = PAD * 2 + (depth + 1) * NODE_W + depth * GAP_X
    return Layout(nodes, edges, width, max(height, NODE_H + 2 * PAD))


def _longest_path_layers(runs: list[int], pairs: list[tuple[int, int]]) -> dict[int, int]:
    """Each run's longest distance from a root (Kahn's order; a cycle, impossible in lineage, is cut)."""
    children: dict[int, list[int]] = {r: [] for r in runs}
    indegree = {r: 0 for r in runs}
    for p, c in pairs:
        children[p].append(c)
        indegree[c] += 1
    layer = {r: 0 for r in runs}
    ready = sorted(r for r in runs if indegree[r] == 0)
    while ready:
        r = ready.pop()
        for c in children[r]:
            layer[c] = max(layer[c], layer[r] + 1)
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    return layer


def _order(slots: list, fixed: list, neighbours: dict) -> None:
    index = {s: i for i, s in enumerate(fixed)}

    def key(item):
        i, s = item
        ns = [index[n] for n in neighbours.get(s, ()) if n in index]
        return (sum(ns) / len(ns) if ns else i, i)

    slots[:] = [s for _, s in sorted(enumerate(slots), key=key)]


def to_svg(lineage, href=lambda rid: f"/run/{rid}") -> str:
    """An SVG drawing of a :class:`terra.provenance.Lineage`; each node links to ``href(run_id)``."""
    runs = list(lineage.runs)
    pairs = sorted({(e.producer, e.consumer) for e in lineage.edges
                    if e.producer in lineage.runs and e.consumer in lineage.runs})
    lay = layout(runs, pairs)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{lay.width:.0f}" '
           f'height="{lay.height:.0f}" viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" '
           'font-family="system-ui, sans-serif" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0L10,5L0,10z" fill="#666"/></marker></defs>']
    names = {}
    for e in lineage.edges:
        names.setdefault((e.producer, e.consumer), []).append(lineage.input_name(e) or e.artifact[:8])
    for p, c, pts in lay.edges:
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        label = html.escape(", ".join(sorted(set(names.get((p, c), [])))))
        out.append(f'<path class="edge" data-from="{p}" data-to="{c}" d="{d}" fill="none" stroke="#666" '
                   f'marker-end="url(#arrow)"><title>run {p} → run {c}: {label}</title></path>')
    for rid, (x, y, w, h) in lay.nodes.items():
        n = lineage.runs[rid]
        focus = ' stroke-width="2.5"' if rid == lineage.focus else ""
        out.append(f'<a href="{html.escape(href(rid))}" class="node" data-run="{rid}">'
                   f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{COLORS.get(n.status, "#eee")}" '
                   f'stroke="#333"{focus}/>'
                   f'<text x="{x + 8}" y="{y + 18}" font-weight="600">{html.escape((n.task or "?")[:24])}</text>'
                   f'<text x="{x + 8}" y="{y + 35}" fill="#444">run {rid} · {html.escape(n.status)}</text></a>')
    out.append("</svg>")
    return "".join(out)
