"""Rotation policy commands: ``policy set``, ``policy show`` and ``due``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cli.context import JsonOption, open_ledger, open_read_models, warn_of_findings
from cli.output import EXIT_FAILED, console, emit_json, handles_errors, warn
from ledger import Ledger
from ledger import events as ev
from ledger.domain import describe_duration, parse_duration
from ledger.policy import (
    DueReport,
    current_policy,
    policy_at,
    proven_policy,
    rotation_due,
    set_policy,
)

if TYPE_CHECKING:
    from projections import ReadModels

app = typer.Typer(help="Set and show the rotation policy.", no_args_is_help=True)


@app.command("set")
@handles_errors
def set_(
    ctx: typer.Context,
    max_age: Annotated[
        str | None, typer.Option(help="Rotate when the current key is older (e.g. 90d).")
    ] = None,
    warn_before: Annotated[str | None, typer.Option(
        "--warn", help="Warn this long before the maximum age (e.g. 14d).")] = None,
    max_encryptions: Annotated[int | None, typer.Option(
        help="Rotate when the current key has encrypted this many values.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record the rotation policy (settings not given keep their values).

    Example:  keyledger policy set --max-age 90d --warn 14d
    """
    age = parse_duration(max_age) if max_age else None
    warning = parse_duration(warn_before) if warn_before else None
    ledger, views = open_ledger(ctx)
    with ledger, views:
        policy = set_policy(ledger.session, max_age=age, warn=warning, max_encryptions=max_encryptions)
    _show_policy(policy, as_json, saved=True)


@app.command("show")
@handles_errors
def show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the rotation policy in force (the defaults until one is set).

    Example:  keyledger policy show --json
    """
    with open_read_models(ctx) as views:
        _show_policy(current_policy(views.recorder), as_json, saved=False)


def _show_policy(policy: ev.RotationPolicySet, as_json: bool, *, saved: bool) -> None:
    if as_json:
        emit_json(policy.model_dump())
        return
    console.print(f"{'✅ Policy recorded' if saved else '📋 Rotation policy'}: rotate after "
                  f"{describe_duration(policy.max_age_seconds)} (warn "
                  f"{describe_duration(policy.warn_seconds)} before) or "
                  f"{policy.max_encryptions:,} encryptions")


def policy_of(views: ReadModels) -> ev.RotationPolicySet:
    """The rotation policy without a password: its head proven against the recorded key,
    or, on a ledger of an earlier format that signs no heads, as recorded."""
    if views.unproven:
        return current_policy(views.recorder)
    return policy_at(views.recorder.verified_head(ev.POLICY_STREAM, views.verifier()))


def due_report(views: ReadModels, now: datetime | None = None, *,
               ledger: Ledger | None = None) -> DueReport:
    """Whether the ledger behind ``views`` is due for rotation, from proven facts: with
    the unlocked ``ledger`` (a decision: ``full-rotation --if-due``) from its proven
    events and signed tally; without, from the same checked with the recorded public key.
    Only a ledger of an earlier format, which signs no tally yet, is read from the read
    models."""
    if ledger is not None:
        keyring = ledger.keyring()
        assert keyring.current is not None
        version, policy = keyring.current, proven_policy(ledger.session)
        created_at = keyring.versions[version].created_at
        encryptions = ledger.tally().encryptions.get(version, 0)
    elif views.unproven:
        views.check_unsigned_format()
        shown = views.keyring()
        current = next(v for v in shown.versions if v.version == shown.current_version)
        version, created_at = current.version, current.created_at
        policy, encryptions = policy_of(views), current.encryptions
    else:
        signed = views.signed_figures()
        assert signed.keyring.current is not None
        version = signed.keyring.current
        created_at = signed.keyring.versions[version].created_at
        policy = policy_of(views)
        encryptions = views.proven_encryptions(version)
    since = datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return rotation_due(policy, version, since, encryptions, now or datetime.now(UTC))


@handles_errors
def due(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Exit 1 when key rotation is due (by age or encryption count), 0 when not; say why.

    Needs no master password. Made for cron and monitoring; pair it with
    `full-rotation --if-due`, which picks the next version itself.

    Example:  keyledger due --json || alert "key rotation due"
    """
    with open_read_models(ctx) as views:
        found = len(views.repaired)  # what opening them found is already said
        report = due_report(views)
        warn_of_findings(views, found)
        signed = not views.unproven
    if as_json:
        emit_json({"due": report.due, "current_version": report.current_version,
                   "age_seconds": report.age_seconds, "encryptions": report.encryptions,
                   "signed": signed,
                   "reasons": report.reasons, "warnings": report.warnings,
                   "policy": report.policy.model_dump()})
    else:
        for warning in report.warnings:
            warn(warning)
        if report.due:
            console.print("⏰ Rotation is due:")
            for reason in report.reasons:
                console.print(f"  • {reason}")
        else:
            console.print(f"✅ No rotation due (key version {report.current_version}, "
                          f"{describe_duration(report.age_seconds)} old)")
    if report.due:
        raise typer.Exit(EXIT_FAILED)
