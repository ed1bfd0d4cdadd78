"""Remotes configured per store: name → URL, kept in the store's refs (never credentials)."""

from __future__ import annotations

import json
import re

from ..errors import NotFound, TerraError
from ..store import Store

__all__ = ["add_remote", "default_remote", "get_remote", "remotes", "remove_remote"]

_PREFIX = b"remote/"
_DEFAULT = b"remote-default"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_SCHEMES = ("s3://", "gs://", "az://", "abfs://", "abfss://", "azure://", "file://", "memory://",
            "http://", "https://")


def add_remote(name: str, url: str, default: bool = False, store: Store | None = None) -> None:
    """Remember remote ``name`` at ``url``; the first remote added becomes the default.

    Credentials are never stored: obstore reads them from each cloud's usual
    environment (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``...).

    Raises:
        TerraError: a bad name or URL, or ``name`` is taken by another URL.
    """
    store = store or _store()
    if not isinstance(name, str) or not _NAME.match(name):
        raise TerraError(f"bad remote name {name!r}: letters, digits and _.-, starting with a letter")
    url = normalize_url(url)

    def fn(txn):
        old = txn.get(_PREFIX + name.encode())
        if old is not None and json.loads(old)["url"] != url:
            raise TerraError(f"remote {name!r} already points at {json.loads(old)['url']}; remove it first")
        txn.put(_PREFIX + name.encode(), json.dumps({"url": url}).encode())
        if default or txn.get(_DEFAULT) is None:
            txn.put(_DEFAULT, name.encode())

    store.update_refs(fn)


def normalize_url(url: str) -> str:
    """A remote URL as kept: a local path becomes ``file://`` with an absolute path."""
    import os

    if not isinstance(url, str) or not url:
        raise TerraError(f"bad remote URL {url!r}")
    if "://" not in url:
        url = "file://" + os.path.abspath(os.path.expanduser(url))
    if not url.startswith(_SCHEMES):
        raise TerraError(f"unsupported remote URL {url!r}: use s3://, gs://, az://, file:// or memory://")
    if url.startswith("file://") and not url[len("file://"):].startswith("/"):
        url = "file://" + os.path.abspath(url[len("file://"):])
    return url.rstrip("/") if url != "memory://" else url


def remove_remote(name: str, store: Store | None = None) -> str:
    """Forget remote ``name`` (nothing on the remote changes); returns its URL.

    Raises:
        NotFound: no such remote.
    """
    store = store or _store()

    def fn(txn):
        raw = txn.get(_PREFIX + name.encode())
        if raw is None:
            raise NotFound(f"no remote {name!r}")
        txn.delete(_PREFIX + name.encode())
        if txn.get(_DEFAULT) == name.encode():
            txn.delete(_DEFAULT)
            rest = list(txn.scan(_PREFIX))
            if rest:
                txn.put(_DEFAULT, rest[0][0][len(_PREFIX):])
        return json.loads(raw)["url"]

    return store.update_refs(fn)


def remotes(store: Store | None = None) -> dict[str, str]:
    """Every configured remote: ``{name: url}``."""
    store = store or _store()
    with store.refs() as txn:
        return {k[len(_PREFIX):].decode(): json.loads(v)["url"] for k, v in txn.scan(_PREFIX)}


def default_remote(store: Store | None = None) -> str | None:
    """The default remote's name, if any."""
    store = store or _store()
    raw = store.get_ref(_DEFAULT)
    return raw.decode() if raw else None


def get_remote(remote: str | None, store: Store) -> tuple[str, str]:
    """``(name, url)`` of a remote given by name or URL (None: the default).

    Raises:
        NotFound: no such remote, or none configured.
    """
    if remote is None:
        remote = default_remote(store)
        if remote is None:
            raise NotFound("no remote configured: terra remote add NAME URL")
    if "://" in remote:
        return remote, normalize_url(remote)
    raw = store.get_ref(_PREFIX + remote.encode())
    if raw is None:
        raise NotFound(f"no remote {remote!r} (terra remote list shows them)")
    return remote, json.loads(raw)["url"]


def _store() -> Store:
    from ..session import current_store

    return current_store()
