"""``keyledger roles create``: the database's own grants for a PostgreSQL ledger."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.context import JsonOption, settings
from cli.output import console, emit_json, handles_errors
from ledger import InvalidInputError

app = typer.Typer(help="Database roles for a PostgreSQL ledger (app, operator, auditor).",
                  no_args_is_help=True)


@app.command("create")
@handles_errors
def create(
    ctx: typer.Context,
    print_only: Annotated[bool, typer.Option(
        "--print", help="Print the SQL instead of running it (for a DBA to review and run).")] = False,
    prefix: Annotated[str, typer.Option(
        "--prefix", help="The roles' common prefix.")] = "keyledger_",
    as_json: JsonOption = False,
) -> None:
    """Create the group roles PREFIXapp, PREFIXoperator and PREFIXauditor (NOLOGIN) and
    grant them their rights on the ledger's schema; running it again changes nothing.

    An administrator then grants them to login roles (GRANT keyledger_app TO web). Needs
    the role that ran init, with the right to create roles. No master password.

    Example:  keyledger --db postgresql://admin@db.internal/secrets roles create --print
    """
    import re

    from ledger.locations import is_server

    target = settings(ctx).db
    if not is_server(target):
        raise InvalidInputError("roles are a PostgreSQL ledger's: name one with --db "
                                "postgresql://... (a file's access is its permissions)")
    if re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", prefix) is None:
        raise InvalidInputError(f"--prefix must be a plain lower-case name, not {prefix!r}")
    from ledger.store_postgres import split_target
    from ledger.store_postgres_roles import roles_sql

    if print_only:
        for statement in roles_sql(split_target(target)[1], prefix):
            console.print(" ".join(statement.split()) + ";", markup=False, highlight=False,
                          soft_wrap=True)
        return
    with settings(ctx).recorder() as recorder:
        created = recorder.create_roles(prefix)  # type: ignore[attr-defined]
    if as_json:
        emit_json({"roles": dict(zip(("app", "operator", "auditor"), created, strict=True))})
    else:
        console.print(f"✅ Roles {', '.join(created)} hold their grants on the ledger; grant "
                      "them to login roles (GRANT ... TO ...)")
