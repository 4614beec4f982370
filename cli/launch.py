"""The ``keyledger`` executable: starts deriving the master key, then runs the CLI.

Unlocking a ledger costs one PBKDF2 derivation (600,000 iterations, about 0.3 s), and
starting the CLI about as long again, importing typer, pydantic and keyledger itself.
Neither needs the other: when the command is one that unlocks, the password comes from
``ENCRYPTION_MASTER_PASSWORD`` and the ledger file is there, the derivation starts on a
thread first (OpenSSL runs it on the second core) and the imports happen beside it.
``ledger.crypto.derive_kek`` then takes the result when the command unlocks.

This module imports only what that needs. Whatever it cannot work out (a prompt for the
password, an unreadable file, an option it does not know) it leaves to the command, which
derives the key as usual: being early is never what decides whether a command works.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

PASSWORD_ENV = "ENCRYPTION_MASTER_PASSWORD"
DB_ENV = "KEYLEDGER_DB"
DEFAULT_DB = "keyledger.db"

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


def main() -> None:
    with contextlib.suppress(Exception):  # a head start only: the command derives it anyway
        derive_ahead(sys.argv[1:], os.environ)
    from cli.app import main as run

    run()


def derive_ahead(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Start deriving the master key for the command ``args`` will run, when it unlocks
    and everything the derivation needs is at hand; whether it started."""
    password = environ.get(PASSWORD_ENV)
    if not password or not is_utf8(password):
        return False
    words, db = _command(args)
    if words is None or not (words[:1] in UNLOCKING or words[:2] in UNLOCKING):
        return False
    from ledger import crypto  # cryptography and the crypto module alone

    kdf = _kdf_inputs(Path(db or environ.get(DB_ENV) or DEFAULT_DB), crypto.KDF_ALGORITHM)
    if kdf is None:
        return False
    crypto.derive_kek_ahead(password, *kdf)
    return True


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


def _kdf_inputs(path: Path, algorithm: str) -> tuple[bytes, int] | None:
    """The salt and iteration count stored in the ledger at ``path``, read without
    writing or creating anything; None for anything else than a readable ledger.

    A ledger nobody has open has no ``-wal`` file, and is read as an immutable file: a
    read-only connection in WAL mode would leave ``-wal`` and ``-shm`` files behind. With
    a ``-wal`` file there, it is read through it, so a changed password counts."""
    try:
        where = path.absolute()
        if not where.is_file():  # a FIFO would block the open; a device is no ledger
            return None
        mode = "ro" if Path(f"{where}-wal").exists() else "ro&immutable=1"
        conn = sqlite3.connect(f"file://{quote(os.fsencode(where))}?mode={mode}", uri=True)
        try:
            rows = dict(conn.execute(
                "SELECT key, value FROM meta "
                "WHERE key IN ('kdf_algorithm', 'kdf_salt', 'kdf_iterations')"
            ).fetchall())
        finally:
            conn.close()
        if rows.get("kdf_algorithm") != algorithm:
            return None
        iterations = int(rows["kdf_iterations"])
        if not 1 <= iterations <= 100_000_000:  # store.MAX_KEK_ITERATIONS, not imported here
            return None  # damaged: the command itself says so
        return base64.b64decode(rows["kdf_salt"], validate=True), iterations
    except (sqlite3.Error, OSError, KeyError, ValueError):  # binascii.Error is a ValueError
        return None


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 arrive as surrogates
        return False
    return True
