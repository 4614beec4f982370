"""``keyledger audit alerts``: what the rotation guide says to watch, from the events, and
``--webhook`` posting them to a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cli_support import PASSWORD, VALUE, document, error_line, invoke

from ledger import Ledger
from ledger import events as ev
from ledger.policy import set_policy
from ledger.testing import create_test_ledger


class Clock:
    """A ledger clock that moves when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def kinds(result: Any) -> list[str]:
    return [a["kind"] for a in document(result)["alerts"]]


@pytest.fixture
def quiet(backend: Any) -> str:
    """A ledger whose one rotation was on schedule, 80 days after the first key, by cron."""
    clock = Clock(datetime.now(UTC) - timedelta(days=81))
    target = backend.target
    with create_test_ledger(target, PASSWORD, clock=clock) as made:
        made.set("db_password", VALUE)
    clock.now += timedelta(days=80)
    with Ledger.open(target, PASSWORD, actor="cron@db01", clock=clock) as ledger:
        ledger.rotate()
        ledger.migrate()
    return target


def test_a_quiet_ledger_has_no_alerts(quiet: str) -> None:
    result = invoke(quiet, "audit", "alerts", "--since", "7d", "--json", password=None)
    assert result.exit_code == 0, result.stdout
    assert document(result)["alerts"] == []
    assert "No alerts" in invoke(quiet, "audit", "alerts", password=None).stdout


def test_an_early_rotation_by_someone_unexpected_is_two_alerts(quiet: str) -> None:
    with Ledger.open(quiet, PASSWORD, actor="mallory@laptop") as ledger:
        ledger.rotate()
    found = invoke(quiet, "audit", "alerts", "--json", "--rotator", "cron@db01", password=None)
    assert found.exit_code == 1
    alerts = {a["kind"]: a for a in document(found)["alerts"]}
    assert alerts["unexpected_rotation"]["severity"] == "critical"
    assert alerts["unexpected_rotation"]["details"]["actor"] == "mallory@laptop"
    assert alerts["off_schedule_rotation"]["details"]["when"] == "early"
    # Without --rotator, a first-time rotator is a warning; cron's own rotation was not.
    plain = invoke(quiet, "audit", "alerts", "--json", password=None)
    assert [a["details"]["actor"] for a in document(plain)["alerts"]
            if a["kind"] == "unexpected_rotation"] == ["mallory@laptop"]


def test_failures_and_repeated_failures(quiet: str) -> None:
    with Ledger.open(quiet, PASSWORD, actor="ops@bastion") as ledger:
        for _ in range(3):
            ledger.session.append_to_stream(ev.REJECTIONS_STREAM, ev.KeyRotationRejected(
                requested_version=2, reason="version 2 exists"))
    found = invoke(quiet, "audit", "alerts", "--json", password=None)
    assert found.exit_code == 1
    assert kinds(found).count("rotation_failed") == 3
    assert "repeated_failures" in kinds(found)
    assert invoke(quiet, "audit", "alerts", "--json", "--since", "2099-01-01",
                  password=None).exit_code == 0  # event alerts are those in the window


def test_a_version_past_its_cryptoperiod_and_an_unfinished_migration(backend: Any) -> None:
    clock = Clock(datetime.now(UTC) - timedelta(days=40))
    with create_test_ledger(backend.target, PASSWORD, clock=clock) as made:
        made.set("db_password", VALUE)
        set_policy(made.session, max_age=timedelta(days=30), warn=timedelta(days=5))
        made.session.append_to_stream(ev.migration_stream("0123456789abcdef"), ev.MigrationStarted(
            run_id="0123456789abcdef", target_version=1, batch_size=10, candidates=1))
    found = invoke(backend.target, "audit", "alerts", "--json", password=None)
    assert found.exit_code == 1
    assert {"cryptoperiod_exceeded", "migration_incomplete"} <= set(kinds(found))


# -- the webhook ----------------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    bodies: list[dict[str, Any]]
    status: int = 200
    delay: float = 0.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server: Receiver = self.server  # type: ignore[assignment]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(server.delay)
            server.bodies.append({"path": self.path, "type": self.headers["Content-Type"],
                                  "json": json.loads(body)})
            self.send_response(server.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = Receiver(("127.0.0.1", 0), Handler)
    server.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def url_of(server: Receiver, path: str = "/services/T000/B000/secret-token-9f8e") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


@pytest.fixture
def alerting(quiet: str) -> str:
    with Ledger.open(quiet, PASSWORD, actor="mallory@laptop") as ledger:
        ledger.rotate()
    return quiet


def test_the_webhook_gets_the_alerts_as_json_slack_can_show(alerting: str, receiver: Receiver) -> None:
    result = invoke(alerting, "audit", "alerts", "--webhook", url_of(receiver), password=None)
    assert result.exit_code == 1 and result.stderr == ""
    (posted,) = receiver.bodies
    assert posted["type"] == "application/json"
    body = posted["json"]
    assert body["text"].startswith("keyledger: 2 alert(s)") and "mallory@laptop" in body["text"]
    assert body["severity"] == "warning"
    assert {a["kind"] for a in body["alerts"]} == {"off_schedule_rotation", "unexpected_rotation"}
    assert VALUE not in json.dumps(body)


def test_no_alerts_posts_nothing(quiet: str, receiver: Receiver) -> None:
    assert invoke(quiet, "audit", "alerts", "--webhook", url_of(receiver),
                  password=None).exit_code == 0
    assert receiver.bodies == []


@pytest.mark.parametrize("trouble", ["status", "timeout", "refused"])
def test_a_failing_webhook_is_one_line_that_never_shows_its_path(
    alerting: str, receiver: Receiver, trouble: str
) -> None:
    url = url_of(receiver)
    if trouble == "status":
        receiver.status = 500
    elif trouble == "timeout":
        receiver.delay = 2.0
    else:
        url = "http://127.0.0.1:9/services/T000/B000/secret-token-9f8e"  # discard: nobody
    result = invoke(alerting, "audit", "alerts", "--webhook", url, "--webhook-timeout", "0.5",
                    password=None)
    assert result.exit_code == 1
    line = error_line(result)
    assert "webhook at http://127.0.0.1" in line and "secret-token" not in line
    assert {"status": "HTTP 500", "timeout": "0.5s", "refused": "refused"}[trouble] in line


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/x", "not a url", "http://h:99999/SECRETPATH",
    "http://h:abc/SECRETPATH", "http://[::1/SECRETPATH", "http://127.0.0.1:1/SECRET PATH",
    "http://127.0.0.1/SECRETPATH\r\n", "http://user:SECRETPATH@127.0.0.1/x",
])
def test_only_plain_http_webhooks_and_the_url_never_shown(alerting: str, url: str) -> None:
    result = invoke(alerting, "audit", "alerts", "--webhook", url, password=None)
    assert result.exit_code == 2 and "http" in error_line(result)
    assert "SECRET" not in result.output


def test_a_trickling_webhook_is_cut_off_at_the_timeout(alerting: str) -> None:
    """A server that answers a byte a second must not hold cron past --webhook-timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    result = invoke(alerting, "audit", "alerts", "--webhook-timeout", "1", "--webhook",
                    f"http://127.0.0.1:{listener.getsockname()[1]}/hook", password=None)
    assert result.exit_code == 1 and "no answer within 1s" in error_line(result)
    assert time.monotonic() - started < 10  # not the 20 s the trickle would take
    listener.close()


def test_alerts_need_no_password_and_show_no_value(alerting: str, tmp_path: Path) -> None:
    result = invoke(alerting, "audit", "alerts", password=None)
    assert result.exit_code == 1 and VALUE not in result.output
