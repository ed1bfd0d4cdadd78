"""Capture a run's stdout, stderr and logging while still showing them live.

One router per stream is installed while any capture is active; it passes
every write through to the real stream and copies it to the captures of the
writing thread (nested captures all get it). Captures in different threads
therefore never see each other's output, and leaving them in any order
restores the streams.
"""

from __future__ import annotations

import io
import logging
import sys
import threading

__all__ = ["Capture"]

_lock = threading.Lock()
_local = threading.local()
_active = 0
_saved: tuple = ()


def _sinks() -> list:
    return getattr(_local, "sinks", ())


class _Router(io.TextIOBase):
    def __init__(self, inner):
        self._inner = inner

    def write(self, s: str) -> int:
        for sink in _sinks():
            sink.write(s)
        return self._inner.write(s) if self._inner is not None else len(s)

    def flush(self) -> None:
        if self._inner is not None:
            self._inner.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._inner, "isatty", lambda: False)())

    @property
    def encoding(self):
        return getattr(self._inner, "encoding", "utf-8")

    def fileno(self) -> int:
        return self._inner.fileno()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Handler(logging.Handler):
    """Copies each log record into the captures of the thread that made it, unless a handler already prints it.

    One instance is installed on the root logger while any capture is active
    (a handler per capture cost a lock, a weak reference and a formatter per run).
    """

    def __init__(self):
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        sinks = _by_thread.get(record.thread)
        if not sinks:
            return
        for h in logging.getLogger().handlers:  # a StreamHandler on our router is captured already
            if isinstance(h, logging.StreamHandler) and isinstance(getattr(h, "stream", None), _Router):
                return
        try:
            text = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - logging must never break the run
            return
        for sink in sinks:
            sink.write(text)


_handler: _Handler | None = None
# The router last made for stdout and for stderr, reused while the stream it wraps is the
# same: an io object costs microseconds to make and, when dropped, flushes as it closes.
_routers: list = [None, None]


def _router(i: int, stream) -> _Router:
    r = _routers[i]
    if r is None or r._inner is not stream:
        r = _routers[i] = _Router(stream)
    return r
# The sinks of each thread with captures active, for log records (which name their thread).
_by_thread: dict[int, tuple] = {}


class Capture:
    """Context manager: copy this thread's stdout, stderr and log records into ``text``."""

    __slots__ = ("_sink", "text", "thread")

    def __init__(self) -> None:
        self._sink = io.StringIO()
        self.text = ""
        self.thread = threading.get_ident()

    def __enter__(self) -> "Capture":
        global _active, _saved, _handler
        self.thread = threading.get_ident()
        sinks = _local.sinks = (*_sinks(), self._sink)
        with _lock:
            if _active == 0:
                _saved = (sys.stdout, sys.stderr)
                sys.stdout, sys.stderr = _router(0, sys.stdout), _router(1, sys.stderr)
                if _handler is None:
                    _handler = _Handler()
                logging.getLogger().addHandler(_handler)
            _active += 1
            _by_thread[self.thread] = sinks
        return self

    def __exit__(self, *exc) -> None:
        global _active
        sinks = _local.sinks = tuple(s for s in _sinks() if s is not self._sink)
        with _lock:
            if sinks:
                _by_thread[self.thread] = sinks
            else:
                _by_thread.pop(self.thread, None)
            _active -= 1
            if _active == 0:
                logging.getLogger().removeHandler(_handler)
                # Restore only what is still ours: code that replaced a stream keeps its choice.
                if isinstance(sys.stdout, _Router):
                    sys.stdout = _saved[0]
                if isinstance(sys.stderr, _Router):
                    sys.stderr = _saved[1]
        self.text = self._sink.getvalue()
