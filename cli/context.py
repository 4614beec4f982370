"""What every command shares: the ledger path, the actor, the password, confirmations."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.env import NEW_PASSWORD_ENV, PASSWORD_ENV
from cli.output import note, warn
from ledger import ConfirmationRequired, Ledger, WrongPasswordError, environment
from ledger.locations import is_server, open_recorder
from ledger.session import default_origin
from ledger.store import LOCK_RETRY_SECONDS, Projector, Recorder
from ledger.store_sqlite import Durability

if TYPE_CHECKING:
    from projections import ReadModels

CLI_ORIGIN = default_origin("keyledger-cli")

# Options reused across commands.
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")
]
YesOption = Annotated[
    bool, typer.Option("--yes", "--force", "-y", help="Do not ask for confirmation.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would happen; append nothing.")
]


@dataclass(slots=True)
class Settings:
    db: str
    actor: str | None
    durability: Durability = "full"
    lock_timeout: float = LOCK_RETRY_SECONDS

    def recorder(self, *, create: bool = False, projector: Projector | None = None,
                 read_only: bool = False) -> Recorder:
        """The ledger (a file, or a server's schema), opened with this invocation's
        durability and lock timeout (``read_only``: for a command that only reads, on a
        read-only medium too)."""
        return open_recorder(self.db, create=create, projector=projector,
                             durability=self.durability, lock_timeout=self.lock_timeout,
                             read_only=read_only)

    @property
    def file(self) -> Path | None:
        """The ledger's file, or None for a ledger on a server."""
        return None if is_server(self.db) else Path(self.db)


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def master_password(*, confirm: bool = False) -> str:
    """The master password from ``ENCRYPTION_MASTER_PASSWORD``, or a hidden prompt on a TTY."""
    return _password(PASSWORD_ENV, "Master password", confirm)


def new_master_password() -> str:
    return _password(NEW_PASSWORD_ENV, "New master password", confirm=True)


def _password(env: str, prompt: str, confirm: bool) -> str:
    """The password from ``env`` or the file ``env_FILE`` names (:mod:`ledger.environment`),
    else asked for on the terminal."""
    value = environment.from_environment(env, os.environ, warn=warn)
    if value is not None:
        return value
    if not stdin_is_tty():
        raise WrongPasswordError(
            f"{env} is not set, nor {env}{environment.FILE_SUFFIX} (and there is no terminal "
            "to ask on)")
    value = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass(f"{prompt} (again): ") != value:
        raise WrongPasswordError("the two passwords differ")
    if not value:
        raise WrongPasswordError("the password is empty")
    return value


def open_ledger(
    ctx: typer.Context, password: str | None = None
) -> tuple[Ledger, ReadModels]:
    """The ledger, unlocked, and its read models, kept current inside each append."""
    s = settings(ctx)
    password = master_password() if password is None else password
    from projections import ReadModels, projector  # here: `secrets get` never needs them

    runner = projector()
    recorder = s.recorder(projector=runner)
    ledger = Ledger.unlock(recorder, password, actor=s.actor, origin=CLI_ORIGIN)
    try:
        return ledger, _checked(ReadModels(recorder, runner))
    except BaseException:
        ledger.close()
        raise


def open_ledger_alone(ctx: typer.Context) -> Ledger:
    """The ledger, unlocked, without opening its read models: for reads that need only the
    events (``secrets get``), so their cost does not grow with the number of secrets. An
    event appended meanwhile (a recorded read) reaches the read models when next opened."""
    s = settings(ctx)
    return Ledger.unlock(s.recorder(), master_password(), actor=s.actor, origin=CLI_ORIGIN)


def open_read_models(ctx: typer.Context, *, check: bool = True) -> ReadModels:
    """The read models alone: no password needed, as they hold no plaintext. ``check=False``
    for a command that rebuilds them anyway."""
    from projections import ReadModels, projector

    runner = projector()
    recorder = settings(ctx).recorder(projector=runner)
    try:
        return _checked(ReadModels(recorder, runner, check=check))
    except BaseException:
        recorder.close()
        raise


def _checked(views: ReadModels) -> ReadModels:
    if views.upgraded:
        note("rebuilt the read models from the events for this version of keyledger "
             "(an earlier version wrote them)")
    if views.repaired:
        warn(f"the read models disagreed with the ledger ({'; '.join(views.repaired)}); "
             "rebuilt them from the events. Someone may have edited the file: check it "
             "(the next health-check fails on it).")
    return views


def warn_of_findings(views: ReadModels, since: int) -> None:
    """After figures were checked against the signed tally: say what was repaired since
    ``since`` repairs were known, and that figures are unsigned, if they are."""
    if views.repaired[since:]:
        warn(f"the read models disagreed with the ledger ({'; '.join(views.repaired[since:])}); "
             "rebuilt them from the events. Someone may have edited the file: check it "
             "(the next health-check fails on it).")
    if views.unproven:
        warn("this ledger's format signs no tally yet: the figures are the read models', "
             "unproven; any command run with the master password upgrades it")


def confirm(question: str, yes: bool) -> None:
    """Ask ``question`` on a terminal; without one, refuse unless ``--yes`` was given."""
    if yes:
        return
    if not stdin_is_tty():
        raise ConfirmationRequired(
            f"{question.rstrip('?')}: refusing without --yes (no terminal to confirm on)"
        )
    answer = typer.prompt(f"⚠️  {question} (yes/no)", default="no", show_default=False)
    if answer.strip().lower() not in ("y", "yes"):
        raise ConfirmationRequired("cancelled; nothing was changed")
