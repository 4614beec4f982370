"""``keyledger secrets``: set, get, list, history, delete, import, import-seed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import handover
from cli.completion import secret_names
from cli.context import (
    JsonOption,
    master_password,
    open_ledger,
    open_ledger_alone,
    open_read_models,
    settings,
    stdin_is_tty,
)
from cli.output import EXIT_FAILED, console, emit_json, err_console, handles_errors, printable
from ledger import InvalidInputError, Ledger
from ledger.crypto import SEED_SALT_TEMPLATE
from ledger.domain import MAX_VALUE_BYTES, needs_migration

if TYPE_CHECKING:
    from ledger import ImportResult
    from projections.reports.history import HistoryEntry

app = typer.Typer(
    help="Store, read, list, delete and import secrets.", no_args_is_help=True,
)

app.command("export")(handover.export_command)

NameArgument = Annotated[str, typer.Argument(help="The secret's name.",
                                             autocompletion=secret_names)]
FileArgument = Annotated[
    Path, typer.Argument(exists=False, dir_okay=False, help="The file to import.")
]


@app.command("set")
@handles_errors
def set_secret(
    ctx: typer.Context,
    name: NameArgument,
    value: Annotated[
        str | None,
        typer.Option(help="The value. Avoid it: it lands in shell history and shows in the "
                                "process list (ps) while the command runs. Prefer stdin."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Encrypt a value under the current key version and record it.

    Without --value the value is read from stdin (one trailing newline stripped), or
    asked for without echo on a terminal.

    Examples:
      keyledger secrets set db_password < /run/secrets/db_password
      printf '%s' "$TOKEN" | keyledger secrets set api_token
    """
    if value is None:
        value = _read_value()
    ledger, views = open_ledger(ctx)
    with ledger, views:
        state = ledger.set(name, value)
        if as_json:
            emit_json({"name": name, "version": state.key_version, "revision": state.revision})
        else:
            console.print(f"✅ Stored {name} under key version {state.key_version} "
                          f"(revision {state.revision})", markup=False)


def _read_value() -> str:
    """The value from stdin (one trailing newline stripped), or a hidden prompt on a TTY."""
    if stdin_is_tty():
        return str(typer.prompt("Value", hide_input=True))
    if sys.stdin is None:
        raise InvalidInputError("no value given: pipe it on stdin or pass --value")
    # At most one byte past the limit (plus a newline) is read: `< /dev/zero` is refused
    # at 64 KiB, not after filling the memory.
    data = sys.stdin.buffer.read(MAX_VALUE_BYTES + 3)
    if len(data.removesuffix(b"\n").removesuffix(b"\r")) > MAX_VALUE_BYTES:
        raise InvalidInputError(f"a secret value may be at most {MAX_VALUE_BYTES} bytes "
                                "(stdin holds more)")
    if not data:
        raise InvalidInputError("stdin was empty: pipe the value in (or --value '' to store an empty one)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("the value on stdin is not valid UTF-8") from None
    return text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text


@app.command("get")
@handles_errors
def get_secret(
    ctx: typer.Context,
    name: NameArgument,
    as_json: JsonOption = False,
) -> None:
    """Decrypt a secret and print its value.

    Example:  export DB_PASSWORD="$(keyledger secrets get db_password)"
    """
    with open_ledger_alone(ctx) as ledger:
        secret = ledger.get(name)
    if as_json:
        emit_json({"name": secret.name, "value": secret.value, "version": secret.version})
    else:
        sys.stdout.write(secret.value + "\n")


@app.command("list")
@handles_errors
def list_secrets(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List every live secret with its key version. Shows no values; needs no password.

    Example:  keyledger secrets list --json
    """
    with open_read_models(ctx) as views:
        rows = views.secrets()
        current = views.keyring().current_version
    if as_json:
        emit_json([{"name": r.name, "version": r.key_version, "revision": r.revision,
                    "scheme": r.scheme, "updated_at": r.updated_at} for r in rows])
        return
    from rich.table import Table  # here: start-up stays lean
    from rich.text import Text

    table = Table(title=f"🔐 {len(rows)} secret(s)", title_justify="left")
    for column in ("Name", "Key version", "Revision", "Updated"):
        table.add_column(column)
    for r in rows:
        mark = " ⚠️" if needs_migration(r.key_version, r.scheme, current) else ""
        # Text: a name is shown as it is, never read as rich markup ("[/]", "[bold]x[/bold]").
        table.add_row(Text(r.name), f"{r.key_version}{mark}", str(r.revision), r.updated_at)
    console.print(table)


@app.command("history")
@handles_errors
def history(
    ctx: typer.Context,
    name: NameArgument,
    as_json: JsonOption = False,
) -> None:
    """Show every change to one secret, and every read of it that read auditing recorded.

    Writes, imports, migrations, resets, restores and the deletion, in seq order, with who,
    when, from where and under which key version. Shows no values; needs no password.

    Example:  keyledger secrets history db_password --json
    """
    with settings(ctx).recorder() as recorder:
        from projections.reports.history import secret_history  # here: start-up stays lean

        found = secret_history(recorder, name)
    if as_json:
        emit_json({"name": found.name, "events": [e.to_json() for e in found.entries],
                   "as_of": {"seq": found.as_of[0], "head_hash": found.as_of[1]}})
        return
    # One line per event (never wrapped), so the history greps and diffs like a log.
    console.print(f"📜 {found.name}: {len(found.entries) - found.reads} change(s), "
                  f"{found.reads} recorded read(s)", markup=False)
    for entry in found.entries:
        details = _details(entry)
        console.print(f"{entry.seq:>6}  {entry.occurred_at}  {entry.type:<15} "
                      f"{_version(entry):<8} by {printable(entry.actor)} ({printable(entry.origin)})"
                      + (f"  {details}" if details else ""), markup=False)


def _version(entry: HistoryEntry) -> str:
    if entry.type == "SecretMigrated":
        return f"v{entry.details['from_version']} → v{entry.details['to_version']}"
    return "-" if entry.key_version is None else f"v{entry.key_version}"


def _details(entry: HistoryEntry) -> str:
    shown = {k: v for k, v in entry.details.items()
             if k not in ("from_version", "to_version") and v not in (None, False)}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


@app.command("reset")
@handles_errors
def reset_secret(
    ctx: typer.Context,
    name: NameArgument,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Replace a secret's value to repair it (a corrupted ciphertext, say); recorded as a reset.

    The new value is read from stdin, like secrets set. The secret must exist (or have existed).

    Example:  keyledger secrets reset db_password --reason "ciphertext corrupted" < new_password.txt
    """
    value = _read_value()
    ledger, views = open_ledger(ctx)
    with ledger, views:
        state = ledger.reset(name, value, reason=reason)
    if as_json:
        emit_json({"name": name, "version": state.key_version, "revision": state.revision})
    else:
        console.print(f"✅ Reset {name} (revision {state.revision}, key version {state.key_version})",
                      markup=False)


@app.command("restore")
@handles_errors
def restore_secret(
    ctx: typer.Context,
    name: NameArgument,
    from_backup: Annotated[Path, typer.Option(
        "--from-backup", dir_okay=False, help="The backup to take the value from.")],
    as_json: JsonOption = False,
) -> None:
    """Bring one secret's value back from a backup, as a new revision (history is kept).

    The backup must open with the same master password.

    Example:  keyledger secrets restore db_password --from-backup /backup/keyledger-2026-11-01.db
    """
    password = master_password()
    with Ledger.open(from_backup, password, upgrade=False, seen=None) as backup:
        ledger, views = open_ledger(ctx, password)
        with ledger, views:
            state = ledger.restore_from_backup(name, backup, backup_file=from_backup.name)
    if as_json:
        emit_json({"name": name, "version": state.key_version, "revision": state.revision,
                   "backup_file": from_backup.name})
    else:
        console.print(f"✅ Restored {name} from {from_backup.name} (now revision {state.revision})",
                      markup=False)


@app.command("delete")
@handles_errors
def delete_secret(
    ctx: typer.Context,
    name: NameArgument,
    as_json: JsonOption = False,
) -> None:
    """Delete a secret. Its history stays in the ledger.

    Example:  keyledger secrets delete old_api_key
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        ledger.delete(name)
    if as_json:
        emit_json({"name": name, "deleted": True})
    else:
        console.print(f"🗑️  Deleted {name}", markup=False)


OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace secrets that already exist (default: skip them).")
]


@app.command("import")
@handles_errors
def import_secrets(
    ctx: typer.Context, file: FileArgument, overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Import plaintext values from a JSON object (name -> value) or a .env file.

    All or nothing: one invalid entry and nothing is written. Names that already hold a
    secret are skipped unless --overwrite. Delete the file afterwards.

    Examples:
      keyledger secrets import secrets.json
      keyledger secrets import production.env
    """
    from ledger.import_formats import check_import_file_untrusted  # here: start-up stays lean

    checked = check_import_file_untrusted(file)  # a bad file is refused before the password
    ledger, views = open_ledger(ctx)
    with ledger, views:
        result = ledger.import_file(checked, overwrite=overwrite)
    _show_import(result, as_json)


@app.command("import-seed")
@handles_errors
def import_seed(
    ctx: typer.Context,
    file: FileArgument,
    salt_template: Annotated[
        str, typer.Option(help="The old system's salt, with {v} for the version.")
    ] = SEED_SALT_TEMPLATE,
    legacy_version: Annotated[
        int, typer.Option(help="Key version of un-versioned (legacy) ciphertexts.")
    ] = 1,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Import ciphertexts written by the old key-rotation system (same master password).

    Readable entries are imported even when others are not; each unreadable one is named
    with its reason and the exit code is then 1.

    Example:  keyledger secrets import-seed exported_secrets.json
    """
    from ledger.import_formats import parse_seed_untrusted  # here: start-up stays lean

    tokens = parse_seed_untrusted(file)
    password = master_password()
    ledger, views = open_ledger(ctx, password)
    with ledger, views:
        result = ledger.import_seed(
            tokens, password, salt_template=salt_template,
            legacy_version=legacy_version, overwrite=overwrite,
        )
    _show_import(result, as_json)


def _show_import(result: ImportResult, as_json: bool) -> None:
    if as_json:
        emit_json({
            "imported": result.imported, "reencrypted": result.reencrypted,
            "stored_as_is": result.stored_as_is, "created_versions": result.created_versions,
            "skipped": result.skipped, "failed": len(result.failures),
            "failures": [{"name": f.name, "error": f.reason} for f in result.failures],
        })
    else:
        console.print(f"✅ Imported {result.imported} secret(s)")
        if result.created_versions:
            console.print(f"🔑 Key versions taken over from the old system: "
                          f"{result.created_versions}")
        if result.reencrypted:
            console.print(f"🔁 Re-encrypted under the current version: {result.reencrypted}")
        if result.skipped:
            console.print(f"⏭️  Skipped {len(result.skipped)} existing secret(s) "
                          "(--overwrite replaces them): " + ", ".join(result.skipped), markup=False)
        for failure in result.failures:  # names come from the file: shown escaped
            err_console.print(f"❌ {failure.name!r}: {failure.reason}", markup=False)
    if result.failures:
        raise typer.Exit(EXIT_FAILED)
