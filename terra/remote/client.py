"""The object-store client: obstore, imported only when a remote is used.

One ``obstore`` store per URL and process (``memory://`` lives as long as the
process). Writes are create-only (``AlreadyExists`` means someone wrote the
same bytes: success); tags move by ETag compare-and-swap, or under a file
lock on ``file://``, whose backend has no conditional update.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from contextlib import contextmanager
from typing import Iterable

from .errors import RemoteConflict, RemoteError

__all__ = ["Client", "client"]

#: Requests in flight at once (object stores reward many small parallel requests).
CONCURRENCY = 64

_clients: dict[str, "Client"] = {}
_lock = threading.Lock()


def client(url: str) -> "Client":
    """The client of ``url`` in this process (credentials from the cloud's usual environment)."""
    with _lock:
        c = _clients.get(url)
        if c is None or c.pid != os.getpid():
            c = _clients[url] = Client(url)
        return c


class Client:
    """Create-only puts, verified-by-caller gets, LIST, and compare-and-swap of small refs."""

    def __init__(self, url: str):
        try:
            import obstore  # noqa: F401 - the `terra[remote]` extra
            from obstore.store import from_url
        except ImportError:
            raise RemoteError("remotes need obstore: pip install 'terra[remote]'") from None
        self.url = url
        self.pid = os.getpid()
        self.local_root = None
        try:
            if url.startswith("file://"):
                self.local_root = url[len("file://"):]
                os.makedirs(self.local_root, exist_ok=True)
                self.store = from_url(url)
            else:
                self.store = from_url(url)
        except Exception as e:  # noqa: BLE001 - obstore raises its own hierarchy and ValueError
            raise RemoteError(f"remote {url}: {e}") from None

    # -- one at a time ------------------------------------------------------------------

    def get(self, path: str) -> bytes | None:
        """The bytes at ``path``, or None if absent."""
        import obstore

        try:
            return bytes(obstore.get(self.store, path).bytes())
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise self._error("read", path, e) from None

    def create(self, path: str, data: bytes) -> bool:
        """Write ``data`` at ``path`` unless something is there; True if this call wrote it."""
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            obstore.put(self.store, path, data, mode="create")
            return True
        except AlreadyExistsError:
            return False
        except Exception as e:  # noqa: BLE001
            raise self._error("write", path, e) from None

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """``(path, size)`` of everything under ``prefix``."""
        import obstore

        try:
            return [(m["path"], m["size"]) for batch in obstore.list(self.store, prefix=prefix, chunk_size=1000)
                    for m in batch]
        except FileNotFoundError:
            return []
        except Exception as e:  # noqa: BLE001
            raise self._error("list", prefix, e) from None

    def swap(self, path: str, old: bytes | None, new: bytes) -> None:
        """Replace ``path`` with ``new`` if it still holds ``old`` (None: if it does not exist).

        Raises:
            RemoteConflict: someone else changed it first.
        """
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        if old is None:
            if not self.create(path, new):
                raise RemoteConflict(f"{self.url}/{path} was created concurrently")
            return
        with self._file_lock(path):
            try:
                got = obstore.get(self.store, path)
            except FileNotFoundError:
                raise RemoteConflict(f"{self.url}/{path} was removed concurrently") from None
            if bytes(got.bytes()) != old:
                raise RemoteConflict(f"{self.url}/{path} was changed concurrently")
            mode = "overwrite" if self.local_root else {"e_tag": got.meta["e_tag"]}
            try:
                obstore.put(self.store, path, new, mode=mode)
            except (PreconditionError, AlreadyExistsError):
                raise RemoteConflict(f"{self.url}/{path} was changed concurrently") from None
            except Exception as e:  # noqa: BLE001
                raise self._error("write", path, e) from None

    @contextmanager
    def _file_lock(self, path: str):
        # file:// has no conditional update: a lock file beside the ref serializes swappers.
        if self.local_root is None:
            yield
            return
        lock = os.path.join(self.local_root, path + ".lock")
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        with open(lock, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # -- many at once -------------------------------------------------------------------

    def create_many(self, items: Iterable[tuple[str, object]], done=None) -> list[bool]:
        """Create-only puts of ``(path, bytes)`` in parallel; per item whether this call wrote it.

        ``done(nbytes)`` is called after each item.
        """
        import obstore
        from obstore.exceptions import AlreadyExistsError

        items = list(items)

        async def one(sem, path, data):
            async with sem:
                try:
                    await obstore.put_async(self.store, path, data, mode="create")
                    new = True
                except AlreadyExistsError:
                    new = False
                except Exception as e:  # noqa: BLE001
                    raise self._error("write", path, e) from None
            if done is not None:
                done(len(data))
            return new

        async def main():
            sem = asyncio.Semaphore(CONCURRENCY)
            return await asyncio.gather(*(one(sem, p, d) for p, d in items))

        return list(_run(main())) if items else []

    def get_many(self, paths: list[str], done=None) -> list[bytes | None]:
        """Parallel gets; None for a path that is absent."""
        out: list = [None] * len(paths)

        def sink(i, data):
            out[i] = data
            if done is not None:
                done(len(data or b""))

        self.get_each(paths, sink)
        return out

    def get_each(self, paths: list[str], sink) -> None:
        """Parallel gets handing each result to ``sink(index, bytes or None)`` as it arrives.

        Nothing waits for the whole set in memory; an exception from ``sink`` stops the rest.
        """
        import obstore

        async def one(sem, i, path):
            async with sem:
                try:
                    r = await obstore.get_async(self.store, path)
                    data = bytes(await r.bytes_async())
                except FileNotFoundError:
                    data = None
                except Exception as e:  # noqa: BLE001
                    raise self._error("read", path, e) from None
            sink(i, data)

        async def main():
            sem = asyncio.Semaphore(CONCURRENCY)
            tasks = [asyncio.ensure_future(one(sem, i, p)) for i, p in enumerate(paths)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()

        if paths:
            _run(main())

    def _error(self, what: str, path: str, e: BaseException) -> RemoteError:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return RemoteError(f"remote {self.url}: cannot {what} {path}: {first}")


def _run(coro):
    """Run a coroutine to completion, also from inside a running event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    out: list = []
    err: list = []

    def target():
        try:
            out.append(asyncio.run(coro))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            err.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
