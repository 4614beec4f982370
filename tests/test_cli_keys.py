"""``keyledger init``, ``info``, ``report`` and ``rekey-master``: the ledger and its master key.

In-process through typer's CliRunner; helpers in ``cli_support``, fixtures in ``conftest``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import NEW_PASSWORD, OTHER_VALUE, VALUE, document, error_line, head, invoke, mode, values
from conftest import Backend
from tamper_support import ledger_exists

from ledger.crypto import KEK_ITERATIONS

# -- init ------------------------------------------------------------------------------


def test_init_creates_private_ledger_with_key_version_1(tmp_path: Path) -> None:
    """init (real KDF) creates a 0600 ledger whose current and only key version is 1."""
    path = tmp_path / "new" / "keyledger.db"
    result = invoke(path, "init", "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["created"] is True and doc["current_version"] == 1
    assert doc["kdf_iterations"] >= KEK_ITERATIONS
    assert mode(path) == 0o600
    info = document(invoke(path, "info", "--json"))
    assert info["current_version"] == 1 and info["available_versions"] == [1]


def test_init_again_changes_nothing(db: Path) -> None:
    """init on an existing ledger checks the password, appends nothing and says so."""
    before = head(db)
    result = invoke(db, "init")
    assert result.exit_code == 0, result.stderr
    assert "nothing changed" in result.stdout
    as_json = invoke(db, "init", "--json")
    assert document(as_json)["created"] is False
    assert head(db) == before


def test_init_again_with_wrong_password_fails(db: Path) -> None:
    """init on an existing ledger with the wrong password fails rather than claiming success."""
    before = head(db)
    result = invoke(db, "init", password="not the password")
    assert result.exit_code == 1
    error_line(result)
    assert head(db) == before


def test_init_into_existing_empty_file_makes_it_private(tmp_path: Path) -> None:
    """init into a pre-existing empty file (say from touch) still leaves a 0600 ledger."""
    path = tmp_path / "keyledger.db"
    path.touch()
    path.chmod(0o644)
    result = invoke(path, "init")
    assert result.exit_code == 0, result.stderr
    assert mode(path) == 0o600


def test_init_refuses_a_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    """init on some other file exits 1 with one line and leaves the file untouched."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"just some notes, not SQLite\n" * 10)
    result = invoke(path, "init")
    assert result.exit_code == 1
    assert "not a keyledger ledger" in error_line(result)
    assert path.read_bytes() == b"just some notes, not SQLite\n" * 10


def test_init_without_password_creates_nothing(backend: Backend) -> None:
    """init without a password and without a terminal fails and creates no file (schema)."""
    result = invoke(backend.target, "init", password=None)
    assert result.exit_code == 1
    assert "ENCRYPTION_MASTER_PASSWORD" in error_line(result)
    assert not ledger_exists(backend.target)


def test_init_prompt_mismatch_creates_nothing(
    backend: Backend, tty: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, two different answers to the password prompt create nothing."""
    answers = iter(["first password 123", "second password 456"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    result = invoke(backend.target, "init", password=None)
    assert result.exit_code == 1
    assert "differ" in error_line(result)
    assert not ledger_exists(backend.target)


# -- info and report -------------------------------------------------------------------


def test_info_json_shape(filled: Path) -> None:
    """info --json gives current and available versions and per-version metadata keyed by str."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    doc = document(invoke(filled, "info", "--json"))
    assert doc["current_version"] == 2
    assert doc["available_versions"] == [1, 2]
    assert set(doc["key_metadata"]) == {"1", "2"}
    old, new = doc["key_metadata"]["1"], doc["key_metadata"]["2"]
    for meta in (old, new):
        assert {"created_at", "rotated_at", "status"} <= set(meta)
        assert isinstance(meta["created_at"], str)
    assert old["rotated_at"] is not None and old["status"] != "active"
    assert new["rotated_at"] is None and new["status"] == "active"


def test_info_needs_no_password(filled: Path) -> None:
    """info reads metadata only, so it works without the master password."""
    result = invoke(filled, "info", password=None)
    assert result.exit_code == 0, result.stderr
    assert "📊" in result.stdout and "🔑" in result.stdout
    assert "\x1b[" not in result.stdout


def test_info_on_missing_ledger_points_at_init(backend: Backend) -> None:
    """info where no ledger is exits 1 with one line suggesting init, creating nothing."""
    result = invoke(backend.target, "info")
    assert result.exit_code == 1
    assert "init" in error_line(result)
    assert not ledger_exists(backend.target)


def test_report_json_shape(filled: Path) -> None:
    """report --json counts secrets per version and those not on the current version."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    doc = document(invoke(filled, "report", "--json", password=None))
    assert doc["total_secrets"] == 2
    assert doc["current_version"] == 2
    assert doc["needing_migration"] == 2
    assert doc["distribution"] == {"1": 2}


def test_report_human_output(filled: Path) -> None:
    """report prints totals and the distribution with the guide's emoji, no ANSI codes."""
    result = invoke(filled, "report")
    assert result.exit_code == 0
    assert "📈" in result.stdout and "Total Secrets: 2" in result.stdout
    assert "Version 1: 2 secrets" in result.stdout
    assert "\x1b[" not in result.stdout


# -- rekey-master ----------------------------------------------------------------------


def test_rekey_master_old_password_fails_new_works(filled: Path) -> None:
    """After rekey-master only the new password opens the ledger, and every value survives."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "rekey-master", "--yes", "--json",
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["rewrapped_keys"] == 2
    old = invoke(filled, "secrets", "get", "db_password")
    assert old.exit_code == 1
    assert "password" in error_line(old)
    new = invoke(filled, "secrets", "get", "db_password", password=NEW_PASSWORD)
    assert new.exit_code == 0 and new.stdout == VALUE + "\n"
    assert values(filled, NEW_PASSWORD) == {"db_password": VALUE, "api_token": OTHER_VALUE}


def test_rekey_master_human_output(db: Path) -> None:
    """rekey-master tells the operator to update the password everywhere."""
    result = invoke(db, "rekey-master", "--force",
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert result.exit_code == 0
    assert "✅" in result.stdout and "ENCRYPTION_MASTER_PASSWORD" in result.stdout
    assert NEW_PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_rekey_master_without_yes_refuses(filled: Path, json_flag: list[str]) -> None:
    """rekey-master without --yes and without a terminal exits 2; the old password still works."""
    before = head(filled)
    result = invoke(filled, "rekey-master", *json_flag,
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert result.exit_code == 2
    assert "--yes" in error_line(result)
    assert head(filled) == before
    assert invoke(filled, "secrets", "get", "db_password").exit_code == 0


@pytest.mark.parametrize("new_password", [None, ""])
def test_rekey_master_without_new_password_changes_nothing(
    filled: Path, new_password: str | None
) -> None:
    """No (or an empty) ENCRYPTION_NEW_MASTER_PASSWORD: one line naming it, exit 1, nothing changed."""
    before = head(filled)
    result = invoke(filled, "rekey-master", "--yes",
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": new_password})
    assert result.exit_code == 1
    assert "ENCRYPTION_NEW_MASTER_PASSWORD" in error_line(result)
    assert head(filled) == before
