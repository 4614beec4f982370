"""``keyledger rotate``, ``migrate`` and ``full-rotation``: new key versions and re-encryption.

In-process through typer's CliRunner; helpers in ``cli_support``, fixtures in ``conftest``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import (
    OTHER_VALUE,
    PASSWORD,
    VALUE,
    document,
    error_line,
    head,
    invoke,
    last_event,
    plant_undecryptable,
    values,
)

from ledger import Ledger

# -- rotate ----------------------------------------------------------------------------


def test_rotate_picks_next_regular_version(filled: Path) -> None:
    """rotate --yes without --new-version goes to the next unused regular version."""
    result = invoke(filled, "rotate", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    assert document(result) == {"from_version": 1, "to_version": 2, "dry_run": False,
                                "warning": None}
    assert document(invoke(filled, "info", "--json"))["current_version"] == 2


def test_rotate_next_version_skips_versions_used_explicitly(db: Path) -> None:
    """After --new-version 5, a plain rotate picks 6, never a version already used."""
    assert invoke(db, "rotate", "--new-version", "5", "--yes").exit_code == 0
    result = invoke(db, "rotate", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert document(result)["to_version"] == 6


@pytest.mark.parametrize("version", ["1", "2"])
def test_rotate_refuses_a_version_ever_used(db: Path, version: str) -> None:
    """Rotating to a past or the current version exits 1 with one line; the key stays put."""
    assert invoke(db, "rotate", "--new-version", "2", "--yes").exit_code == 0
    result = invoke(db, "rotate", "--new-version", version, "--yes")
    assert result.exit_code == 1
    assert "already used" in error_line(result)
    assert result.stdout == ""
    assert document(invoke(db, "info", "--json"))["current_version"] == 2


@pytest.mark.parametrize("version", ["0", "256", "-3"])
def test_rotate_refuses_versions_out_of_range(db: Path, version: str) -> None:
    """A version outside 1-255 is refused with one line and the current key is unchanged."""
    result = invoke(db, "rotate", "--new-version", version, "--yes")
    assert result.exit_code in (1, 2)
    error_line(result)
    assert document(invoke(db, "info", "--json"))["available_versions"] == [1]


def test_rotate_non_integer_version_is_usage_error(db: Path) -> None:
    """--new-version must be an integer: exit 2 and nothing appended."""
    before = head(db)
    result = invoke(db, "rotate", "--new-version", "three", "--yes")
    assert result.exit_code == 2
    assert head(db) == before


def test_rotate_reserved_version_warns_on_stderr(db: Path) -> None:
    """Rotating into 21-80 succeeds but warns on stderr about the reserved range."""
    result = invoke(db, "rotate", "--new-version", "30", "--yes")
    assert result.exit_code == 0
    assert "reserved" in result.stderr
    assert "⚠️" in result.stderr
    assert "reserved" not in result.stdout


def test_rotate_reserved_version_warns_on_stderr_under_json(db: Path) -> None:
    """Under --json the reserved-range warning still reaches stderr (stdout stays pure JSON)."""
    result = invoke(db, "rotate", "--new-version", "42", "--yes", "--json")
    assert result.exit_code == 0
    assert "reserved" in (document(result)["warning"] or "")
    assert "reserved" in result.stderr


@pytest.mark.parametrize("version", ["85", "99"])
def test_rotate_testing_and_emergency_versions_do_not_warn(db: Path, version: str) -> None:
    """Versions 81-98 (testing) and 99 (emergency) rotate without a warning."""
    result = invoke(db, "rotate", "--new-version", version, "--yes")
    assert result.exit_code == 0
    assert result.stderr == ""


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_rotate_without_yes_refuses_and_appends_nothing(filled: Path, json_flag: list[str]) -> None:
    """Without a terminal and without --yes, rotate exits 2 mentioning --yes; nothing appended."""
    before = head(filled)
    result = invoke(filled, "rotate", *json_flag)
    assert result.exit_code == 2
    assert "--yes" in error_line(result)
    assert head(filled) == before


def test_rotate_dry_run_appends_nothing(filled: Path) -> None:
    """rotate --dry-run reports the version it would choose and appends nothing."""
    before = head(filled)
    result = invoke(filled, "rotate", "--dry-run", "--json")
    assert result.exit_code == 0
    assert document(result) == {"from_version": 1, "to_version": 2, "dry_run": True,
                                "warning": None}
    human = invoke(filled, "rotate", "--dry-run", "--new-version", "7")
    assert human.exit_code == 0 and "Dry run" in human.stdout and "7" in human.stdout
    assert head(filled) == before


def test_rotate_dry_run_to_used_version_fails_and_appends_nothing(db: Path) -> None:
    """A dry run to a used version is refused (exit 1) and records nothing, not even a rejection."""
    before = head(db)
    result = invoke(db, "rotate", "--new-version", "1", "--dry-run")
    assert result.exit_code == 1
    error_line(result)
    assert head(db) == before


def test_rotate_records_reason(db: Path) -> None:
    """--reason is kept in the KeyRotated event for the audit trail."""
    result = invoke(db, "rotate", "--yes", "--reason", "suspected exposure")
    assert result.exit_code == 0
    kind, _, payload = last_event(db)
    assert kind == "KeyRotated"
    assert json.loads(payload)["reason"] == "suspected exposure"


def test_rotate_human_output(db: Path) -> None:
    """rotate prints the guide's success line and the hint to migrate."""
    result = invoke(db, "rotate", "-y")
    assert result.exit_code == 0
    assert "✅ Successfully rotated to version 2" in result.stdout
    assert "migrate --target-version 2" in result.stdout


@pytest.mark.parametrize(("answer", "code"), [("yes\n", 0), ("no\n", 2), ("\n", 2)])
def test_rotate_confirmation_on_a_tty(db: Path, tty: None, answer: str, code: int) -> None:
    """On a terminal rotate asks; only yes rotates, anything else cancels and appends nothing."""
    before = head(db)
    result = invoke(db, "rotate", stdin=answer)
    assert result.exit_code == code
    assert "yes/no" in result.stdout
    if code:
        assert "cancelled" in error_line(result)
        assert head(db) == before
    else:
        assert document(invoke(db, "info", "--json"))["current_version"] == 2


# -- migrate ---------------------------------------------------------------------------


def test_migrate_json_shape_and_effect(filled: Path) -> None:
    """migrate --yes re-encrypts every old secret, reports counts and keeps values intact."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "migrate", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert {k: doc[k] for k in ("migrated", "already_current", "failed", "total", "failures")} == {
        "migrated": 2, "already_current": 0, "failed": 0, "total": 2, "failures": [],
    }
    assert isinstance(doc["duration_seconds"], float | int) and doc["duration_seconds"] >= 0
    report = document(invoke(filled, "report", "--json"))
    assert report["needing_migration"] == 0 and report["distribution"] == {"2": 2}
    assert values(filled) == {"db_password": VALUE, "api_token": OTHER_VALUE}
    again = document(invoke(filled, "migrate", "--yes", "--json"))
    assert (again["migrated"], again["already_current"]) == (0, 2)


def test_migrate_target_version_must_be_current(filled: Path) -> None:
    """--target-version other than the current one is refused and appends nothing."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    before = head(filled)
    result = invoke(filled, "migrate", "--target-version", "1", "--yes")
    assert result.exit_code in (1, 2)
    assert "current" in error_line(result)
    assert head(filled) == before
    ok = invoke(filled, "migrate", "--target-version", "2", "--force", "--json")
    assert ok.exit_code == 0 and document(ok)["migrated"] == 2


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_migrate_without_yes_refuses_and_appends_nothing(filled: Path, json_flag: list[str]) -> None:
    """migrate without --yes and without a terminal exits 2 and changes nothing."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    before = head(filled)
    result = invoke(filled, "migrate", *json_flag)
    assert result.exit_code == 2
    assert "--yes" in error_line(result)
    assert head(filled) == before


def test_migrate_dry_run_appends_nothing(filled: Path) -> None:
    """migrate --dry-run counts what it would re-encrypt and appends nothing."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    before = head(filled)
    result = invoke(filled, "migrate", "--dry-run", "--json")
    assert result.exit_code == 0
    doc = document(result)
    assert (doc["migrated"], doc["failed"], doc["total"]) == (2, 0, 2)
    human = invoke(filled, "migrate", "--dry-run")
    assert human.exit_code == 0 and "dry run" in human.stdout.lower()
    assert head(filled) == before
    assert document(invoke(filled, "report", "--json"))["needing_migration"] == 2


def test_migrate_in_small_batches(db: Path) -> None:
    """--batch-size K migrates every secret even when there are more than K."""
    with Ledger.open(db, PASSWORD) as ledger:
        for i in range(7):
            ledger.set(f"s{i}", f"v{i}")
    assert invoke(db, "rotate", "--yes").exit_code == 0
    result = invoke(db, "migrate", "--yes", "--batch-size", "2", "--json")
    assert result.exit_code == 0
    assert document(result)["migrated"] == 7
    assert values(db) == {f"s{i}": f"v{i}" for i in range(7)}


@pytest.mark.parametrize("size", ["0", "-1", "many"])
def test_migrate_invalid_batch_size_is_usage_error(filled: Path, size: str) -> None:
    """A batch size that is not a positive integer exits 2 and appends nothing."""
    before = head(filled)
    result = invoke(filled, "migrate", "--yes", "--batch-size", size)
    assert result.exit_code == 2
    assert head(filled) == before


def test_migrate_reports_failures_and_exits_1(filled: Path) -> None:
    """A secret that will not decrypt is named in failures, the others migrate, exit is 1."""
    plant_undecryptable(filled)
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "migrate", "--yes", "--json")
    assert result.exit_code == 1
    doc = document(result)
    assert (doc["migrated"], doc["failed"], doc["total"]) == (2, 1, 3)
    assert [f["name"] for f in doc["failures"]] == ["broken"]
    assert doc["failures"][0]["error"]
    human = invoke(filled, "migrate", "--yes")
    assert human.exit_code == 1
    assert "broken" in human.stdout


def test_migrate_human_output(filled: Path) -> None:
    """migrate prints the guide's results block with emoji."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "migrate", "--yes")
    assert result.exit_code == 0
    assert "📊 Migration Results" in result.stdout
    assert "✅ Migration completed successfully" in result.stdout


# -- full-rotation ---------------------------------------------------------------------


def test_full_rotation_rotates_and_migrates(filled: Path) -> None:
    """full-rotation --yes makes a new version current and moves every secret onto it."""
    result = invoke(filled, "full-rotation", "--yes", "--reason", "quarterly",
                    "--batch-size", "1", "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["rotation"]["from_version"] == 1 and doc["rotation"]["to_version"] == 2
    assert doc["migration"]["migrated"] == 2 and doc["migration"]["failed"] == 0
    report = document(invoke(filled, "report", "--json"))
    assert (report["current_version"], report["needing_migration"]) == (2, 0)
    assert report["distribution"] == {"2": 2}
    assert values(filled) == {"db_password": VALUE, "api_token": OTHER_VALUE}


def test_full_rotation_to_explicit_version(filled: Path) -> None:
    """full-rotation --new-version N rotates to N."""
    result = invoke(filled, "full-rotation", "--new-version", "9", "--force")
    assert result.exit_code == 0, result.stderr
    assert document(invoke(filled, "info", "--json"))["current_version"] == 9


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_full_rotation_without_yes_refuses(filled: Path, json_flag: list[str]) -> None:
    """full-rotation without --yes and without a terminal exits 2 and appends nothing."""
    before = head(filled)
    result = invoke(filled, "full-rotation", *json_flag)
    assert result.exit_code == 2
    assert "--yes" in error_line(result)
    assert head(filled) == before


def test_full_rotation_dry_run_appends_nothing(filled: Path) -> None:
    """full-rotation --dry-run says what it would do and appends nothing."""
    before = head(filled)
    result = invoke(filled, "full-rotation", "--dry-run", "--json")
    assert result.exit_code == 0
    doc = document(result)
    assert doc["rotation"]["to_version"] == 2 and doc["rotation"]["dry_run"] is True
    assert doc["migration"]["dry_run"] is True
    assert invoke(filled, "full-rotation", "--dry-run").exit_code == 0
    assert head(filled) == before


def test_full_rotation_with_failures_exits_1(filled: Path) -> None:
    """full-rotation exits 1 when a secret fails to migrate, naming it."""
    plant_undecryptable(filled)
    result = invoke(filled, "full-rotation", "--yes", "--json")
    assert result.exit_code == 1
    assert [f["name"] for f in document(result)["migration"]["failures"]] == ["broken"]


def test_range_warning_comes_before_the_question(capsys: pytest.CaptureFixture[str]) -> None:
    """The reserved-range warning is shown before the operator is asked, not after."""
    from cli.keyring import ConfirmRotation
    from ledger import ConfirmationRequired

    ask = ConfirmRotation("Rotate to {v}?", yes=False)
    with pytest.raises(ConfirmationRequired, match="Rotate to 200"):
        ask(200)  # no terminal here: refused at the question, after the warning
    assert "outside the ranges" in capsys.readouterr().err
    assert ask.warned
