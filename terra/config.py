"""Where the store lives and how terra behaves, from a JSON file and the environment.

``TERRA_CONFIG_PATH`` names a ``terra_config.json`` with keys ``storage_dir``,
``notify``, ``slack_web_client_id``, ``slack_channel``, ``slack_base_url``,
``notify_min_seconds``, ``notify_timeout``, ``allow_pickle``, ``quiet`` and
``lease_seconds``. ``TERRA_STORAGE_DIR`` overrides the storage dir. With nothing set
the store lives in ``~/.terra``. :func:`configure` changes settings at run time.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, fields, replace

from .errors import ConfigError

__all__ = ["Config", "configure", "get_config"]

# Never copied into run records: they are credentials.
SECRET_KEYS = frozenset({"slack_web_client_id"})


@dataclass(frozen=True)
class Config:
    """terra's settings."""

    storage_dir: str = os.path.join("~", ".terra")
    notify: bool | str = False  # True, False or "failure" (only failed runs)
    slack_web_client_id: str | None = None
    slack_channel: str | None = None
    slack_base_url: str | None = None  # another Slack Web API endpoint (a proxy, a test server)
    notify_min_seconds: float = 60.0  # runs shorter than this send nothing
    notify_timeout: float = 3.0  # seconds a message may take, and the most exit waits for them
    allow_pickle: bool = True
    quiet: bool = False
    lease_seconds: float = 30.0

    @property
    def store_path(self) -> str:
        """Absolute path of the storage directory."""
        return os.path.abspath(os.path.expanduser(self.storage_dir))

    def public(self) -> dict:
        """Settings safe to record (no secrets)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in SECRET_KEYS}


_lock = threading.Lock()
# Settings changed by configure(), for child processes (JSON).
_OVERRIDES = "TERRA_CONFIG_OVERRIDES"
_config: Config | None = None


def _load() -> Config:
    values: dict = {}
    path = os.environ.get("TERRA_CONFIG_PATH")
    if path:
        try:
            with open(path) as f:
                values = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read TERRA_CONFIG_PATH={path}: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object")
    if os.environ.get("TERRA_STORAGE_DIR"):
        values["storage_dir"] = os.environ["TERRA_STORAGE_DIR"]
    overrides = os.environ.get(_OVERRIDES)
    if overrides:
        try:
            values.update(json.loads(overrides))
        except ValueError as e:
            raise ConfigError(f"cannot read {_OVERRIDES}: {e}") from e
    return _make(Config(), values)


def _make(base: Config, values: dict) -> Config:
    known = {f.name: f for f in fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for k, v in values.items():
        want = known[k].type
        if k == "notify":
            if v not in (True, False, "failure"):
                raise ConfigError(f"config notify must be true, false or \"failure\", got {v!r}")
        elif k in ("notify_min_seconds", "notify_timeout"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"config {k} must be a number of seconds >= 0, got {v!r}")
        elif "bool" in str(want) and not isinstance(v, bool):
            raise ConfigError(f"config {k} must be true or false, got {v!r}")
        if k == "storage_dir" and not isinstance(v, (str, os.PathLike)):
            raise ConfigError(f"config storage_dir must be a path, got {v!r}")
    if "storage_dir" in values:
        values = {**values, "storage_dir": os.fspath(values["storage_dir"])}
    return replace(base, **values)


def get_config() -> Config:
    """The current settings (read from file and environment on first use)."""
    global _config
    with _lock:
        if _config is None:
            _config = _load()
        return _config


def configure(**settings) -> Config:
    """Change settings for this process and the processes it starts.

    E.g. ``terra.configure(storage_dir=tmp)``. The changes are also placed in
    the environment, so workers of a spawn or forkserver process pool (which
    do not inherit this process's memory) use the same store.

    Raises:
        ConfigError: an unknown key or a value of the wrong type.
    """
    global _config
    new = _make(get_config(), settings)
    with _lock:
        _config = new
        try:
            current = json.loads(os.environ.get(_OVERRIDES) or "{}")
        except ValueError:
            current = {}
        current.update({k: getattr(new, k) for k in settings})
        os.environ[_OVERRIDES] = json.dumps(current)
    return new


def reset() -> None:
    """Forget run-time changes; the next use re-reads file and environment."""
    global _config
    with _lock:
        _config = None
        os.environ.pop(_OVERRIDES, None)
