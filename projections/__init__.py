"""Read models rebuilt from the ledger's events: key metadata, secret versions, migrations.

They hold no plaintext and no key, so reading them needs no master password::

    from projections import ReadModels

    with ReadModels.open("keyledger.db") as views:
        print(views.report().needing_migration)

To keep them current inside every append, pass ``projector=projector()`` when opening a
:class:`ledger.Ledger`; otherwise they catch up from their checkpoint when next read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from ledger.domain import KeyringState
from ledger.errors import IntegrityError
from ledger.events import KEYRING_STREAM, MIGRATION_STREAM_PREFIX, SECRET_STREAM_PREFIX
from ledger.locations import open_recorder
from ledger.signing import CheckpointVerifier, recorded_verifier
from ledger.store import Recorder, TriggerFault
from ledger.store_read_models import read_model_tables
from ledger.tally import Tally
from projections.read_models.keys import (
    KeyProjection,
    KeyringInfo,
    KeyVersionInfo,
    keyring_info,
    keyring_problems,
)
from projections.read_models.migrations import MigrationProjection, MigrationRun, migration_runs
from projections.read_models.runner import Projection, ProjectionRunner
from projections.read_models.secrets import (
    DistributionReport,
    SecretProjection,
    SecretRow,
    distribution_report,
    list_secrets,
    secret_problems,
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
    "SignedFigures",
    "guard_faults",
    "projector",
]


T = TypeVar("T")


_BEHIND = "read models are behind the ledger"


def projector() -> ProjectionRunner:
    """The runner of every read model keyledger keeps."""
    return ProjectionRunner([KeyProjection(), SecretProjection(), MigrationProjection()])


def guard_faults(recorder: Recorder) -> list[TriggerFault]:
    """The read models' guard triggers missing or altered, and any other trigger on their
    tables, read without opening (so without repairing) the read models: for ``audit
    verify``, which changes nothing."""
    return projector().guard_faults(recorder)


@dataclass(frozen=True)
class SignedFigures:
    """What the latest checkpoint signs, checked with the ledger's recorded public key:
    the keyring its events give and the tally (:mod:`ledger.tally`)."""

    keyring: KeyringState
    tally: Tally


class ReadModels:
    """Queries over the read models of one ledger, brought up to date when opened."""

    def __init__(
        self, recorder: Recorder, runner: ProjectionRunner | None = None, *,
        check: bool = True,
    ) -> None:
        """``check=False`` skips the checks and the catch-up on open: for a caller about to
        :meth:`rebuild` anyway, which would otherwise rebuild twice."""
        self.recorder = recorder
        self.tables = read_model_tables(recorder)
        self.runner = runner or projector()
        #: What the quick checks found wrong when opened; the read models were then rebuilt
        #: from the events, so every answer below is the events' truth.
        self.repaired: list[str] = []
        #: Whether they were an earlier keyledger's, untouched, and so rebuilt on open.
        self.upgraded = False
        #: What an earlier open found wrong and repaired, not yet reported by a health
        #: check ('' for none): a repair leaves this note in the read models, so that
        #: ``health-check`` fails on it whichever command repaired them.
        self.earlier_repair = ""
        self._unreported = ""
        self._verifier: CheckpointVerifier | None = None
        self._signed: tuple[tuple[int, str, bytes] | None, SignedFigures] | None = None
        if check:
            self._check_on_open()
            self._unreported = self.runner.unreported_repair(recorder)

    def _check_on_open(self) -> None:
        """A checkpoint that does not match its event is checked before catching up, which
        would otherwise apply events twice. A moved schema cookie (a guard dropped and put
        back, or only a backup copy or a VACUUM) makes this open compare every row with its
        event; if all agree, the cookie is accepted and the next open is quick again."""
        recorder = self.recorder
        if self.runner.earlier_layout(recorder):
            self.upgraded = True
            self.rebuild()
            return
        self.earlier_repair = self.runner.unreported_repair(recorder)
        # Each look is one snapshot: a write committed by another process between two
        # reads (the events, then the read models) would otherwise read as a disagreement.
        with recorder.snapshot():
            self.repaired = self._checkpoint_problems()
        for _ in range(3):
            if self.repaired:
                break
            self.runner.refresh(recorder)
            with recorder.snapshot():
                moved = self.runner.cookie_moved(recorder)
                found = self.problems(deep=moved)
            if found == [_BEHIND]:
                continue  # appended meanwhile by a process without the read models
            self.repaired = found
            if moved and not found:
                self.runner.accept_cookie(recorder)
            break
        if self.repaired:
            self.runner.rebuild(recorder, repair=f"found at seq {recorder.head()[0]}: "
                                                 + "; ".join(self.repaired))

    def acknowledge_repairs(self) -> None:
        """Forget the repair notes this open found (:attr:`earlier_repair`, and its own):
        ``health-check`` calls this once it has reported them. One stored by another
        process since is kept."""
        self.runner.clear_repair(self.recorder, self._unreported)
        self._unreported = ""

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ReadModels:
        """Open the ledger at ``path`` read-side only (no password).

        :raises LedgerNotFoundError: no ledger there.
        """
        runner = projector()
        recorder = open_recorder(path, projector=runner)
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
        return keyring_info(self.tables)

    def report(self) -> DistributionReport:
        return distribution_report(self.tables, self.keyring().current_version)

    def proven_report(self) -> DistributionReport:
        """:meth:`report`, once its figures are shown to be the signed ones (constant
        time, no password): the current version the proven keyring names, and the counts
        the latest checkpoint's tally signs, read in one snapshot with the read models.
        Read models that disagree are rebuilt from the events once (:attr:`repaired`
        says so); if they still disagree, the events are not the ones signed for.

        A ledger of an earlier format signs no tally: its report is the read models'
        (:attr:`unproven` says so) until the first command with the password upgrades it.

        :raises IntegrityError: the checkpoint does not hold, or the events disagree with it.
        """
        def agrees(report: DistributionReport, signed: SignedFigures) -> bool:
            current = signed.keyring.current
            return (report.current_version == current
                    and report.total_secrets == signed.tally.total
                    and report.distribution == signed.tally.distribution
                    and report.needing_migration == signed.tally.needing_migration(current))

        return self._checked_against_signed(self.report, agrees)

    def proven_encryptions(self, version: int) -> int:
        """How many values ``version`` has encrypted, as the signed tally says (see
        :meth:`proven_report`; the read models' figure when the ledger signs no tally)."""
        def agrees(keyring: KeyringInfo, signed: SignedFigures) -> bool:
            mine = {v.version: v.encryptions for v in keyring.versions if v.encryptions}
            return mine == dict(signed.tally.encryptions)

        keyring = self._checked_against_signed(self.keyring, agrees)
        return next((v.encryptions for v in keyring.versions if v.version == version), 0)

    @property
    def unproven(self) -> bool:
        """Whether the ledger signs no tally yet (an earlier format, not yet upgraded)."""
        return not self.recorder.has_tally

    def check_unsigned_format(self) -> None:
        """For a ledger whose file says it is of an earlier format: its latest checkpoint
        must verify in that format's form. A current ledger made to look older (its format
        number edited, to turn the tally check off) fails here, since its checkpoints
        sign a tally the older form leaves out.

        :raises IntegrityError: the latest checkpoint does not verify.
        """
        self.recorder.verified_tip(self.verifier())

    def signed_figures(self) -> SignedFigures:
        """The keyring and tally the latest checkpoint signs, checked with the recorded
        public key (no password; a ledger rewritten wholesale under a new key is what
        only a pinned key or an anchor catches, as for ``audit verify``).

        :raises IntegrityError: the checkpoint does not hold or signs no tally.
        """
        in_snapshot = self.recorder.in_transaction
        with contextlib.nullcontext() if in_snapshot else self.recorder.snapshot():
            tip = self.recorder.latest_checkpoint()
            mark = None if tip is None else (tip.seq, tip.head_hash, tip.signature)
            if self._signed is not None and self._signed[0] == mark:
                # Proven for this very checkpoint already: what it signs has not changed.
                return self._signed[1]
            verifier = self.verifier()
            keyring = KeyringState()
            for stored in self.recorder.verified_stream(KEYRING_STREAM, verifier, whole=True):
                keyring.apply(stored.decode(), stored.occurred_at)
            figures = SignedFigures(keyring, self.recorder.verified_tally(verifier))
        self._signed = (mark, figures)
        return figures

    def verifier(self) -> CheckpointVerifier:
        """Checks this ledger's checkpoints with its recorded public key (no password).

        :raises IntegrityError: the ledger records no signing key.
        """
        if self._verifier is None:
            self._verifier = recorded_verifier(self.recorder)
            if self._verifier is None:
                raise IntegrityError(
                    "the ledger records no signing key; run `keyledger audit verify`")
        return self._verifier

    def _checked_against_signed(
        self, read: Callable[[], T], agrees: Callable[[T, SignedFigures], bool]
    ) -> T:
        if self.unproven:
            self.check_unsigned_format()
            return read()
        rebuilt = False
        for _ in range(5):
            with self.recorder.snapshot():
                position = self.position()
                tip = self.recorder.latest_checkpoint()
                found = read()
                signed = self.signed_figures()
            if tip is None or position != (tip.seq, tip.head_hash):
                self.runner.refresh(self.recorder)  # written meanwhile: catch up, read again
                continue
            if agrees(found, signed):
                return found
            if rebuilt:
                raise IntegrityError(
                    "the events disagree with the tally the latest checkpoint signs (written "
                    "behind keyledger's back?); refusing to report them: run `keyledger audit verify`")
            problem = "the read models' counts differ from the tally the latest checkpoint signs"
            self.repaired.append(problem)
            self.runner.rebuild(self.recorder, repair=f"found at seq {position[0]}: {problem}")
            rebuilt = True
        raise IntegrityError("the ledger kept moving while its figures were checked; try again")

    def secrets(self, limit: int | None = None) -> list[SecretRow]:
        """Live secrets in name order (the first ``limit`` of them when given)."""
        return list_secrets(self.tables, limit)

    def migration_runs(self) -> list[MigrationRun]:
        return migration_runs(self.tables)

    def problems(self, *, deep: bool = False, sample: Collection[str] = ()) -> list[str]:
        """Ways the read models disagree with the ledger's events, or [].

        The quick checks, run every time the read models are opened, take the same time
        at any size: the checkpoint against the event it names, the tables and write
        guards against this keyledger's, the keyring tables against the keyring's events,
        the runs against their streams, and the secret rows named in ``sample`` against
        their events. ``deep`` (``health-check --deep``, and any open after SQLite's
        schema cookie moved) also checks every secret row against its own event and the
        counts kept beside them, which takes time in proportion to the secrets.
        """
        tables, recorder = self.tables, self.recorder
        found = self._checkpoint_problems()
        if not found and self.position()[0] < recorder.head()[0]:
            found.append(_BEHIND)
        runs = tables.row_count("proj_migration_runs")
        if runs != recorder.stream_count(MIGRATION_STREAM_PREFIX):
            found.append("migration runs disagree with the ledger")
        found += keyring_problems(tables, self._keyring_from_events())
        if deep:
            streams = recorder.stream_count(SECRET_STREAM_PREFIX)
            rows = tables.row_count("proj_secrets")
            if rows != streams:
                found.append(f"read models know {rows} secrets, the ledger {streams}")
            found += secret_problems(tables)
        elif sample:
            found += secret_problems(tables, names=sample)
        return found

    def _checkpoint_problems(self) -> list[str]:
        found = self.runner.schema_problems(self.recorder)
        if found:
            return found
        seq, last_hash = self.position()
        head_seq, _ = self.recorder.head()
        if seq == 0 and self._has_rows():
            return ["the read models' checkpoint is missing"]
        if seq > head_seq:
            return [f"read models claim seq {seq}, past the ledger's last event {head_seq}"]
        if seq and next(self.recorder.read_events(seq - 1)).hash != last_hash:
            return [f"the read models' checkpoint does not match event {seq}"]
        return []

    def _has_rows(self) -> bool:
        return self.tables.has_key_rows()

    def _keyring_from_events(self) -> KeyringState:
        state = KeyringState()
        for stored in self.recorder.read_stream(KEYRING_STREAM):
            state.apply(stored.decode(), stored.occurred_at)
        return state

    def rebuild(self) -> int:
        """Rebuild every read model from the events alone; the number of events replayed.
        A repair note not yet reported is kept."""
        return self.runner.rebuild(self.recorder)
