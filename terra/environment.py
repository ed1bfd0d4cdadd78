"""Facts about the environment recorded with every run (host, user, versions, git)."""

from __future__ import annotations

import getpass
import os
import platform
import sys

from . import runs as R
from .gitinfo import git_info
from .store import process_id

__all__ = ["environment"]


_static_env: dict | None = None


def environment(fn) -> dict:
    global _static_env
    if _static_env is None:
        import numpy

        from . import __version__

        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in some containers
            user = str(os.getuid())
        _static_env = {
            "host": R.HOST, "user": user, "pid": os.getpid(),
            "versions": {"python": platform.python_version(), "terra": __version__,
                         "numpy": numpy.__version__, "pandas": _version_of("pandas")},
        }
    env = dict(_static_env)
    env["pid"] = process_id()
    env["git"] = git_info(_source_dir(fn))
    return env


def _version_of(package: str) -> str | None:
    """A package's version without importing it (pandas takes 0.2 s to import)."""
    mod = sys.modules.get(package)
    if mod is not None:
        return getattr(mod, "__version__", None)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


_dirs: dict[str, str] = {}


def _source_dir(fn) -> str:
    mod = sys.modules.get(getattr(fn, "__module__", "") or "")
    f = getattr(mod, "__file__", None)
    if not f:
        return os.getcwd()
    d = _dirs.get(f)
    if d is None:
        d = os.path.dirname(os.path.abspath(f))
        if os.path.isabs(f) and len(_dirs) < 1024:  # a relative one depends on the working directory
            _dirs[f] = d
    return d
