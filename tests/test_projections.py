"""Read models: rebuilt from events, checked against them, repaired when edited."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from cli_support import invoke
from conftest import PASSWORD, Backend
from tamper_support import edit_read_models, plain_sql, refused_edit

from ledger import Ledger, SQLiteRecorder
from ledger.backup import take_backup
from projections import ReadModels, projector
from projections.read_models.runner import EARLIER_LAYOUTS, LAYOUT, layout_fingerprint

EDITS = {
    "a secret moved to another version": "UPDATE proj_secrets SET key_version = 7 WHERE name = 'a'",
    "a secret row deleted": "DELETE FROM proj_secrets WHERE name = 'b'",
    "a deleted secret revived": "UPDATE proj_secrets SET deleted = 0, key_version = 1, scheme = 'bound-v1'"
                                " WHERE name = 'gone'",
    "the current version changed": "UPDATE proj_keyring SET current_version = 9",
    "a key version's dates changed": "UPDATE proj_key_versions SET rotated_at = NULL",
    "a key version added": "INSERT INTO proj_key_versions (version, created_at, status, origin, fingerprint,"
                           " algorithm) VALUES (42, 'x', 'active', 'generated', 'f', 'AES-256-GCM')",
    "the counts changed": "UPDATE proj_secret_counts SET live = live + 5",
    "the checkpoint moved": "UPDATE proj_checkpoint SET last_seq = last_seq - 1",
    "a migration run removed": "DELETE FROM proj_migration_runs",
    "a secret's revision changed": "UPDATE proj_secrets SET revision = revision + 1 WHERE name = 'c'",
    "a secret's seq changed": "UPDATE proj_secrets SET updated_seq = 1 WHERE name = 'c'",
    "two secrets' names swapped": "UPDATE proj_secrets SET name = CASE name WHEN 'a' THEN 'zz' "
                                  "WHEN 'zz' THEN 'a' END WHERE name IN ('a')",
}


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    for name in ("a", "b", "c", "gone"):
        ledger.set(name, name)
    ledger.delete("gone")
    ledger.rotate()
    ledger.migrate(batch_size=2)
    return ledger


@pytest.mark.parametrize("what", sorted(EDITS))
def test_edited_read_models_are_caught_on_open_and_rebuilt(
    filled: Ledger, backend: Backend, what: str
) -> None:
    """Every edit of a read-model table (its guards dropped) is caught when opened, and the
    answers come from the events."""
    truth = ReadModels(filled.recorder)
    expected = (truth.report(), truth.keyring(), truth.secrets(), truth.migration_runs())
    edit_read_models(backend.target, EDITS[what])
    with ReadModels.open(backend.target) as views:
        assert views.repaired, what
        assert (views.report(), views.keyring(), views.secrets(), views.migration_runs()) == expected
        assert views.problems(deep=True) == []


@pytest.mark.parametrize("what", sorted(EDITS))
def test_a_plain_connection_cannot_edit_the_read_models(
    filled: Ledger, backend: Backend, what: str
) -> None:
    """With the guards in place an edit from outside keyledger fails and changes nothing."""
    before = ReadModels(filled.recorder)
    expected = (before.report(), before.keyring(), before.secrets(), before.migration_runs())
    refused = refused_edit(backend.target, EDITS[what])
    assert "keyledger_writer" in refused or "written by keyledger only" in refused
    with ReadModels.open(backend.target) as views:
        assert views.repaired == []
        assert (views.report(), views.keyring(), views.secrets(), views.migration_runs()) == expected


@pytest.mark.parametrize("what", sorted(EDITS))
def test_a_forgery_that_covers_its_tracks_fails_the_deep_check(
    filled: Ledger, backend: Backend, what: str
) -> None:
    """Guards dropped, rows edited, guards and cookie put back: the quick checks on open may
    miss it (the documented limit), the deep check never does."""
    edit_read_models(backend.target, EDITS[what], cover_tracks=True)
    with ReadModels.open(backend.target) as views:
        assert views.repaired or views.problems(deep=True), what


def test_a_consistent_forgery_needs_the_deep_check(filled: Ledger, backend: Backend) -> None:
    """A row moved to another version with the counts moved to match, tracks covered,
    escapes the quick check unless the row is in the sample; the deep check names it."""
    edit_read_models(
        backend.target,
        "UPDATE proj_secrets SET key_version = 1 WHERE name = 'a'",
        "UPDATE proj_secret_counts SET live = live + 1 WHERE key_version = 1",
        "INSERT INTO proj_secret_counts VALUES (1, 'bound-v1', 1) ON CONFLICT DO NOTHING",
        "UPDATE proj_secret_counts SET live = live - 1 WHERE key_version = 2",
        cover_tracks=True,
    )
    with ReadModels.open(backend.target) as views:
        assert views.repaired == []
        assert views.report().distribution == {1: 1, 2: 2}  # the forgery, served
        assert views.problems(sample=["b", "c"]) == []
        assert views.problems(sample=["a"]) and "'a'" in views.problems(sample=["a"])[0]
        problems = views.problems(deep=True)
    assert problems and "'a'" in problems[0]


def test_untouched_read_models_pass_every_check(filled: Ledger) -> None:
    """A ledger nobody tampered with has no problems, quick or deep."""
    views = ReadModels(filled.recorder)
    assert views.repaired == [] and views.problems(deep=True) == []


@pytest.mark.sqlite_only
def test_a_backup_copy_or_vacuum_is_checked_once_and_not_called_tampering(
    filled: Ledger, db_path: Path, tmp_path: Path
) -> None:
    """SQLite's backup API and VACUUM give the file a new schema cookie: the next open
    compares every row once, finds them right, accepts the cookie, and repairs nothing."""
    copy = tmp_path / "copy.db"
    take_backup(filled.session, copy)
    filled.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("VACUUM")
    for path in (copy, db_path):
        with closing(sqlite3.connect(path)) as conn:
            cookie, actual = conn.execute(
                "SELECT schema_cookie, (SELECT schema_version FROM pragma_schema_version) "
                "FROM proj_checkpoint").fetchone()
        assert cookie != actual, path  # the premise: the cookie moved
        with ReadModels.open(path) as views:
            assert views.repaired == [], path
        with ReadModels.open(path) as views:  # the cookie was accepted: quick again
            assert views.runner.cookie_moved(views.recorder) is False
            assert views.repaired == []


def test_an_append_does_not_hide_a_dropped_guard(filled: Ledger, backend: Backend) -> None:
    """Guards dropped and a row edited, then an append through the library (which puts the
    guards back): the moved cookie still shows, and the next open finds and rebuilds it."""
    edit_read_models(backend.target, "UPDATE proj_secrets SET key_version = 7 WHERE name = 'a'")
    filled.set("new", "value")  # catch-up recreates the guards; it must leave the cookie
    with ReadModels.open(backend.target) as views:
        assert views.repaired
        assert views.secrets()[0].key_version == 2


def test_a_rebuild_clears_stray_objects_in_the_read_models_namespace(
    filled: Ledger, backend: Backend
) -> None:
    """An index someone added under a proj_ name fails the schema check once; the rebuild
    drops it, so the next open is clean."""
    plain_sql(backend.target, "CREATE INDEX proj_extra ON events (actor)")
    with ReadModels.open(backend.target) as views:
        assert views.repaired
    with ReadModels.open(backend.target) as views:
        assert views.repaired == []


def test_this_keyledgers_layout_is_known() -> None:
    """Changing a read-model table, index or guard fails here until the outgoing layout
    is added to EARLIER_LAYOUTS, so that upgraded ledgers are not reported as edited."""
    runner = projector()
    assert layout_fingerprint(runner.schema) == LAYOUT
    assert LAYOUT not in EARLIER_LAYOUTS


LIVE_INDEX = "CREATE INDEX proj_secrets_live ON proj_secrets (deleted, key_version, scheme)"
# proj_checkpoint before it kept the note of an unreported repair.
CHECKPOINT_WITHOUT_REPAIR_NOTE = """CREATE TABLE proj_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL, last_hash TEXT NOT NULL,
    schema_cookie INTEGER NOT NULL DEFAULT 0)"""
WITH_LIVE_INDEX = "with the index proj_secrets_live, without proj_checkpoint.unreported_repair"
WITHOUT_REPAIR_NOTE = "without proj_checkpoint.unreported_repair"
EARLIER = [WITH_LIVE_INDEX, WITHOUT_REPAIR_NOTE]


def as_earlier_keyledger_left_it(db_path: Path, session: str, *, cookie_stored: bool = True) -> None:
    """The read models as an earlier keyledger created them: today's, with the checkpoint
    table from before the repair note (and, in the older layout, the index on live
    secrets), and the schema cookie it stored after its own schema change."""
    with SQLiteRecorder(db_path) as recorder:  # keyledger's own connection: the guards let it
        conn = recorder.conn
        row = conn.execute(
            "SELECT id, last_seq, last_hash, schema_cookie FROM proj_checkpoint").fetchone()
        guards = [sql for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'proj_checkpoint'")]
        conn.execute("DROP TABLE proj_checkpoint")
        conn.execute(CHECKPOINT_WITHOUT_REPAIR_NOTE)
        conn.execute("INSERT INTO proj_checkpoint VALUES (?, ?, ?, ?)", row)
        for sql in guards:
            conn.execute(sql)
        if session == WITH_LIVE_INDEX:
            conn.execute(LIVE_INDEX)
        if cookie_stored:
            conn.execute("UPDATE proj_checkpoint SET schema_cookie = "
                         "(SELECT schema_version FROM pragma_schema_version)")
        stored = dict(conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE name LIKE 'proj%' AND sql IS NOT NULL"))
    assert EARLIER_LAYOUTS[layout_fingerprint(stored)] == session  # the premise: that layout


@pytest.mark.sqlite_only
@pytest.mark.parametrize("session", EARLIER)
def test_an_earlier_keyledgers_read_models_are_rebuilt_as_an_upgrade(
    filled: Ledger, db_path: Path, session: str
) -> None:
    """Read models exactly as an earlier keyledger left them are rebuilt on open as an
    upgrade, not reported as an edit, and only once."""
    truth = ReadModels(filled.recorder)
    expected = (truth.report(), truth.keyring(), truth.secrets(), truth.migration_runs())
    filled.close()
    as_earlier_keyledger_left_it(db_path, session)
    with ReadModels.open(db_path) as views:
        assert views.upgraded and views.repaired == []
        assert (views.report(), views.keyring(), views.secrets(), views.migration_runs()) == expected
        assert views.problems(deep=True) == []
        assert layout_fingerprint(views.runner.schema) == LAYOUT
    with ReadModels.open(db_path) as views:  # done once
        assert not views.upgraded and views.repaired == []


@pytest.mark.sqlite_only
@pytest.mark.parametrize("session", EARLIER)
def test_an_earlier_layout_changed_behind_keyledgers_back_is_still_an_edit(
    filled: Ledger, db_path: Path, session: str
) -> None:
    """The same tables, but the cookie moved after the previous keyledger stored it (a
    guard dropped and put back, say): reported, not taken for an upgrade."""
    filled.close()
    as_earlier_keyledger_left_it(db_path, session, cookie_stored=False)
    with ReadModels.open(db_path) as views:
        assert not views.upgraded and views.repaired


@pytest.mark.sqlite_only
@pytest.mark.parametrize("session", EARLIER)
def test_the_cli_says_upgraded_not_edited(filled: Ledger, db_path: Path, session: str) -> None:
    """The first command after an upgrade notes the rebuild; a health check that is that
    first command stays healthy."""
    filled.close()
    as_earlier_keyledger_left_it(db_path, session)
    health = invoke(db_path, "health-check", "--json", password=PASSWORD)
    assert health.exit_code == 0, health.stdout
    assert "earlier version wrote them" in health.stderr
    as_earlier_keyledger_left_it(db_path, session)
    result = invoke(db_path, "info", "--json")
    assert result.exit_code == 0
    assert "earlier version wrote them" in result.stderr and "edited" not in result.stderr
