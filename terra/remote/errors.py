"""Errors of remotes (all :class:`terra.TerraError`)."""

from __future__ import annotations

from ..errors import CorruptObject, TerraError

__all__ = ["RemoteConflict", "RemoteCorrupt", "RemoteError"]


class RemoteError(TerraError, OSError):
    """A remote cannot be reached, read or written, or is not a terra remote."""


class RemoteConflict(RemoteError):
    """A ref on the remote (a tag) was changed by someone else first."""


class RemoteCorrupt(RemoteError, CorruptObject):
    """An object or manifest on the remote does not match its id; nothing was ingested."""
