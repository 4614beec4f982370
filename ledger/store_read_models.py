"""The read models' tables, in SQLite: every statement the projections need.

The projections (:mod:`projections.read_models`) decide what each event changes and what
a question means; this module is where both become SQL, so that nothing above the store
speaks it. :func:`read_model_tables` gives the tables of a recorder; a second storage
backend adds its own class with the same methods.

Writes run inside the caller's transaction (the append's, or a rebuild's); the tables
are guarded by triggers that refuse a write from any connection but keyledger's own.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ledger.store import Recorder, TriggerFault, translates_database_errors
from ledger.store_sqlite import WRITER_FUNCTION, SQLiteRecorder, trigger_faults

CHECKPOINT_TABLE = "proj_checkpoint"
GUARDED_ACTIONS = ("INSERT", "UPDATE", "DELETE")

# unreported_repair: what the first repair since the last health-check found (see
# projections.ReadModels); kept across rebuilds, as it is about the read models, not the events.
_CHECKPOINT_DDL = """CREATE TABLE IF NOT EXISTS proj_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL, last_hash TEXT NOT NULL,
    schema_cookie INTEGER NOT NULL DEFAULT 0, unreported_repair TEXT NOT NULL DEFAULT '')"""
# The schema cookie SQLite bumps on every CREATE, DROP or ALTER, read in the same statement
# (so the same snapshot) as the one stored after keyledger's own schema changes.
_COOKIES_SQL = """SELECT c.schema_cookie, v.schema_version
    FROM proj_checkpoint c, pragma_schema_version v WHERE c.id = 1"""
# Everything in the read models' namespace, and anything else built on their tables (a
# trigger of another name on proj_secrets would run inside keyledger's own writes).
_SCHEMA_SQL = """SELECT name, sql FROM sqlite_master
    WHERE (name LIKE 'proj\\_%' ESCAPE '\\' OR tbl_name LIKE 'proj\\_%' ESCAPE '\\')
    AND sql IS NOT NULL ORDER BY name"""
_STRAY_SQL = """SELECT type, name FROM sqlite_master WHERE name LIKE 'proj\\_%' ESCAPE '\\'
    AND type IN ('trigger', 'view', 'index', 'table')
    ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 WHEN 'index' THEN 2 ELSE 3 END"""


def guard_name(table: str, action: str) -> str:
    return f"{table}_guard_{action.lower()}"


#: Each recorder class to how its read models' tables are reached: SQLite's here, another
#: backend's module adds its own (:func:`register_tables`) when it is imported.
_TABLES: dict[type, Callable[[Any], ReadModelTables]] = {}


def register_tables(recorder: type, tables: Callable[[Any], ReadModelTables]) -> None:
    _TABLES[recorder] = tables


def read_model_tables(recorder: Recorder) -> ReadModelTables:
    """The read models' tables of the ledger behind ``recorder``."""
    for kind in type(recorder).__mro__:
        make = _TABLES.get(kind)
        if make is not None:
            return make(recorder)
    raise TypeError(f"no read-model tables for a {type(recorder).__name__}")


@translates_database_errors
class ReadModelTables:
    """The read models' tables over one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    @contextlib.contextmanager
    def in_memory(cls) -> Iterator[ReadModelTables]:
        """Empty tables in a database of their own: to learn the layout they create."""
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            yield cls(conn)

    # -- layout ---------------------------------------------------------------------------

    def _ddl(self, statement: str) -> str:
        """A table statement as this database speaks it (SQLite: as written)."""
        return statement

    def _create_table(self, statement: str) -> None:
        """Run a ``CREATE TABLE IF NOT EXISTS``."""
        self._conn.execute(self._ddl(statement))

    def expected_layout(self, sqlite_schema: Mapping[str, str]) -> str | None:
        """The fingerprint (:func:`projections.read_models.runner.layout_fingerprint`) the
        read models' :meth:`schema` must have, given the one they have on SQLite (None:
        that one, fingerprinted)."""
        return None

    def create_checkpoint(self) -> None:
        self._create_table(_CHECKPOINT_DDL)

    def create_guards(self, table: str) -> None:
        """The triggers that refuse every write to ``table`` but keyledger's own: a
        connection that is not keyledger's lacks :data:`ledger.store_sqlite.WRITER_FUNCTION`, so
        an INSERT, UPDATE or DELETE there fails before it changes a row."""
        for action in GUARDED_ACTIONS:
            self._conn.execute(
                f"CREATE TRIGGER IF NOT EXISTS {guard_name(table, action)} BEFORE {action} "
                f"ON {table} WHEN {WRITER_FUNCTION}() IS NOT 1 BEGIN SELECT RAISE(ABORT, "
                "'keyledger read models are written by keyledger only'); END"
            )

    def guard_actions(self) -> tuple[str, ...]:
        """The statements each table's guards refuse."""
        return GUARDED_ACTIONS

    def expected_guard(self, table: str, action: str, sqlite_sql: str) -> str:
        """What the guard of ``table`` for ``action`` is, as :meth:`trigger_faults` compares
        it, given the SQL SQLite records for it (here: that)."""
        return sqlite_sql

    def schema(self) -> dict[str, str]:
        """Name to SQL of every ``proj_*`` table, index and trigger, as SQLite records them."""
        return dict(self._conn.execute(_SCHEMA_SQL).fetchall())

    def trigger_faults(self, expected: Mapping[str, tuple[str, str]],
                       tables: Collection[str]) -> list[TriggerFault]:
        return trigger_faults(self._conn, expected, tables)

    def cookies(self) -> tuple[int, int] | None:
        """``(stored, actual)`` schema cookies; None before there is a checkpoint table."""
        try:
            row = self._conn.execute(_COOKIES_SQL).fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else (row[0], row[1])

    def store_cookie(self) -> None:
        found = self.cookies()
        if found is not None and found[0] != found[1]:
            self._conn.execute("UPDATE proj_checkpoint SET schema_cookie = ? WHERE id = 1",
                               (found[1],))

    def drop_all(self, tables: Iterable[str]) -> None:
        """Drop the checkpoint, ``tables``, and anything else in the read models'
        namespace (an index or trigger someone added)."""
        self._conn.execute("DROP TABLE IF EXISTS proj_checkpoint")
        for table in tables:
            self._conn.execute(f"DROP TABLE IF EXISTS {table}")
        for kind, name in self._conn.execute(_STRAY_SQL).fetchall():
            quoted = '"' + name.replace('"', '""') + '"'
            self._conn.execute(f"DROP {kind.upper()} IF EXISTS {quoted}")

    # -- the checkpoint ---------------------------------------------------------------------

    def ensure_checkpoint_row(self) -> None:
        self._conn.execute(
            "INSERT INTO proj_checkpoint (id, last_seq, last_hash) VALUES (1, 0, '') "
            "ON CONFLICT DO NOTHING")

    def position(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last event applied; ``(0, '')`` before any."""
        try:
            row = self._conn.execute(
                "SELECT last_seq, last_hash FROM proj_checkpoint WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return 0, ""
        return (0, "") if row is None else (row[0], row[1])

    def set_position(self, seq: int, head_hash: str) -> None:
        self._conn.execute("UPDATE proj_checkpoint SET last_seq = ?, last_hash = ? WHERE id = 1",
                           (seq, head_hash))

    def unreported_repair(self) -> object:
        """The stored note of an unreported repair, as the file holds it (None: no table,
        or a layout without the column)."""
        try:
            row = self._conn.execute(
                "SELECT unreported_repair FROM proj_checkpoint WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else row[0]

    def set_unreported_repair(self, note: str) -> None:
        self._conn.execute("UPDATE proj_checkpoint SET unreported_repair = ? WHERE id = 1", (note,))

    def has_key_rows(self) -> bool:
        try:
            return self._conn.execute("SELECT 1 FROM proj_key_versions LIMIT 1").fetchone() is not None
        except sqlite3.OperationalError:  # no read models yet
            return False

    def row_count(self, table: str) -> int:
        return int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    # -- keys -------------------------------------------------------------------------------

    def create_key_tables(self) -> None:
        self._create_table(
            """CREATE TABLE IF NOT EXISTS proj_key_versions (
                version INTEGER PRIMARY KEY, created_at TEXT NOT NULL, rotated_at TEXT,
                status TEXT NOT NULL, origin TEXT NOT NULL, fingerprint TEXT NOT NULL,
                algorithm TEXT NOT NULL, encryptions INTEGER NOT NULL DEFAULT 0,
                destroy_after TEXT, destroyed_at TEXT)"""
        )
        self._create_table(
            """CREATE TABLE IF NOT EXISTS proj_keyring (
                id INTEGER PRIMARY KEY CHECK (id = 1), current_version INTEGER,
                kdf_iterations INTEGER, rotations INTEGER NOT NULL DEFAULT 0,
                rejections INTEGER NOT NULL DEFAULT 0)"""
        )
        self._conn.execute("INSERT INTO proj_keyring (id) VALUES (1) ON CONFLICT DO NOTHING")

    def set_kdf_iterations(self, iterations: int) -> None:
        self._conn.execute("UPDATE proj_keyring SET kdf_iterations = ?", (iterations,))

    def insert_key_version(self, version: int, created_at: str, status: str, origin: str,
                           fingerprint: str, algorithm: str) -> None:
        self._conn.execute(
            """INSERT INTO proj_key_versions
               (version, created_at, status, origin, fingerprint, algorithm)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (version, created_at, status, origin, fingerprint, algorithm),
        )

    def update_key_version(self, version: int, **columns: object) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)  # names are ours, never input
        self._conn.execute(f"UPDATE proj_key_versions SET {assignments} WHERE version = ?",
                           (*columns.values(), version))

    def set_current_version(self, version: int, *, rotations_added: int) -> None:
        self._conn.execute(
            "UPDATE proj_keyring SET current_version = ?, rotations = rotations + ?",
            (version, rotations_added))

    def add_rejection(self) -> None:
        self._conn.execute("UPDATE proj_keyring SET rejections = rejections + 1")

    def set_fingerprints(self, fingerprints: Mapping[int, str]) -> None:
        self._conn.executemany("UPDATE proj_key_versions SET fingerprint = ? WHERE version = ?",
                               [(fp, version) for version, fp in fingerprints.items()])

    def add_encryptions(self, counts: Mapping[int, int]) -> None:
        self._conn.executemany(
            "UPDATE proj_key_versions SET encryptions = encryptions + ? WHERE version = ?",
            [(count, version) for version, count in counts.items()])

    def keyring_row(self) -> tuple[int | None, int | None]:
        """``(current_version, kdf_iterations)``."""
        current, iterations = self._conn.execute(
            "SELECT current_version, kdf_iterations FROM proj_keyring WHERE id = 1").fetchone()
        return current, iterations

    def key_version_rows(self) -> list[tuple[Any, ...]]:
        """``(version, created_at, rotated_at, status, origin, algorithm, fingerprint,
        encryptions, destroy_after, destroyed_at)`` in version order."""
        return self._conn.execute(
            """SELECT version, created_at, rotated_at, status, origin, algorithm, fingerprint,
                      encryptions, destroy_after, destroyed_at FROM proj_key_versions
               ORDER BY version""").fetchall()

    def current_version_row(self) -> tuple[int | None] | None:
        row = self._conn.execute("SELECT current_version FROM proj_keyring WHERE id = 1").fetchone()
        return None if row is None else (row[0],)

    # -- secrets ----------------------------------------------------------------------------

    def create_secret_tables(self) -> None:
        self._create_table(
            """CREATE TABLE IF NOT EXISTS proj_secrets (
                name TEXT PRIMARY KEY, key_version INTEGER, revision INTEGER NOT NULL,
                scheme TEXT, updated_at TEXT NOT NULL, updated_seq INTEGER NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0)"""
        )
        self._create_table(
            """CREATE TABLE IF NOT EXISTS proj_secret_counts (
                key_version INTEGER NOT NULL, scheme TEXT NOT NULL, live INTEGER NOT NULL,
                PRIMARY KEY (key_version, scheme))"""
        )

    def secret_states(self, names: Collection[str]) -> dict[str, tuple[int, str] | None]:
        """``name -> (key_version, scheme)`` of those of ``names`` that have a row: None
        for a deleted secret's row. One query per 500 names."""
        found: dict[str, tuple[int, str] | None] = {}
        pending = list(names)
        for i in range(0, len(pending), 500):
            chunk = pending[i:i + 500]
            rows = self._conn.execute(
                f"""SELECT name, key_version, scheme, deleted FROM proj_secrets
                    WHERE name IN ({", ".join("?" * len(chunk))})""",
                chunk,
            )
            found.update((name, None if deleted else (version, scheme))
                         for name, version, scheme, deleted in rows)
        return found

    def write_secrets(self, existing: Sequence[tuple[Any, ...]], new: Sequence[tuple[Any, ...]]
                      ) -> None:
        """Rows ``(key_version, revision, scheme, updated_at, updated_seq, deleted, name)``:
        ``existing`` replace the rows of their names, ``new`` are inserted."""
        self._conn.executemany(
            """UPDATE proj_secrets SET key_version = ?, revision = ?, scheme = ?, updated_at = ?,
               updated_seq = ?, deleted = ? WHERE name = ?""", existing)
        self._conn.executemany(
            """INSERT INTO proj_secrets
               (key_version, revision, scheme, updated_at, updated_seq, deleted, name)
               VALUES (?, ?, ?, ?, ?, ?, ?)""", new)

    def move_counts(self, deltas: Mapping[tuple[int, str], int]) -> None:
        self._conn.executemany(
            """INSERT INTO proj_secret_counts (key_version, scheme, live) VALUES (?, ?, ?)
               ON CONFLICT (key_version, scheme)
               DO UPDATE SET live = proj_secret_counts.live + excluded.live""",
            [(version, scheme, delta) for (version, scheme), delta in deltas.items() if delta])

    def live_secret_rows(self, limit: int | None = None) -> list[tuple[Any, ...]]:
        """``(name, key_version, revision, scheme, updated_at)`` of live secrets in name
        order, the first ``limit`` of them (the name key is walked, so it stops there)."""
        return self._conn.execute(
            """SELECT name, key_version, revision, scheme, updated_at FROM proj_secrets
               WHERE deleted = 0 ORDER BY name LIMIT ?""",
            (2**62 if limit is None else limit,)).fetchall()

    def live_counts(self) -> list[tuple[int, str, int]]:
        """``(key_version, scheme, live)`` of the maintained counts not zero, by version."""
        return self._conn.execute(
            "SELECT key_version, scheme, live FROM proj_secret_counts WHERE live != 0 "
            "ORDER BY key_version, scheme").fetchall()

    def counted_from_rows(self) -> list[tuple[int, str, int]]:
        """``(key_version, scheme, live)`` counted afresh from the secret rows."""
        return self._conn.execute(
            """SELECT key_version, scheme, count(*) FROM proj_secrets WHERE deleted = 0
               GROUP BY key_version, scheme""").fetchall()

    def secrets_disagreeing(self, names: Collection[str] | None = None) -> list[str]:
        """Up to three names whose row disagrees with its stream's head and its event
        (revision, seq, time, deletion, version, scheme): every row, or those of ``names``."""
        if names is None:
            rows_sql, params = "proj_secrets p", []
        else:
            rows_sql = "json_each(?) AS wanted CROSS JOIN proj_secrets p ON p.name = wanted.value"
            params = [json.dumps(sorted(names))]
        return [name for (name,) in self._conn.execute(
            f"""SELECT p.name FROM {rows_sql}
               LEFT JOIN streams s ON s.stream = 'secret:' || p.name
               LEFT JOIN events e ON e.seq = p.updated_seq
               WHERE s.head_seq IS NOT p.updated_seq OR s.revision IS NOT p.revision OR e.seq IS NULL
                  OR e.stream IS NOT 'secret:' || p.name OR e.stream_rev IS NOT p.revision
                  OR e.occurred_at IS NOT p.updated_at
                  OR (p.deleted = 1) != (e.type = 'SecretDeleted')
                  OR (p.deleted = 0 AND (
                        json_extract(e.payload, '$.scheme') IS NOT p.scheme
                     OR coalesce(json_extract(e.payload, '$.to_version'),
                                 json_extract(e.payload, '$.key_version')) IS NOT p.key_version))
               LIMIT 3""",
            params).fetchall()]

    # -- migration runs ---------------------------------------------------------------------

    def create_migration_table(self) -> None:
        self._create_table(
            """CREATE TABLE IF NOT EXISTS proj_migration_runs (
                run_id TEXT PRIMARY KEY, target_version INTEGER NOT NULL,
                started_at TEXT NOT NULL, completed_at TEXT, actor TEXT NOT NULL,
                status TEXT NOT NULL, batch_size INTEGER NOT NULL, resumes TEXT,
                from_versions TEXT NOT NULL DEFAULT '',
                migrated INTEGER NOT NULL DEFAULT 0, already_current INTEGER,
                failed INTEGER, duration_seconds REAL)"""
        )

    def set_run_status(self, run_id: str, status: str) -> None:
        self._conn.execute("UPDATE proj_migration_runs SET status = ? WHERE run_id = ?",
                           (status, run_id))

    def insert_run(self, run_id: str, target_version: int, started_at: str, actor: str,
                   status: str, batch_size: int, resumes: str | None) -> None:
        self._conn.execute(
            """INSERT INTO proj_migration_runs
               (run_id, target_version, started_at, actor, status, batch_size, resumes)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (run_id, target_version, started_at, actor, status, batch_size, resumes))

    def complete_run(self, run_id: str, completed_at: str, status: str, migrated: int,
                     already_current: int, failed: int, duration_seconds: float) -> None:
        self._conn.execute(
            """UPDATE proj_migration_runs SET completed_at = ?, status = ?, migrated = ?,
               already_current = ?, failed = ?, duration_seconds = ? WHERE run_id = ?""",
            (completed_at, status, migrated, already_current, failed, duration_seconds, run_id))

    def run_from_versions(self, run_id: str) -> str | None:
        row = self._conn.execute(
            "SELECT from_versions FROM proj_migration_runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def add_to_run(self, run_id: str, migrated: int, from_versions: str) -> None:
        self._conn.execute(
            "UPDATE proj_migration_runs SET migrated = migrated + ?, from_versions = ? "
            "WHERE run_id = ?", (migrated, from_versions, run_id))

    def run_rows(self) -> list[tuple[Any, ...]]:
        """``(run_id, target_version, started_at, completed_at, actor, status, batch_size,
        resumes, from_versions, migrated, already_current, failed, duration_seconds)``."""
        return self._conn.execute(
            """SELECT run_id, target_version, started_at, completed_at, actor, status, batch_size,
                      resumes, from_versions, migrated, already_current, failed, duration_seconds
               FROM proj_migration_runs ORDER BY started_at, run_id""").fetchall()


register_tables(SQLiteRecorder, lambda recorder: ReadModelTables(recorder.conn))
