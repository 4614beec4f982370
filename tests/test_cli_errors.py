"""What every ``keyledger`` command owes its caller: one JSON document, one error line, no leaks.

Covers --json on success and failure, the wrong-password matrix, and that no command but
``secrets get`` ever shows a secret value or the master password.
In-process through typer's CliRunner; helpers in ``cli_support``, fixtures in ``conftest``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import NEW_PASSWORD, OTHER_VALUE, PASSWORD, VALUE, document, error_line, head, invoke, values
from tamper_support import plain_rows

from ledger.testing import seed_encrypt

# -- every --json is exactly one document ----------------------------------------------


@pytest.mark.parametrize("args", [
    ["info"], ["report"], ["rotate", "--dry-run"], ["rotate", "--yes"],
    ["migrate", "--dry-run"], ["migrate", "--yes"], ["full-rotation", "--dry-run"],
    ["full-rotation", "--yes"], ["health-check"], ["rebuild-projections"],
    ["secrets", "set", "x", "--value", "v"], ["secrets", "get", "db_password"],
    ["secrets", "list"], ["secrets", "delete", "api_token"], ["init"],
    # failures print one error document too
    ["rotate"], ["migrate"], ["rotate", "--new-version", "1", "--yes"],
    ["secrets", "get", "nope"], ["secrets", "delete", "nope"],
    ["migrate", "--yes", "--target-version", "9"],
])
def test_json_output_is_exactly_one_document(filled: Path, args: list[str]) -> None:
    """With --json, stdout parses as one JSON document whatever the outcome."""
    result = invoke(filled, *args, "--json")
    parsed = document(result)
    assert isinstance(parsed, dict | list)
    if result.exit_code != 0:
        assert parsed["ok"] is False and parsed["error"]
        assert parsed["error"] in error_line(result)


# -- wrong password, and values never shown ----------------------------------------------


@pytest.fixture
def import_file(tmp_path: Path) -> Path:
    path = tmp_path / "more.json"
    path.write_text(json.dumps({"new_one": "new-value"}))
    return path


@pytest.mark.parametrize("args", [
    ["secrets", "get", "db_password"],
    ["secrets", "set", "db_password", "--value", "changed"],
    ["secrets", "delete", "db_password"],
    ["secrets", "import", "{import_file}"],
    ["secrets", "import-seed", "{seed_file}"],
    ["rotate", "--yes"],
    ["rotate", "--new-version", "1", "--yes"],
    ["migrate", "--yes"],
    ["full-rotation", "--yes"],
    ["rekey-master", "--yes"],
    ["init"],
])
def test_wrong_password_changes_nothing(
    filled: Path, tmp_path: Path, import_file: Path, args: list[str]
) -> None:
    """A wrong master password: one line on stderr, exit 1, empty stdout, the events head unchanged."""
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps({"s": seed_encrypt("wrong password!", 1, "x")}))
    argv = [a.format(import_file=import_file, seed_file=seed_file) for a in args]
    before = head(filled)
    result = invoke(filled, *argv, password="wrong password!",
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert result.exit_code == 1
    assert "password" in error_line(result)
    assert result.stdout == ""
    assert head(filled) == before
    assert values(filled) == {"db_password": VALUE, "api_token": OTHER_VALUE}


def test_wrong_password_json_error_document(filled: Path) -> None:
    """Under --json a wrong password still prints one error document and one stderr line."""
    before = head(filled)
    result = invoke(filled, "secrets", "get", "db_password", "--json", password="nope")
    assert result.exit_code == 1
    assert document(result) == {"ok": False, "error": error_line(result).removeprefix("❌ Error: ")}
    assert VALUE not in result.stdout
    assert head(filled) == before


def test_values_and_password_never_printed_outside_get(filled: Path, tmp_path: Path) -> None:
    """No command but secrets get ever prints a secret value or the master password."""
    source = tmp_path / "more.env"
    source.write_text("IMPORTED=imported-hidden-value-77\n")
    commands = [
        ["info"], ["info", "--json"], ["report"], ["report", "--json"],
        ["secrets", "list"], ["secrets", "list", "--json"],
        ["secrets", "set", "extra", "--value", VALUE],
        ["secrets", "set", "extra2", "--value", VALUE, "--json"],
        ["secrets", "import", str(source)], ["secrets", "import", str(source), "--json"],
        ["rotate", "--yes"], ["migrate", "--dry-run"], ["migrate", "--yes"],
        ["migrate", "--yes", "--json"], ["full-rotation", "--yes"],
        ["full-rotation", "--yes", "--json"], ["health-check"], ["health-check", "--json"],
        ["rebuild-projections"], ["secrets", "delete", "extra"],
    ]
    for args in commands:
        result = invoke(filled, *args)
        assert result.exit_code == 0, (args, result.stderr)
        shown = result.stdout + result.stderr
        for hidden in (VALUE, OTHER_VALUE, "imported-hidden-value-77", PASSWORD):
            assert hidden not in shown, (args, hidden)


def test_an_event_type_from_a_newer_keyledger_is_one_clear_line(db: Path) -> None:
    """A ledger holding an event this keyledger does not know says 'upgrade', without a
    traceback; a write refuses it in one line too (no checkpoint signs it)."""
    from ledger.chain import event_hash

    seq, prev = plain_rows(db, "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")[0]
    fields = (seq + 1, prev, "future", 1, "FutureEvent", 1, "2030-01-01T00:00:00.000000Z",
              "x", "y", "{}")
    plain_rows(db, "INSERT INTO events (seq, prev_hash, stream, stream_rev, type, schema_version, "
               "occurred_at, actor, origin, payload, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
               "RETURNING seq", (*fields, event_hash(*fields)))
    result = invoke(db, "info")
    assert result.exit_code == 1
    assert "upgrade keyledger" in error_line(result)
    result = invoke(db, "secrets", "set", "x", "--value", "v")
    assert result.exit_code == 1
    assert "not covered by a valid signed checkpoint" in error_line(result)
