"""Read models rebuilt from the ledger's events: key metadata, secret versions, migrations.

They hold no plaintext and no key, so reading them needs no master password::

    from projections import ReadModels

    with ReadModels.open("keyledger.db") as views:
        print(views.report().needing_migration)

To keep them current inside every append, pass ``projector=projector()`` when opening a
:class:`ledger.Ledger`; otherwise they catch up from their checkpoint when next read.
"""

from __future__ import annotations

import os

from ledger.events import SECRET_STREAM_PREFIX
from ledger.store import SQLiteRecorder
from projections.base import Projection, ProjectionRunner
from projections.keys import KeyProjection, KeyringInfo, KeyVersionInfo, keyring_info
from projections.migrations import MigrationProjection, MigrationRun, migration_runs
from projections.secrets import (
    DistributionReport,
    SecretProjection,
    SecretRow,
    distribution_report,
    list_secrets,
)

__all__ = [
    "DistributionReport",
    "KeyVersionInfo",
    "KeyringInfo",
    "MigrationRun",
    "Projection",
    "ProjectionRunner",
    "ReadModels",
    "SecretRow",
    "projector",
]


def projector() -> ProjectionRunner:
    """The runner of every read model keyledger keeps."""
    return ProjectionRunner([KeyProjection(), SecretProjection(), MigrationProjection()])


class ReadModels:
    """Queries over the read models of one ledger, brought up to date when opened."""

    def __init__(self, recorder: SQLiteRecorder, runner: ProjectionRunner | None = None) -> None:
        self.recorder = recorder
        self.runner = runner or projector()
        self.runner.refresh(recorder)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ReadModels:
        """Open the ledger at ``path`` read-side only (no password).

        :raises LedgerNotFoundError: no ledger there.
        """
        runner = projector()
        recorder = SQLiteRecorder(path, projector=runner)
        try:
            return cls(recorder, runner)
        except BaseException:
            recorder.close()
            raise

    def close(self) -> None:
        self.recorder.close()

    def __enter__(self) -> ReadModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def position(self) -> tuple[int, str]:
        """``(seq, head hash)`` every answer below was built from."""
        return self.runner.position(self.recorder)

    def keyring(self) -> KeyringInfo:
        return keyring_info(self.recorder.conn)

    def report(self) -> DistributionReport:
        return distribution_report(self.recorder.conn, self.keyring().current_version)

    def secrets(self) -> list[SecretRow]:
        return list_secrets(self.recorder.conn)

    def migration_runs(self) -> list[MigrationRun]:
        return migration_runs(self.recorder.conn)

    def problems(self) -> list[str]:
        """Ways the read models disagree with the ledger's events, or []."""
        found = []
        if not self.runner.is_current(self.recorder):
            found.append("read models are behind the ledger")
        streams = self.recorder.stream_count(SECRET_STREAM_PREFIX)
        rows = self.recorder.conn.execute("SELECT count(*) FROM proj_secrets").fetchone()[0]
        if rows != streams:
            found.append(f"read models know {rows} secrets, the ledger {streams}")
        return found

    def rebuild(self) -> int:
        """Rebuild every read model from the events alone; the number of events replayed."""
        return self.runner.rebuild(self.recorder)
