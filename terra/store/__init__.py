"""Storage: the backend interface, its LMDB and in-memory implementations, and the object store."""

from ._disk import check_local_filesystem, disk_full
from ._env import process_id
from ._framing import RAW, is_view, split, unframe
from ._lmdb import LMDBBackend
from ._memory import MemoryBackend
from ._store import FORMAT_VERSION, HOLD_PREFIX, PutResult, Store, hold_key
from .base import Backend, Reader, RefTxn

__all__ = [
    "FORMAT_VERSION",
    "HOLD_PREFIX",
    "Backend",
    "LMDBBackend",
    "MemoryBackend",
    "PutResult",
    "RAW",
    "Reader",
    "RefTxn",
    "Store",
    "check_local_filesystem",
    "disk_full",
    "is_view",
    "hold_key",
    "open_store",
    "process_id",
    "split",
    "unframe",
]


def open_store(path: str, map_size: int | None = None, readonly: bool = False) -> Store:
    """Open (creating if needed) the LMDB store in directory ``path``."""
    kw = {} if map_size is None else {"map_size": map_size}
    return Store(LMDBBackend(path, readonly=readonly, **kw))
