"""The projection runner: keeps read models in step with the events, or rebuilds them.

Each :class:`Projection` owns a few tables and turns events into row changes. The
:class:`ProjectionRunner` applies every event past its checkpoint and moves the
checkpoint in the same transaction, so a read model is never ahead of or silently behind
the ledger; attached to a recorder it runs inside every append. Projections read events
and never write them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol

from ledger.events import DomainEvent
from ledger.store import SQLiteRecorder, StoredEvent


class Projection(Protocol):
    """One read model: its tables, how an event changes them, how to empty them."""

    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> Sequence[str]: ...

    def create(self, conn: sqlite3.Connection) -> None: ...

    def apply(self, event: DomainEvent, stored: StoredEvent, conn: sqlite3.Connection) -> None: ...


_CHECKPOINT_DDL = """CREATE TABLE IF NOT EXISTS proj_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL, last_hash TEXT NOT NULL)"""


class ProjectionRunner:
    """Applies events to a set of projections; implements ``ledger.store.Projector``."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        self.projections = list(projections)

    def setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(_CHECKPOINT_DDL)
        for projection in self.projections:
            projection.create(conn)
        conn.execute(
            "INSERT OR IGNORE INTO proj_checkpoint (id, last_seq, last_hash) VALUES (1, 0, '')"
        )

    @staticmethod
    def position(recorder: SQLiteRecorder) -> tuple[int, str]:
        """``(seq, hash)`` of the last event applied; ``(0, '')`` before any."""
        try:
            row = recorder.conn.execute(
                "SELECT last_seq, last_hash FROM proj_checkpoint WHERE id = 1"
            ).fetchone()
        except sqlite3.OperationalError:
            return 0, ""
        return (0, "") if row is None else (row[0], row[1])

    def is_current(self, recorder: SQLiteRecorder) -> bool:
        return self.position(recorder) == recorder.head()

    def catch_up(self, recorder: SQLiteRecorder) -> None:
        """Apply every event past the checkpoint; the caller holds the write transaction."""
        conn = recorder.conn
        self.setup(conn)
        last_seq, last_hash = self.position(recorder)
        for stored in recorder.read_events(last_seq):
            event = stored.decode()
            for projection in self.projections:
                projection.apply(event, stored, conn)
            last_seq, last_hash = stored.seq, stored.hash
        conn.execute(
            "UPDATE proj_checkpoint SET last_seq = ?, last_hash = ? WHERE id = 1",
            (last_seq, last_hash),
        )

    def refresh(self, recorder: SQLiteRecorder) -> None:
        """Bring the read models up to date if the ledger moved on without them."""
        if not self.is_current(recorder):
            with recorder.write_transaction():
                self.catch_up(recorder)

    def rebuild(self, recorder: SQLiteRecorder) -> int:
        """Drop every read model and replay all events into fresh tables; the count applied."""
        with recorder.write_transaction() as conn:
            conn.execute("DROP TABLE IF EXISTS proj_checkpoint")
            for projection in self.projections:
                for table in projection.tables:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
            self.catch_up(recorder)
        return self.position(recorder)[0]
