"""Erased when it says so: `keys destroy` and `rekey-master` beside other connections.

SQLite in WAL mode writes changes to the `-wal` first; the database file keeps the old
pages until a checkpoint copies them over, and a checkpoint cannot finish while another
connection still reads a snapshot from before the change. These tests hold such
connections open, as another process on the host would, and check the files themselves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from cli_support import PASSWORD, document, error_line, invoke

from ledger import Ledger, WrongPasswordError
from ledger.store_sqlite import SQLiteRecorder
from ledger.testing import create_test_ledger

NEW_PASSWORD = "a new master password for the erasure tests"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "keyledger.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("a", "1")
        ledger.rotate()
        ledger.migrate()
        ledger.retire(1)
    return path


def wrapped_key(db: Path, version: int) -> bytes:
    with closing(sqlite3.connect(db)) as conn:
        return bytes(conn.execute("SELECT wrapped FROM keys WHERE version = ?",
                                  (version,)).fetchone()[0])


def main_file_alone(db: Path, tmp_path: Path) -> Path:
    """A copy of the database file without its WAL: what a file-level backup, a disk
    image or a careless `cp keyledger.db` takes."""
    copy = tmp_path / "main-file-only.db"
    copy.write_bytes(db.read_bytes())
    return copy


@contextmanager
def idle_connection(db: Path) -> Iterator[sqlite3.Connection]:
    """Another process with the ledger open between two reads."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("SELECT count(*) FROM events").fetchone()
        yield conn


@contextmanager
def reading_snapshot(db: Path) -> Iterator[sqlite3.Connection]:
    """Another process in the middle of a long read: it holds the snapshot it began with."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM events").fetchone()
        yield conn
        conn.execute("ROLLBACK")


def test_rekey_beside_an_open_connection_leaves_no_file_that_opens_with_the_old_password(
        db: Path, tmp_path: Path) -> None:
    with idle_connection(db):
        done = invoke(db, "rekey-master", "--yes", env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
        assert done.exit_code == 0, done.stderr
        assert done.stderr == ""
        copy = main_file_alone(db, tmp_path)
    with pytest.raises(WrongPasswordError):
        Ledger.open(copy, PASSWORD, seen=None)
    with Ledger.open(copy, NEW_PASSWORD, seen=None) as opened:
        assert opened.get("a").value == "1"


def test_rekey_refuses_before_changing_anything_while_an_older_snapshot_is_read(
        db: Path, tmp_path: Path) -> None:
    with reading_snapshot(db):
        refused = invoke(db, "--lock-timeout", "0.3", "rekey-master", "--yes",
                         env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
        assert refused.exit_code == 1
        assert "the master password was not changed" in error_line(refused)
    with Ledger.open(db, PASSWORD) as still:
        assert still.get("a").value == "1"
    with pytest.raises(WrongPasswordError):
        Ledger.open(db, NEW_PASSWORD)


def test_destroy_beside_an_open_connection_erases_the_key_from_both_files(
        db: Path, tmp_path: Path) -> None:
    wrapped = wrapped_key(db, 1)
    with idle_connection(db):
        done = invoke(db, "keys", "destroy", "1", "--confirm-version", "1", "--yes", "--json")
        assert done.exit_code == 0 and document(done)["erase_pending"] is False
        assert wrapped not in db.read_bytes()
        wal = Path(f"{db}-wal")
        assert not wal.exists() or wrapped not in wal.read_bytes()


def test_destroy_beside_a_long_read_says_what_is_pending_and_the_next_command_finishes_it(
        db: Path, tmp_path: Path) -> None:
    wrapped = wrapped_key(db, 1)
    with reading_snapshot(db):
        done = invoke(db, "--lock-timeout", "0.3", "keys", "destroy", "1", "--confirm-version",
                      "1", "--yes", "--json")
        assert done.exit_code == 0 and document(done)["erase_pending"] is True
        assert "is still in the database file" in error_line(done)
        assert wrapped in db.read_bytes()  # the warning is true: the reader keeps it there
        with SQLiteRecorder(db) as recorder:
            assert recorder.erase_pending() == "key version 1's wrapped data key"
    # The reader is gone: the next command that unlocks finishes the erasure.
    assert invoke(db, "secrets", "get", "a").stdout.strip() == "1"
    assert wrapped not in db.read_bytes()
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wrapped not in wal.read_bytes()
    with SQLiteRecorder(db) as recorder:
        assert recorder.erase_pending() is None


def test_the_library_reports_a_pending_erasure(db: Path) -> None:
    with reading_snapshot(db):
        recorder = SQLiteRecorder(db, lock_timeout=0.3)
        with Ledger.unlock(recorder, PASSWORD) as ledger:
            result = ledger.destroy(1)
            assert result.erase_pending and ledger.erase_pending is not None
    with Ledger.open(db, PASSWORD) as ledger:
        assert ledger.erase_pending is None


def test_health_check_is_unhealthy_while_an_erasure_is_pending(db: Path) -> None:
    with reading_snapshot(db):
        assert invoke(db, "--lock-timeout", "0.3", "keys", "destroy", "1", "--confirm-version",
                      "1", "--yes").exit_code == 0
        health = invoke(db, "health-check", "--json")
        assert health.exit_code == 1
        checks = {c["name"]: c for c in document(health)["checks"]}
        assert checks["erasure"]["status"] == "fail"
        assert "still in the database file" in checks["erasure"]["detail"]
    healthy = invoke(db, "health-check", "--json")  # the reader is gone: finished, healthy
    assert healthy.exit_code == 0 and "erasure" not in {c["name"] for c in document(healthy)["checks"]}
