"""Executors for engines without a ``concurrent.futures`` face of their own.

``Task.map``/``Task.submit`` take any ``concurrent.futures.Executor``: a
``ProcessPoolExecutor``, Dask's ``Client.get_executor(pure=False)`` (or the
``Client`` itself), or :class:`RayExecutor` here. Ray is the ``terra[ray]``
extra, imported only when a ``RayExecutor`` is made.
"""

from __future__ import annotations

import concurrent.futures as cf

__all__ = ["RayExecutor"]


class RayExecutor(cf.Executor):
    """Ray tasks behind the ``concurrent.futures.Executor`` interface.

    Args:
        address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``); None starts
            a local Ray unless one is already initialised in this process.
        **remote_options: options for every task (``num_cpus=``, ``max_retries=``...),
            as ``ray.remote(**options)`` takes them.

    Raises:
        ImportError: Ray is not installed (``pip install "terra[ray]"``).
    """

    def __init__(self, address: str | None = None, **remote_options):
        try:
            import ray
        except ImportError as e:
            raise ImportError('RayExecutor needs Ray: pip install "terra[ray]"') from e
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            ray.init(address=address)
            self._started = True
        self._options = remote_options
        self._remotes: dict = {}
        self._shutdown = False

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        """Run ``fn(*args, **kwargs)`` as a Ray task; returns its ``concurrent.futures.Future``."""
        if self._shutdown:
            raise RuntimeError("cannot submit to a RayExecutor after shutdown")
        remote = self._remotes.get(fn)
        if remote is None:
            remote = self._ray.remote(**self._options)(fn) if self._options else self._ray.remote(fn)
            self._remotes[fn] = remote
        return remote.remote(*args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; shuts Ray down if this executor started it."""
        self._shutdown = True
        if self._started:
            self._ray.shutdown()
            self._started = False
