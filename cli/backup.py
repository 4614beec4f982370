"""Backup commands: backup, verify-backup, restore."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.context import CLI_ORIGIN, JsonOption, confirm, master_password, open_ledger, settings
from cli.output import EXIT_FAILED, console, emit_json, err_console, handles_errors, warn
from ledger import Ledger, environment

BackupFile = Annotated[Path, typer.Argument(dir_okay=False, help="The backup file.")]


@handles_errors
def backup(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="Where to write the copy (new file).")],
    as_json: JsonOption = False,
) -> None:
    """Write a consistent copy of the ledger while writers run, verify it, and record it.

    The copy holds ciphertexts and wrapped keys, never plaintext, and opens with the
    master password in force when it was taken.

    Example:  keyledger backup --out /backup/keyledger-$(date +%F).db
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        from ledger.backup import take_backup  # here: no other command loads it

        result = take_backup(ledger.session, out)
    if as_json:
        emit_json({"path": result.path, "events": result.events, "head_hash": result.head,
                   "sha256": result.sha256, "bytes": result.bytes})
    else:
        console.print(f"✅ Backed up {result.events} events to {result.path} "
                      f"({result.bytes:,} bytes, sha256 {result.sha256[:16]}…); the copy verifies")


@handles_errors
def verify_backup_command(ctx: typer.Context, file: BackupFile, as_json: JsonOption = False) -> None:
    """Check a backup: its hash chain, its signed checkpoints and, with the master password,
    that every secret decrypts.

    Without ENCRYPTION_MASTER_PASSWORD (or its _FILE) the values are not checked. Exit 1 if
    anything fails.

    Example:  keyledger verify-backup /backup/keyledger-2026-11-28.db --json
    """
    # The same rules as every command (a file, never both), but no prompt: without a
    # password the values are simply not checked.
    password = environment.from_environment(environment.PASSWORD_ENV, os.environ, warn=warn)
    from ledger.backup import verify_backup

    report = verify_backup(file, password)
    if as_json:
        emit_json({"ok": report.ok, "path": report.path, "events": report.chain.events,
                   "head_hash": report.chain.head, "chain_ok": report.chain.ok,
                   "first_bad_seq": report.chain.first_bad_seq,
                   "checkpoints": report.chain.checkpoints,
                   "latest_checkpoint": None if report.chain.latest_checkpoint is None
                   else report.chain.latest_checkpoint.to_json(),
                   "public_key": report.chain.public_key, "secrets": report.secrets,
                   "decrypted": report.decrypted, "versions": report.versions,
                   "failures": report.failures})
    else:
        mark = "✅" if report.chain.ok else "❌"
        console.print(f"{mark} Chain: {report.chain.events} events, head {report.chain.head[:16]}"
                      + ("" if report.chain.ok else f"; {'; '.join(report.chain.problems)}"))
        if report.chain.latest_checkpoint is not None:
            latest = report.chain.latest_checkpoint
            console.print(f"🔏 Signed checkpoint at seq {latest.seq} ({latest.signed_at}), "
                          f"key {report.chain.public_key}")
        if report.decrypted is None:
            console.print("⚠️  Values not checked (neither ENCRYPTION_MASTER_PASSWORD nor its _FILE is set)")
        else:
            console.print(f"🔐 {report.decrypted} of {report.secrets} secrets decrypt; key versions "
                          f"{report.versions}")
        for failure in report.failures:
            err_console.print(f"❌ {failure}", markup=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@handles_errors
def restore_command(
    ctx: typer.Context, file: BackupFile,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a ledger whose history is not a prefix of the backup's.")] = False,
    # Not the shared --yes/--force option: here --force means something stronger.
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Replace the ledger with a backup, recording the restore in it in the same step.

    Refused when the ledger has events the backup lacks (it would lose them) unless --force.

    Example:  keyledger restore /backup/keyledger-2026-11-28.db --yes
    """
    s = settings(ctx)
    password = master_password()
    # Checked before asking: the password must open the backup (restore checks the
    # ledger it replaces too).
    Ledger.open(file, password, upgrade=False, seen=None).close()
    confirm(f"Replace {s.db} with {file}?", yes)
    from ledger.backup import restore
    from projections import projector

    done = restore(file, s.file or s.db, password, force=force, actor=s.actor,
                   origin=CLI_ORIGIN, projector=projector())
    if as_json:
        emit_json({"restored_from": str(file), "events_before": done.events_before,
                   "events_restored": done.events_restored, "forced": force,
                   "kept_aside": None if done.kept_aside is None else str(done.kept_aside)})
    else:
        console.print(f"✅ Restored {s.db} from {file}: {done.events_restored} events "
                      f"(it had {done.events_before})")
        if done.kept_aside is not None:
            console.print(f"   the ledger it replaced did not read as one; kept as {done.kept_aside}")


@handles_errors
def copy_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The ledger to copy: a file or a postgresql:// URL.")],
    destination: Annotated[str, typer.Argument(
        help="Where to: an absent or empty file, or a postgresql:// URL of an empty schema.")],
    pubkey: Annotated[str | None, typer.Option(
        "--pubkey", help="Pin the source's signing key (as `audit pubkey` prints it).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Copy a whole ledger to another file or server: the same events, hashes, signatures
    and wrapped keys, so both verify with the same head. Needs no master password.

    The source is verified first and read in one snapshot while writers go on; the copy
    is verified before this reports success. Nothing is appended to either ledger.

    Example:  keyledger copy /srv/app/keyledger.db "postgresql://ops@db.internal/secrets"
    """
    from ledger.copying import copy_ledger
    from projections import projector

    done = copy_ledger(source, destination, projector=projector(), pinned_key=pubkey)
    if as_json:
        emit_json({"source": done.source, "destination": done.destination,
                   "events": done.events, "head": done.head})
    else:
        console.print(f"✅ Copied {done.events} events to {done.destination}; it verifies with "
                      f"the source's head {done.head[:16]}…")
