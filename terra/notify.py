"""Slack notifications when computed runs finish or fail (slack_sdk).

A run that was actually computed (never a cache hit) is offered to
:func:`run_finished`; the task's ``notify`` option and the config decide
whether it is worth a message. Messages go out on one background thread, so
a slow or broken Slack never slows or breaks a run: every send is bounded by
``notify_timeout`` seconds, pending messages get at most that long at
interpreter exit, and any failure (bad token, HTTP 429/500, a server that
never answers, no network) becomes one warning per process.

The token comes from ``slack_web_client_id`` or the ``SLACK_BOT_TOKEN``
environment variable; it is handed to the Slack client only and never put in
a message, a warning, a record or a log.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from .config import Config, get_config

__all__ = ["NotifyWarning", "RunSummary", "batch", "flush", "run_finished", "send_test"]

_TRACEBACK_LINES = 12
_BLOCK_TEXT_MAX = 2900  # Slack refuses section text over 3000 characters


class NotifyWarning(UserWarning):
    """A notification could not be sent (the run itself is unaffected)."""


@dataclass(frozen=True)
class RunSummary:
    """What a message says about one computed run."""

    task: str
    run_id: int
    status: str
    duration: float
    host: str
    error: dict | None = None


# -- policy ----------------------------------------------------------------------------


def wanted(option, cfg: Config, status: str, duration: float) -> bool:
    """Whether a run deserves a message: the task's ``notify`` option over the config's."""
    mode = cfg.notify if option is None else option
    if not mode:
        return False
    if mode == "failure" and status == "success":
        return False
    return duration >= cfg.notify_min_seconds


def _token(cfg: Config) -> str | None:
    return cfg.slack_web_client_id or os.environ.get("SLACK_BOT_TOKEN") or None


# -- messages --------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


_ICON = {"success": ":white_check_mark:", "failure": ":x:", "interrupted": ":warning:"}


def message(s: RunSummary) -> tuple[str, list[dict]]:
    """The plain-text fallback and the Block Kit blocks for one run."""
    text = f"terra: {s.task} run {s.run_id} {s.status} after {_duration(s.duration)} on {s.host}"
    if s.error:
        text += f": {s.error.get('type', 'error')}: {s.error.get('message', '')}"
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": f"{_ICON.get(s.status, '')} *{s.task}* run {s.run_id}: *{s.status}*"}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Task*\n{s.task}"},
            {"type": "mrkdwn", "text": f"*Run*\n{s.run_id}"},
            {"type": "mrkdwn", "text": f"*Status*\n{s.status}"},
            {"type": "mrkdwn", "text": f"*Duration*\n{_duration(s.duration)}"},
            {"type": "mrkdwn", "text": f"*Host*\n{s.host}"},
        ]},
    ]
    if s.error:
        head = f"*{s.error.get('type', 'error')}*: {s.error.get('message', '')}"
        tb = "".join(s.error.get("traceback", "")).rstrip().splitlines()[-_TRACEBACK_LINES:]
        body = "\n".join(tb)[-(_BLOCK_TEXT_MAX - len(head[:1000]) - 10):]
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"{head[:1000]}\n```{body}```" if body else head[:1000]}})
    return text[:3000], blocks


def batch_message(runs: list[RunSummary], seconds: float) -> tuple[str, list[dict]]:
    """One message summing up a batch of runs (``task.map``)."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    tasks = sorted({r.task for r in runs})
    tally = ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
    text = f"terra: batch of {len(runs)} runs of {', '.join(tasks)} finished in {_duration(seconds)}: {tally}"
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    failed = [r for r in runs if r.status != "success"]
    if failed:
        lines = [f"run {r.run_id} ({r.task}): {(r.error or {}).get('type', r.status)}: "
                 f"{(r.error or {}).get('message', '')}"[:300] for r in failed[:10]]
        if len(failed) > 10:
            lines.append(f"... and {len(failed) - 10} more")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:_BLOCK_TEXT_MAX]}})
    return text[:3000], blocks


# -- sending ---------------------------------------------------------------------------


def _client(cfg: Config, token: str):
    from slack_sdk import WebClient

    kwargs = {"token": token, "timeout": cfg.notify_timeout}
    if cfg.slack_base_url:
        kwargs["base_url"] = cfg.slack_base_url if cfg.slack_base_url.endswith("/") else cfg.slack_base_url + "/"
    # No retries: a retry would multiply the bounded time a message may take.
    return WebClient(**kwargs, retry_handlers=[])


def _post(cfg: Config, text: str, blocks: list[dict]) -> None:
    token = _token(cfg)
    if not token or not cfg.slack_channel:
        raise _NotConfigured("notify is on but the Slack token (slack_web_client_id or SLACK_BOT_TOKEN) "
                             "or slack_channel is not set")
    _client(cfg, token).chat_postMessage(channel=cfg.slack_channel, text=text, blocks=blocks)


class _NotConfigured(Exception):
    pass


def _describe(e: BaseException) -> str:
    """A one-line reason that never includes the token."""
    resp = getattr(e, "response", None)
    if resp is not None:
        status = getattr(resp, "status_code", None)
        err = None
        try:
            err = resp.get("error")
        except Exception:  # noqa: BLE001 - a non-JSON body
            pass
        return f"Slack answered {err or 'an error'}" + (f" (HTTP {status})" if status else "")
    if isinstance(e, TimeoutError) or "timed out" in str(e):
        return "Slack did not answer in time"
    return f"{type(e).__name__}: {e}"


class _Sender:
    """One daemon thread posting queued messages, in order."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned = False
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._pid = os.getpid()

    def put(self, cfg: Config, text: str, blocks: list[dict]) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not ours
                self.__init__()
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="terra-notify", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
        self._queue.put((cfg, text, blocks))

    def _loop(self) -> None:
        while True:
            cfg, text, blocks = self._queue.get()
            try:
                _post(cfg, text, blocks)
            except Exception as e:  # noqa: BLE001 - a notification never breaks the program
                self.warn(_describe(e))
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def warn(self, reason: str) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        warnings.warn(f"terra: a Slack notification was not sent ({reason}); "
                      "runs are unaffected, further failures in this process are not reported",
                      NotifyWarning, stacklevel=2)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued message went out, at most ``timeout`` seconds."""
        if timeout is None:
            timeout = get_config().notify_timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


_sender = _Sender()
_batches = threading.local()


def run_finished(option, summary: RunSummary) -> None:
    """Offer a computed run for a notification; returns at once, never raises."""
    try:
        cfg = get_config()
        if not wanted(option, cfg, summary.status, summary.duration):
            return
        collecting = getattr(_batches, "runs", None)
        if collecting is not None:
            collecting.append(summary)
            return
        _sender.put(cfg, *message(summary))
    except Exception as e:  # noqa: BLE001 - a notification never breaks the program
        _sender.warn(f"{type(e).__name__}: {e}")


@contextmanager
def batch() -> Iterator[list[RunSummary]]:
    """Collect the notifications of the runs inside into one summary message."""
    outer = getattr(_batches, "runs", None)
    runs: list[RunSummary] = []
    _batches.runs = runs
    start = time.time()
    try:
        yield runs
    finally:
        _batches.runs = outer
        if runs:
            try:
                _sender.put(get_config(), *batch_message(runs, time.time() - start))
            except Exception as e:  # noqa: BLE001
                _sender.warn(f"{type(e).__name__}: {e}")


def flush(timeout: float | None = None) -> bool:
    """Wait for queued messages (at most ``timeout``, default ``notify_timeout``); True if all went out."""
    return _sender.flush(timeout)


def send_test() -> str:
    """Send a test message now, in this thread.

    Returns:
        A one-line description of where it went.

    Raises:
        NotifyError: Slack is not configured, or refused or did not answer.
    """
    from .errors import NotifyError

    cfg = get_config()
    import socket

    try:
        _post(cfg, f"terra: test message from {socket.gethostname()}",
              [{"type": "section", "text": {"type": "mrkdwn",
                                            "text": f":wave: terra can post here (from {socket.gethostname()})"}}])
    except _NotConfigured as e:
        raise NotifyError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - reported in one line
        raise NotifyError(_describe(e)) from None
    return f"sent a test message to {cfg.slack_channel}"
