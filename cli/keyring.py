"""The keyring commands: init (a new ledger, key version 1 current), info, rotate, rekey-master."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.context import (
    CLI_ORIGIN,
    DryRunOption,
    JsonOption,
    YesOption,
    confirm,
    master_password,
    new_master_password,
    open_ledger,
    open_read_models,
    settings,
)
from cli.output import ERASE_PENDING_WARNING, console, emit_json, handles_errors, warn
from ledger import Ledger, LedgerFormatError, RotationResult
from ledger.domain import range_warning
from ledger.signing import recorded_public_key

if TYPE_CHECKING:
    from projections import KeyringInfo, ReadModels

SHORT_PASSWORD = 12


@handles_errors
def init(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Create the ledger and key version 1. Running it again changes nothing.

    Example:  ENCRYPTION_MASTER_PASSWORD=... keyledger --db /srv/app/keyledger.db init
    """
    s = settings(ctx)
    file = s.file
    if file is None or (file.exists() and file.stat().st_size > 0):
        recorder = s.recorder(create=file is None)  # a server's schema may not exist yet
        initialized = recorder.is_initialized()
        recorder.close()
        if initialized:
            ledger, views = open_ledger(ctx)  # checks the password; appends nothing
            with ledger, views:
                _show_init(views, created=False, as_json=as_json)
            return
        if file is not None:
            raise LedgerFormatError(f"{s.db} exists and is not a keyledger ledger")
    password = master_password(confirm=True)
    if len(password) < SHORT_PASSWORD:
        warn(f"the master password is shorter than {SHORT_PASSWORD} characters")
    from projections import ReadModels, projector

    runner = projector()
    recorder = s.recorder(create=True, projector=runner)
    with Ledger.initialize(recorder, password, actor=s.actor, origin=CLI_ORIGIN):
        _show_init(ReadModels(recorder, runner), created=True, as_json=as_json)


def _show_init(views: ReadModels, *, created: bool, as_json: bool) -> None:
    keyring = views.keyring()
    path = views.recorder.location
    public_key = recorded_public_key(views.recorder)
    if as_json:
        emit_json({"created": created, "db": str(path), "current_version": keyring.current_version,
                   "kdf_iterations": keyring.kdf_iterations, "public_key": public_key})
    elif created:
        console.print(f"✅ Created ledger {path} with key version {keyring.current_version}")
        console.print(f"🔏 Checkpoint signing key: {public_key}")
        console.print("   Keep it somewhere else; `keyledger audit verify --pubkey KEY` pins it.")
    else:
        console.print(f"✓  Ledger {path} already initialised; nothing changed")


@handles_errors
def info(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the key versions: current, available, created, rotated, status.

    Needs no master password: it reads metadata only.

    Example:  keyledger info --json | jq .current_version
    """
    with open_read_models(ctx) as views:
        keyring = views.keyring()
        if as_json:
            emit_json(info_document(keyring, views.position()))
        else:
            render_info(keyring)


def info_document(keyring: KeyringInfo, position: tuple[int, str]) -> dict[str, object]:
    return {
        "current_version": keyring.current_version,
        "available_versions": keyring.available_versions,
        "key_metadata": {
            str(v.version): {
                "created_at": v.created_at, "rotated_at": v.rotated_at, "status": v.status,
                "range": v.range, "origin": v.origin, "algorithm": v.algorithm,
                "fingerprint": v.fingerprint, "secrets": v.secrets,
                "encryptions": v.encryptions,
            }
            for v in keyring.versions
        },
        "kdf_iterations": keyring.kdf_iterations,
        "as_of": {"seq": position[0], "head_hash": position[1]},
    }


def render_info(keyring: KeyringInfo) -> None:
    console.print("📊 Encryption Key Information")
    console.print(f"🔑 Current Version: {keyring.current_version}")
    console.print(f"📦 Available Versions: {keyring.available_versions}")
    console.print()
    from rich import box  # here: start-up stays lean
    from rich.table import Table

    table = Table(title="📅 Key Metadata", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("Version", "Status", "Created", "Rotated", "Origin", "Secrets"):
        table.add_column(column, no_wrap=True)
    for v in keyring.versions:
        status = "✅ active" if v.status == "active" else v.status
        table.add_row(f"{v.version} {v.range}", status, _day(v.created_at), _day(v.rotated_at),
                      v.origin, str(v.secrets))
    console.print(table)
    console.print("   (full timestamps: keyledger info --json)")


def _day(stamp: str | None) -> str:
    return "-" if stamp is None else stamp[:10]


@handles_errors
def rotate(
    ctx: typer.Context,
    new_version: Annotated[
        int | None, typer.Option(help="Version to rotate to (default: next unused regular one).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create a new key version and make it current. Versions are never reused.

    Existing secrets stay readable under their old versions until migrated.

    Examples:
      keyledger rotate --dry-run
      keyledger rotate --new-version 99 --reason "suspected exposure" --yes
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        ask = ConfirmRotation("Are you sure you want to rotate to version {v}?", yes)
        result = ledger.rotate(new_version, reason=reason, dry_run=dry_run, confirm=ask)
        show_rotation(result, as_json=as_json, warned=ask.warned)


class ConfirmRotation:
    """The confirm step of a rotation: warn about the version's range first, then ask."""

    def __init__(self, question: str, yes: bool) -> None:
        self.question = question
        self.yes = yes
        self.warned = False

    def __call__(self, version: int) -> None:
        warning = range_warning(version)
        if warning:
            warn(warning)
            self.warned = True
        confirm(self.question.format(v=version), self.yes)


def show_rotation(result: RotationResult, *, as_json: bool, warned: bool = False) -> None:
    if result.warning and not warned:
        warn(result.warning)
    if as_json:
        emit_json(rotation_document(result))
        return
    if result.dry_run:
        console.print(
            f"🔍 Dry run: would rotate from version {result.from_version} to "
            f"{result.to_version}; nothing was changed"
        )
        return
    console.print(f"✅ Successfully rotated to version {result.to_version}")
    console.print()
    console.print("⚠️  Note: Existing secrets are still encrypted with old versions.")
    console.print(f"   Run 'migrate --target-version {result.to_version}' to re-encrypt them.")


def rotation_document(result: RotationResult) -> dict[str, object]:
    return {"from_version": result.from_version, "to_version": result.to_version,
            "dry_run": result.dry_run, "warning": result.warning}


@handles_errors
def rekey_master(ctx: typer.Context, yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Change the master password: re-wrap every data key, re-encrypt no secret.

    The new password comes from ENCRYPTION_NEW_MASTER_PASSWORD, or a hidden prompt on a
    terminal. Afterwards only the new password opens the ledger.

    Example:
      ENCRYPTION_NEW_MASTER_PASSWORD="$(cat /run/secrets/new)" keyledger rekey-master --yes
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        confirm("Re-wrap every key under a new master password?", yes)
        count = ledger.rekey_master(new_master_password())
        pending = ledger.erase_pending
        if pending is not None:
            warn(ERASE_PENDING_WARNING.format(what="a copy of the old key wraps") +
                 "; a copy of the file taken now still opens with the old password")
        if as_json:
            emit_json({"rewrapped_keys": count, "kdf_iterations": ledger.kdf_iterations,
                       "erase_pending": pending is not None})
        else:
            console.print(f"✅ Re-wrapped {count} key version(s) under the new master password")
            console.print("   Update ENCRYPTION_MASTER_PASSWORD everywhere it is used.")
