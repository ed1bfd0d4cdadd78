"""The store this process works on: one per storage directory, opened lazily."""

from __future__ import annotations

import os
import threading

from .config import Config, get_config
from .store import Store, open_store

__all__ = ["current_store", "store_at", "store_for"]

_stores: dict[str, Store] = {}
_lock = threading.Lock()


def store_at(path: str) -> Store:
    """The store in directory ``path`` (``<path>/objects.lmdb``), opened once per process."""
    path = os.path.abspath(os.path.expanduser(path))
    s = _stores.get(path)
    if s is None:
        with _lock:
            s = _stores.get(path)
            if s is None:
                os.makedirs(path, exist_ok=True)
                s = open_store(os.path.join(path, "objects.lmdb"))
                s.root = path
                from .runs import migrate

                migrate(s)  # a store written by an older terra: records to the current format
                _stores[path] = s
    return s


_last: tuple = (None, None)


def current_store() -> Store:
    """The store of the current configuration (``terra.configure(storage_dir=...)``)."""
    return store_for(get_config())


def store_for(cfg: Config) -> Store:
    """The store of ``cfg``, the current configuration its caller already holds (a cache hit needs both)."""
    global _last
    if _last[0] is cfg:  # the hot path of every cache hit: no path arithmetic
        return _last[1]
    store = store_at(cfg.store_path)
    from .serialize._scratch import set_scratch_dir

    # Files of __terra_write__/__terra_read__ stay inside the store, never in /tmp.
    set_scratch_dir(os.path.join(store.root, "tmp"))
    _last = (cfg, store)
    return store
