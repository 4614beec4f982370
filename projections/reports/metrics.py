"""Rotation metrics: one record per migration run, in the shape the old system's operations guide logs.

Built from the migration-run read model, plus the keyring's ``KeyRotated`` events for
the version each run moved secrets away from. A run that started but never completed
and was not taken over by a later one is ``incomplete``: killed, or still running in
another process (the events cannot tell the two apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import events as ev
from ledger.store import Recorder
from ledger.store_read_models import read_model_tables
from projections.read_models.migrations import MigrationRun, migration_runs

# The read model's status -> the metric's; "success", "partial" and "resumed" map to themselves.
_STATUS = {"running": "incomplete"}


@dataclass(frozen=True, slots=True)
class RotationMetric:
    run_id: str
    actor: str
    rotation_start: str
    rotation_end: str | None  # None: the run never completed
    old_version: int | None  # None: the target was the ledger's first key
    new_version: int
    secrets_migrated: int
    secrets_failed: int | None  # None: never completed, so its failures were never recorded
    duration_seconds: float | None
    status: str  # success | partial | resumed | incomplete

    def to_json(self) -> dict[str, Any]:
        return {
            "rotation_start": self.rotation_start, "rotation_end": self.rotation_end,
            "old_version": self.old_version, "new_version": self.new_version,
            "secrets_migrated": self.secrets_migrated, "secrets_failed": self.secrets_failed,
            "duration_seconds": self.duration_seconds, "status": self.status,
            "run_id": self.run_id, "actor": self.actor,
        }


def rotation_metrics(recorder: Recorder) -> list[RotationMetric]:
    """One metric per migration run, oldest first.

    Reads the migration-run read model as it stands: open the ledger through
    :class:`projections.ReadModels` (which brings it up to date) before calling this.
    """
    with recorder.snapshot():
        runs = migration_runs(read_model_tables(recorder))
        rotated_from = _rotated_from(recorder)
    return [_metric(run, rotated_from.get(run.target_version)) for run in runs]


def _rotated_from(recorder: Recorder) -> dict[int, int | None]:
    """For each version that became current, the version current before it."""
    found: dict[int, int | None] = {}
    for stored in recorder.read_stream(ev.KEYRING_STREAM):
        if stored.type == "KeyRotated":
            event = stored.decode()
            assert isinstance(event, ev.KeyRotated)
            found[event.to_version] = event.from_version
    return found


def _metric(run: MigrationRun, old_version: int | None) -> RotationMetric:
    return RotationMetric(
        run_id=run.run_id, actor=run.actor, rotation_start=run.started_at,
        rotation_end=run.completed_at, old_version=old_version, new_version=run.target_version,
        secrets_migrated=run.migrated, secrets_failed=run.failed,
        duration_seconds=run.duration_seconds, status=_STATUS.get(run.status, run.status),
    )
