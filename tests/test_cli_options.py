"""``keyledger`` global behaviour: --db, --actor, how the master password is obtained, help.

In-process through typer's CliRunner; helpers in ``cli_support``, fixtures in ``conftest``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import PASSWORD, VALUE, document, error_line, head, invoke, last_event
from tamper_support import holding_write_lock, plain_rows

from ledger.testing import create_test_ledger

# -- global options ------------------------------------------------------------------


def test_db_option_overrides_env(filled: Path, tmp_path: Path) -> None:
    """--db names the ledger even when KEYLEDGER_DB points at another one."""
    other = tmp_path / "other.db"
    create_test_ledger(other, PASSWORD).close()
    from_env = document(invoke(filled, "report", "--json"))
    from_option = document(invoke(filled, "--db", str(other), "report", "--json"))
    assert from_env["total_secrets"] == 2
    assert from_option["total_secrets"] == 0


@pytest.mark.sqlite_only
def test_default_db_is_keyledger_db_in_working_directory(
    filled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db or KEYLEDGER_DB the ledger is ./keyledger.db."""
    monkeypatch.chdir(filled.parent)
    result = invoke(None, "report", "--json")
    assert result.exit_code == 0, result.stderr
    assert document(result)["total_secrets"] == 2


def test_actor_option_and_env_are_recorded(db: Path) -> None:
    """--actor (or KEYLEDGER_ACTOR) is the actor of the events a command appends; the option wins."""
    assert invoke(db, "--actor", "alice@ops", "secrets", "set", "a", "--value", "1").exit_code == 0
    assert last_event(db)[1] == "alice@ops"
    assert invoke(db, "secrets", "set", "b", "--value", "2",
                  env={"KEYLEDGER_ACTOR": "bob@ci"}).exit_code == 0
    assert last_event(db)[1] == "bob@ci"
    assert invoke(db, "--actor", "carol@ops", "secrets", "set", "c", "--value", "3",
                  env={"KEYLEDGER_ACTOR": "bob@ci"}).exit_code == 0
    assert last_event(db)[1] == "carol@ops"


def test_default_actor_is_user_at_host(db: Path) -> None:
    """Without --actor the events are signed user@host."""
    assert invoke(db, "secrets", "set", "a", "--value", "1").exit_code == 0
    actor = last_event(db)[1]
    assert "@" in actor and not actor.startswith("@")


def test_missing_password_without_tty_is_one_clear_line(filled: Path) -> None:
    """No ENCRYPTION_MASTER_PASSWORD and no terminal: exit 1 naming the variable, nothing printed."""
    before = head(filled)
    result = invoke(filled, "secrets", "get", "db_password", password=None)
    assert result.exit_code == 1
    assert "ENCRYPTION_MASTER_PASSWORD" in error_line(result)
    assert result.stdout == ""
    assert head(filled) == before


def test_empty_password_is_refused(filled: Path) -> None:
    """An empty ENCRYPTION_MASTER_PASSWORD is refused with one line, not tried."""
    result = invoke(filled, "secrets", "get", "db_password", password="")
    assert result.exit_code == 1
    assert "empty" in error_line(result)


def test_password_is_prompted_hidden_on_a_tty(
    filled: Path, tty: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal without the env var the password is asked through getpass (no echo)."""
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    result = invoke(filled, "secrets", "get", "db_password", password=None)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == VALUE + "\n"
    assert len(prompts) == 1 and "password" in prompts[0].lower()


def test_unknown_command_is_usage_error(db: Path) -> None:
    """An unknown command exits 2."""
    assert invoke(db, "frobnicate").exit_code == 2


@pytest.mark.parametrize("command", [
    ["init"], ["info"], ["report"], ["rotate"], ["migrate"], ["full-rotation"],
    ["health-check"], ["rekey-master"], ["rebuild-projections"], ["secrets", "set"],
    ["secrets", "get"], ["secrets", "list"], ["secrets", "delete"], ["secrets", "import"],
    ["secrets", "import-seed"],
])
def test_every_command_has_help_with_json_option_and_example(db: Path, command: list[str]) -> None:
    """Every command's --help exits 0, offers --json and shows an example."""
    result = invoke(db, *command, "--help")
    assert result.exit_code == 0
    assert "--json" in result.stdout
    assert "Example" in result.stdout


def test_cli_records_its_origin(db: Path) -> None:
    """Events written by the CLI name the host and the program as their origin."""
    import socket

    assert invoke(db, "rotate", "--yes").exit_code == 0
    origin = plain_rows(db, "SELECT origin FROM events ORDER BY seq DESC LIMIT 1")[0][0]
    assert origin.startswith(f"{socket.gethostname()} keyledger-cli pid ")


def test_lock_timeout_bounds_the_wait_for_another_writer(db: Path) -> None:
    """A writer held off by another process's lock gives up after --lock-timeout, with one line."""
    import time

    before = head(db)
    with holding_write_lock(db):
        started = time.monotonic()
        result = invoke(db, "--lock-timeout", "0.5", "secrets", "set", "a", "--value", "v")
        waited = time.monotonic() - started
    assert head(db) == before
    assert result.exit_code == 1
    assert "stayed locked by another writer for 0.5s" in error_line(result)
    assert waited < 5  # SQLite's wait is capped by the budget too, not a fixed 2 s on top


@pytest.mark.sqlite_only
def test_durability_option_sets_synchronous(db: Path) -> None:
    """--durability normal trades the last commits on power loss for fewer fsyncs; full is default."""
    from ledger.store_sqlite import SQLiteRecorder

    for choice, level in (("full", 2), ("normal", 1)):
        recorder = SQLiteRecorder(db, durability=choice)  # type: ignore[arg-type]
        assert recorder.conn.execute("PRAGMA synchronous").fetchone()[0] == level
        recorder.close()
    assert invoke(db, "--durability", "normal", "secrets", "set", "a", "--value", "v").exit_code == 0
    assert invoke(db, "--durability", "fast", "info").exit_code == 2
