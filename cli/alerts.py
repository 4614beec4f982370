"""``keyledger audit alerts``: what the rotation guide says to watch, from the events, for
cron and monitoring; ``--webhook`` posts them, the guide's "notify stakeholders"."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from cli.context import JsonOption, open_read_models
from cli.output import EXIT_FAILED, console, emit_json, err_console, handles_errors, printable
from cli.policy import policy_of
from ledger import InvalidInputError

WEBHOOK_TIMEOUT = 10.0
_ICONS = {"warning": "⚠️ ", "critical": "🚨"}


@handles_errors
def alerts(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(
        "--since", help="Event alerts recorded since then (2026-11-01, 24h, 7d).")] = "24h",
    rotators: Annotated[list[str] | None, typer.Option(
        "--rotator", help="An actor expected to rotate keys (repeat for more); a rotation "
                          "by anyone else is an alert.")] = None,
    webhook: Annotated[str | None, typer.Option(
        "--webhook", help="POST the alerts as JSON here (a Slack incoming webhook, say).",
        envvar="KEYLEDGER_ALERT_WEBHOOK", show_envvar=False)] = None,
    timeout: Annotated[float, typer.Option(
        "--webhook-timeout", min=0.1, help="Seconds to wait for the webhook.")] = WEBHOOK_TIMEOUT,
    as_json: JsonOption = False,
) -> None:
    """List what stands: off-schedule or unexpected rotations, failed and repeated failed
    operations, migrations left unfinished, versions past their cryptoperiod.

    Exit 1 while any alert stands, 0 when none: for cron and monitoring. Needs no master
    password. With --webhook, the alerts (never a value) are posted when there are any.

    Example:  keyledger audit alerts --since 1h --rotator cron@db01 --webhook "$SLACK_WEBHOOK"
    """
    from projections.reports.alerts import compute_alerts
    from projections.reports.forensics import Window
    from projections.reports.metrics import rotation_metrics

    now = datetime.now(UTC)
    window = Window.parse(since, None, now)
    assert window.since is not None
    target = None if webhook is None else _checked_url(webhook)
    with open_read_models(ctx) as views:
        recorder = views.recorder
        found = compute_alerts(recorder, views.keyring(), policy_of(views),
                               rotation_metrics(recorder),
                               since=window.since, now=now, rotators=rotators or ())
        seq, head = views.position()
        where = recorder.location
    document = {"alerts": [a.to_json() for a in found], "since": window.since,
                "as_of": {"seq": seq, "head_hash": head}}
    if as_json:
        emit_json(document)
    elif not found:
        console.print(f"✅ No alerts since {window.since}")
    else:
        for alert in found:
            console.print(f"{_ICONS[alert.severity]} {alert.kind}: {printable(alert.summary)}"
                          + ("" if alert.seq is None else f" (seq {alert.seq})"), markup=False)
    if target is not None and found:
        _post(target, webhook_body(found, where, window.since), timeout)
    if found:
        raise typer.Exit(EXIT_FAILED)


def webhook_body(found: list[Any], where: str, since: str) -> dict[str, Any]:
    """The JSON posted: ``text`` for Slack's incoming webhooks (and anything that shows a
    message), the alerts themselves for everything else. Never a value or ciphertext:
    alerts hold neither."""
    worst = "critical" if any(a.severity == "critical" for a in found) else "warning"
    lines = [f"keyledger: {len(found)} alert(s) on {where} since {since}"]
    lines += [f"• [{a.severity}] {a.kind}: {a.summary}" for a in found[:20]]
    if len(found) > 20:
        lines.append(f"… and {len(found) - 20} more (keyledger audit alerts)")
    return {"text": "\n".join(lines), "severity": worst, "ledger": where, "since": since,
            "alerts": [a.to_json() for a in found]}


def _checked_url(url: str) -> str:
    """:raises InvalidInputError: not a plain http(s) URL this can post to (its text is
    never shown: the path of a chat webhook is its credential)."""
    bad = InvalidInputError("--webhook must be an http:// or https:// URL with a host, "
                            "no user or password, and no spaces or control characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise bad
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing it is the check: out of range or not a number)
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        raise bad
    return url


def _shown(url: str) -> str:
    """Where a webhook goes, without its path: a Slack webhook's path is its secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer to report, not a place to send alerts to


def _post(url: str, body: dict[str, Any], timeout: float) -> None:
    """POST ``body``, all of it done within ``timeout`` seconds (a server that trickles its
    answer does not hold cron up); a failure is one line on stderr and exit 1 (the alerts
    were shown)."""
    request = urllib.request.Request(
        url, data=json.dumps(body, ensure_ascii=False).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "keyledger"})
    opener = urllib.request.build_opener(_NoRedirects)
    outcome: list[str | None] = []

    def send() -> None:
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read(65536)
            outcome.append(None)
        except urllib.error.HTTPError as exc:
            outcome.append(f"it answered HTTP {exc.code}")
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, str) else (
                getattr(exc.reason, "strerror", None) or type(exc.reason).__name__)
            outcome.append(str(reason))
        except TimeoutError:
            outcome.append(f"no answer within {timeout:g}s")
        except (OSError, ValueError) as exc:
            outcome.append(getattr(exc, "strerror", None) or type(exc).__name__)

    sender = threading.Thread(target=send, name="keyledger-webhook", daemon=True)
    sender.start()
    sender.join(timeout)
    if not outcome:
        _webhook_failed(url, f"no answer within {timeout:g}s")
    if outcome[0] is not None:
        _webhook_failed(url, outcome[0])


def _webhook_failed(url: str, why: str) -> None:
    err_console.print(f"❌ Error: the webhook at {_shown(url)} failed: {printable(why)}",
                      markup=False)
    raise typer.Exit(EXIT_FAILED)
