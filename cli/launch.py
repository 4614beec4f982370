"""The ``keyledger`` executable: starts deriving the master key, then runs the CLI.

When the command is one that unlocks, the password comes from
``ENCRYPTION_MASTER_PASSWORD`` and the ledger file is there, :func:`ledger.early.start`
begins the key derivation on the second core before typer, pydantic and the rest of
keyledger are imported. Whatever this cannot work out (a prompt for the password, an
unreadable file, an option it does not know) it leaves to the command, which derives
the key as usual.

The command is read from ``argv`` by hand, not by typer's parser: importing typer costs
about as long as the head start gains. The tests hold :data:`VALUE_OPTIONS` and
:data:`UNLOCKING` to the app's own options and commands.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cli.env import DB_ENV, DEFAULT_DB, PASSWORD_ENV
from ledger import environment
from ledger.errors import WrongPasswordError

#: The root options that take a value (``keyledger --db PATH COMMAND ...``).
VALUE_OPTIONS = ("--db", "--actor", "--durability", "--lock-timeout")

#: The commands that unlock the ledger with the master password: a command, or a group
#: and one of its commands. (``init`` and ``verify-backup`` derive under another salt.)
UNLOCKING = frozenset({
    ("backup",), ("restore",), ("health-check",), ("rotate",), ("rekey-master",),
    ("migrate",), ("full-rotation",),
    ("secrets", "set"), ("secrets", "get"), ("secrets", "reset"), ("secrets", "restore"),
    ("secrets", "delete"), ("secrets", "import"), ("secrets", "import-seed"),
    ("keys", "retire"), ("keys", "reinstate"), ("keys", "destroy"), ("keys", "cancel-destroy"),
    ("policy", "set"), ("audit", "reads"),
})


#: Set by the shell while it asks for completions: nothing is unlocked then.
COMPLETING_ENV = "_KEYLEDGER_COMPLETE"


def main() -> None:
    with contextlib.suppress(Exception):  # a head start only: the command derives it anyway
        if COMPLETING_ENV not in os.environ:
            derive_ahead(sys.argv[1:], os.environ)
    try:
        from cli.app import main as run

        run()
    except KeyboardInterrupt:  # before the command's own handling was set up
        sys.stderr.write("❌ Error: interrupted\n")
        raise SystemExit(130) from None


def derive_ahead(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Start deriving the master key for the command ``args`` will run, when it unlocks
    and everything the derivation needs is at hand; whether it started."""
    words, db = _command(args)
    if words is None or not (words[:1] in UNLOCKING or words[:2] in UNLOCKING):
        return False
    named = environ.get(PASSWORD_ENV + environment.FILE_SUFFIX)
    if named is not None and not _regular_file(named):
        return False  # a pipe (<(...), /dev/stdin) can be read once: by the command itself
    try:
        password = environment.from_environment(PASSWORD_ENV, environ, warn=lambda _: None)
    except WrongPasswordError:
        return False  # the command says why, in its own words
    if password is None:
        return False
    target = db or environ.get(DB_ENV) or DEFAULT_DB
    from ledger.locations import is_server  # no store: a few lines of its own

    if is_server(target):
        return False  # the KDF record is on the server: read once connected
    from ledger import early  # cryptography and the store's header reader alone

    return early.start(Path(target), password)


def _regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _command(args: Sequence[str]) -> tuple[tuple[str, ...] | None, str | None]:
    """The command's first two words and the ``--db`` value, read past the root options;
    no words when an option comes first that is not a root option taking a value."""
    db = None
    rest = iter(args)
    for arg in rest:
        name, has_value, value = arg.partition("=")
        if name in VALUE_OPTIONS:
            value = value if has_value else next(rest, "")
            if name == "--db":
                db = value
        elif arg.startswith("-"):
            return None, db  # --help, say
        elif "--help" in args:
            return None, db  # `keyledger secrets get --help` unlocks nothing
        else:
            return (arg, next(rest, "")), db
    return None, db
