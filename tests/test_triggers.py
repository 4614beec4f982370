"""The triggers that keep the ledger append-only and the read models guarded are checked
by ``audit verify`` and ``health-check``: dropped, altered to do nothing, or joined by one
keyledger never creates, each is named and fails the check (exit 1)."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from cli_support import document, error_line, invoke

from ledger.store_sqlite import APPEND_ONLY_TRIGGERS
from projections import ReadModels

LEDGER_TRIGGERS = sorted(APPEND_ONLY_TRIGGERS)
# SQLite's triggers and their SQL; PostgreSQL's are checked in test_postgres.py.
pytestmark = pytest.mark.sqlite_only


def run(db: Path, *statements: str) -> None:
    with closing(sqlite3.connect(db)) as conn:
        for sql in statements:
            conn.execute(sql)
        conn.commit()


def trigger_sql(db: Path, name: str) -> str:
    with closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0])


def documented_sql() -> str:
    """The trigger's SQL as docs/formats.md gives it, to put it back by hand."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "formats.md").read_text("utf-8")
    match = re.search(r"```sql\n(CREATE TRIGGER events_no_update .*?)\n```", text, re.DOTALL)
    assert match is not None, "formats.md gives no SQL for events_no_update"
    return match.group(1)


def verify(db: Path) -> dict[str, object]:
    result = invoke(db, "audit", "verify", "--json", password=None)
    assert result.exit_code == (0 if document(result)["ok"] else 1)
    return dict(document(result))


@pytest.fixture
def viewed(filled: Path) -> Path:
    """The CLI ledger with its read models (and their guards) built."""
    assert invoke(filled, "info").exit_code == 0
    assert verify(filled)["trigger_faults"] == []
    return filled


@pytest.mark.parametrize("name", LEDGER_TRIGGERS)
def test_audit_verify_names_a_dropped_append_only_trigger(viewed: Path, name: str) -> None:
    """Each append-only trigger dropped: the events still verify, but audit verify exits 1
    naming the trigger and its table, blaming no seq, and says the events are intact."""
    run(viewed, f"DROP TRIGGER {name}")
    doc = verify(viewed)
    assert doc["ok"] is False and doc["first_bad_seq"] is None
    assert doc["trigger_faults"] == [
        {"name": name, "table": APPEND_ONLY_TRIGGERS[name][0], "fault": "missing"}]
    assert doc["problems"] == [f"trigger {name} on {APPEND_ONLY_TRIGGERS[name][0]} is missing "
                               "(dropped behind keyledger's back)"]
    human = invoke(viewed, "audit", "verify", password=None)
    assert human.exit_code == 1
    assert "NOT protected" in human.stderr and name in human.stderr


def test_a_trigger_altered_to_do_nothing_counts_as_dropped(viewed: Path) -> None:
    """events_no_update replaced by a trigger of the same name that lets the UPDATE through
    is reported as altered (exit 1); put back by hand from its SQL on one line, as
    docs/formats.md gives it, it is keyledger's again: only runs of whitespace may differ."""
    original = trigger_sql(viewed, "events_no_update")
    run(viewed, "DROP TRIGGER events_no_update",
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT 1; END")
    run(viewed, "UPDATE events SET actor = actor")  # the premise: it no longer refuses
    doc = verify(viewed)
    assert doc["ok"] is False
    assert doc["trigger_faults"] == [
        {"name": "events_no_update", "table": "events", "fault": "altered"}]
    run(viewed, "DROP TRIGGER events_no_update", documented_sql())
    assert trigger_sql(viewed, "events_no_update") != original  # the premise
    assert verify(viewed)["ok"] is True


def test_a_foreign_trigger_on_a_ledger_table_is_reported(viewed: Path) -> None:
    """A trigger keyledger never creates on one of its tables (here one that would keep a
    copy of every key `keys destroy` erases) fails audit verify and health-check."""
    run(viewed, "CREATE TABLE stash (wrapped BLOB)",
        "CREATE TRIGGER keep_keys BEFORE UPDATE ON KEYS BEGIN "
        "INSERT INTO stash VALUES (old.wrapped); END")
    doc = verify(viewed)
    assert doc["ok"] is False
    assert doc["trigger_faults"] == [{"name": "keep_keys", "table": "KEYS", "fault": "foreign"}]
    health = invoke(viewed, "health-check", "--json")
    assert health.exit_code == 1
    ledger_check = next(c for c in document(health)["checks"] if c["name"] == "ledger")
    assert ledger_check["status"] == "fail" and "keep_keys" in ledger_check["detail"]


@pytest.mark.parametrize("deep", [False, True], ids=["plain", "deep"])
def test_health_check_fails_on_a_dropped_append_only_trigger(viewed: Path, deep: bool) -> None:
    """health-check, with or without --deep, is unhealthy while an append-only trigger is
    missing, and its ledger check names it."""
    run(viewed, "DROP TRIGGER checkpoints_no_update")
    result = invoke(viewed, "health-check", "--json", *(["--deep"] if deep else []))
    assert result.exit_code == 1
    doc = document(result)
    assert doc["healthy"] is False
    ledger_check = next(c for c in doc["checks"] if c["name"] == "ledger")
    assert ledger_check["status"] == "fail"
    assert "trigger checkpoints_no_update on checkpoints is missing" in ledger_check["detail"]


@pytest.mark.parametrize("edit", ["dropped", "altered"])
def test_audit_verify_names_a_read_model_guard_dropped_or_altered(viewed: Path, edit: str) -> None:
    """A read-model guard dropped, or replaced by one that lets every writer through, fails
    audit verify, which names it and repairs nothing (the next open does)."""
    run(viewed, "DROP TRIGGER proj_secrets_guard_update")
    if edit == "altered":
        run(viewed, "CREATE TRIGGER proj_secrets_guard_update BEFORE UPDATE ON proj_secrets "
                    "WHEN 0 BEGIN SELECT RAISE(ABORT, 'never'); END")
    doc = verify(viewed)
    assert doc["ok"] is False and doc["first_bad_seq"] is None
    assert doc["trigger_faults"] == [{"name": "proj_secrets_guard_update", "table": "proj_secrets",
                                      "fault": "missing" if edit == "dropped" else "altered"}]
    assert verify(viewed)["ok"] is False  # verify changed nothing
    with ReadModels.open(viewed) as views:
        assert views.repaired
    assert verify(viewed)["ok"] is True


def test_a_foreign_trigger_on_a_read_model_table_is_caught_on_open_and_dropped(viewed: Path) -> None:
    """A trigger of another name on a read-model table (it would run inside keyledger's own
    writes, past the guards) fails audit verify, is caught when the read models are next
    opened, and goes with the rebuild."""
    run(viewed, "CREATE TRIGGER sneaky AFTER INSERT ON proj_secrets BEGIN "
                "UPDATE proj_secrets SET key_version = 9 WHERE name = new.name; END")
    assert verify(viewed)["trigger_faults"] == [
        {"name": "sneaky", "table": "proj_secrets", "fault": "foreign"}]
    with ReadModels.open(viewed) as views:
        assert views.repaired
    assert verify(viewed)["ok"] is True


def test_audit_anchor_refuses_naming_the_missing_trigger(viewed: Path, tmp_path: Path) -> None:
    """audit anchor refuses a ledger whose append-only trigger is gone, in one line that
    names it, and writes no anchor."""
    run(viewed, "DROP TRIGGER events_no_delete")
    out = tmp_path / "a.anchor"
    result = invoke(viewed, "audit", "anchor", "--out", str(out), password=None)
    assert result.exit_code == 1
    assert "events_no_delete" in error_line(result)
    assert not out.exists()
