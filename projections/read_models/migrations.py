"""Migration runs: when each started and ended, what it moved, whether it finished."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import singledispatchmethod
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.events import StoredEvent
from ledger.store_read_models import ReadModelTables

if TYPE_CHECKING:
    from projections.read_models.runner import Applied


class MigrationProjection:
    name = "migrations"
    tables = ("proj_migration_runs",)

    def create(self, tables: ReadModelTables) -> None:
        tables.create_migration_table()

    def apply_batch(self, batch: Sequence[Applied], tables: ReadModelTables) -> None:
        """Run events one by one; a run's re-encrypted secrets counted as batches land (so
        an interrupted run shows how far it got), summed until the next run event."""
        moved: dict[str, tuple[int, set[int]]] = {}
        for event, stored in batch:
            if isinstance(event, ev.SecretMigrated):
                count, versions = moved.setdefault(event.run_id, (0, set()))
                versions.add(event.from_version)
                moved[event.run_id] = (count + 1, versions)
            elif isinstance(event, ev.MigrationStarted | ev.MigrationCompleted):
                _add_moved(tables, moved)
                self.apply(event, stored, tables)
        _add_moved(tables, moved)

    @singledispatchmethod
    def apply(self, event: ev.DomainEvent, stored: StoredEvent, tables: ReadModelTables) -> None:
        pass

    @apply.register
    def _(self, event: ev.MigrationStarted, stored: StoredEvent, tables: ReadModelTables) -> None:
        if event.resumes:
            tables.set_run_status(event.resumes, "resumed")
        tables.insert_run(event.run_id, event.target_version, stored.occurred_at, stored.actor,
                          "running", event.batch_size, event.resumes)

    @apply.register
    def _(self, event: ev.MigrationCompleted, stored: StoredEvent, tables: ReadModelTables) -> None:
        tables.complete_run(event.run_id, stored.occurred_at, event.status, event.migrated,
                            event.already_current, event.failed, event.duration_seconds)


def _add_moved(tables: ReadModelTables, moved: dict[str, tuple[int, set[int]]]) -> None:
    """Add the counted secrets and their source versions to their runs, then forget them."""
    for run_id, (count, versions) in moved.items():
        stored = tables.run_from_versions(run_id)
        known = {int(v) for v in stored.split(",") if v} if stored is not None else set()
        tables.add_to_run(run_id, count, ",".join(str(v) for v in sorted(known | versions)))
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


def migration_runs(tables: ReadModelTables) -> list[MigrationRun]:
    rows = tables.run_rows()
    return [
        MigrationRun(
            run_id=r[0], target_version=r[1], started_at=r[2], completed_at=r[3], actor=r[4],
            status=r[5], batch_size=r[6], resumes=r[7],
            from_versions=[int(v) for v in r[8].split(",") if v],
            migrated=r[9], already_current=r[10], failed=r[11], duration_seconds=r[12],
        )
        for r in rows
    ]
