"""The ``keyledger`` command: the root app, its global options, and the wiring."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

# typer >= 0.29 carries its own copy of click; its exceptions live there.
from typer._click.exceptions import ClickException

from cli import audit, backup, handover, health, keyring, keys, migrate, policy, roles, secrets
from cli.context import Settings
from cli.env import ACTOR_ENV, DB_ENV, DEFAULT_DB, LOCK_TIMEOUT_ENV
from cli.output import EXIT_FAILED, usage_error
from ledger.store import LOCK_RETRY_SECONDS
from ledger.store_sqlite import Durability

app = typer.Typer(
    name="keyledger",
    help="Audit-first key rotation: versioned AES-256-GCM keys, an event-sourced SQLite ledger.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    # A traceback must never print a key, a password or a secret value.
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[
        str, typer.Option("--db", envvar=DB_ENV,
                          help="The ledger: a file, or a postgresql:// URL (see docs/postgresql.md).")
    ] = DEFAULT_DB,
    actor: Annotated[
        str | None,
        typer.Option("--actor", envvar=ACTOR_ENV,
                     help="Who is acting, for the audit trail (default: user@host)."),
    ] = None,
    durability: Annotated[
        Durability,
        typer.Option("--durability", envvar="KEYLEDGER_DURABILITY",
                     help="full: every commit survives power loss (fsync); normal: the last "
                          "commits may be lost on power loss, never on a crash."),
    ] = "full",
    lock_timeout: Annotated[
        float,
        typer.Option("--lock-timeout", envvar=LOCK_TIMEOUT_ENV, min=0,
                     help="Seconds to wait for another writer before giving up."),
    ] = LOCK_RETRY_SECONDS,
) -> None:
    """keyledger keeps secrets encrypted under versioned keys and records every change.

    The master password comes from ENCRYPTION_MASTER_PASSWORD (or a prompt on a terminal).

    Example:  keyledger --db /srv/app/keyledger.db report
    """
    ctx.obj = Settings(db=db, actor=actor, durability=durability, lock_timeout=lock_timeout)


app.command("init")(keyring.init)
app.command("info")(keyring.info)
app.command("report")(migrate.report)
app.command("rotate")(keyring.rotate)
app.command("migrate")(migrate.migrate)
app.command("full-rotation")(migrate.full_rotation)
app.command("health-check")(health.health_check)
app.command("rekey-master")(keyring.rekey_master)
app.command("rebuild-projections")(health.rebuild_projections)
app.command("due")(policy.due)
app.command("backup")(backup.backup)
app.command("verify-backup")(backup.verify_backup_command)
app.command("restore")(backup.restore_command)
app.command("copy")(backup.copy_command)
app.command("run", context_settings={"allow_interspersed_args": False})(handover.run_command)
app.add_typer(secrets.app, name="secrets")
app.add_typer(keys.app, name="keys")
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
app.add_typer(roles.app, name="roles")


def main() -> None:
    """Run the CLI; a usage error becomes one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except ClickException as exc:
        if not exc.format_message().strip():  # bare `keyledger`: the help was shown
            sys.exit(exc.exit_code)
        usage_error(exc.format_message(), as_json="--json" in sys.argv)
    except typer.Abort:
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)
