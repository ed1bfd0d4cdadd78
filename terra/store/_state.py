"""The short-lived state of a store: an unsynced side environment, reset after a reboot.

Leases and runs in progress live there, where a write costs no sync; reads
see it beneath the durable refs (:class:`MergedRefs`).
"""

from __future__ import annotations

import fcntl
import os

__all__ = ["MergedRefs", "boot_id", "reset_if_rebooted"]


class MergedRefs:
    """Refs seen through the durable environment, falling back to the volatile one.

    Lock order everywhere: the durable environment, then the volatile one
    (nothing holds the volatile lock while taking the durable one).
    """

    __slots__ = ("_state", "_main", "_s", "_m")

    def __init__(self, state_snapshot, main_snapshot):
        self._state, self._main = state_snapshot, main_snapshot

    def __enter__(self):
        self._m = self._main.__enter__()
        try:
            self._s = self._state.__enter__()
        except BaseException:
            self._main.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            self._state.__exit__(*exc)
        finally:
            self._main.__exit__(*exc)
        return False

    def get(self, key):
        v = self._m.get(key)
        return self._s.get(key) if v is None else v

    def scan(self, prefix, reverse=False):
        a, b = self._m.scan(prefix, reverse), self._s.scan(prefix, reverse)
        x, y = next(a, None), next(b, None)
        while x is not None or y is not None:
            if y is None or (x is not None and (x[0] > y[0] if reverse else x[0] < y[0])):
                yield x
                x = next(a, None)
            elif x is None or x[0] != y[0]:
                yield y
                y = next(b, None)
            else:  # both: the durable one wins
                yield x
                x, y = next(a, None), next(b, None)


_BOOT_ID: list = []


def boot_id() -> str | None:
    """This boot of the machine; unsynced state from an earlier boot may be torn."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _BOOT_ID.append(f.read().strip() or None)
        except OSError:
            _BOOT_ID.append(None)
    return _BOOT_ID[0]


def reset_if_rebooted(path: str) -> None:
    """Delete a volatile environment written before the last reboot.

    It is opened without syncs, so a system crash may have torn it; and
    everything in it (leases, runs in progress) died with that boot anyway.
    """
    boot = boot_id()
    marker = os.path.join(path, "boot_id")
    with open(os.path.join(path, "reset.lock"), "a+b") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            with open(marker) as f:
                if f.read().strip() == boot:
                    return
        except OSError:
            pass
        for name in ("data.mdb", "lock.mdb"):
            try:
                os.remove(os.path.join(path, name))
            except FileNotFoundError:
                pass
        with open(marker + ".tmp", "w") as f:
            f.write(boot or "")
            f.flush()
            os.fsync(f.fileno())
        os.replace(marker + ".tmp", marker)
