"""The object-store client: obstore, imported only when a remote is used.

One ``obstore`` store per URL and process (``memory://`` lives as long as the
process). Writes are create-only (``AlreadyExists`` means someone wrote the
same bytes: success); tags move by ETag compare-and-swap, or under a file
lock on ``file://``, whose backend has no conditional update.
"""

from __future__ import annotations

import fcntl
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from itertools import islice
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
            from obstore.store import from_url  # the `terra[remote]` extra
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
        items = list(items)
        out: list = [None] * len(items)

        def sink(i, new):
            out[i] = new
            if done is not None:
                done(len(items[i][1]))

        _parallel(lambda item: self.create(*item), items, sink)
        return out

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
        _parallel(self.get, paths, sink)

    def list_each(self, prefixes: list[str], sink) -> None:
        """Parallel LISTs handing each result to ``sink(index, [(path, size), ...])`` as it arrives."""
        _parallel(self.list, prefixes, sink)

    def _error(self, what: str, path: str, e: BaseException) -> RemoteError:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return RemoteError(f"remote {self.url}: cannot {what} {path}: {first}")


def _parallel(fn, items: list, sink) -> None:
    """``sink(i, fn(items[i]))`` for every item, on the caller's thread, CONCURRENCY calls in flight.

    Blocking obstore calls on our own threads, never its ``*_async`` API: an async call
    completes by having a tokio thread take the GIL to run ``loop.call_soon_threadsafe``,
    and that thread can still be inside Python (the self-pipe write drops the GIL) when the
    caller has seen its result and the interpreter exits. CPython then ``pthread_exit``s the
    tokio thread as it retakes the GIL, the forced unwind cannot cross obstore's Rust
    frames and glibc aborts the process (SIGABRT, nothing on stderr) after a successful
    push (pyo3-async-runtimes has no shutdown hook: PyO3/pyo3-async-runtimes#40; PyO3
    hangs such threads instead from PyO3/pyo3#4874, later than the obstore we support).
    A blocking call only waits in ``block_on`` with the GIL released, the tokio threads
    never enter Python, and the pool is joined before this returns.
    """
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(items)), thread_name_prefix="terra-remote") as pool:
        it = iter(enumerate(items))
        pending = {pool.submit(fn, x): i for i, x in islice(it, CONCURRENCY)}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    i = pending.pop(f)
                    sink(i, f.result())
                    for j, x in islice(it, 1):  # keep CONCURRENCY in flight, never the whole set
                        pending[pool.submit(fn, x)] = j
        finally:
            for f in pending:
                f.cancel()
