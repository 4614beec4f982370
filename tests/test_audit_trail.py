"""The audit trail of one secret: its history, opt-in read auditing, and rotation metrics."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cli_support import OTHER_VALUE, PASSWORD, VALUE, document, error_line, invoke, plant_undecryptable
from conftest import PASSWORD as LEDGER_PASSWORD

from ledger import Ledger, UnknownSecretError
from ledger import events as ev
from ledger.backup import take_backup, verify_backup
from ledger.locations import is_server, open_recorder
from ledger.store import SQLRecorder
from ledger.store_sqlite import SQLiteRecorder
from ledger.testing import ledger_files
from projections.reports.history import secret_history
from projections.reports.metrics import rotation_metrics


class Killed(Exception):
    """Stands in for the process being killed between two batches."""


def die(done: int, total: int) -> NoReturn:
    raise Killed


def reads_of(recorder: SQLiteRecorder) -> list[tuple[str, str, int]]:
    """(actor, name, key version) of every SecretRead, oldest first."""
    found = []
    for stored in recorder.read_stream(ev.READS_STREAM):
        event = stored.decode()
        assert isinstance(event, ev.SecretRead)
        found.append((stored.actor, event.name, event.key_version))
    return found


def file_digest(path: Path) -> dict[str, str]:
    """sha256 of the ledger file and of its WAL and shared-memory files."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ledger_files(path)}


# -- secrets history -----------------------------------------------------------------


def test_history_lists_every_kind_of_change_with_its_versions_in_seq_order(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Import, write, migration, reset, restore, read and delete appear once each, in seq order."""
    ledger.import_values({"a": "one", "ab": "other"}, source="json")
    ledger.set("a", "two")
    ledger.rotate()
    ledger.migrate()
    ledger.reset("a", "three", reason="corrupted")
    take_backup(ledger.session, tmp_path / "b.db")
    with Ledger.open(tmp_path / "b.db", LEDGER_PASSWORD) as backup:
        ledger.restore_from_backup("a", backup, backup_file="b.db")
    ledger.set_read_auditing(True)
    ledger.get("a")
    ledger.get("ab")  # another secret's read, whose name starts the same, is not listed
    ledger.delete("a")

    history = secret_history(ledger.recorder, "a")
    rows = [(e.type, e.key_version, e.details) for e in history.entries]
    assert rows == [
        ("SecretImported", 1, {"source": "json", "seed_version": None, "legacy": False,
                               "reencrypted": False}),
        ("SecretWritten", 1, {}),
        ("SecretMigrated", 2, {"run_id": rows[2][2]["run_id"], "from_version": 1, "to_version": 2}),
        ("SecretReset", 2, {"reason": "corrupted"}),
        ("SecretRestored", 2, {"backup_file": "b.db", "backup_revision": 4}),
        ("SecretRead", 2, {}),
        ("SecretDeleted", None, {}),
    ]
    seqs = [e.seq for e in history.entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {e.actor for e in history.entries} == {"tester@example"}
    assert history.as_of == ledger.recorder.head() and history.reads == 1


def test_history_of_a_name_never_written_fails_with_one_line(filled: Path) -> None:
    """An unknown secret is an UnknownSecretError in Python and exit 1 with one line in the CLI."""
    with open_recorder(filled) as recorder, pytest.raises(UnknownSecretError):
        secret_history(recorder, "nope")
    result = invoke(filled, "secrets", "history", "nope", password=None)
    assert result.exit_code == 1
    assert "nope" in error_line(result)


def test_history_cli_needs_no_password_and_shows_origin_and_time(filled: Path) -> None:
    """`secrets history --json` needs no password and gives seq, time, actor, origin, type, version."""
    result = invoke(filled, "secrets", "history", "db_password", "--json", password=None)
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["name"] == "db_password" and doc["as_of"]["seq"] > 0
    [entry] = doc["events"]
    assert entry["type"] == "SecretWritten" and entry["key_version"] == 1
    assert entry["actor"] == "setup@test" and "python-api" in entry["origin"]
    assert entry["occurred_at"].endswith("Z") and entry["seq"] > 0
    text = invoke(filled, "secrets", "history", "db_password", password=None)
    assert text.exit_code == 0 and "SecretWritten" in text.stdout


# -- read auditing ---------------------------------------------------------------------


def test_read_auditing_is_off_by_default(ledger: Ledger) -> None:
    """A new ledger does not audit reads: get appends nothing."""
    ledger.set("a", "1")
    before = ledger.recorder.head()
    assert not ledger.read_auditing()
    assert ledger.get("a").value == "1"
    assert ledger.recorder.head() == before


def test_with_auditing_on_each_get_appends_one_read_with_the_actor(ledger: Ledger) -> None:
    """After set_read_auditing(True), every get appends exactly one SecretRead naming the actor."""
    ledger.set("a", "1")
    assert ledger.set_read_auditing(True, reason="PCI review")
    ledger.get("a")
    ledger.get("a")
    assert reads_of(ledger.recorder) == [("tester@example", "a", 1)] * 2
    setting = ledger.recorder.stream_head(ev.AUDIT_SETTINGS_STREAM)
    assert setting is not None and setting.decode() == ev.ReadAuditingSet(enabled=True, reason="PCI review")


def test_decrypting_a_past_ciphertext_is_a_read_too(ledger: Ledger) -> None:
    """open_ciphertext hands out a past value, so with auditing on it records a SecretRead
    under the version that ciphertext names; health-style checks record nothing."""
    ledger.set("a", "old")
    first = ledger.secret("a").ciphertext
    assert first is not None
    ledger.rotate()
    ledger.set("a", "new")
    ledger.set_read_auditing(True)
    assert ledger.open_ciphertext("a", first) == "old"
    assert ledger.check_decrypts("a") == 2
    assert reads_of(ledger.recorder) == [("tester@example", "a", 1)]


def test_switching_auditing_off_stops_it_and_an_unchanged_setting_appends_nothing(ledger: Ledger) -> None:
    """Off again stops recording reads; setting what is already set returns False and appends nothing."""
    ledger.set("a", "1")
    assert ledger.set_read_auditing(True)
    head = ledger.recorder.head()
    assert not ledger.set_read_auditing(True)
    assert ledger.recorder.head() == head
    assert ledger.set_read_auditing(False)
    ledger.get("a")
    assert reads_of(ledger.recorder) == []
    assert len(ledger.recorder.read_stream(ev.AUDIT_SETTINGS_STREAM)) == 2


def test_a_read_of_a_missing_secret_is_not_recorded(ledger: Ledger) -> None:
    """Asking for a name that holds no secret raises and records no SecretRead."""
    ledger.set_read_auditing(True)
    with pytest.raises(UnknownSecretError):
        ledger.get("missing")
    assert reads_of(ledger.recorder) == []


def test_reads_fail_closed_when_the_read_cannot_be_recorded(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With auditing on, a get whose SecretRead cannot be appended raises and returns no value."""
    ledger.set("a", "1")
    ledger.set_read_auditing(True)

    def read_only(*args: Any, **kwargs: Any) -> NoReturn:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(ledger.recorder, "append", read_only)
    returned = []
    with pytest.raises(sqlite3.OperationalError):
        returned.append(ledger.get("a"))
    assert returned == []
    monkeypatch.undo()
    assert reads_of(ledger.recorder) == []
    ledger.set_read_auditing(False)
    monkeypatch.setattr(ledger.recorder, "append", read_only)
    assert ledger.get("a").value == "1"  # with auditing off a read needs no write


def test_cli_get_records_its_actor_and_fails_closed(filled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`secrets get` records a read under --actor; when the record cannot be written it prints no value."""
    assert invoke(filled, "audit", "reads", "on").exit_code == 0
    got = invoke(filled, "secrets", "get", "db_password", env={"KEYLEDGER_ACTOR": "alice@ops"})
    assert got.exit_code == 0 and got.stdout == VALUE + "\n"
    with open_recorder(filled) as recorder:
        assert reads_of(recorder) == [("alice@ops", "db_password", 1)]

    def disk_full(*args: Any, **kwargs: Any) -> NoReturn:
        if is_server(str(filled)):
            import psycopg

            raise psycopg.errors.DiskFull("could not extend file")
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SQLRecorder, "_check_revisions", disk_full)  # inside the append
    failed = invoke(filled, "secrets", "get", "db_password")
    assert failed.exit_code == 1 and failed.stdout == ""
    assert "disk is full" in error_line(failed)
    assert VALUE not in failed.stdout + failed.stderr


def test_audit_reads_cli_shows_switches_and_refuses_a_stray_reason(filled: Path) -> None:
    """`audit reads` shows the setting without a password, switches it with one, appends only on change."""
    shown = invoke(filled, "audit", "reads", "--json", password=None)
    assert shown.exit_code == 0 and document(shown)["enabled"] is False
    assert invoke(filled, "audit", "reads", "on", password=None).exit_code == 1
    on = invoke(filled, "audit", "reads", "on", "--reason", "audit", "--json",
                env={"KEYLEDGER_ACTOR": "bob@ops"})
    assert on.exit_code == 0, on.stderr
    assert document(on) | {"since": None} == {"enabled": True, "changed": True, "since": None,
                                              "actor": "bob@ops", "reason": "audit"}
    again = invoke(filled, "audit", "reads", "on")
    assert again.exit_code == 0 and "already on" in again.stdout
    with open_recorder(filled) as recorder:
        assert len(recorder.read_stream(ev.AUDIT_SETTINGS_STREAM)) == 1
    assert "on since" in invoke(filled, "audit", "reads", password=None).stdout
    assert invoke(filled, "audit", "reads", "--reason", "x").exit_code == 2


def test_verifying_a_backup_never_writes_to_it(ledger: Ledger, tmp_path: Path) -> None:
    """verify_backup and restore_from_backup read a backup with auditing on and leave its bytes unchanged."""
    ledger.set("a", "1")
    ledger.set_read_auditing(True)
    out = tmp_path / "b.db"
    take_backup(ledger.session, out)
    before = file_digest(out)
    report = verify_backup(out, LEDGER_PASSWORD)
    assert report.ok and report.decrypted == 1
    with Ledger.open(out, LEDGER_PASSWORD) as backup:
        assert backup.read_auditing()
        ledger.restore_from_backup("a", backup, backup_file=out.name)
    assert file_digest(out) == before
    assert reads_of(ledger.recorder) == []  # restoring is not a disclosure either


# -- audit metrics ---------------------------------------------------------------------


def metric_lines(db: Path) -> list[dict[str, Any]]:
    result = invoke(db, "audit", "metrics", password=None)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_metrics_for_a_killed_run_a_partial_run_and_the_run_that_resumed_it(db: Path) -> None:
    """A killed run is `incomplete` (no end), then `resumed`; the runs after it carry their counts."""
    with Ledger.open(db, PASSWORD, actor="cron@db01") as ledger:
        ledger.set("db_password", VALUE)
        for i in range(10):
            ledger.set(f"s{i:02}", str(i))
        ledger.rotate()
        with pytest.raises(Killed):
            ledger.migrate(batch_size=4, progress=die)
    [killed] = metric_lines(db)
    assert killed | {"rotation_start": None, "run_id": None} == {
        "rotation_start": None, "rotation_end": None, "old_version": 1, "new_version": 2,
        "secrets_migrated": 4, "secrets_failed": None, "duration_seconds": None,
        "status": "incomplete", "run_id": None, "actor": "cron@db01",
    }
    with Ledger.open(db, PASSWORD, actor="cron@db01") as ledger:
        ledger.migrate(batch_size=4)
        ledger.rotate()
    plant_undecryptable(db)  # written under version 1, which the next run cannot decrypt for it
    with Ledger.open(db, PASSWORD) as ledger:
        partial = ledger.migrate()
    first, second, third = metric_lines(db)
    assert first["run_id"] == killed["run_id"] and first["status"] == "resumed"
    assert (second["status"], second["secrets_migrated"], second["secrets_failed"]) == ("success", 7, 0)
    assert second["rotation_end"] >= second["rotation_start"]
    assert isinstance(second["duration_seconds"], float)
    assert (third["old_version"], third["new_version"], third["status"]) == (2, 3, "partial")
    assert (third["secrets_migrated"], third["secrets_failed"]) == (11, 1)
    assert third["run_id"] == partial.run_id
    doc = document(invoke(db, "audit", "metrics", "--json", password=None))
    assert doc["runs"] == [first, second, third] and doc["as_of"]["seq"] > 0
    with open_recorder(db) as recorder:
        assert [m.to_json() for m in rotation_metrics(recorder)] == [first, second, third]


def test_metrics_of_a_ledger_never_migrated_print_nothing(db: Path) -> None:
    """With no migration run, `audit metrics` prints no line and succeeds."""
    assert metric_lines(db) == []


# -- hygiene ---------------------------------------------------------------------------


def test_no_value_or_ciphertext_reaches_any_output_of_these_commands(filled: Path) -> None:
    """history, audit reads and audit metrics never print a plaintext value or a ciphertext."""
    with Ledger.open(filled, PASSWORD) as ledger:
        ledger.set_read_auditing(True)
        ledger.get("db_password")
        ledger.rotate()
        ledger.migrate()
        with ledger.recorder.snapshot():
            ciphertexts = [json.loads(row.payload)["ciphertext"]
                           for row in ledger.recorder.read_events()
                           if "ciphertext" in json.loads(row.payload)]
    assert len(ciphertexts) == 4
    forbidden = [v.encode() for v in (VALUE, OTHER_VALUE, PASSWORD, *ciphertexts)]
    commands = [
        ("secrets", "history", "db_password"), ("secrets", "history", "db_password", "--json"),
        ("secrets", "history", "api_token"), ("audit", "reads"), ("audit", "reads", "--json"),
        ("audit", "reads", "on"), ("audit", "metrics"), ("audit", "metrics", "--json"),
        ("secrets", "history", "missing", "--json"),
    ]
    for args in commands:
        result = invoke(filled, *args)
        output = result.stdout_bytes + result.stderr_bytes
        assert not any(secret in output for secret in forbidden), args
