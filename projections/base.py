"""The projection runner: keeps read models in step with the events, or rebuilds them.

Each :class:`Projection` owns a few tables and turns events into row changes. The
:class:`ProjectionRunner` applies every event past its checkpoint and moves the
checkpoint in the same transaction, so a read model is never ahead of or silently behind
the ledger; attached to a recorder it runs inside every append. Projections read events
and never write them.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Sequence
from typing import Protocol

from ledger.events import DomainEvent
from ledger.store import WRITER_FUNCTION, SQLiteRecorder, StoredEvent

Applied = tuple[DomainEvent, StoredEvent]


class Projection(Protocol):
    """One read model: its tables, how a batch of events changes them, how to empty them.

    ``apply_batch`` gets the events of one append (or a page of a rebuild) in seq order,
    so a read model can turn many events into a few statements."""

    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> Sequence[str]: ...

    def create(self, conn: sqlite3.Connection) -> None: ...

    def apply_batch(self, batch: Sequence[Applied], conn: sqlite3.Connection) -> None: ...


REBUILD_PAGE = 5_000  # events decoded and applied together when reading them back

CHECKPOINT_TABLE = "proj_checkpoint"
_CHECKPOINT_DDL = """CREATE TABLE IF NOT EXISTS proj_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL, last_hash TEXT NOT NULL,
    schema_cookie INTEGER NOT NULL DEFAULT 0)"""
# The schema cookie SQLite bumps on every CREATE, DROP or ALTER, read in the same statement
# (so the same snapshot) as the one the runner stored after its own schema changes.
_COOKIES_SQL = """SELECT c.schema_cookie, v.schema_version
    FROM proj_checkpoint c, pragma_schema_version v WHERE c.id = 1"""


_SCHEMA_SQL = """SELECT name, sql FROM sqlite_master
    WHERE name LIKE 'proj\\_%' ESCAPE '\\' AND sql IS NOT NULL ORDER BY name"""


def guard_triggers(table: str) -> dict[str, str]:
    """The triggers that refuse every write to ``table`` but keyledger's own, by name.

    A connection that is not keyledger's lacks :data:`ledger.store.WRITER_FUNCTION`, so an
    INSERT, UPDATE or DELETE there fails before it changes a row; the text is what SQLite
    keeps in ``sqlite_master``, to tell a guard that was replaced."""
    return {
        f"{table}_guard_{action.lower()}": (
            f"CREATE TRIGGER {table}_guard_{action.lower()} BEFORE {action} ON {table} "
            f"WHEN {WRITER_FUNCTION}() IS NOT 1 "
            "BEGIN SELECT RAISE(ABORT, 'keyledger read models are written by keyledger only'); END"
        )
        for action in ("INSERT", "UPDATE", "DELETE")
    }


class ProjectionRunner:
    """Applies events to a set of projections; implements ``ledger.store.Projector``."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        self.projections = list(projections)

    @property
    def tables(self) -> list[str]:
        """Every table of the read models, the checkpoint first."""
        return [CHECKPOINT_TABLE] + [t for p in self.projections for t in p.tables]

    def _create(self, conn: sqlite3.Connection, *, guarded: bool = True) -> None:
        conn.execute(_CHECKPOINT_DDL)
        for projection in self.projections:
            projection.create(conn)
        if guarded:
            for table in self.tables:
                for sql in guard_triggers(table).values():
                    conn.execute(sql.replace("CREATE TRIGGER", "CREATE TRIGGER IF NOT EXISTS", 1))

    @functools.cached_property
    def schema(self) -> dict[str, str]:
        """Name to SQL of every table, index and guard the read models have, as SQLite
        records them: made once in an in-memory database, to compare a ledger's with."""
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            self._create(conn)
            return dict(conn.execute(_SCHEMA_SQL).fetchall())

    def setup(self, conn: sqlite3.Connection, *, guarded: bool = True) -> None:
        """Create what is missing (tables, guards, the checkpoint row); after a schema change
        of its own, store SQLite's new schema cookie beside the checkpoint. ``guarded=False``
        leaves the guards for a later call (a rebuild adds them after replaying)."""
        self._create(conn, guarded=guarded)
        conn.execute(
            "INSERT OR IGNORE INTO proj_checkpoint (id, last_seq, last_hash) VALUES (1, 0, '')"
        )
        stored, actual = conn.execute(_COOKIES_SQL).fetchone()
        if stored != actual:
            conn.execute("UPDATE proj_checkpoint SET schema_cookie = ? WHERE id = 1", (actual,))

    def schema_problems(self, conn: sqlite3.Connection) -> list[str]:
        """Signs that the schema changed behind keyledger's back (a guard dropped, then a
        row edited, say) or is another keyledger's: a table, index or guard missing, added
        or different from :attr:`schema`, or SQLite's schema cookie moved since the runner
        last changed the schema itself. Constant time."""
        found = dict(conn.execute(_SCHEMA_SQL).fetchall())
        if not found:
            return []  # no read models yet: the first catch-up creates them from the events
        if found != self.schema:
            return ["the read models' tables or write guards are missing or not this keyledger's"]
        stored, actual = conn.execute(_COOKIES_SQL).fetchone() or (None, None)
        if stored != actual:
            return ["the ledger's schema changed since keyledger last wrote the read models"]
        return []

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

    def catch_up(
        self, recorder: SQLiteRecorder, appended: Sequence[Applied] = (), *, guarded: bool = True,
    ) -> None:
        """Apply every event past the checkpoint; the caller holds the write transaction.

        ``appended`` are the events the caller just appended, already decoded: when they
        follow the checkpoint directly they are applied as they are, without reading them
        back; otherwise the events are read from the ledger from the checkpoint on.
        """
        conn = recorder.conn
        self.setup(conn, guarded=guarded)
        last_seq, last_hash = self.position(recorder)
        if appended and appended[0][1].seq == last_seq + 1:
            self._apply(appended, conn)
            last_seq, last_hash = appended[-1][1].seq, appended[-1][1].hash
        else:
            page: list[Applied] = []
            for stored in recorder.read_events(last_seq):
                page.append((stored.decode(), stored))
                if len(page) == REBUILD_PAGE:
                    self._apply(page, conn)
                    page = []
                last_seq, last_hash = stored.seq, stored.hash
            self._apply(page, conn)
        conn.execute(
            "UPDATE proj_checkpoint SET last_seq = ?, last_hash = ? WHERE id = 1",
            (last_seq, last_hash),
        )

    def _apply(self, batch: Sequence[Applied], conn: sqlite3.Connection) -> None:
        if batch:
            for projection in self.projections:
                projection.apply_batch(batch, conn)

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
            # The guards come last: every replayed row would otherwise call them.
            self.catch_up(recorder, guarded=False)
            self.setup(conn)
        return self.position(recorder)[0]
