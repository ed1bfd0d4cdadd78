"""Previews of stored values for people to look at (notebooks, ``terra ui``), never by unpickling.

A value is loaded for a preview only when every object it is made of is
decoded by a data-only codec (arrays, Arrow frames, strings, bytes,
builtin numbers, plain containers, a figure's PNG). A pickle anywhere
inside, a class path (dataclass, enum...) or a user codec makes it
"pickled object, not previewed": rendering a page must never run code
stored by somebody else.
"""

from __future__ import annotations

import html
import math

from .objects import Blob, Chunked, ObjectId, Tree

__all__ = ["SAFE_BLOBS", "SAFE_TREES", "kind_of", "preview_html", "safe_to_load", "value_html"]

SAFE_BLOBS = frozenset({"py", "str", "bytes", "numpy", "numpy.scalar", "arrow.buffer", "arrow.schema", "png",
                        "file"})
SAFE_TREES = frozenset({"dict", "list", "tuple", "set", "frozenset", "OrderedDict", "Counter", "pandas",
                        "pandas.v2", "pandas.attrs", "arrow.array", "dir"})
MAX_OBJECTS = 20_000  # a structure bigger than this is summarized, not walked
MAX_PREVIEW_BYTES = 256 << 20


def kind_of(store, oid: ObjectId) -> str:
    """``"figure"``, ``"safe"`` (data-only, may be loaded), ``"pickle"`` or ``"large"``."""
    top = store.get(oid)
    if isinstance(top, Tree) and top.type == "figure":
        return "figure"
    stack, seen = [top], 0
    while stack:
        obj = stack.pop()
        seen += 1
        if seen > MAX_OBJECTS:
            return "large"
        if isinstance(obj, Tree):
            if obj.type not in SAFE_TREES:
                return "pickle"
            for e in obj.entries:
                for x in (e if isinstance(e, tuple) else (e,)):
                    if isinstance(x, ObjectId):
                        stack.append(store.get(x))
        elif isinstance(obj, (Blob, Chunked)):
            if obj.codec not in SAFE_BLOBS:
                return "pickle"
    return "safe"


def safe_to_load(store, oid: ObjectId) -> bool:
    """Whether loading ``oid`` runs no stored code (see the module docstring)."""
    return kind_of(store, oid) == "safe"


def preview_html(art, figure_src=None) -> str:
    """An HTML preview of an Artifact: frame head, array stats, figure image, text, or a summary.

    Args:
        art: the :class:`terra.Artifact`.
        figure_src: ``figure_src(art) -> str``, the image URL of a figure; by default the PNG
            is embedded as a ``data:`` URL (for notebooks).
    """
    from .serialize import summarize

    store, oid = art.store, art.__terra_ref__
    try:
        summary = summarize(store, oid)
        kind = kind_of(store, oid)
    except Exception as e:  # noqa: BLE001 - a page shows what is wrong instead of failing
        return f'<p class="bad">unreadable: {html.escape(type(e).__name__)}: {html.escape(str(e))}</p>'
    if kind == "figure":
        return f'<img class="figure" alt="figure {art.id[:12]}" src="{html.escape((figure_src or _data_url)(art))}"/>'
    if kind == "pickle":
        return f'<p class="muted">pickled object, not previewed ({html.escape(str(summary.get("type", "?")))})</p>'
    if kind == "large" or (summary.get("nbytes") or 0) > MAX_PREVIEW_BYTES:
        return f'<p class="muted">too large to preview ({html.escape(_summary_text(summary))})</p>'
    try:
        value = art.load()
    except Exception as e:  # noqa: BLE001
        return f'<p class="bad">cannot load: {html.escape(type(e).__name__)}: {html.escape(str(e))}</p>'
    return value_html(value)


def _data_url(art) -> str:
    import base64

    from .serialize import figure_png

    return "data:image/png;base64," + base64.b64encode(figure_png(art.store, art.__terra_ref__)).decode()


def value_html(value) -> str:
    """HTML for a loaded, data-only value."""
    mod = type(value).__module__.split(".")[0]
    if mod == "pandas" and hasattr(value, "head"):
        frame = value.to_frame() if hasattr(value, "to_frame") else value
        head = frame.head(10).to_html(classes="frame", border=0, max_cols=30)
        return f"<p>{type(value).__name__} {frame.shape[0]} rows × {frame.shape[1]} columns</p>{head}"
    if mod == "numpy" and hasattr(value, "shape"):
        return _array_html(value)
    if isinstance(value, str):
        more = f"<p class=muted>… {len(value) - 5000} more characters</p>" if len(value) > 5000 else ""
        return f"<pre>{html.escape(value[:5000])}</pre>{more}"
    if isinstance(value, (bytes, bytearray)):
        return f"<p>{len(value)} bytes</p><pre>{html.escape(bytes(value[:256]).hex(' '))}</pre>"
    text = repr(value)
    return f"<pre>{html.escape(text[:5000] + ('…' if len(text) > 5000 else ''))}</pre>"


def _array_html(a) -> str:
    import numpy as np

    rows = [("shape", " × ".join(map(str, a.shape)) or "scalar"), ("dtype", str(a.dtype)), ("size", f"{a.size:,}")]
    if a.size and a.dtype.kind in "biuf":
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        if finite.size:
            rows += [("min", _num(finite.min())), ("max", _num(finite.max())), ("mean", _num(finite.mean())),
                     ("std", _num(finite.std()))]
        if a.dtype.kind == "f":
            rows.append(("NaN", f"{int(np.isnan(a).sum()):,}"))
    elif a.size and a.dtype.kind == "b":
        rows.append(("true", f"{int(a.sum()):,}"))
    body = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    sample = np.array2string(a.reshape(-1)[:20] if a.ndim else a, threshold=20, edgeitems=5)
    return f'<table class="kv">{body}</table><pre>{html.escape(sample)}</pre>'


def _num(x) -> str:
    x = float(x)
    return f"{x:.6g}" if math.isfinite(x) else str(x)


def _summary_text(s: dict) -> str:
    bits = [str(s.get("type", "?"))]
    if s.get("shape") is not None:
        bits.append("×".join(map(str, s["shape"])))
    if s.get("nbytes") is not None:
        from ._format import human_size

        bits.append(human_size(s["nbytes"]))
    return " ".join(bits)
