"""How two stored values differ, for the compare view: arrays, frames, dicts."""

from __future__ import annotations

__all__ = ["describe_diff"]


def describe_diff(va, vb) -> str:
    """A one-line description of how ``vb`` differs from ``va``."""
    ma, mb = type(va).__module__.split(".")[0], type(vb).__module__.split(".")[0]
    if ma == mb == "numpy" and hasattr(va, "shape") and hasattr(vb, "shape"):
        import numpy as np

        if va.shape != vb.shape or va.dtype != vb.dtype:
            return f"shape/dtype {va.shape} {va.dtype} → {vb.shape} {vb.dtype}"
        if va.dtype.kind in "biufc":
            diff = np.abs(va.astype(np.float64) - vb.astype(np.float64)) if va.dtype.kind != "c" else np.abs(va - vb)
            worst = float(np.nanmax(diff)) if diff.size else 0.0
            return f"max abs diff {worst:.6g}; {int((va != vb).sum()):,} elements differ"
        return f"{int((va != vb).sum()):,} elements differ"
    if ma == mb == "pandas" and hasattr(va, "columns") and hasattr(vb, "columns"):
        sa = {c: str(t) for c, t in va.dtypes.items()}
        sb = {c: str(t) for c, t in vb.dtypes.items()}
        bits = []
        added, removed = [c for c in sb if c not in sa], [c for c in sa if c not in sb]
        changed = [c for c in sa if c in sb and sa[c] != sb[c]]
        if added:
            bits.append("columns added: " + ", ".join(map(str, added)))
        if removed:
            bits.append("columns removed: " + ", ".join(map(str, removed)))
        if changed:
            bits.append("dtype changed: " + ", ".join(f"{c} {sa[c]}→{sb[c]}" for c in changed))
        if va.shape[0] != vb.shape[0]:
            bits.append(f"rows {va.shape[0]:,} → {vb.shape[0]:,}")
        common = [c for c in sa if c in sb]
        if va.shape[0] == vb.shape[0] and common:
            x, y = va[common].reset_index(drop=True), vb[common].reset_index(drop=True)
            rows = int((~((x == y) | (x.isna() & y.isna()))).any(axis=1).sum())
            bits.append(f"{rows:,} of {va.shape[0]:,} rows changed")
        return "; ".join(bits) or "same schema and rows (index or metadata differ)"
    if isinstance(va, dict) and isinstance(vb, dict):
        added = [k for k in vb if k not in va]
        removed = [k for k in va if k not in vb]
        changed = [k for k in va if k in vb and not _equal(va[k], vb[k])]
        bits = []
        if added:
            bits.append("keys added: " + ", ".join(map(str, added)))
        if removed:
            bits.append("keys removed: " + ", ".join(map(str, removed)))
        if changed:
            bits.append("changed: " + ", ".join(map(str, changed)))
        return "; ".join(bits) or "same keys and values"
    if isinstance(va, str) and isinstance(vb, str):
        return f"text of {len(va):,} → {len(vb):,} characters"
    return f"{type(va).__name__} → {type(vb).__name__}" if type(va) is not type(vb) else "values differ"


def _equal(x, y) -> bool:
    try:
        r = x == y
        return bool(r.all()) if hasattr(r, "all") else bool(r)
    except Exception:  # noqa: BLE001 - incomparable counts as different
        return False
