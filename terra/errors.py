"""The errors terra raises: one root, a few specific kinds.

Each error also inherits the builtin a caller would naturally catch, so
``except KeyError`` keeps working for a missing object.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousPrefix",
    "ConfigError",
    "CorruptObject",
    "CorruptRef",
    "DamagedRefWarning",
    "LeaseTimeout",
    "NotFound",
    "NotifyError",
    "PickleRefused",
    "SerializationError",
    "StoreError",
    "StoreFull",
    "TaskError",
    "TerraError",
    "UnsupportedFilesystem",
    "UnsupportedFormat",
    "UntrustedObject",
]


class TerraError(Exception):
    """Root of every error terra raises."""


class StoreError(TerraError, OSError):
    """The store cannot be opened or written."""


class StoreFull(StoreError):
    """The disk (or the file-size limit) has no room for a write; the store is left intact.

    ``needed`` and ``available`` are byte counts (estimates; None when unknown).
    """

    def __init__(self, message: str, needed: int | None = None, available: int | None = None):
        super().__init__(message)
        self.needed, self.available = needed, available

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else "store full"


class UnsupportedFormat(StoreError):
    """The store was written by a newer terra (format or hash algorithm)."""


class UnsupportedFilesystem(StoreError):
    """The store lives on a filesystem LMDB cannot use safely (NFS, SMB...)."""


class NotFound(TerraError, KeyError):
    """No object, run or tag matches the reference."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "not found"


class AmbiguousPrefix(NotFound):
    """An id prefix matches more than one object."""


class CorruptObject(TerraError, ValueError):
    """Stored bytes do not hash to the id they are stored under."""


class CorruptRef(CorruptObject):
    """A ref entry (run, index, tag, counter) fails its checksum or disagrees with its record."""


class DamagedRefWarning(UserWarning):
    """A damaged ref entry was skipped (listing) or ignored (a cache hit recomputed)."""


class SerializationError(TerraError, TypeError):
    """A value cannot be encoded (or decoded) faithfully."""


class PickleRefused(SerializationError):
    """Pickle is needed but ``allow_pickle`` is off."""


class ConfigError(TerraError, ValueError):
    """The configuration is invalid."""


class TaskError(TerraError, ValueError):
    """A task was defined or called incorrectly."""


class LeaseTimeout(TerraError, TimeoutError):
    """Waiting for another process computing the same call took too long."""


class UntrustedObject(TerraError):
    """Loading a stored object would run code terra cannot vouch for.

    A stored class path names something other than the kind its codec builds
    (an Enum, a dataclass...), or a pickle was not written by this user
    (``allow_foreign_pickles`` / ``--trust`` opt in).
    """


class NotifyError(TerraError):
    """A notification could not be sent (only raised by an explicit test send)."""
