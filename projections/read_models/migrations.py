"""Migration runs: when each started and ended, what it moved, whether it finished."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from functools import singledispatchmethod
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.events import StoredEvent

if TYPE_CHECKING:
    from projections.read_models.runner import Applied


class MigrationProjection:
    name = "migrations"
    tables = ("proj_migration_runs",)

    def create(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS proj_migration_runs (
                run_id TEXT PRIMARY KEY, target_version INTEGER NOT NULL,
                started_at TEXT NOT NULL, completed_at TEXT, actor TEXT NOT NULL,
                status TEXT NOT NULL, batch_size INTEGER NOT NULL, resumes TEXT,
                from_versions TEXT NOT NULL DEFAULT '',
                migrated INTEGER NOT NULL DEFAULT 0, already_current INTEGER,
                failed INTEGER, duration_seconds REAL)"""
        )

    def apply_batch(self, batch: Sequence[Applied], conn: sqlite3.Connection) -> None:
        """Run events one by one; a run's re-encrypted secrets counted as batches land (so
        an interrupted run shows how far it got), summed until the next run event."""
        moved: dict[str, tuple[int, set[int]]] = {}
        for event, stored in batch:
            if isinstance(event, ev.SecretMigrated):
                count, versions = moved.setdefault(event.run_id, (0, set()))
                versions.add(event.from_version)
                moved[event.run_id] = (count + 1, versions)
            elif isinstance(event, ev.MigrationStarted | ev.MigrationCompleted):
                _add_moved(conn, moved)
                self.apply(event, stored, conn)
        _add_moved(conn, moved)

    @singledispatchmethod
    def apply(self, event: ev.DomainEvent, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        pass

    @apply.register
    def _(self, event: ev.MigrationStarted, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        if event.resumes:
            conn.execute(
                "UPDATE proj_migration_runs SET status = 'resumed' WHERE run_id = ?",
                (event.resumes,),
            )
        conn.execute(
            """INSERT INTO proj_migration_runs
               (run_id, target_version, started_at, actor, status, batch_size, resumes)
               VALUES (?, ?, ?, ?, 'running', ?, ?)""",
            (event.run_id, event.target_version, stored.occurred_at, stored.actor,
             event.batch_size, event.resumes),
        )

    @apply.register
    def _(self, event: ev.MigrationCompleted, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        conn.execute(
            """UPDATE proj_migration_runs SET completed_at = ?, status = ?, migrated = ?,
               already_current = ?, failed = ?, duration_seconds = ? WHERE run_id = ?""",
            (stored.occurred_at, event.status, event.migrated, event.already_current,
             event.failed, event.duration_seconds, event.run_id),
        )


def _add_moved(conn: sqlite3.Connection, moved: dict[str, tuple[int, set[int]]]) -> None:
    """Add the counted secrets and their source versions to their runs, then forget them."""
    for run_id, (count, versions) in moved.items():
        row = conn.execute(
            "SELECT from_versions FROM proj_migration_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        known = {int(v) for v in row[0].split(",") if v} if row else set()
        conn.execute(
            "UPDATE proj_migration_runs SET migrated = migrated + ?, from_versions = ? "
            "WHERE run_id = ?",
            (count, ",".join(str(v) for v in sorted(known | versions)), run_id),
        )
    moved.clear()


@dataclass(frozen=True, slots=True)
class MigrationRun:
    run_id: str
    target_version: int
    started_at: str
    completed_at: str | None
    actor: str
    status: str
    batch_size: int
    resumes: str | None
    from_versions: list[int]
    migrated: int
    already_current: int | None
    failed: int | None
    duration_seconds: float | None


def migration_runs(conn: sqlite3.Connection) -> list[MigrationRun]:
    rows = conn.execute(
        """SELECT run_id, target_version, started_at, completed_at, actor, status, batch_size,
                  resumes, from_versions, migrated, already_current, failed, duration_seconds
           FROM proj_migration_runs ORDER BY started_at, run_id"""
    ).fetchall()
    return [
        MigrationRun(
            run_id=r[0], target_version=r[1], started_at=r[2], completed_at=r[3], actor=r[4],
            status=r[5], batch_size=r[6], resumes=r[7],
            from_versions=[int(v) for v in r[8].split(",") if v],
            migrated=r[9], already_current=r[10], failed=r[11], duration_seconds=r[12],
        )
        for r in rows
    ]
