"""Storage: the backend interface, its LMDB and in-memory implementations, and the object store."""

from ._lmdb import LMDBBackend, check_local_filesystem
from ._memory import MemoryBackend
from ._store import FORMAT_VERSION, PutResult, Store
from .base import Backend, Reader, RefTxn

__all__ = [
    "FORMAT_VERSION",
    "Backend",
    "LMDBBackend",
    "MemoryBackend",
    "PutResult",
    "Reader",
    "RefTxn",
    "Store",
    "check_local_filesystem",
    "open_store",
]


def open_store(path: str, map_size: int | None = None, readonly: bool = False) -> Store:
    """Open (creating if needed) the LMDB store in directory ``path``."""
    kw = {} if map_size is None else {"map_size": map_size}
    return Store(LMDBBackend(path, readonly=readonly, **kw))
