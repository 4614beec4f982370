"""Helpers shared by the ``keyledger`` command-line tests (``tests/test_cli_*.py``).

Those tests drive the CLI in-process through typer's CliRunner. Their ``db``, ``filled`` and
``tty`` fixtures live in ``conftest.py``; everything else they share (constants, :func:`invoke`
and the small readers of its results and of the ledger file) is here, imported by name::

    from cli_support import PASSWORD, document, invoke

Most ledgers come from :func:`ledger.testing.create_test_ledger` (weak, fast KDF);
the real ``keyledger init`` (600,000 PBKDF2 iterations) runs in only a few tests.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from click.testing import Result
from tamper_support import plain_rows
from typer.testing import CliRunner

from cli.app import app
from ledger import Ledger
from ledger import events as ev
from ledger.crypto import SCHEME_BOUND
from ledger.events import NewEvent
from ledger.testing import read_all

PASSWORD = "cli-suite master password 7c1e"
NEW_PASSWORD = "cli-suite new master password 3b8a"
VALUE = "s3cr3t-value-never-shown-9d2f"
OTHER_VALUE = "another-hidden-value-51ea"

runner = CliRunner()

def invoke(
    db: Path | str | None, *args: str, stdin: str | bytes | None = None,
    password: str | None = PASSWORD, env: Mapping[str, str | None] | None = None,
) -> Result:
    """Run the CLI with a clean environment; never lets a traceback or a crash through."""
    environment: dict[str, str | None] = {
        "KEYLEDGER_DB": None if db is None else str(db),
        "ENCRYPTION_MASTER_PASSWORD": password,
        "ENCRYPTION_NEW_MASTER_PASSWORD": None,
        "KEYLEDGER_ACTOR": None,
        "NO_COLOR": "1",
    }
    environment.update(env or {})
    result = runner.invoke(app, list(args), input=stdin, env=environment)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.stdout
    assert "Traceback" not in result.stderr
    return result


def document(result: Result) -> Any:
    """The one JSON document that makes up the whole of stdout."""
    return json.loads(result.stdout)


def error_line(result: Result) -> str:
    """The single line a failed command wrote on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def head(db: Path | str) -> tuple[int, int, str | None]:
    """(row count, last seq, last hash) of the events table, read straight from the
    database (a plain connection, not keyledger's)."""
    count, top = plain_rows(db, "SELECT count(*), coalesce(max(seq), 0) FROM events")[0]
    rows = plain_rows(db, "SELECT hash FROM events ORDER BY seq DESC LIMIT 1")
    return count, top, rows[0][0] if rows else None


def last_event(db: Path | str) -> tuple[str, str, str]:
    """(type, actor, payload) of the newest event."""
    row = plain_rows(db, "SELECT type, actor, payload FROM events ORDER BY seq DESC LIMIT 1")[0]
    return row[0], row[1], row[2]


def values(db: Path, password: str = PASSWORD) -> dict[str, str]:
    with Ledger.open(db, password) as ledger:
        return read_all(ledger)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plant_undecryptable(db: Path, name: str = "broken") -> None:
    """Record a secret whose ciphertext belongs to another name (so it never decrypts)."""
    with Ledger.open(db, PASSWORD) as ledger:
        donor = ledger.secret("db_password").ciphertext
        assert donor is not None
        ledger.session.append(
            [NewEvent(ev.secret_stream(name), 1, ev.SecretWritten(
                name=name, key_version=1, ciphertext=donor, scheme=SCHEME_BOUND,
            ))],
        )
