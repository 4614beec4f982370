"""The SQLite recorder: append-only rows, a hash chain, revisions, and the file itself."""

from __future__ import annotations

import itertools
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import Backend
from tamper_support import refused_edit, rewrite_rows

from ledger import ConcurrencyError, Ledger, LedgerFormatError, LedgerNotFoundError, WrongPasswordError
from ledger import events as ev
from ledger.chain import GENESIS_HASH, first_broken_link
from ledger.events import NewEvent, StoredEvent
from ledger.integrity import check_chain
from ledger.store import FORMAT_VERSION
from ledger.store_sqlite import SQLiteRecorder
from ledger.testing import create_test_ledger, ledger_files

PASSWORD = "pw"
WHEN = "2026-01-01T00:00:00.000000Z"


class TestRecorderContract:
    """Behaviour every recorder must have: run on each backend of ``conftest.BACKENDS``."""

    def test_seq_is_gapless_from_one(self, backend: Backend) -> None:
        """Rows are numbered 1, 2, 3 ... in append order, with no gap."""
        with backend.create() as ledger:
            for i in range(5):
                ledger.set(f"s{i}", "v")
            seqs = [e.seq for e in ledger.recorder.read_events()]
        assert seqs == list(range(1, len(seqs) + 1))

    def test_each_row_links_to_the_previous_hash(self, backend: Backend) -> None:
        """Every row's prev_hash is its predecessor's hash, and every hash recomputes."""
        with backend.create() as ledger:
            ledger.set("a", "1")
            ledger.rotate()
            rows = list(ledger.recorder.read_events())
            assert first_broken_link(ledger.recorder.chain_rows()) is None
        assert rows[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))

    def test_stale_revision_is_a_concurrency_error(self, backend: Backend) -> None:
        """An append decided against an old stream revision is refused and writes nothing."""
        with backend.create() as ledger:
            ledger.set("a", "1")
            head = ledger.recorder.head()
            stale = NewEvent(ev.secret_stream("a"), 1, ev.SecretDeleted(name="a"))
            with pytest.raises(ConcurrencyError) as caught:
                ledger.recorder.append([stale], actor="t", occurred_at=WHEN)
            assert caught.value.streams == [ev.secret_stream("a")]
            assert ledger.recorder.head() == head

    def test_expected_revision_of_an_unwritten_stream_is_checked(self, backend: Backend) -> None:
        """``expect`` guards a stream that was read but not appended to (the keyring)."""
        with backend.create() as ledger:
            event = NewEvent(ev.secret_stream("b"), 1, ev.SecretDeleted(name="b"))
            with pytest.raises(ConcurrencyError):
                ledger.recorder.append([event], actor="t", occurred_at=WHEN,
                                       expect={ev.KEYRING_STREAM: 99})

    def test_a_failed_append_leaves_no_partial_rows(self, backend: Backend) -> None:
        """When one event of a batch conflicts, none of the batch is written."""
        with backend.create() as ledger:
            ledger.set("a", "1")
            head = ledger.recorder.head()
            batch = [
                NewEvent(ev.secret_stream("new"), 1, ev.SecretDeleted(name="new")),
                NewEvent(ev.secret_stream("a"), 1, ev.SecretDeleted(name="a")),
            ]
            with pytest.raises(ConcurrencyError):
                ledger.recorder.append(batch, actor="t", occurred_at=WHEN)
            assert ledger.recorder.head() == head
            assert ledger.recorder.stream_head(ev.secret_stream("new")) is None

    def test_stream_heads_page_in_name_order(self, backend: Backend) -> None:
        """stream_heads returns each stream's latest row, by name, from ``after`` on."""
        with backend.create() as ledger:
            for name in ("c", "a", "b"):
                ledger.set(name, "1")
            ledger.set("a", "2")
            first = ledger.recorder.stream_heads(ev.SECRET_STREAM_PREFIX, "", 2)
            rest = ledger.recorder.stream_heads(ev.SECRET_STREAM_PREFIX, first[-1].stream, 2)
        assert [(h.stream, h.stream_rev) for h in first + rest] == [
            ("secret:a", 2), ("secret:b", 1), ("secret:c", 1),
        ]


def test_update_and_delete_on_events_fail(ledger: Ledger, backend: Backend) -> None:
    """Triggers make the events and checkpoints tables append-only for anyone using SQL
    normally."""
    for table in ("events", "checkpoints"):
        assert "append-only" in refused_edit(backend.target, f"UPDATE {table} SET seq = seq + 100")
        assert "append-only" in refused_edit(backend.target, f"DELETE FROM {table}")


@pytest.mark.sqlite_only
def test_ledger_files_are_private(ledger: Ledger) -> None:
    """The ledger file and its WAL and shm files are readable by the owner only."""
    ledger.set("a", "1")
    files = list(ledger_files(ledger.recorder.path))
    assert len(files) >= 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.sqlite_only
def test_wal_and_full_sync_are_on(ledger: Ledger) -> None:
    """The ledger runs in WAL mode with synchronous=FULL."""
    conn = ledger.recorder.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


@pytest.mark.sqlite_only
def test_events_table_has_the_documented_columns(ledger: Ledger) -> None:
    """events holds seq, type, payload, occurred_at, actor and the hash links."""
    columns = [r[1] for r in ledger.recorder.conn.execute("PRAGMA table_info(events)")]
    for column in ("seq", "type", "payload", "occurred_at", "actor", "prev_hash", "hash"):
        assert column in columns


def test_first_events_record_init(ledger: Ledger) -> None:
    """A new ledger's history is LedgerInitialized, SigningKeyCreated, KeyVersionCreated(1),
    KeyRotated(->1)."""
    rows = list(ledger.recorder.read_events())
    assert [r.type for r in rows] == [
        "LedgerInitialized", "SigningKeyCreated", "KeyVersionCreated", "KeyRotated"
    ]
    assert rows[2].decode() == ev.KeyVersionCreated(
        version=1, fingerprint=ledger.keyring().versions[1].fingerprint, origin="generated"
    )
    assert rows[0].actor == "tester@example" and rows[0].occurred_at.endswith("Z")
    assert " python-api pid " in rows[0].origin


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    """Opening a path with no file says so, and creates nothing."""
    with pytest.raises(LedgerNotFoundError):
        Ledger.open(tmp_path / "absent.db", PASSWORD)
    assert not (tmp_path / "absent.db").exists()


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    """A text file or another application's SQLite database is not opened as a ledger."""
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database at all" * 20)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    for path in (text, other):
        with pytest.raises((LedgerFormatError, LedgerNotFoundError)):
            Ledger.open(path, PASSWORD)


def test_a_damaged_schema_is_refused_in_printable_words(tmp_path: Path) -> None:
    """SQLite quotes the damaged schema text in its error; the message keeps only
    printable ASCII of it, so a byte in the file cannot drive the terminal."""
    path = tmp_path / "l.db"
    create_test_ledger(path, PASSWORD).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'origin TEXT', '\x12\x1b[2J') "
                 "WHERE name = 'events'")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerFormatError, match="is not a keyledger ledger") as caught:
        Ledger.open(path, PASSWORD)
    assert str(caught.value).isprintable() and "malformed database schema" in str(caught.value)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    """A ledger written by a newer keyledger is refused with a clear message."""
    path = tmp_path / "l.db"
    create_test_ledger(path, PASSWORD).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    conn.close()
    with pytest.raises(LedgerFormatError, match="upgrade keyledger"):
        Ledger.open(path, PASSWORD)


def test_wrong_password_changes_nothing(tmp_path: Path) -> None:
    """A wrong master password is refused before anything is read or written."""
    path = tmp_path / "l.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("a", "1")
    before = {p.name: p.read_bytes() for p in ledger_files(path)}
    with pytest.raises(WrongPasswordError):
        Ledger.open(path, "not the password")
    after = {p.name: p.read_bytes() for p in ledger_files(path)}
    assert after == before


def test_create_refuses_an_existing_ledger(tmp_path: Path) -> None:
    """Creating over an existing ledger is refused and leaves it intact."""
    path = tmp_path / "l.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("a", "1")
    with pytest.raises(LedgerFormatError):
        create_test_ledger(path, PASSWORD)
    with Ledger.open(path, PASSWORD) as ledger:
        assert ledger.get("a").value == "1"


def test_weak_kdf_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    """The library refuses fewer than 600,000 PBKDF2 iterations unless told it is a test."""
    with pytest.raises(ValueError, match="600000"):
        Ledger.create(tmp_path / "l.db", PASSWORD, kdf_iterations=1000)


def test_check_chain_spots_a_rewritten_row(ledger: Ledger, backend: Backend) -> None:
    """A row edited behind the triggers' back breaks the chain, in full and tail checks."""
    ledger.set("a", "1")
    assert check_chain(ledger.recorder).ok and check_chain(ledger.recorder, tail=10).ok
    rewrite_rows(backend.target, "UPDATE events SET actor = 'mallory' WHERE seq = 2")
    for report in (check_chain(ledger.recorder), check_chain(ledger.recorder, tail=10)):
        assert not report.ok and report.first_bad_seq == 2


def test_stored_event_decodes_through_the_mapper() -> None:
    """A row's type, schema version and payload give back the event that was stored."""
    event = ev.SecretDeleted(name="x")
    type_name, version, payload = ev.to_payload(event)
    row = StoredEvent(1, "secret:x", 1, type_name, version, payload, WHEN, "a", "o", GENESIS_HASH, "h")
    assert row.decode() == event


def test_unknown_event_type_is_refused() -> None:
    """A row naming an event this code does not know is an error, not a silent skip."""
    with pytest.raises(ev.UnknownEventError):
        ev.from_payload("SecretTeleported", 1, "{}")
    with pytest.raises(ev.UnknownEventError, match="newer"):
        ev.from_payload("SecretDeleted", 2, '{"name": "x"}')


def test_recorder_refuses_to_open_missing_path(tmp_path: Path) -> None:
    """The recorder alone also refuses a missing file rather than creating one."""
    with pytest.raises(LedgerNotFoundError):
        SQLiteRecorder(tmp_path / "nope.db")


def test_old_schema_versions_are_upcast_on_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row stored under an older schema version is lifted by its upcaster, not misread."""

    class SecretRenamed(ev.DomainEvent):
        SCHEMA_VERSION = 2
        name: str
        new_name: str

    monkeypatch.setitem(ev.EVENT_TYPES, "SecretRenamed", SecretRenamed)
    monkeypatch.setitem(
        ev.UPCASTERS, ("SecretRenamed", 1), lambda d: {"name": d["old"], "new_name": d["new"]}
    )
    assert ev.from_payload("SecretRenamed", 1, '{"old": "a", "new": "b"}') == SecretRenamed(
        name="a", new_name="b"
    )
    assert ev.to_payload(SecretRenamed(name="a", new_name="b"))[1] == 2


@pytest.mark.sqlite_only
def test_the_store_translates_sqlites_errors_into_keyledgers(ledger: Ledger) -> None:
    """Nothing above the store sees ``sqlite3``: a statement SQLite refuses reaches the
    caller as :class:`LedgerDatabaseError`, in keyledger's words, and changes nothing."""
    from ledger.errors import LedgerDatabaseError
    from projections import ReadModels

    ledger.set("a", "1")
    head = ledger.recorder.head()
    ledger.recorder.conn.execute("PRAGMA query_only = ON")
    with pytest.raises(LedgerDatabaseError, match=r"^ledger file error: the ledger file is read-only"):
        ledger.set("a", "2")
    ledger.recorder.conn.execute("PRAGMA query_only = OFF")
    assert ledger.recorder.head() == head and ledger.get("a").value == "1"
    ledger.recorder.conn.execute("CREATE TEMP VIEW proj_secrets AS SELECT 1 AS x")  # shadows it
    with pytest.raises(LedgerDatabaseError):
        ReadModels(ledger.recorder, check=False).secrets()
    ledger.recorder.conn.execute("CREATE TEMP VIEW events AS SELECT 1 AS x")
    with pytest.raises(LedgerDatabaseError, match="no such column"):  # a generator, item by item
        next(iter(ledger.recorder.read_events()))


def test_paged_reads_return_every_row_once_in_order_across_page_boundaries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_events, query_events, chain_rows and checkpoints ask by key a page at a time
    (so psycopg never holds a whole ledger): with pages of 3 rows, each still yields
    every row once, in seq order, and stops at the bounds it is given."""
    from ledger import store

    path = tmp_path / "paged.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        for i in range(7):
            ledger.set(f"s{i}", str(i))
    with Ledger.open(path, PASSWORD) as ledger:
        recorder = ledger.recorder
        everything = [e.seq for e in recorder.read_events()]
        checkpoints = [c.seq for c in recorder.checkpoints()]
        monkeypatch.setattr(store, "PAGE_ROWS", 3)
        assert [e.seq for e in recorder.read_events()] == everything
        assert everything == list(range(1, len(everything) + 1)) and len(everything) > 9
        assert [e.seq for e in recorder.read_events(4)] == everything[4:]
        assert [r[0] for r in recorder.chain_rows(2, 8)] == list(range(3, 9))
        assert [c.seq for c in recorder.checkpoints()] == checkpoints and len(checkpoints) > 3
        named = [e.seq for e in recorder.query_events(types={"SecretWritten"}, after_seq=1)]
        assert named == [e.seq for e in recorder.read_events() if e.type == "SecretWritten"]
        assert len(named) == 7
