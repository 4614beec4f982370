"""The compliance report: key inventory, rotations, migrations, usage and integrity.

:func:`build_compliance_report` folds the ledger's events in ONE streaming pass over
``recorder.read_events()``, keeping counters per key version and short, capped lists of
the most recent rotations, lifecycle actions, runs and failures: memory stays bounded
however many events the ledger holds. Which secrets are live on which version is read
from each secret stream's head through the recorder's stream index, in pages, so it costs
memory per page, not per secret. Everything is read inside one snapshot, next to a full
:func:`ledger.integrity.verify_ledger`, so the counts, the stamp and the attestation
describe the same ledger.

The report is a projection: built from the events alone, it can be rebuilt at any time
and comes out identical for the same ``now``. It is stamped with the seq and head hash it
was built from. It holds metadata only: never a plaintext value, a ciphertext or a key.
Rendering it is :mod:`projections.renderers.compliance`'s job.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger import events as ev
from ledger.chain import GENESIS_HASH
from ledger.domain import ACTIVE, KeyringState, format_time, head_state, needs_migration, parse_time
from ledger.errors import LedgerFormatError
from ledger.events import StoredEvent
from ledger.integrity import verify_ledger
from ledger.policy import DEFAULT_MAX_AGE_DAYS
from ledger.store import Recorder

REPORT_FORMAT = "keyledger-compliance/v1"
DEFAULT_POLICY_DAYS = DEFAULT_MAX_AGE_DAYS
#: NIST SP 800-38D, 8.3: with random 96-bit nonces, at most 2^32 encryptions per key.
GCM_RANDOM_NONCE_LIMIT = 2**32
#: Fractions of that limit at which a version is flagged.
APPROACHING_FRACTION = 0.5
#: Each list keeps this many of its most recent entries; its ``*_total`` counts them all.
MAX_LISTED = 500
_HEADS_PAGE = 1000

# The sections every renderer shows, in order, with their titles.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("stamp", "Report stamp"),
    ("inventory", "Key inventory"),
    ("rotations", "Rotation history"),
    ("lifecycle", "Key lifecycle actions"),
    ("secrets", "Secrets per key version"),
    ("migrations", "Migration runs"),
    ("failures", "Failed operations"),
    ("encryptions", "Encryptions per key version"),
    ("integrity", "Integrity attestation"),
    ("activity", "Recorded activity"),
    ("standards", "Standards mapping"),
)


@dataclass(frozen=True, slots=True)
class KeyVersionEntry:
    """One key version: dates, status, age against the cryptoperiod, what it holds."""

    version: int
    algorithm: str
    origin: str
    fingerprint: str
    status: str
    created_at: str
    activated_at: str | None  # when it became the encrypting version
    rotated_at: str | None  # when another version replaced it
    retired_at: str | None
    destroy_after: str | None
    destroyed_at: str | None
    age_days: float
    overdue: bool  # still encrypting past the cryptoperiod
    rotation_due: str | None  # for the active version: created + cryptoperiod
    live_secrets: int
    encryptions: int


@dataclass(frozen=True, slots=True)
class RotationEntry:
    seq: int
    occurred_at: str
    actor: str
    origin: str
    outcome: str  # "success" (KeyRotated) or "rejected" (KeyRotationRejected)
    from_version: int | None
    to_version: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class LifecycleEntry:
    seq: int
    occurred_at: str
    actor: str
    origin: str
    version: int
    action: str  # retired, reinstated, destruction-scheduled, destruction-cancelled, destroyed
    detail: str | None


@dataclass(frozen=True, slots=True)
class VersionCount:
    version: int
    status: str
    live_secrets: int


@dataclass(frozen=True, slots=True)
class SecretsSummary:
    current_version: int | None
    live_total: int
    needing_migration: int  # live secrets on any version but the current one
    deleted: int
    per_version: tuple[VersionCount, ...]


@dataclass(frozen=True, slots=True)
class MigrationRunEntry:
    run_id: str
    target_version: int
    started_at: str
    ended_at: str | None
    actor: str
    origin: str
    candidates: int
    migrated: int
    already_current: int | None
    failed: int | None
    status: str  # success, partial, resumed (a later run took over), incomplete
    resumes: str | None


@dataclass(frozen=True, slots=True)
class FailureEntry:
    seq: int
    occurred_at: str
    actor: str
    origin: str
    kind: str  # rotation-rejected, migration-failure, migration-incomplete, unreadable-event
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class EncryptionEntry:
    version: int
    encryptions: int
    limit: int
    fraction_used: float
    flag: str  # ok, approaching, exceeded


@dataclass(frozen=True, slots=True)
class IntegrityAttestation:
    ok: bool  # the ledger verified and every event could be read
    first_seq: int
    last_seq: int
    head: str
    events: int
    first_bad_seq: int | None
    problems: tuple[str, ...]
    checkpoints: int
    checkpoint_seq: int | None
    checkpoint_head: str | None
    checkpoint_signed_at: str | None
    checkpoint_covers_head: bool
    public_key: str | None
    unreadable_events: int


@dataclass(frozen=True, slots=True)
class EventCount:
    type: str
    count: int


@dataclass(frozen=True, slots=True)
class StandardEntry:
    standard: str
    requirement: str
    sections: tuple[str, ...]
    evidence: str


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    """Everything the report says, built from events and stamped with their position."""

    format: str
    ledger_id: str
    built_from_seq: int
    built_from_head: str
    generated_at: str
    policy_days: int
    recorded_policy_days: float | None  # the ledger's own `policy set --max-age`, if any
    listing_limit: int
    inventory: tuple[KeyVersionEntry, ...]
    rotations: tuple[RotationEntry, ...]
    rotations_total: int
    rejections_total: int
    lifecycle: tuple[LifecycleEntry, ...]
    lifecycle_total: int
    secrets: SecretsSummary
    migrations: tuple[MigrationRunEntry, ...]
    migrations_total: int
    failures: tuple[FailureEntry, ...]
    failures_total: int
    encryptions: tuple[EncryptionEntry, ...]
    integrity: IntegrityAttestation
    activity: tuple[EventCount, ...]
    standards: tuple[StandardEntry, ...] = field(default=())

    @property
    def overdue_versions(self) -> list[int]:
        return [k.version for k in self.inventory if k.overdue]

    def to_json(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["overdue_versions"] = self.overdue_versions
        return document


# -- the standards mapping (our own summary of which section evidences what) ---------------

STANDARDS: tuple[StandardEntry, ...] = (
    StandardEntry(
        "PCI DSS v4.0", "3.6 Keys used to protect stored account data are secured",
        ("inventory", "lifecycle", "integrity"),
        "The inventory lists every key version with its algorithm, origin and fingerprint "
        "(never the key). Data keys are stored only wrapped under a key-encrypting key "
        "derived from the master password, which is never stored; the lifecycle table "
        "shows which versions were destroyed, and the attestation shows that the record of "
        "all this is intact.",
    ),
    StandardEntry(
        "PCI DSS v4.0", "3.7 Key-management processes cover the key lifecycle",
        ("inventory", "rotations", "lifecycle", "secrets", "migrations", "encryptions"),
        "The cryptoperiod is the report's policy; each version's age is set against it and "
        "an active version past it is flagged overdue (3.7.4). Every rotation, retirement, "
        "scheduled or completed destruction is listed with who, when and why (3.7.5); the "
        "secrets and migration sections show which data still depends on older versions. "
        "Each version's fingerprint is recorded, so a substituted key is caught (3.7.7).",
    ),
    StandardEntry(
        "PCI DSS v4.0", "10.2 Audit logs record user activity and failures",
        ("rotations", "lifecycle", "failures", "activity", "integrity"),
        "Each listed action names the user, the event type, the date and time, the outcome "
        "(success or rejection) and the origin host and program (10.2.2). Every event is "
        "kept in an append-only, hash-chained ledger whose head is signed; the attestation "
        "shows the range checked and the verification result.",
    ),
    StandardEntry(
        "HIPAA", "164.312(b) Audit controls",
        ("activity", "rotations", "failures", "integrity"),
        "The ledger is the mechanism that records activity on the systems holding the "
        "secrets; this report is how it is examined: counts of every recorded event type, "
        "the rotation and failure listings, and proof that the record is unaltered up to "
        "the stamped head (and, checked against an anchor kept elsewhere, not cut short).",
    ),
    StandardEntry(
        "NIST SP 800-57 Part 1", "5.3 Cryptoperiods; key states and destruction",
        ("inventory", "lifecycle", "secrets"),
        "A version encrypts only while it is current (its originator-usage period, from "
        "activation to rotation) and may decrypt afterwards until retired; destruction is "
        "recorded with the key's fingerprint. The age column and the secrets still on "
        "older versions show whether those periods are being kept.",
    ),
    StandardEntry(
        "NIST SP 800-38D", "8.3 Limit on invocations with random 96-bit nonces",
        ("encryptions",),
        "Every encryption under a version (writes, resets, restores, imports, migrations "
        "onto it) is counted and shown as a fraction of 2^32; a version past half of it is "
        "flagged for rotation.",
    ),
)


# -- building ----------------------------------------------------------------------------


@dataclass(slots=True)
class _VersionTimes:
    activated_at: str | None = None
    retired_at: str | None = None
    destroyed_at: str | None = None


@dataclass(slots=True)
class _Run:
    run_id: str
    target_version: int
    started_at: str
    actor: str
    origin: str
    seq: int
    candidates: int
    resumes: str | None
    migrated: int = 0
    ended_at: str | None = None
    already_current: int | None = None
    failed: int | None = None
    status: str = "incomplete"


@dataclass(slots=True)
class _Fold:
    """The running state of the one pass: counters and capped lists, nothing per secret."""

    keyring: KeyringState = field(default_factory=KeyringState)
    ledger_id: str = ""
    times: dict[int, _VersionTimes] = field(default_factory=dict)
    algorithms: dict[int, str] = field(default_factory=dict)
    encryptions: Counter[int] = field(default_factory=Counter)
    activity: Counter[str] = field(default_factory=Counter)
    rotations: deque[RotationEntry] = field(default_factory=lambda: deque(maxlen=MAX_LISTED))
    rotations_total: int = 0
    rejections_total: int = 0
    lifecycle: deque[LifecycleEntry] = field(default_factory=lambda: deque(maxlen=MAX_LISTED))
    lifecycle_total: int = 0
    runs: OrderedDict[str, _Run] = field(default_factory=OrderedDict)
    runs_total: int = 0
    failures: deque[FailureEntry] = field(default_factory=lambda: deque(maxlen=MAX_LISTED))
    failures_total: int = 0
    unreadable: int = 0
    policy_seconds: int | None = None
    seq: int = 0
    head: str = GENESIS_HASH

    def fail(self, stored: StoredEvent, kind: str, subject: str, detail: str) -> None:
        self.failures_total += 1
        self.failures.append(FailureEntry(stored.seq, stored.occurred_at, stored.actor,
                                          stored.origin, kind, subject, detail))

    def act(self, stored: StoredEvent, version: int, action: str, detail: str | None) -> None:
        self.lifecycle_total += 1
        self.lifecycle.append(LifecycleEntry(stored.seq, stored.occurred_at, stored.actor,
                                             stored.origin, version, action, detail))

    def rotation(self, stored: StoredEvent, outcome: str, from_version: int | None,
                 to_version: int, reason: str | None) -> None:
        self.rotations.append(RotationEntry(stored.seq, stored.occurred_at, stored.actor,
                                            stored.origin, outcome, from_version, to_version, reason))

    def apply(self, stored: StoredEvent) -> None:
        self.seq, self.head = stored.seq, stored.hash
        try:
            event = stored.decode()
        except LedgerFormatError as exc:  # damaged or unknown: recorded, never fatal here
            self.unreadable += 1
            self.activity["(unreadable)"] += 1
            self.fail(stored, "unreadable-event", f"event {stored.seq}", str(exc))
            return
        self.activity[type(event).__name__] += 1
        if stored.stream == ev.KEYRING_STREAM:
            try:
                self.keyring.apply(event, stored.occurred_at)
            except KeyError:  # names a version whose creation could not be read
                self.fail(stored, "unreadable-event", f"event {stored.seq}",
                          "names a key version the ledger never created")
                return
        self._apply(event, stored)

    def _apply(self, event: ev.DomainEvent, stored: StoredEvent) -> None:
        at = stored.occurred_at
        match event:
            case ev.LedgerInitialized():
                self.ledger_id = event.ledger_id
            case ev.KeyVersionCreated():
                self.times.setdefault(event.version, _VersionTimes())
                self.algorithms[event.version] = event.algorithm
            case ev.KeyRotated():
                self.times.setdefault(event.to_version, _VersionTimes()).activated_at = at
                if event.from_version is not None:
                    self.rotations_total += 1
                    self.rotation(stored, "success", event.from_version, event.to_version,
                                  event.reason)
            case ev.KeyRotationRejected():
                self.rotations_total += 1
                self.rejections_total += 1
                self.rotation(stored, "rejected", None, event.requested_version, event.reason)
                self.fail(stored, "rotation-rejected", f"version {event.requested_version}",
                          event.reason)
            case ev.KeyVersionRetired():
                self.times.setdefault(event.version, _VersionTimes()).retired_at = at
                detail = (event.reason or "") + (" (forced: live secrets left on it)"
                                                 if event.forced else "")
                self.act(stored, event.version, "retired", detail.strip() or None)
            case ev.KeyVersionReinstated():
                self.times.setdefault(event.version, _VersionTimes()).retired_at = None
                self.act(stored, event.version, "reinstated", event.reason)
            case ev.KeyDestructionScheduled():
                self.act(stored, event.version, "destruction-scheduled",
                         f"not before {event.not_before}")
            case ev.KeyDestructionCancelled():
                self.act(stored, event.version, "destruction-cancelled", None)
            case ev.KeyVersionDestroyed():
                self.times.setdefault(event.version, _VersionTimes()).destroyed_at = at
                self.act(stored, event.version, "destroyed", event.reason)
            case ev.RotationPolicySet():
                self.policy_seconds = event.max_age_seconds
            case ev.SecretWritten() | ev.SecretImported():  # also SecretReset, SecretRestored
                self.encryptions[event.key_version] += 1
            case ev.SecretMigrated():
                self.encryptions[event.to_version] += 1
                run = self.runs.get(event.run_id)
                if run is not None:
                    run.migrated += 1
            case ev.MigrationStarted():
                self._start_run(event, stored)
            case ev.MigrationCompleted():
                self._complete_run(event, stored)

    def _start_run(self, event: ev.MigrationStarted, stored: StoredEvent) -> None:
        if event.resumes and event.resumes in self.runs:
            resumed = self.runs[event.resumes]
            if resumed.status == "incomplete":
                resumed.status = "resumed"
        self.runs_total += 1
        self.runs[event.run_id] = _Run(
            event.run_id, event.target_version, stored.occurred_at, stored.actor, stored.origin,
            stored.seq, event.candidates, event.resumes,
        )
        while len(self.runs) > MAX_LISTED:
            self.runs.popitem(last=False)

    def _complete_run(self, event: ev.MigrationCompleted, stored: StoredEvent) -> None:
        run = self.runs.get(event.run_id)
        if run is not None:
            run.ended_at, run.status = stored.occurred_at, event.status
            run.migrated, run.already_current, run.failed = (
                event.migrated, event.already_current, event.failed)
        for failure in event.failures:
            self.fail(stored, "migration-failure", failure.name,
                      f"run {event.run_id} to version {event.target_version}: {failure.error}")


def build_compliance_report(
    recorder: Recorder, *, policy_days: int = DEFAULT_POLICY_DAYS,
    now: datetime | None = None,
) -> ComplianceReport:
    """Build the compliance report from the ledger's events (no password needed).

    ``now`` is the moment ages are measured at and the report is stamped with (default:
    the current UTC time); pass it to rebuild a report identically. A ledger that does not
    verify still gets a report: its attestation records the failure.

    :raises ValueError: ``policy_days`` is not positive.
    """
    if policy_days <= 0:
        raise ValueError(f"policy_days must be positive, got {policy_days}")
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    with recorder.snapshot():
        verified = verify_ledger(recorder)
        fold = _Fold()
        for stored in recorder.read_events():
            fold.apply(stored)
        held, deleted = _live_secrets(recorder)
        ledger_id = fold.ledger_id or recorder.ledger_id()
    for run in fold.runs.values():
        if run.status == "incomplete":
            fold.failures_total += 1
            fold.failures.append(FailureEntry(
                run.seq, run.started_at, run.actor, run.origin, "migration-incomplete",
                f"run {run.run_id}", f"started towards version {run.target_version}, "
                f"{run.migrated} migrated, not completed (interrupted, or still running)"))
    keyring = fold.keyring
    live: Counter[int] = Counter()
    for (version, _), n in held.items():
        live[version] += n
    inventory = tuple(_inventory(fold, live, policy_days, now))
    attestation = IntegrityAttestation(
        ok=verified.ok and fold.unreadable == 0,
        first_seq=1 if fold.seq else 0, last_seq=fold.seq, head=fold.head, events=verified.events,
        first_bad_seq=verified.first_bad_seq,
        problems=tuple(verified.problems) + (
            (f"{fold.unreadable} event(s) could not be read",) if fold.unreadable else ()),
        checkpoints=verified.checkpoints,
        checkpoint_seq=None if verified.latest_checkpoint is None else verified.latest_checkpoint.seq,
        checkpoint_head=None if verified.latest_checkpoint is None else verified.latest_checkpoint.head,
        checkpoint_signed_at=(None if verified.latest_checkpoint is None
                              else verified.latest_checkpoint.signed_at),
        checkpoint_covers_head=(verified.latest_checkpoint is not None
                                and verified.latest_checkpoint.seq == fold.seq
                                and verified.latest_checkpoint.head == fold.head),
        public_key=verified.public_key, unreadable_events=fold.unreadable,
    )
    return ComplianceReport(
        format=REPORT_FORMAT, ledger_id=ledger_id, built_from_seq=fold.seq,
        built_from_head=fold.head, generated_at=format_time(now), policy_days=policy_days,
        recorded_policy_days=None if fold.policy_seconds is None
        else round(fold.policy_seconds / 86_400, 2),
        listing_limit=MAX_LISTED, inventory=inventory,
        rotations=tuple(fold.rotations), rotations_total=fold.rotations_total,
        rejections_total=fold.rejections_total,
        lifecycle=tuple(fold.lifecycle), lifecycle_total=fold.lifecycle_total,
        secrets=SecretsSummary(
            current_version=keyring.current, live_total=sum(live.values()),
            needing_migration=sum(n for (version, scheme), n in held.items()
                                  if needs_migration(version, scheme, keyring.current)),
            deleted=deleted,
            per_version=tuple(VersionCount(k.version, k.status, k.live_secrets) for k in inventory),
        ),
        migrations=tuple(_run_entry(run) for run in fold.runs.values()),
        migrations_total=fold.runs_total,
        failures=tuple(sorted(fold.failures, key=lambda f: f.seq)),
        failures_total=fold.failures_total,
        encryptions=tuple(_usage(k.version, k.encryptions) for k in inventory),
        integrity=attestation,
        activity=tuple(EventCount(t, n) for t, n in sorted(fold.activity.items())),
        standards=STANDARDS,
    )


def _live_secrets(recorder: Recorder) -> tuple[Counter[tuple[int, str]], int]:
    """Live secrets per key version and scheme, and the number of deleted secrets, from
    each secret stream's head, a page at a time."""
    held: Counter[tuple[int, str]] = Counter()
    deleted, after = 0, ""
    while page := recorder.stream_heads(ev.SECRET_STREAM_PREFIX, after, _HEADS_PAGE):
        for stored in page:
            try:
                state = head_state(stored)
            except (LedgerFormatError, TypeError):  # already reported by the event pass
                continue
            if state.deleted or state.key_version is None or state.scheme is None:
                deleted += 1
            else:
                held[state.key_version, state.scheme] += 1
        after = page[-1].stream
    return held, deleted


def _inventory(
    fold: _Fold, live: Counter[int], policy_days: int, now: datetime
) -> list[KeyVersionEntry]:
    rows = []
    for version, state in sorted(fold.keyring.versions.items()):
        times = fold.times.get(version, _VersionTimes())
        status = fold.keyring.status(version)
        created = parse_time(state.created_at)
        age = (now - created).total_seconds() / 86_400
        active = status == ACTIVE
        rows.append(KeyVersionEntry(
            version=version, algorithm=fold.algorithms.get(version, "unknown"), origin=state.origin,
            fingerprint=state.fingerprint, status=status, created_at=state.created_at,
            activated_at=times.activated_at, rotated_at=state.rotated_at,
            retired_at=times.retired_at if state.retired or state.destroyed else None,
            destroy_after=state.destroy_after, destroyed_at=times.destroyed_at,
            age_days=round(age, 2), overdue=active and age > policy_days,
            rotation_due=format_time(created + timedelta(days=policy_days)) if active else None,
            live_secrets=live.get(version, 0), encryptions=fold.encryptions.get(version, 0),
        ))
    return rows


def _usage(version: int, encryptions: int) -> EncryptionEntry:
    fraction = encryptions / GCM_RANDOM_NONCE_LIMIT
    flag = "exceeded" if fraction >= 1 else "approaching" if fraction >= APPROACHING_FRACTION else "ok"
    return EncryptionEntry(version, encryptions, GCM_RANDOM_NONCE_LIMIT, fraction, flag)


def _run_entry(run: _Run) -> MigrationRunEntry:
    return MigrationRunEntry(
        run.run_id, run.target_version, run.started_at, run.ended_at, run.actor, run.origin,
        run.candidates, run.migrated, run.already_current, run.failed, run.status, run.resumes,
    )
