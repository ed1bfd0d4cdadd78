"""Which stored pickles this user wrote: a per-user key signs them at write time.

Unpickling runs whatever code the pickle names, so terra unpickles only
payloads it can vouch for; likewise it imports a module that a stored class
path names (running the module's import-time code) only for objects it can
vouch for, or when the program has imported that module already. When a pickled payload is stored, the store keeps
``HMAC-SHA256(key, object id)`` beside it (see :mod:`terra.store._framing`);
on load the signature must verify with this user's key, unless the user opts
in with ``allow_foreign_pickles`` (``--trust`` on the CLI). A store copied
from a colleague, or objects pulled from a remote, carry no signature this
key accepts, so their pickles do not run by default.

Why the id is signed and kept outside the object: every read is verified
against the id, so a signature over the id vouches for every byte of the
payload; and because the signature is not part of the encoding, equal values
keep equal ids across users (cache keys and deduplication stay shared).

The key is 32 random bytes in ``Config.pickle_key_path`` (by default
``$XDG_CONFIG_HOME/terra/pickle.key`` or ``~/.config/terra/pickle.key``),
created with mode 0600 on the first write that needs it, never inside a store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from contextlib import contextmanager

from .config import get_config
from .errors import ConfigError

__all__ = ["SIGNED_CODECS", "sign", "signature_for", "verify", "writing_foreign"]

# Blob codecs and Tree types whose decoding may run code: pickles, and the
# trees that name a class (loading one may import the class's module). Only
# these are signed.
SIGNED_CODECS = frozenset({"pickle", "enum", "dataclass", "namedtuple", "defaultdict", "dir"})
_CONTEXT = b"terra-pickle-1\0"

_lock = threading.Lock()
_keys: dict[str, bytes] = {}
_foreign = 0  # writers of objects that come from elsewhere, active in this process


def _read_key(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read the pickle-signing key {path}: {e}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        # A key others can read or write could sign (or forge) pickles for this user.
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            raise ConfigError(f"the pickle-signing key {path} must be owned by you with mode 0600 "
                              f"(run: chmod 600 {path})")
        key = f.read()
    if len(key) != 32:
        raise ConfigError(f"the pickle-signing key {path} is damaged (expected 32 bytes); delete it to make "
                          f"a new one (pickles signed with it will then need --trust)")
    return key


def _create_key(path: str) -> bytes:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        try:
            os.link(tmp, path)  # never replaces a key another process made first
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    key = _read_key(path)
    assert key is not None
    return key


def _key(create: bool) -> bytes | None:
    path = get_config().pickle_key_path
    key = _keys.get(path)
    if key is not None:
        return key
    with _lock:
        key = _read_key(path)
        if key is None and create:
            try:
                key = _create_key(path)
            except OSError as e:
                raise ConfigError(f"cannot create the pickle-signing key {path}: {e}") from e
        if key is not None:
            _keys[path] = key
    return key


def sign(oid: bytes) -> bytes:
    """This user's signature of object ``oid`` (creates the key on first use).

    Raises:
        ConfigError: the key cannot be created or read, or others can read it.
    """
    return hmac.new(_key(create=True), _CONTEXT + bytes(oid), hashlib.sha256).digest()


def verify(oid: bytes, signature: bytes | None) -> bool:
    """Whether ``signature`` is this user's signature of ``oid``."""
    if signature is None:
        return False
    key = _key(create=False)
    if key is None:
        return False
    good = hmac.new(key, _CONTEXT + bytes(oid), hashlib.sha256).digest()
    return hmac.compare_digest(good, signature)


@contextmanager
def writing_foreign():
    """Within this context, objects this process writes are not signed (e.g. pulled from a remote).

    Process-wide rather than per thread (stores frame objects on a pool):
    another thread's own pickles written meanwhile are left unsigned too,
    which errs on the safe side (they then need ``--trust``).
    """
    global _foreign
    with _lock:
        _foreign += 1
    try:
        yield
    finally:
        with _lock:
            _foreign -= 1


def signature_for(oid: bytes, obj) -> bytes | None:
    """The signature to store with ``obj``: this user's for a pickled payload, else None."""
    if _foreign:
        return None
    kind = obj.kind  # by kind: looking up an absent codec (a Run, a Chunk) costs an exception
    codec = obj.type if kind == "tree" else obj.codec if kind in ("blob", "chunked") else None
    return sign(oid) if codec in SIGNED_CODECS else None
