"""Remotes: share runs, their artifacts and lineage through object storage.

Built on obstore (the ``terra[remote]`` extra: s3://, gs://, az://, file://,
memory://), imported only when a remote is used. See :mod:`terra.remote.layout`
for what a remote holds.
"""

from __future__ import annotations

from ._transfer import TransferResult
from .config import add_remote, default_remote, remotes, remove_remote
from .errors import RemoteConflict, RemoteCorrupt, RemoteError
from .pull import fetch_missing, pull
from .push import push

__all__ = [
    "RemoteConflict",
    "RemoteCorrupt",
    "RemoteError",
    "TransferResult",
    "add_remote",
    "clone",
    "default_remote",
    "fetch_missing",
    "pull",
    "push",
    "remotes",
    "remove_remote",
]


def clone(url: str, path: str, name: str = "origin", records_only: bool = False, progress=None) -> TransferResult:
    """Make a new store in ``path`` holding every run of the remote at ``url``.

    The remote is added as ``name`` (the default remote) and the new store
    becomes the current one.

    Raises:
        TerraError: ``path`` already holds a store.
    """
    import os

    from .. import configure
    from ..errors import TerraError
    from ..session import current_store

    if os.path.exists(os.path.join(path, "objects.lmdb")):
        raise TerraError(f"{path} already holds a terra store: pull into it instead")
    configure(storage_dir=path)
    store = current_store()
    add_remote(name, url, default=True, store=store)
    return pull(all=True, remote=name, records_only=records_only, store=store, progress=progress)
