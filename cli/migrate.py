"""Migration commands: report, migrate, full-rotation."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from cli.context import (
    DryRunOption,
    JsonOption,
    YesOption,
    confirm,
    open_ledger,
    open_read_models,
    warn_of_findings,
)
from cli.keyring import ConfirmRotation, rotation_document, show_rotation
from cli.output import EXIT_FAILED, console, emit_json, err_console, handles_errors
from cli.policy import due_report
from ledger import ConcurrencyError, Ledger, LedgerStorageError, MigrationResult
from ledger.migration import DEFAULT_BATCH_SIZE
from ledger.migration import Progress as ProgressCallback

if TYPE_CHECKING:
    from projections import DistributionReport

BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Secrets re-encrypted per transaction.")
]


@handles_errors
def report(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show how many secrets sit on each key version and how many need migrating.

    Needs no master password: it reads metadata only.

    Example:  watch -n 60 keyledger report
    """
    with open_read_models(ctx) as views:
        found = len(views.repaired)  # what opening them found is already said
        result = views.proven_report()
        seq, head = views.position()
        warn_of_findings(views, found)
        if as_json:
            emit_json({**report_document(result), "signed": not views.unproven,
                       "as_of": {"seq": seq, "head_hash": head}})
            return
        render_report(result)


def report_document(result: DistributionReport) -> dict[str, object]:
    return {
        "total_secrets": result.total_secrets,
        "current_version": result.current_version,
        "needing_migration": result.needing_migration,
        "distribution": {str(v): n for v, n in result.distribution.items()},
    }


def render_report(result: DistributionReport) -> None:
    console.print("📈 Secret Version Distribution Report")
    console.print(f"📦 Total Secrets: {result.total_secrets}")
    console.print(f"🔑 Current Encryption Version: {result.current_version}")
    marker = "⚠️ " if result.needing_migration else "✅"
    console.print(f"{marker} Secrets Needing Migration: {result.needing_migration}")
    console.print()
    console.print("📊 Version Distribution:")
    for version, count in result.distribution.items():
        share = 100.0 * count / result.total_secrets if result.total_secrets else 0.0
        icon = "✅" if version == result.current_version else "⚠️ "
        console.print(f"  {icon} Version {version}: {count} secrets ({share:.1f}%)")


@handles_errors
def migrate(
    ctx: typer.Context,
    target_version: Annotated[
        int | None, typer.Option(help="Must be the current version (the default).")
    ] = None,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Re-encrypt every secret not yet under the current key version.

    Batched and resumable: re-running after an interruption continues where it stopped.
    A secret that fails is reported and the rest go on; the exit code is then 1.

    Examples:
      keyledger migrate --target-version 3 --dry-run
      keyledger migrate --target-version 3 --force --batch-size 5000
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        pending = views.proven_report().needing_migration
        if not dry_run and pending:
            confirm(f"Re-encrypt {pending} secret(s) under the current key version?", yes)
        result = _run_migration(ledger, target_version, batch_size, dry_run, as_json)
        if as_json:
            emit_json(migration_document(result))
        else:
            render_migration(result)
        if result.failed:
            raise typer.Exit(EXIT_FAILED)


def _run_migration(
    ledger: Ledger, target: int | None, batch_size: int, dry_run: bool, as_json: bool
) -> MigrationResult:
    with _progress_bar(enabled=not as_json and sys.stderr.isatty()) as progress:
        return ledger.migrate(target, batch_size=batch_size, dry_run=dry_run, progress=progress)


@contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[ProgressCallback | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console.rich, transient=True) as bar:
        task = bar.add_task("migrating", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def migration_document(result: MigrationResult) -> dict[str, object]:
    return {
        "migrated": result.migrated,
        "already_current": result.already_current,
        "failed": result.failed,
        "total": result.total,
        "duration_seconds": result.duration_seconds,
        "failures": [{"name": f.name, "error": f.error} for f in result.failures],
        "target_version": result.target_version,
        "run_id": result.run_id,
        "resumed": result.resumed,
        "dry_run": result.dry_run,
    }


def render_migration(result: MigrationResult) -> None:
    title = "📊 Migration Results" + (" (dry run: nothing was changed)" if result.dry_run else "")
    verb = "Would migrate" if result.dry_run else "Migrated"
    console.print(title)
    console.print(f"✅ {verb}:{' ' * (15 - len(verb))}{result.migrated}")
    console.print(f"✓  Already Current: {result.already_current}")
    console.print(f"❌ Failed:         {result.failed}")
    for failure in result.failures:
        console.print(f"  • {failure.name}: {failure.error}", markup=False)
    console.print(f"📦 Total:          {result.total}")
    console.print()
    console.print(f"⏱️  Duration: {result.duration_seconds:.2f}s")
    if result.resumed:
        console.print(f"↪️  Continued interrupted run {result.resumed}")
    if result.failed:
        console.print("⚠️  Migration finished with failures")
    elif not result.dry_run:
        console.print("✅ Migration completed successfully")


@handles_errors
def full_rotation(
    ctx: typer.Context,
    new_version: Annotated[int | None, typer.Option(help="Version to rotate to.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE,
    if_due: Annotated[bool, typer.Option(
        "--if-due", help="Only when the rotation policy says rotation is due (see `due`).")] = False,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Rotate to a new key version, then migrate every secret onto it.

    With --if-due it does nothing (exit 0) unless rotation is due, and picks the next
    version itself: a cron line needs no date arithmetic.

    Examples:
      keyledger full-rotation --dry-run
      keyledger full-rotation --reason "quarterly" --yes
      0 3 * * *  keyledger full-rotation --if-due --yes --json >> /var/log/keyledger.jsonl
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        report = due_report(views, ledger=ledger)
        if if_due:
            if not report.due:
                if as_json:
                    emit_json({"due": False, "rotation": None, "migration": None,
                               "warnings": report.warnings})
                else:
                    console.print(f"✅ No rotation due (key version {report.current_version}); "
                                  "nothing was changed")
                return
            reason = reason or "due: " + "; ".join(report.reasons)
        ask = ConfirmRotation("Rotate to version {v} and re-encrypt every secret under it?", yes)
        try:
            rotation = ledger.rotate(new_version, reason=reason, dry_run=dry_run, confirm=ask,
                                     expect_current=report.current_version if if_due else None)
        except ConcurrencyError:
            if not if_due:
                raise
            # Another process (a second cron) rotated since `due` was read: the work is done.
            if as_json:
                emit_json({"due": False, "rotation": None, "migration": None, "warnings": []})
            else:
                console.print("✅ Another process rotated meanwhile; nothing to do")
            return
        if dry_run:
            pending = views.proven_report().total_secrets
            if as_json:
                emit_json({"rotation": rotation_document(rotation),
                           "migration": {"would_migrate": pending, "dry_run": True}})
            else:
                show_rotation(rotation, as_json=False, warned=ask.warned)
                console.print(f"🔍 Dry run: would then migrate {pending} secret(s)")
            return
        try:
            migration = _run_migration(ledger, None, batch_size, False, as_json)
        except LedgerStorageError as exc:  # after the rotation was committed
            raise LedgerStorageError(exc.reason, f"rotated to key version "
                                     f"{rotation.to_version}, then {exc.consequence}") from None
        if as_json:
            emit_json({"rotation": rotation_document(rotation),
                       "migration": migration_document(migration)})
        else:
            console.print(f"✅ Rotated from version {rotation.from_version} to "
                          f"{rotation.to_version}")
            render_migration(migration)
        if migration.failed:
            raise typer.Exit(EXIT_FAILED)
