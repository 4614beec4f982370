"""Chain checks catch rows edited, deleted, inserted or reordered behind the triggers."""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ledger.integrity import check_chain
from ledger.store import SQLiteRecorder
from ledger.testing import create_test_ledger

COLUMNS = ["stream", "stream_rev", "type", "payload", "occurred_at", "actor", "origin", "prev_hash", "hash"]


def build(path: Path) -> int:
    with create_test_ledger(path, "pw") as ledger:
        for i in range(6):
            ledger.set(f"s{i}", f"v{i}")
        ledger.rotate()
        ledger.migrate(batch_size=2)
        return ledger.recorder.head()[0]


def tamper(path: Path, sql: list[tuple[str, tuple[object, ...]]]) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        for statement, args in sql:
            conn.execute(statement, args)
        conn.commit()


def verdict(path: Path) -> tuple[bool, int | None]:
    recorder = SQLiteRecorder(path)
    try:
        report = check_chain(recorder)
        return report.ok, report.first_bad_seq
    finally:
        recorder.close()


TAMPERINGS = st.one_of(
    st.tuples(st.just("edit"), st.integers(1, 10_000), st.sampled_from(COLUMNS)),
    st.tuples(st.just("delete"), st.integers(1, 10_000), st.just("")),
    st.tuples(st.just("insert"), st.integers(1, 10_000), st.just("")),
    st.tuples(st.just("swap"), st.integers(1, 10_000), st.just("")),
)


@given(TAMPERINGS)
def test_any_tampering_is_detected(change: tuple[str, int, str]) -> None:
    """Editing any column, deleting, inserting or swapping rows always breaks the chain."""
    kind, pick, column = change
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l.db"
        top = build(path)
        assert verdict(path) == (True, None)
        seq = 1 + pick % (top - 1)  # never the very last row alone: that is truncation
        if kind == "edit":
            value = "0" if column in ("stream_rev",) else "tampered"
            tamper(path, [(f"UPDATE events SET {column} = ? WHERE seq = ?", (value, seq))])
        elif kind == "delete":
            tamper(path, [("DELETE FROM events WHERE seq = ?", (seq,))])
        elif kind == "insert":
            tamper(path, [
                ("UPDATE events SET seq = -seq - 1 WHERE seq >= ?", (seq,)),
                ("UPDATE events SET seq = -seq WHERE seq < 0", ()),
                ("INSERT INTO events SELECT ?, 'forged', 1, type, schema_version, payload, occurred_at,"
                 " actor, origin, prev_hash, hash FROM events WHERE seq = ?", (seq, seq + 1)),
            ])
        else:
            tamper(path, [
                ("UPDATE events SET seq = -1 WHERE seq = ?", (seq,)),
                ("UPDATE events SET seq = ? WHERE seq = ?", (seq, seq + 1)),
                ("UPDATE events SET seq = ? WHERE seq = -1", (seq + 1,)),
            ])
        ok, first_bad = verdict(path)
        assert not ok
        assert first_bad is not None and first_bad <= seq + 1


def test_a_cut_tail_still_verifies_by_itself(tmp_path: Path) -> None:
    """Truncation is invisible to the chain alone (that is what signed checkpoints are for)."""
    path = tmp_path / "l.db"
    top = build(path)
    tamper(path, [("DELETE FROM events WHERE seq > ?", (top - 3,))])
    assert verdict(path) == (True, None)
