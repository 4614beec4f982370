"""``keyledger keys``: retire, reinstate, destroy and cancel-destroy key versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.completion import key_versions
from cli.context import JsonOption, YesOption, confirm, open_ledger
from cli.output import ERASE_PENDING_WARNING, console, emit_json, handles_errors, warn
from ledger import InvalidInputError
from ledger.domain import parse_duration

if TYPE_CHECKING:
    from ledger.lifecycle import LifecycleResult

app = typer.Typer(
    help="Retire, reinstate and destroy key versions (crypto-shredding).", no_args_is_help=True,
)

VersionArgument = Annotated[int, typer.Argument(help="The key version.", min=1, max=255,
                                                autocompletion=key_versions)]
ReasonOption = Annotated[str | None, typer.Option(help="Why, for the audit trail.")]


@app.command("retire")
@handles_errors
def retire(
    ctx: typer.Context, version: VersionArgument, reason: ReasonOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Retire even though live secrets are on it (they become unreadable).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Stop a key version from encrypting or decrypting (reversible with reinstate).

    Refused while live secrets are still on the version: migrate them first.

    Example:  keyledger keys retire 1 --reason "superseded after quarterly rotation"
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        _show(ledger.retire(version, force=force, reason=reason), "retired", as_json)


@app.command("reinstate")
@handles_errors
def reinstate(
    ctx: typer.Context, version: VersionArgument, reason: ReasonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let a retired key version decrypt again.

    Example:  keyledger keys reinstate 1 --reason "restoring an old backup"
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        _show(ledger.reinstate(version, reason=reason), "reinstated", as_json)


@app.command("destroy")
@handles_errors
def destroy(
    ctx: typer.Context, version: VersionArgument,
    confirm_version: Annotated[int, typer.Option(
        help="The same version number again: destroying is irreversible.")],
    after: Annotated[str | None, typer.Option(
        help="Schedule instead, after a waiting period like 7d (run destroy again then).")] = None,
    reason: ReasonOption = None, yes: YesOption = False, as_json: JsonOption = False,
) -> None:
    """Erase a retired key version's data key: what it encrypted becomes unreadable for good.

    Only a retired version with no live secret. With --after, the destruction is
    scheduled and can be cancelled until then (keys cancel-destroy).

    Examples:
      keyledger keys destroy 1 --confirm-version 1 --after 7d --yes
      keyledger keys destroy 1 --confirm-version 1 --yes      # once the 7 days are over
    """
    if confirm_version != version:
        raise InvalidInputError(f"--confirm-version {confirm_version} does not match version {version}")
    waiting = parse_duration(after) if after is not None else None
    ledger, views = open_ledger(ctx)
    with ledger, views:
        if waiting is None:
            confirm(f"Destroy key version {version} for good?", yes)
        _show(ledger.destroy(version, after=waiting, reason=reason),
              "scheduled for destruction" if waiting else "destroyed", as_json)


@app.command("cancel-destroy")
@handles_errors
def cancel_destroy(ctx: typer.Context, version: VersionArgument, as_json: JsonOption = False) -> None:
    """Cancel a scheduled destruction; the version stays retired.

    Example:  keyledger keys cancel-destroy 1
    """
    ledger, views = open_ledger(ctx)
    with ledger, views:
        _show(ledger.cancel_destroy(version), "no longer scheduled for destruction", as_json)


def _show(result: LifecycleResult, done: str, as_json: bool) -> None:
    if result.erase_pending:
        warn(ERASE_PENDING_WARNING.format(what=f"key version {result.version}'s wrapped data key"))
    if as_json:
        emit_json({"version": result.version, "status": result.status,
                   "live_secrets": result.live_secrets, "destroy_after": result.destroy_after,
                   "erase_pending": result.erase_pending})
        return
    when = f" after {result.destroy_after}" if result.destroy_after else ""
    console.print(f"✅ Key version {result.version} {done}{when} (status: {result.status})")
    if result.live_secrets and result.status == "retired":
        console.print(f"⚠️  {result.live_secrets} live secret(s) on it cannot be read until it is "
                      "reinstated")
