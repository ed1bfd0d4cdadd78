"""Artifact: a handle on one stored value."""

from __future__ import annotations

import html
from typing import Any, Union

from .objects import ObjectId
from ._format import human_size as _size
from .session import store_at

__all__ = ["Artifact", "TaskOutput"]

#: What calling a task returns: an :class:`Artifact` for a stored value, the value
#: itself when it is kept inline (None, bools, numbers, short strings), or the
#: returned container (dict, list, tuple) with such leaves.
TaskOutput = Union["Artifact", dict[Any, Any], list[Any], tuple[Any, ...], int, float, str, bytes, bool, None]


class Artifact:
    """A stored value: ``.load()`` it, pass it to another task, or look at ``.id``.

    Passing an Artifact into a task records the edge from the run that
    produced it, and its id is used in the cache key as is (never re-hashed).
    """

    __slots__ = ("_oid", "run_id", "_root", "_summary")

    def __init__(self, oid: ObjectId, run_id: int | None = None, root: str | None = None):
        if root is None:
            from .session import current_store

            root = current_store().root
        self._oid = ObjectId(oid)
        self.run_id = run_id
        self._root = root
        self._summary: dict | None = None

    @property
    def id(self) -> str:
        """The value's id, 32 hex characters."""
        return self._oid.hex()

    @property
    def __terra_ref__(self) -> ObjectId:
        return self._oid

    @property
    def store(self):
        """The store holding the value."""
        return store_at(self._root)

    def load(self):
        """The value; a fresh, independent copy on every call."""
        from .serialize import load_value

        return load_value(self.store, self._oid)

    @property
    def summary(self) -> dict:
        """Type, shape and size of the value, read without loading it."""
        if self._summary is None:
            from .serialize import summarize

            self._summary = summarize(self.store, self._oid)
        return self._summary

    def save_png(self, path: str) -> None:
        """Write a stored matplotlib figure as PNG to ``path``."""
        from .serialize import figure_png

        with open(path, "wb") as f:
            f.write(figure_png(self.store, self._oid))

    def __eq__(self, other) -> bool:
        return isinstance(other, Artifact) and other._oid == self._oid

    def __hash__(self) -> int:
        return hash(self._oid)

    def __reduce__(self):
        return (Artifact, (bytes(self._oid), self.run_id, self._root))

    def _describe(self) -> str:
        try:
            s = self.summary
        except Exception as e:  # noqa: BLE001 - a repr must never raise
            return f"<unreadable: {type(e).__name__}>"
        bits = [str(s.get("type", "?"))]
        for key in ("dtype", "shape", "len"):
            if key in s and s[key] is not None:
                v = s[key]
                bits.append(f"{key}={tuple(v) if isinstance(v, list) else v}")
        if s.get("nbytes") is not None:
            bits.append(_size(s["nbytes"]))
        return " ".join(bits)

    def __repr__(self) -> str:
        run = f", run_id={self.run_id}" if self.run_id is not None else ""
        return f"Artifact({self.id[:12]}{run}: {self._describe()})"

    def _repr_html_(self) -> str:
        """A notebook preview: frame head, array summary, figure image or text; pickles are not opened."""
        from .preview import preview_html

        run = f" from run {self.run_id}" if self.run_id is not None else ""
        try:
            body = preview_html(self)
        except Exception as e:  # noqa: BLE001 - a repr must never raise
            body = f"<span>unreadable: {html.escape(type(e).__name__)}</span>"
        return (f"<div><b>terra Artifact</b> <code>{self.id[:12]}</code>{html.escape(run)}"
                f"<br/><span>{html.escape(self._describe())}</span>{body}</div>")
