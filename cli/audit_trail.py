"""``keyledger audit reads`` and ``audit metrics``: who read what, and how rotations went."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from cli.context import JsonOption, open_ledger, open_read_models, settings
from cli.health import OutOption, check_format, write_metrics
from cli.output import console, emit_json, handles_errors
from ledger.errors import InvalidInputError
from ledger.service import ReadAuditing, read_auditing_status


class Switch(StrEnum):
    on = "on"
    off = "off"


@handles_errors
def reads(
    ctx: typer.Context,
    state: Annotated[Switch | None, typer.Argument(
        help="on: record every read of a value; off: stop. Omit to show the setting.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show, or switch on or off, read auditing: a SecretRead event for every value read.

    While it is on, every `secrets get` (and every Ledger.get in the Python API) records the
    secret, its key version and the actor before the value is handed out, and gives no
    value if that record cannot be written. Showing the setting needs no password;
    switching it does. Switching to the setting already in force records nothing.

    Example:  keyledger audit reads on --reason "PCI DSS 10.2.1 review"
    """
    if state is None:
        if reason is not None:
            raise InvalidInputError("--reason goes with `on` or `off`")
        with settings(ctx).recorder() as recorder:
            _show(read_auditing_status(recorder), None, as_json)
        return
    ledger, views = open_ledger(ctx)
    with ledger, views:
        changed = ledger.set_read_auditing(state is Switch.on, reason=reason)
        status = read_auditing_status(ledger.recorder)
    _show(status, changed, as_json)


def _show(status: ReadAuditing, changed: bool | None, as_json: bool) -> None:
    word = "on" if status.enabled else "off"
    if as_json:
        emit_json({"enabled": status.enabled, "changed": bool(changed), "since": status.changed_at,
                   "actor": status.actor, "reason": status.reason})
        return
    if changed:
        console.print(f"✅ Read auditing turned {word}", markup=False)
    elif changed is False:
        console.print(f"👌 Read auditing is already {word}; nothing recorded", markup=False)
    else:
        since = "" if status.changed_at is None else f" since {status.changed_at} ({status.actor})"
        why = "" if status.reason is None else f": {status.reason}"
        console.print(f"🔎 Read auditing is {word}{since}{why}", markup=False)

@handles_errors
def metrics(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option(
        "--format", help="jsonl (one line per migration run, the default) or prometheus "
                         "(the ledger's gauges and counters for node_exporter).")] = "jsonl",
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print one JSON line per migration run, in the old system's metrics shape.

    Fields: rotation_start, rotation_end (null if the run never completed), old_version,
    new_version, secrets_migrated, secrets_failed, duration_seconds, status (success,
    partial, resumed or incomplete), run_id and actor. Made for log shippers; with --json,
    one document instead: {"runs": [...], "as_of": {...}}. Needs no password.

    With --format prometheus: current version, secrets per version, secrets needing
    migration, key ages, encryptions per version against the 2^32 limit, last rotation
    and migration times, runs by status; written atomically to --out.

    Example:  keyledger audit metrics >> /var/log/keyledger/rotation-metrics.jsonl
    Example:  keyledger audit metrics --format prometheus --out /var/lib/node_exporter/keyledger.prom
    """
    check_format(fmt, ("jsonl", "prometheus"), out, as_json)
    with open_read_models(ctx) as views:
        from projections.reports.metrics import rotation_metrics  # here: start-up stays lean

        found = rotation_metrics(views.recorder)
        seq, head = views.position()
        if fmt == "prometheus":
            from projections.renderers import prometheus

            families = prometheus.ledger_families(
                views.keyring(), views.report().needing_migration, found, seq,
                datetime.now(UTC))
    if fmt == "prometheus":
        write_metrics(prometheus.render(families), out)
        return
    if as_json:
        emit_json({"runs": [m.to_json() for m in found],
                   "as_of": {"seq": seq, "head_hash": head}})
        return
    for metric in found:
        sys.stdout.write(json.dumps(metric.to_json(), ensure_ascii=False) + "\n")
    sys.stdout.flush()
