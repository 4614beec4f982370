"""``keyledger health-check`` and ``rebuild-projections``.

In-process through typer's CliRunner; helpers in ``cli_support``, fixtures in ``conftest``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import NEW_PASSWORD, document, head, invoke, plant_undecryptable
from conftest import Backend
from tamper_support import edit_read_models, ledger_exists

from ledger.locations import is_server
from ledger.store_sqlite import SQLiteRecorder
from projections import ProjectionRunner, ReadModels

# -- health-check ----------------------------------------------------------------------


def test_health_check_healthy(filled: Path) -> None:
    """A sound ledger with the right password is healthy: exit 0 and no failing check."""
    result = invoke(filled, "health-check", "--json")
    assert result.exit_code == 0, result.stdout
    doc = document(result)
    assert doc["healthy"] is True
    assert doc["checks"] and all(set(c) == {"name", "status", "detail"} for c in doc["checks"])
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert statuses["master_password"] == "ok"
    assert statuses["secrets"] == "ok"
    assert "fail" not in statuses.values()
    human = invoke(filled, "health-check")
    assert human.exit_code == 0
    assert "🏥" in human.stdout and "✅ Healthy" in human.stdout


def test_health_check_pending_migration_only_warns(filled: Path) -> None:
    """Secrets on an old version make the secrets check warn, yet the exit is still 0."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "health-check", "--json")
    assert result.exit_code == 0
    statuses = {c["name"]: c["status"] for c in document(result)["checks"]}
    assert statuses["secrets"] == "warn"
    assert document(result)["healthy"] is True


@pytest.mark.parametrize("password", ["wrong password entirely", None])
def test_health_check_wrong_or_missing_password_is_unhealthy(
    filled: Path, password: str | None
) -> None:
    """A wrong or missing master password is 'not healthy': exit 1, master_password failing."""
    before = head(filled)
    result = invoke(filled, "health-check", "--json", password=password)
    assert result.exit_code == 1
    doc = document(result)
    assert doc["healthy"] is False
    assert {"name": "master_password", "status": "fail"}.items() <= doc["checks"][0].items()
    human = invoke(filled, "health-check", password=password)
    assert human.exit_code == 1 and "❌ Not healthy" in human.stdout
    assert head(filled) == before


def test_health_check_undecryptable_secret_is_unhealthy(filled: Path) -> None:
    """A stored secret that no longer decrypts fails the round-trip check: exit 1."""
    plant_undecryptable(filled)
    result = invoke(filled, "health-check", "--json")
    assert result.exit_code == 1
    statuses = {c["name"]: c["status"] for c in document(result)["checks"]}
    assert statuses["round_trip"] == "fail"


def test_health_check_missing_ledger_is_unhealthy(backend: Backend) -> None:
    """health-check where no ledger is is unhealthy (exit 1) and creates nothing."""
    result = invoke(backend.target, "health-check", "--json")
    assert result.exit_code == 1
    assert document(result)["healthy"] is False
    assert not ledger_exists(backend.target)


def test_health_check_kdf_advice_is_actionable(db: Path) -> None:
    """The weak-KDF warning says to run rekey-master; after rekey-master it is gone."""
    first = document(invoke(db, "health-check", "--json"))
    kdf = [c for c in first["checks"] if c["name"] == "kdf"]
    assert kdf and kdf[0]["status"] == "warn" and "rekey-master" in kdf[0]["detail"]
    rekey = invoke(db, "rekey-master", "--yes", env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert rekey.exit_code == 0, rekey.stderr
    after = document(invoke(db, "health-check", "--json", password=NEW_PASSWORD))
    assert [c for c in after["checks"] if c["name"] == "kdf"] == []


# -- rebuild-projections ---------------------------------------------------------------


def test_damaged_read_models_are_reported_and_rebuilt(filled: Path) -> None:
    """Rows deleted behind keyledger's back: health-check fails once, reports never serve the
    loss, and a repair made by another command (kept across rebuild-projections) fails the
    next health-check once too."""
    assert document(invoke(filled, "report", "--json"))["total_secrets"] == 2

    def damage() -> None:
        edit_read_models(filled, "DELETE FROM proj_secrets")

    damage()
    before = head(filled)
    checked = invoke(filled, "health-check", "--json")
    assert checked.exit_code == 1
    ledger_check = next(c for c in document(checked)["checks"] if c["name"] == "ledger")
    assert ledger_check["status"] == "fail" and "rebuilt" in ledger_check["detail"]
    assert invoke(filled, "health-check").exit_code == 0  # repaired from the events
    damage()
    report = invoke(filled, "report", "--json")
    assert document(report)["total_secrets"] == 2
    assert "rebuilt them from the events" in report.stderr
    result = invoke(filled, "rebuild-projections", "--json", password=None)
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["events_replayed"] == before[0]
    assert (doc["seq"], doc["head_hash"]) == (before[1], before[2])
    assert document(invoke(filled, "report", "--json"))["total_secrets"] == 2
    assert invoke(filled, "health-check").exit_code == 1  # the report's repair, reported once
    assert invoke(filled, "health-check").exit_code == 0
    assert head(filled) == before


@pytest.mark.parametrize("repairer", [("report",), ("info",), ("secrets", "list"),
                                      ("secrets", "set", "new_one", "--value", "v")],
                         ids=" ".join)
def test_health_check_fails_on_a_repair_another_command_made(
    filled: Path, repairer: tuple[str, ...]
) -> None:
    """The read models edited, then repaired (with a warning) by another command first:
    the next health-check is still unhealthy, naming the earlier repair, and only once."""
    assert invoke(filled, "info").exit_code == 0
    edit_read_models(filled, "UPDATE proj_secrets SET key_version = 7")
    repaired = invoke(filled, *repairer)
    assert repaired.exit_code == 0, repaired.stderr
    assert "rebuilt them from the events" in repaired.stderr
    assert "the next health-check fails on it" in repaired.stderr
    checked = invoke(filled, "health-check", "--json")
    assert checked.exit_code == 1 and document(checked)["healthy"] is False
    ledger_check = next(c for c in document(checked)["checks"] if c["name"] == "ledger")
    assert ledger_check["status"] == "fail"
    assert "when an earlier command opened them (found at seq" in ledger_check["detail"]
    assert invoke(filled, "health-check").exit_code == 0


def test_health_check_fails_on_a_repair_the_library_made_without_a_word(filled: Path) -> None:
    """An application's ReadModels.open repairs edited read models silently (it has no
    terminal): the next health-check still fails on it."""
    assert invoke(filled, "info").exit_code == 0
    edit_read_models(filled, "DELETE FROM proj_secrets")
    with ReadModels.open(filled) as views:
        assert views.repaired
    assert invoke(filled, "health-check", "--json").exit_code == 1
    assert invoke(filled, "health-check", "--json").exit_code == 0


def test_a_forged_repair_note_is_shown_printable(filled: Path) -> None:
    """The note is the file's own text: one planted with terminal control bytes (tracks
    covered, so nothing else is wrong) fails the health check, shown without them."""
    assert invoke(filled, "info").exit_code == 0
    escape = "chr(27)" if is_server(str(filled)) else "char(27)"
    edit_read_models(filled, f"UPDATE proj_checkpoint SET unreported_repair = 'x' || {escape} "
                             "|| '[2Jy'", cover_tracks=True)
    human = invoke(filled, "health-check")
    assert human.exit_code == 1
    assert "x[2Jy" in human.stdout and "\x1b" not in human.stdout


def test_rebuild_projections_human_output(filled: Path) -> None:
    """rebuild-projections reports the number of events replayed."""
    result = invoke(filled, "rebuild-projections")
    assert result.exit_code == 0
    assert f"✅ Rebuilt the read models from {head(filled)[0]} events" in result.stdout


def test_rebuild_projections_rebuilds_once_even_over_damaged_read_models(
    filled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rebuild-projections does not check (and repair) the read models on open before its
    own rebuild: one replay, no repair warning, and the answers are the events' again."""
    truth = document(invoke(filled, "report", "--json"))
    edit_read_models(filled, "DELETE FROM proj_secrets")
    replays = []
    original = ProjectionRunner.rebuild

    def counted(self: ProjectionRunner, recorder: SQLiteRecorder) -> int:
        replays.append(1)
        return original(self, recorder)

    monkeypatch.setattr(ProjectionRunner, "rebuild", counted)
    result = invoke(filled, "rebuild-projections", "--json")
    assert result.exit_code == 0, result.stderr
    assert replays == [1] and result.stderr == ""
    assert document(result)["events_replayed"] == document(result)["seq"]
    monkeypatch.undo()
    report = invoke(filled, "report", "--json")
    assert report.stderr == "" and document(report) == truth
