"""Capture a run's stdout, stderr and logging while still showing them live."""

from __future__ import annotations

import io
import logging
import sys
import threading

__all__ = ["Capture"]


class _Tee(io.TextIOBase):
    def __init__(self, inner, sink: io.StringIO, lock: threading.Lock):
        self._inner, self._sink, self._lock = inner, sink, lock

    def write(self, s: str) -> int:
        with self._lock:
            self._sink.write(s)
        return self._inner.write(s)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return getattr(self._inner, "isatty", lambda: False)()

    @property
    def encoding(self):
        return getattr(self._inner, "encoding", "utf-8")

    def fileno(self) -> int:
        return self._inner.fileno()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Handler(logging.Handler):
    def __init__(self, sink: io.StringIO, lock: threading.Lock, streams):
        super().__init__(logging.NOTSET)
        self._sink, self._lock, self._streams = sink, lock, streams
        self.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # A StreamHandler already writing to our tee would be captured twice.
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in self._streams:
                return
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never break the run
            return
        with self._lock:
            self._sink.write(text + "\n")


class Capture:
    """Context manager: tee stdout/stderr and root-logger records into ``text``.

    Nested captures each get their own text; output also reaches the outer ones.
    """

    def __init__(self) -> None:
        self._sink = io.StringIO()
        self._lock = threading.Lock()
        self.text = ""

    def __enter__(self) -> "Capture":
        self._old = sys.stdout, sys.stderr
        sys.stdout = _Tee(sys.stdout, self._sink, self._lock)
        sys.stderr = _Tee(sys.stderr, self._sink, self._lock)
        self._handler = _Handler(self._sink, self._lock, (sys.stdout, sys.stderr))
        logging.getLogger().addHandler(self._handler)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self._handler)
        sys.stdout, sys.stderr = self._old
        self.text = self._sink.getvalue()
