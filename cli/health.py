"""Health and maintenance commands: health-check, rebuild-projections."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from cli.context import JsonOption, open_ledger, open_read_models
from cli.output import EXIT_FAILED, console, emit_json, handles_errors
from cli.policy import due_report
from ledger import (
    IntegrityError,
    InvalidInputError,
    KeyledgerError,
    Ledger,
    SigningKeyError,
    WrongPasswordError,
)
from ledger.crypto import KEK_ITERATIONS
from ledger.integrity import check_chain, head_signature_problems, repair_heads_tree, trigger_problems

if TYPE_CHECKING:
    from projections import ReadModels

Status = Literal["ok", "warn", "fail"]
_ICONS = {"ok": "✅", "warn": "⚠️ ", "fail": "❌"}
SAMPLE_SECRETS = 25


@dataclass(slots=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass(slots=True)
class Health:
    checks: list[Check] = field(default_factory=list)
    fmt: str = "text"
    out: Path | None = None
    verified_seq: int | None = None  # the head whose signature the ledger check verified

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    @property
    def healthy(self) -> bool:
        return all(c.status != "fail" for c in self.checks)


@handles_errors
def health_check(
    ctx: typer.Context,
    deep: Annotated[bool, typer.Option(
        "--deep", help="Also run SQLite's quick_check and compare every read-model row with "
        "its event (time grows with the ledger; nightly, not every minute).")] = False,
    fmt: FormatOption = "text",
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the master password, the signing key, the data keys, the secrets, a round trip
    and the ledger.

    Exit 0 when healthy (pending migrations only warn), 1 when not: ready for cron and
    monitoring. Without --deep it takes the same time at any size: the last 1,000 links
    of the chain, the head's signature, the ledger's triggers, and the sampled secrets'
    rows against their events.

    With --format prometheus, the outcome as metrics for node_exporter's textfile
    collector, written atomically to --out.

    Example:  keyledger health-check --format prometheus --out /var/lib/node_exporter/keyledger.prom
    """
    check_format(fmt, ("text", "prometheus"), out, as_json)
    health = Health(fmt=fmt, out=out)
    try:
        ledger, views = open_ledger(ctx)
    except WrongPasswordError as exc:
        health.add("master_password", "fail", str(exc))
        _finish(health, as_json)
        return
    except SigningKeyError as exc:
        health.add("master_password", "ok", "master password configured and correct")
        health.add("signing_key", "fail", str(exc))
        _finish(health, as_json)
        return
    except KeyledgerError as exc:
        health.add("ledger", "fail", str(exc))
        _finish(health, as_json)
        return
    with ledger, views:
        health.add("master_password", "ok", "master password configured and correct")
        if ledger.kdf_iterations < KEK_ITERATIONS:
            health.add("kdf", "warn", f"KDF iterations {ledger.kdf_iterations} are below "
                       f"{KEK_ITERATIONS}; run rekey-master to raise them")
        _guarded(health, "signing_key", lambda: _check_signing_key(ledger, health))
        pending = ledger.erase_pending  # unlocking has just tried to finish it
        if pending is not None:
            health.add("erasure", "fail", f"{pending} is still in the database file: another "
                       "process reads an older snapshot of the ledger; it is erased by the "
                       "first command that unlocks once that process is done")
        _guarded(health, "current_key", lambda: _check_keys(ledger, health))
        _guarded(health, "secrets", lambda: _check_secrets(views, health))
        sample: list[str] = []
        _guarded(health, "round_trip", lambda: _check_round_trip(ledger, views, health, sample))
        _guarded(health, "rotation", lambda: _check_rotation(views, health))
        _guarded(health, "ledger", lambda: _check_ledger(ledger, views, health, sample, deep))
        if any(c.name == "ledger" and c.status != "fail" for c in health.checks):
            health.verified_seq = ledger.recorder.head()[0]
    _finish(health, as_json)


FormatOption = Annotated[str, typer.Option(
    "--format", help="text (the default; --json for JSON) or prometheus (node_exporter's textfile format).")]
OutOption = Annotated[Path | None, typer.Option(
    "--out", dir_okay=False, help="With --format prometheus: write here, atomically (mode 0644).")]


def check_format(fmt: str, formats: tuple[str, ...], out: Path | None, as_json: bool) -> None:
    """Check --format (one of ``formats``), --out and --json together.

    :raises InvalidInputError: an unknown format, --out without prometheus, or --json
        with it.
    """
    if fmt not in formats:
        raise InvalidInputError(f"--format must be {' or '.join(formats)}, not {fmt!r}")
    if out is not None and fmt != "prometheus":
        raise InvalidInputError("--out goes with --format prometheus")
    if as_json and fmt == "prometheus":
        raise InvalidInputError("--json and --format prometheus are two formats; pick one")


def write_metrics(text: str, out: Path | None) -> None:
    """Metrics to ``out`` in one rename (a collector never reads half a file), or stdout.
    They name no secret, so the file is 0644, readable by node_exporter's user."""
    if out is None:
        sys.stdout.write(text)
        return
    from ledger.private_files import write_private

    write_private(out, text, replace=True, mode=0o644)


def _guarded(health: Health, name: str, check: Callable[[], None]) -> None:
    """Run one check; a fault in it fails that check instead of ending the health check."""
    try:
        check()
    except KeyledgerError as exc:
        health.add(name, "fail", str(exc))


def _check_signing_key(ledger: Ledger, health: Health) -> None:
    public_key = ledger.check_signing_key()
    health.add("signing_key", "ok", "the wrapped signing key opens and is the private half "
               f"of the recorded {public_key}")


def _check_keys(ledger: Ledger, health: Health) -> None:
    versions = ledger.check_keys()
    current = ledger.keyring().require_current()
    health.add("current_key", "ok", f"current version {current}; "
               f"{len(versions)} available version(s) open and match their fingerprints")


def _check_secrets(views: ReadModels, health: Health) -> None:
    try:
        report = views.proven_report()  # against the signed tally; rebuilt if they differ
    except IntegrityError as exc:
        health.add("secrets", "fail", str(exc))
        return
    if report.needing_migration:
        health.add("secrets", "warn", f"{report.total_secrets} secrets; "
                   f"{report.needing_migration} need migration to version "
                   f"{report.current_version}")
    else:
        health.add("secrets", "ok", f"{report.total_secrets} secrets, all on the current version")


def _check_round_trip(ledger: Ledger, views: ReadModels, health: Health, sample: list[str]) -> None:
    ledger.self_test()
    sample += [row.name for row in views.secrets(limit=SAMPLE_SECRETS)]
    for name in sample:
        ledger.check_decrypts(name)  # never records a read: no value leaves
    health.add("round_trip", "ok", "encryption/decryption working correctly "
               f"({len(sample)} stored secret(s) decrypted)")


def _check_rotation(views: ReadModels, health: Health) -> None:
    report = due_report(views)
    if report.due:
        health.add("rotation", "warn", "rotation is due: " + "; ".join(report.reasons))
    elif report.warnings:
        health.add("rotation", "warn", "; ".join(report.warnings))
    else:
        health.add("rotation", "ok", f"key version {report.current_version} is within the policy")


def _check_ledger(ledger: Ledger, views: ReadModels, health: Health, sample: list[str],
                  deep: bool) -> None:
    problems = (check_chain(views.recorder, tail=1000, sqlite_check=deep).problems
                + head_signature_problems(views.recorder)
                + trigger_problems(views.recorder)
                + views.problems(deep=deep, sample=sample))
    if deep:
        try:  # every streams row, head event and tree node against the signed root
            ledger.verify_heads()
        except IntegrityError as exc:
            problems.append(f"the map of stream heads: {exc}")
    if views.repaired:
        problems.append("the read models disagreed with the events when opened "
                        f"({'; '.join(views.repaired)}) and were rebuilt")
    if views.earlier_repair:
        problems.append("the read models disagreed with the events when an earlier command "
                        f"opened them ({views.earlier_repair}) and were rebuilt")
    views.acknowledge_repairs()  # reported here, once
    seq, head = views.position()
    if problems:
        health.add("ledger", "fail", "; ".join(problems))
    else:
        health.add("ledger", "ok", f"{seq} events, head {head[:16]} signed, read models current")


def _finish(health: Health, as_json: bool) -> None:
    if health.fmt == "prometheus":
        from projections.renderers import prometheus

        write_metrics(prometheus.render(prometheus.health_families(
            [(c.name, c.status) for c in health.checks], health.healthy, health.verified_seq,
            datetime.now(UTC))), health.out)
    elif as_json:
        emit_json({"healthy": health.healthy,
                   "checks": [{"name": c.name, "status": c.status, "detail": c.detail}
                              for c in health.checks]})
    else:
        console.print("🏥 Encryption System Health Check")
        for number, check in enumerate(health.checks, 1):
            console.print()
            console.print(f"{number}. {check.name.replace('_', ' ').title()}")
            console.print(f"   {_ICONS[check.status]} {check.detail}", markup=False)
        console.print()
        console.print("✅ Healthy" if health.healthy else "❌ Not healthy")
    if not health.healthy:
        raise typer.Exit(EXIT_FAILED)


@handles_errors
def rebuild_projections(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Drop the read models and rebuild them from the events alone.

    Needs no master password: the events hold everything the read models show.

    Example:  keyledger rebuild-projections
    """
    with open_read_models(ctx, check=False) as views:  # checking first would rebuild twice
        replayed = views.rebuild()
        # The heads tree is the store's index over the signed streams rows: rewritten
        # only when those rows prove, so a repair never trusts what it did not check.
        tree_rewritten = repair_heads_tree(views.recorder)
        seq, head = views.position()
        if as_json:
            emit_json({"events_replayed": replayed, "seq": seq, "head_hash": head,
                       "heads_tree_rewritten": tree_rewritten})
        else:
            console.print(f"✅ Rebuilt the read models from {replayed} events (head {head[:16]})")
            if tree_rewritten:
                console.print("✅ Rewrote the heads tree from the signed streams rows "
                              "(a node had been changed)")
