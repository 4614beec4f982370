"""The signed tally behind ``report``'s "needing migration" and the encryption count of
``due`` and ``full-rotation --if-due``: read models edited without a trace (the guard
fooled, the schema cookie unmoved) are found in constant time and rebuilt, and a tally
or event forged is refused, never reported or acted on."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from cli_support import PASSWORD, document, error_line, invoke
from conftest import vector_copy
from forgery_support import run_sql

from ledger.store_sqlite import WRITER_FUNCTION
from ledger.testing import create_test_ledger


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Three secrets under version 1, then a rotation: all three need migrating."""
    path = tmp_path / "k.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        for name in ("a", "b", "c"):
            ledger.set(name, f"value of {name}")
        ledger.rotate()
    assert invoke(path, "report", "--json").exit_code == 0  # the read models exist
    return path


def edit_read_models(path: Path, *statements: str) -> None:
    """The quiet edit: the read models' guard only asks whether a function of keyledger's
    name exists, so a connection that defines one writes rows with no schema change, and
    SQLite's schema cookie, which would make the next open compare every row, stays."""
    with closing(sqlite3.connect(path)) as conn:
        conn.create_function(WRITER_FUNCTION, 0, lambda: 1)
        cookie = conn.execute("PRAGMA schema_version").fetchone()[0]
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        assert conn.execute("PRAGMA schema_version").fetchone()[0] == cookie


def test_report_finds_read_models_edited_without_a_trace_and_reports_the_truth(db: Path) -> None:
    """Before, the edit made `report` say nothing needs migrating (and a cron job retire
    version 1). Now its figures are checked against the signed tally: rebuilt, warned."""
    edit_read_models(
        db,
        "UPDATE proj_secrets SET key_version = 2",
        "UPDATE proj_secret_counts SET key_version = 2",
    )
    result = invoke(db, "report", "--json", password=None)
    assert result.exit_code == 0, error_line(result)
    report = document(result)
    assert (report["needing_migration"], report["distribution"], report["signed"]) == (
        3, {"1": 3}, True)
    assert "disagreed with the ledger" in result.stderr
    assert invoke(db, "health-check").exit_code == 1  # the repair is reported once


def test_due_counts_encryptions_from_the_signed_tally(db: Path) -> None:
    """A policy of 4 encryptions per version; version 2 has made none. Edited read models
    that claim it made 10 would make `due` (and `full-rotation --if-due`) rotate again."""
    policy = invoke(db, "policy", "set", "--max-encryptions", "4", "--max-age", "36500d",
                    "--warn", "1d")
    assert policy.exit_code == 0, error_line(policy)
    edit_read_models(db, "UPDATE proj_key_versions SET encryptions = 10 WHERE version = 2")
    due = invoke(db, "due", "--json", password=None)
    assert document(due)["encryptions"] == 0 and document(due)["due"] is False
    edit_read_models(db, "UPDATE proj_key_versions SET encryptions = 10 WHERE version = 2")
    rotation = invoke(db, "full-rotation", "--if-due", "--yes", "--json")
    assert rotation.exit_code == 0, error_line(rotation)
    assert document(invoke(db, "info", "--json", password=None))["current_version"] == 2


def test_an_edited_tally_is_refused_with_one_line(db: Path) -> None:
    """The tally is signed with the checkpoint: one digit changed fails the signature, and
    report refuses rather than print figures nobody signed."""
    run_sql(db, "UPDATE checkpoints SET tally = replace(tally, '\"live\":{\"1/bound-v1\":3}', "
                "'\"live\":{\"2/bound-v1\":3}') WHERE seq = (SELECT max(seq) FROM checkpoints)")
    result = invoke(db, "report", password=None)
    assert result.exit_code == 1
    assert "signed checkpoint" in error_line(result) and "Traceback" not in result.output
    assert invoke(db, "due", password=None).exit_code == 1


def test_a_read_only_format_4_ledger_reports_unproven_figures_and_says_so(tmp_path: Path) -> None:
    """Until a command with the password upgrades it, a format-4 ledger signs no tally:
    report shows the read models' figures, marked unsigned, with one warning line."""
    path = vector_copy("ledger-format4.db", tmp_path / "old.db")
    result = invoke(path, "report", "--json", password=None)
    assert result.exit_code == 0, error_line(result)
    assert document(result)["signed"] is False and "signs no tally" in result.stderr
    unlocked = invoke(path, "secrets", "get", "late_key", password="correct horse battery staple")
    assert unlocked.stdout == "on v2\n"  # and upgraded it
    after = invoke(path, "report", "--json", password=None)
    assert document(after)["signed"] is True and after.stderr == ""


@pytest.mark.parametrize("older", [4, 3])
def test_a_current_ledger_made_to_look_older_is_refused_not_reported_unsigned(
        db: Path, older: int) -> None:
    """The format number is one header field: set to 4 (or 3), it turned the tally check
    off, and report printed the edited read models' figures with only a warning (attack
    pass 4, F1). The latest checkpoint must verify in the older format's form, which a
    format-5 checkpoint (it signs a tally) does not: refused, by report and due alike."""
    edit_read_models(
        db,
        "UPDATE proj_secrets SET key_version = 2",
        "UPDATE proj_secret_counts SET key_version = 2",
        "UPDATE proj_key_versions SET encryptions = 10 WHERE version = 2",
        f"PRAGMA user_version = {older}",
    )
    for command in (["report", "--json"], ["due", "--json"]):
        result = invoke(db, *command, password=None)
        assert result.exit_code == 1, command
        assert "signed checkpoint" in error_line(result), command


def test_due_says_when_it_rebuilt_the_read_models(db: Path) -> None:
    """due found an edited count and rebuilt the read models in silence, though
    health-check then failed on it (attack pass 4, F4): it warns, as report does."""
    edit_read_models(db, "UPDATE proj_key_versions SET encryptions = 10 WHERE version = 1")
    due = invoke(db, "due", "--json", password=None)
    assert document(due)["signed"] is True
    assert "disagreed with the ledger" in due.stderr


def test_the_tag_read_from_a_stored_payload_is_the_decoded_events() -> None:
    """The append path reads the previous head's tag from its payload without decoding
    it: for every secret event type, the same tag as the decoded event gives."""
    from ledger import events as ev
    from ledger import tally

    made = [
        ev.SecretWritten(name="a", key_version=3, ciphertext="x", scheme="bound-v1"),
        ev.SecretReset(name="a", key_version=4, ciphertext="x", scheme="bound-v1", reason="r"),
        ev.SecretRestored(name="a", key_version=5, ciphertext="x", scheme="bound-v1",
                          backup_file="b.db", backup_revision=2),
        ev.SecretImported(name="a", key_version=90, ciphertext="x", scheme="seed",
                          source="seed"),
        ev.SecretMigrated(name="a", run_id="r", from_version=1, to_version=2, ciphertext="x",
                          scheme="bound-v1"),
        ev.SecretDeleted(name="a"),
    ]
    for event in made:
        type_name, version, payload = ev.to_payload(event)
        decoded = ev.from_payload(type_name, version, payload)
        assert tally.stored_tag("secret:a", type_name, version, payload) == tally.live_tag(
            "secret:a", decoded), type_name
    assert tally.stored_tag("keyring", "KeyRotated", 1, "{}") is None
