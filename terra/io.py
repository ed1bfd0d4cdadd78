"""Artifact: a handle on one stored value."""

from __future__ import annotations

import html
from typing import Any, Union

from .errors import NotFound
from .objects import ObjectId
from ._format import human_size as _size
from .session import store_at

__all__ = ["Artifact", "TaskOutput"]

#: What calling a task returns: an :class:`Artifact` for a stored value, the value
#: itself when it is kept inline (None, bools, numbers, short strings), or the
#: returned container (dict, list, tuple) with such leaves.
TaskOutput = Union["Artifact", dict[Any, Any], list[Any], tuple[Any, ...], int, float, str, bytes, bool, None]


_UNRESOLVED = object()


class Artifact:
    """A stored value: ``.load()`` it, pass it to another task, or look at ``.id``.

    Passing an Artifact into a task records the edge from the run that
    produced it, and its id is used in the cache key as is (never re-hashed).
    """

    __slots__ = ("_oid", "_run_id", "_record", "_root", "_summary")

    def __init__(self, oid: ObjectId, run_id: int | None = None, root: str | None = None):
        if root is None:
            from .session import current_store

            root = current_store().root
        self._oid = oid if type(oid) is ObjectId else ObjectId(oid)  # every hit on a stored output makes one
        self._run_id = run_id
        self._record: bytes | None = None
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
    def run_id(self) -> int | None:
        """The local run id of the run that produced the value (None if unknown here)."""
        if self._run_id is _UNRESOLVED:
            from .runs import run_of_record

            with self.store.refs() as txn:
                self._run_id = run_of_record(txn, self._record)
        return self._run_id

    @property
    def store(self):
        """The store holding the value (the current store for an unpickled Artifact)."""
        if self._root is None:
            from .session import current_store

            return current_store()
        return store_at(self._root)

    def load(self):
        """The value; a fresh, independent copy on every call."""
        from .serialize import load_value

        return self._read(load_value)

    @property
    def summary(self) -> dict:
        """Type, shape and size of the value, read without loading it."""
        if self._summary is None:
            from .serialize import summarize

            self._summary = self._read(summarize)
        return self._summary

    def save_png(self, path: str) -> None:
        """Write a stored matplotlib figure as PNG to ``path``."""
        from .serialize import figure_png

        png = self._read(figure_png)
        with open(path, "wb") as f:
            f.write(png)

    def _read(self, fn):
        store = self.store
        try:
            return fn(store, self._oid)
        except NotFound:
            # Pulled with --records-only: fetch what is missing (verified) from the default remote.
            if not _fetch_missing(store, self._oid):
                raise
            return fn(store, self._oid)

    def __eq__(self, other) -> bool:
        return isinstance(other, Artifact) and other._oid == self._oid

    def __hash__(self) -> int:
        return hash(self._oid)

    def __copy__(self):
        return self  # an immutable handle: a copy must keep its store, which a pickle leaves behind

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        # No local path, no local run id: the value's id and its producer's record id mean
        # the same in every store, so the Artifact can travel to a worker or a colleague.
        record = self._record
        if record is None and self._run_id not in (None, _UNRESOLVED):
            from .runs import record_of

            with self.store.refs() as txn:
                record = record_of(txn, self._run_id)
        return (_unpickle, (bytes(self._oid), None if record is None else bytes(record)))

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


def _fetch_missing(store, oid: ObjectId) -> int:
    """Objects fetched from the default remote for ``oid`` (0 when there is no remote)."""
    from .remote.config import default_remote

    if default_remote(store) is None:
        return 0
    from .remote import fetch_missing

    return fetch_missing(store, oid)


def _unpickle(oid: bytes, record: bytes | None) -> Artifact:
    """An Artifact as pickled: its store is wherever it is loaded, its run found by record id."""
    a = Artifact.__new__(Artifact)
    a._oid, a._record, a._root, a._summary = ObjectId(oid), record, None, None
    a._run_id = _UNRESOLVED if record is not None else None
    return a
