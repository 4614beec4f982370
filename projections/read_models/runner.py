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
import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Protocol

from ledger.errors import printable_ascii
from ledger.events import DomainEvent, StoredEvent
from ledger.store import WRITER_FUNCTION, SQLiteRecorder, TriggerFault, trigger_faults

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
# unreported_repair: what the first repair since the last health-check found (see
# ReadModels); kept across rebuilds, as it is about the read models, not the events.
_CHECKPOINT_DDL = """CREATE TABLE IF NOT EXISTS proj_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL, last_hash TEXT NOT NULL,
    schema_cookie INTEGER NOT NULL DEFAULT 0, unreported_repair TEXT NOT NULL DEFAULT '')"""
# The schema cookie SQLite bumps on every CREATE, DROP or ALTER, read in the same statement
# (so the same snapshot) as the one the runner stored after its own schema changes.
_COOKIES_SQL = """SELECT c.schema_cookie, v.schema_version
    FROM proj_checkpoint c, pragma_schema_version v WHERE c.id = 1"""


# Everything in the read models' namespace, and anything else built on their tables (a
# trigger of another name on proj_secrets would run inside keyledger's own writes).
_SCHEMA_SQL = """SELECT name, sql FROM sqlite_master
    WHERE (name LIKE 'proj\\_%' ESCAPE '\\' OR tbl_name LIKE 'proj\\_%' ESCAPE '\\')
    AND sql IS NOT NULL ORDER BY name"""


#: The fingerprint (:func:`layout_fingerprint`) of the read models this keyledger
#: creates. A test holds it to :attr:`ProjectionRunner.schema`: when the tables, indexes or
#: guards change, the outgoing value moves to :data:`EARLIER_LAYOUTS`.
LAYOUT = "6c149f383ab2aea5fbc6d9f769c5e0902164e982e5eccd9078c729a29f2a398d"

#: The read models of earlier keyledgers, exactly as each created them: found untouched
#: on open, they are rebuilt as an upgrade rather than reported as an edit.
EARLIER_LAYOUTS = {
    "fbf04cb9f10b85d8fce06451fd9f2725191a100f3c5c3189fad9bb1388a40f23":
        "with the index proj_secrets_live, without proj_checkpoint.unreported_repair",
    "6d5c6cf64059f436a103b82ddd76387931362d6d14c8f18f9402b082c4fa0782":
        "without proj_checkpoint.unreported_repair",
}


def _stored_schema(conn: sqlite3.Connection) -> dict[str, str]:
    """Name to SQL of every ``proj_*`` table, index and trigger in ``conn``'s database."""
    return dict(conn.execute(_SCHEMA_SQL).fetchall())


def layout_fingerprint(schema: Mapping[str, str]) -> str:
    """SHA-256 over every ``proj_*`` table, index and trigger's name and SQL."""
    return hashlib.sha256(json.dumps(sorted(schema.items())).encode("utf-8")).hexdigest()


_STRAY_SQL = """SELECT type, name FROM sqlite_master WHERE name LIKE 'proj\\_%' ESCAPE '\\'
    AND type IN ('trigger', 'view', 'index', 'table')
    ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 WHEN 'index' THEN 2 ELSE 3 END"""


GUARDED_ACTIONS = ("INSERT", "UPDATE", "DELETE")


def guard_name(table: str, action: str) -> str:
    return f"{table}_guard_{action.lower()}"


def guard_triggers(table: str) -> list[str]:
    """The triggers that refuse every write to ``table`` but keyledger's own.

    A connection that is not keyledger's lacks :data:`ledger.store.WRITER_FUNCTION`, so an
    INSERT, UPDATE or DELETE there fails before it changes a row."""
    return [
        f"CREATE TRIGGER IF NOT EXISTS {guard_name(table, action)} BEFORE {action} ON {table} "
        f"WHEN {WRITER_FUNCTION}() IS NOT 1 "
        "BEGIN SELECT RAISE(ABORT, 'keyledger read models are written by keyledger only'); END"
        for action in GUARDED_ACTIONS
    ]


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
                for sql in guard_triggers(table):
                    conn.execute(sql)

    @functools.cached_property
    def schema(self) -> dict[str, str]:
        """Name to SQL of every table, index and guard the read models have, as SQLite
        records them: made once in an in-memory database, to compare a ledger's with."""
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            self._create(conn)
            return _stored_schema(conn)

    def setup(self, conn: sqlite3.Connection, *, guarded: bool = True) -> None:
        """Create what is missing (tables, guards, the checkpoint row), and store SQLite's
        schema cookie beside the checkpoint after a schema change of its own. A cookie that
        had already moved (someone dropped a guard?) is left as found, for
        :meth:`cookie_moved` to report: recreating a guard must not hide that it was gone.
        ``guarded=False`` leaves the guards for a later call (a rebuild adds them after
        replaying)."""
        try:
            before = conn.execute(_COOKIES_SQL).fetchone()
        except sqlite3.OperationalError:  # no checkpoint table yet
            before = None
        self._create(conn, guarded=guarded)
        conn.execute(
            "INSERT OR IGNORE INTO proj_checkpoint (id, last_seq, last_hash) VALUES (1, 0, '')"
        )
        if before is None or before[0] == before[1]:  # fresh, or the cookie was ours
            self._store_cookie(conn)

    @staticmethod
    def _store_cookie(conn: sqlite3.Connection) -> None:
        stored, actual = conn.execute(_COOKIES_SQL).fetchone()
        if stored != actual:
            conn.execute("UPDATE proj_checkpoint SET schema_cookie = ? WHERE id = 1", (actual,))

    @staticmethod
    def cookie_moved(conn: sqlite3.Connection) -> bool:
        """Whether SQLite's schema cookie moved since keyledger last changed the schema:
        a guard dropped and put back, or only a copy made with SQLite's backup API (which
        sets a new cookie), or a VACUUM."""
        try:
            row = conn.execute(_COOKIES_SQL).fetchone()
        except sqlite3.OperationalError:
            return False  # no read models yet
        return row is not None and row[0] != row[1]

    def accept_cookie(self, recorder: SQLiteRecorder) -> None:
        """Store the present cookie, once every row was found to agree with the events."""
        with recorder.write_transaction() as conn:
            self._store_cookie(conn)

    def earlier_layout(self, conn: sqlite3.Connection) -> bool:
        """Whether the read models are an earlier keyledger's, as it left them: their
        tables, indexes and guards are one of :data:`EARLIER_LAYOUTS`, and SQLite's
        schema cookie is the one it stored after its own last change. (With the guards
        in place and the cookie unmoved, no row can have been edited either.)"""
        return (layout_fingerprint(_stored_schema(conn)) in EARLIER_LAYOUTS
                and not self.cookie_moved(conn))

    def schema_problems(self, conn: sqlite3.Connection) -> list[str]:
        """A table, index or guard of the read models missing, added or different from
        :attr:`schema`: written by another version of keyledger, or edited (a guard dropped
        to change a row, say). Constant time. (A moved schema cookie is not a problem by
        itself: see :meth:`cookie_moved`.)"""
        found = _stored_schema(conn)
        if not found:
            return []  # no read models yet: the first catch-up creates them from the events
        if found != self.schema:
            return ["the read models' tables or write guards differ from this keyledger's "
                    "(another version's, or edited)"]
        return []

    def guard_faults(self, conn: sqlite3.Connection) -> list[TriggerFault]:
        """The read models' guards missing or altered, and any other trigger on their
        tables ([] while there are no read models). Reads the schema only."""
        if not _stored_schema(conn):
            return []
        expected = {guard_name(table, action): (table, self.schema[guard_name(table, action)])
                    for table in self.tables for action in GUARDED_ACTIONS}
        return trigger_faults(conn, expected, self.tables)

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

    @staticmethod
    def unreported_repair(recorder: SQLiteRecorder) -> str:
        """What the first repair since the last :meth:`clear_repair` found ('' for none)."""
        try:
            row = recorder.conn.execute(
                "SELECT unreported_repair FROM proj_checkpoint WHERE id = 1").fetchone()
        except sqlite3.OperationalError:  # no read models yet, or an earlier layout's
            return ""
        # The file's own text, shown to an operator: kept printable.
        return "" if row is None or not isinstance(row[0], str) else printable_ascii(row[0], 500)

    @staticmethod
    def clear_repair(recorder: SQLiteRecorder, reported: str) -> None:
        """Forget the repair ``reported`` described, once someone was told (a newer one
        stored meanwhile by another process stays)."""
        if reported:
            with recorder.write_transaction() as conn:
                stored = ProjectionRunner.unreported_repair(recorder)
                if stored == reported:
                    conn.execute("UPDATE proj_checkpoint SET unreported_repair = '' WHERE id = 1")

    def rebuild(self, recorder: SQLiteRecorder, *, repair: str = "") -> int:
        """Drop every read model and replay all events into fresh tables; the count applied.

        ``repair`` says what disagreed with the events, when that is why: it is kept for
        the next health check unless an earlier repair is still unreported (the first is
        kept). An unreported repair survives the rebuild either way."""
        with recorder.write_transaction() as conn:
            unreported = self.unreported_repair(recorder) or repair
            conn.execute("DROP TABLE IF EXISTS proj_checkpoint")
            for projection in self.projections:
                for table in projection.tables:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
            # Anything else in the read models' namespace goes too (an index or trigger
            # someone added), or the schema check would fail again after every rebuild.
            for kind, name in conn.execute(_STRAY_SQL).fetchall():
                quoted = '"' + name.replace('"', '""') + '"'
                conn.execute(f"DROP {kind.upper()} IF EXISTS {quoted}")
            # The guards come last: every replayed row would otherwise call them.
            self.catch_up(recorder, guarded=False)
            self.setup(conn)
            if unreported:
                conn.execute("UPDATE proj_checkpoint SET unreported_repair = ? WHERE id = 1",
                             (unreported,))
        return self.position(recorder)[0]
