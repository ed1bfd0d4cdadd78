"""Slack notifications, against a loopback HTTP server standing in for the Slack Web API."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

import terra
from terra import Task, notify
from terra.cli import cli
from terra.errors import TaskError

TOKEN = "xoxb-test-token-1234"


class FakeSlack:
    """chat.postMessage on 127.0.0.1: records requests, answers as told ("ok", "invalid_auth", 500, 429, "hang")."""

    def __init__(self):
        self.requests: list[dict] = []
        self.mode = "ok"
        self.delay = 0.0
        self.release = threading.Event()  # a hanging answer waits for this
        self.arrived = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                      "body": json.loads(body or b"{}")})
                fake.arrived.set()
                if fake.mode == "hang":
                    fake.release.wait(10)
                    return
                if fake.delay:
                    fake.release.wait(fake.delay)
                if fake.mode in (500, 429):
                    self.send_response(fake.mode)
                    if fake.mode == 429:
                        self.send_header("Retry-After", "30")
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"ok": false, "error": "server_error"}')
                    return
                answer = {"ok": True, "channel": "C1", "ts": "1.0"} if fake.mode == "ok" else \
                    {"ok": False, "error": fake.mode}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def texts(self) -> list[str]:
        return [json.dumps(r["body"]) for r in self.requests]


@pytest.fixture
def slack(tmp_path, monkeypatch):
    """A fake Slack, a fresh store configured to notify it, and a fresh sender per test."""
    monkeypatch.setattr(notify, "_sender", notify._Sender())
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    fake = FakeSlack()
    terra.configure(storage_dir=str(tmp_path / "store"), quiet=True, notify=True, slack_web_client_id=TOKEN,
                    slack_channel="#runs", slack_base_url=fake.url, notify_min_seconds=0, notify_timeout=2)
    yield fake
    notify.flush(0.5)
    terra.configure(notify=False, slack_web_client_id=None, slack_channel=None, slack_base_url=None,
                    notify_min_seconds=60, notify_timeout=3, quiet=False)
    fake.close()


def _fields(req) -> dict:
    out = {}
    for block in req["body"]["blocks"]:
        for f in block.get("fields", []):
            name, _, value = f["text"].partition("\n")
            out[name.strip("*")] = value
    return out


def test_success_message_has_channel_fields_and_token(slack):
    @Task
    def square(x):
        return x * x

    rid, value = square(7, return_run_id=True)
    assert value == 49
    assert notify.flush(5)
    assert len(slack.requests) == 1
    req = slack.requests[0]
    assert req["path"] == "/api/chat.postMessage"
    assert req["auth"] == f"Bearer {TOKEN}"
    assert req["body"]["channel"] == "#runs"
    f = _fields(req)
    assert f["Task"] == "square" and f["Run"] == str(rid) and f["Status"] == "success"
    assert f["Host"] == terra.get_meta(rid)["host"]
    assert f["Duration"].endswith(" s")
    assert "square" in req["body"]["text"] and "success" in req["body"]["text"]  # plain-text fallback


def test_failure_message_has_error_and_traceback(slack):
    @Task
    def explode(x):
        raise ValueError(f"bad input {x}")

    with pytest.raises(ValueError, match="bad input 42"):
        explode(42)
    assert notify.flush(5)
    assert len(slack.requests) == 1
    body = slack.requests[0]["body"]
    assert _fields(slack.requests[0])["Status"] == "failure"
    text = json.dumps(body)
    assert "ValueError" in text and "bad input 42" in text
    assert "raise ValueError" in text  # the last traceback lines
    assert "ValueError: bad input 42" in body["text"]


def test_hits_never_notify(slack):
    calls = []

    @Task
    def inc(x):
        calls.append(x)
        return x + 1

    assert inc(1) == 2 and inc(1) == 2 and inc(1) == 2
    assert calls == [1]
    assert notify.flush(5)
    assert len(slack.requests) == 1


def test_min_seconds_and_per_task_options(slack):
    @Task.make(notify=False)
    def quiet_task(x):
        return x

    @Task.make(notify="failure")
    def failures_only(x):
        if x < 0:
            raise RuntimeError("negative")
        return x

    quiet_task(1)
    failures_only(1)
    with pytest.raises(RuntimeError):
        failures_only(-1)
    terra.configure(notify=False)

    @Task.make(notify=True)
    def loud(x):
        return x

    @Task
    def follows_config(x):
        return x

    loud(1)
    follows_config(1)
    terra.configure(notify=True, notify_min_seconds=60)
    follows_config(2)  # computed, but far shorter than a minute
    assert notify.flush(5)
    statuses = [(_fields(r)["Task"], _fields(r)["Status"]) for r in slack.requests]
    assert statuses == [("failures_only", "failure"), ("loud", "success")]


def test_bad_notify_option_is_refused():
    with pytest.raises(TaskError, match="notify"):
        Task.make(notify="sometimes")(lambda x: x)
    with pytest.raises(terra.errors.ConfigError, match="notify"):
        terra.configure(notify="yes")


@pytest.mark.parametrize("mode", ["invalid_auth", 500, 429, "hang"])
def test_slack_failures_never_break_a_run(slack, mode):
    slack.mode = mode
    terra.configure(notify_timeout=1)

    @Task
    def add(a, b):
        return a + b

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert add(1, 2) == 3
        if mode == "hang":
            # The call returned while Slack still holds the request: sending is off the run's thread.
            assert slack.arrived.wait(5) and not slack.release.is_set()
        assert add(2, 3) == 5
        assert terra.get_runs(task=add)["status"].tolist() == ["success", "success"]
        notify.flush(5)
    ours = [w for w in caught if issubclass(w.category, notify.NotifyWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert TOKEN not in message
    expected = {"invalid_auth": "invalid_auth", 500: "HTTP 500", 429: "HTTP 429", "hang": "in time"}[mode]
    assert expected in message


def test_token_stays_out_of_records_logs_and_messages(slack):
    @Task
    def talk(x):
        print("working on", x)
        return x

    rid, _ = talk(3, return_run_id=True)
    notify.flush(5)
    assert TOKEN not in json.dumps(terra.get_meta(rid), default=str)
    assert TOKEN not in terra.get_log(rid)
    assert all(TOKEN not in t for t in slack.texts())


def test_batch_sends_one_summary(slack):
    @Task
    def maybe(x):
        if x == 3:
            raise KeyError("three")
        return x

    with notify.batch() as runs:
        for x in range(5):
            try:
                maybe(x)
            except KeyError:
                pass
    assert len(runs) == 5
    assert notify.flush(5)
    assert len(slack.requests) == 1
    body = slack.requests[0]["body"]
    assert "batch of 5 runs" in body["text"] and "4 success" in body["text"] and "1 failure" in body["text"]
    assert "KeyError" in json.dumps(body)


def test_slow_server_message_is_not_lost_at_exit(slack, tmp_path, subprocess_env):
    slack.delay = 0.5  # slower than the run, faster than the timeout
    script = tmp_path / "child.py"
    script.write_text(
        "import terra\n"
        f"terra.configure(storage_dir={str(tmp_path / 'child-store')!r}, quiet=True, notify=True,\n"
        f"    slack_web_client_id={TOKEN!r}, slack_channel='#runs', slack_base_url={slack.url!r},\n"
        "    notify_min_seconds=0, notify_timeout=3)\n"
        "@terra.task\n"
        "def child_task(x):\n"
        "    return x + 1\n"
        "print(child_task(1))\n")
    r = subprocess.run([sys.executable, str(script)], env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"
    assert [_fields(q)["Task"] for q in slack.requests] == ["child_task"]


def test_cli_notify_test(slack, tmp_path):
    root = str(tmp_path / "store")
    r = CliRunner().invoke(cli, ["--store", root, "notify", "test"])
    assert r.exit_code == 0, r.output
    assert "#runs" in r.output
    assert slack.requests[0]["body"]["channel"] == "#runs"
    slack.mode = "invalid_auth"
    r = CliRunner().invoke(cli, ["--store", root, "notify", "test"])
    assert r.exit_code == 1
    assert "invalid_auth" in r.output and "Traceback" not in r.output
    terra.configure(slack_channel=None)
    r = CliRunner().invoke(cli, ["--store", root, "notify", "test"])
    assert r.exit_code == 1 and "slack_channel" in r.output
