"""Where the store lives and how terra behaves, from a JSON file and the environment.

``TERRA_CONFIG_PATH`` names a ``terra_config.json`` with keys ``storage_dir``,
``notify``, ``slack_web_client_id``, ``slack_channel``, ``slack_base_url``,
``notify_min_seconds``, ``notify_timeout``, ``allow_pickle``,
``allow_foreign_pickles``, ``pickle_key``, ``quiet`` and ``lease_seconds``.
``TERRA_STORAGE_DIR`` overrides the storage dir, ``TERRA_PICKLE_KEY`` the
pickle key's path. With nothing set the store lives in ``~/.terra``.
:func:`configure` changes settings at run time.

Secrets (the Slack token) never leave this process through terra: they are
masked in ``repr``, left out of run records (:meth:`Config.public`) and not
exported to child processes. A child gets the token only from the config file
it reads itself (``TERRA_CONFIG_PATH`` is inherited), never from a value set
with :func:`configure`.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace

from .errors import ConfigError

__all__ = ["Config", "configure", "get_config"]

# Never copied into run records: they are credentials.
SECRET_KEYS = frozenset({"slack_web_client_id"})


@dataclass(frozen=True)
class Config:
    """terra's settings."""

    storage_dir: str = os.path.join("~", ".terra")
    notify: bool | str = False  # True, False or "failure" (only failed runs)
    slack_web_client_id: str | None = field(default=None, repr=False)
    slack_channel: str | None = None
    slack_base_url: str | None = None  # another Slack Web API endpoint (a proxy, a test server)
    notify_min_seconds: float = 60.0  # runs shorter than this send nothing
    notify_timeout: float = 3.0  # seconds a message may take, and the most exit waits for them
    allow_pickle: bool = True
    # Unpickle payloads not signed by this user's key (a store copied from
    # someone else, objects pulled from a remote): they can run any code.
    allow_foreign_pickles: bool = False
    # Where this user's pickle-signing key lives; None: the user's config directory.
    pickle_key: str | None = None
    quiet: bool = False
    lease_seconds: float = 30.0

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name not in SECRET_KEYS)
        hidden = ", ".join(f"{k}=<{'set' if getattr(self, k) else 'unset'}>" for k in sorted(SECRET_KEYS))
        return f"Config({shown}, {hidden})"

    @property
    def store_path(self) -> str:
        """Absolute path of the storage directory."""
        return os.path.abspath(os.path.expanduser(self.storage_dir))

    @property
    def pickle_key_path(self) -> str:
        """The file holding this user's pickle-signing key (outside any store)."""
        if self.pickle_key:
            return os.path.abspath(os.path.expanduser(self.pickle_key))
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return os.path.join(base, "terra", "pickle.key")

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
    if os.environ.get("TERRA_PICKLE_KEY"):
        values["pickle_key"] = os.environ["TERRA_PICKLE_KEY"]
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
        if k in ("storage_dir", "pickle_key") and not isinstance(v, (str, os.PathLike)) \
                and not (k == "pickle_key" and v is None):
            raise ConfigError(f"config {k} must be a path, got {v!r}")
    for k in ("storage_dir", "pickle_key"):
        if values.get(k) is not None:
            values = {**values, k: os.fspath(values[k])}
    return replace(base, **values)


def get_config() -> Config:
    """The current settings (read from file and environment on first use)."""
    global _config
    cfg = _config  # one atomic read: every cache hit asks, the lock is only for the first load
    if cfg is not None:
        return cfg
    with _lock:
        if _config is None:
            _config = _load()
        return _config


def configure(**settings) -> Config:
    """Change settings for this process and the processes it starts.

    E.g. ``terra.configure(storage_dir=tmp)``. The changes are also placed in
    the environment, so workers of a spawn or forkserver process pool (which
    do not inherit this process's memory) use the same store. Secrets (the
    Slack token) are not: they stay in this process.

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
        current.update({k: getattr(new, k) for k in settings if k not in SECRET_KEYS})
        for k in SECRET_KEYS:  # nor one exported by an older terra
            current.pop(k, None)
        os.environ[_OVERRIDES] = json.dumps(current)
    return new


@contextmanager
def overriding(**settings):
    """Within this context, this process uses ``settings`` (not exported to children).

    For commands that narrow or widen one setting for one operation, e.g.
    ``terra cat`` refusing to unpickle.
    """
    global _config
    old = get_config()
    new = _make(old, settings)
    with _lock:
        _config = new
    try:
        yield new
    finally:
        with _lock:
            if _config is new:
                _config = old


def reset() -> None:
    """Forget run-time changes; the next use re-reads file and environment."""
    global _config
    with _lock:
        _config = None
        os.environ.pop(_OVERRIDES, None)
