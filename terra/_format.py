"""Small text formatting shared by reprs, reports and the CLI."""

from __future__ import annotations


def human_size(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def flatten(value, path: str = "") -> list[tuple[str, object]]:
    """A returned structure as ``(path, leaf)`` pairs: ``model.weights``, ``splits[0]``..."""
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in flatten(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [kv for i, v in enumerate(value) for kv in flatten(v, f"{path}[{i}]")]
    return [(path or "(output)", value)]
