"""What the rotation guide says to watch for, computed from the events (``audit alerts``).

The guide's "monitor for": unexpected rotations, failed rotations, repeated failures and
off-schedule rotations; and what a cryptoperiod policy adds: versions used past their age
or encryption limit, and migrations left unfinished. Each alert names the event it rests
on (its seq), so an operator can look it up with ``audit log``.

Event alerts (rotations, failures) are those recorded in the window ``since``..now; state
alerts (cryptoperiods, unfinished migrations) stand for as long as the state does.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ledger import events as ev
from ledger.domain import parse_time
from ledger.store import Recorder
from projections.read_models.keys import KeyringInfo
from projections.reports.metrics import RotationMetric

Severity = Literal["warning", "critical"]
#: Failures (rejected rotations, migrations that left secrets behind) in the window that
#: make "repeated failures".
REPEATED_FAILURES = 3
#: A migration run started longer ago than this and neither completed nor taken over.
STALE_MIGRATION = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    severity: Severity
    summary: str
    seq: int | None = None  # the event it rests on, where one does
    occurred_at: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compute_alerts(
    recorder: Recorder, keyring: KeyringInfo, policy: ev.RotationPolicySet,
    runs: Sequence[RotationMetric], *, since: str, now: datetime,
    rotators: Collection[str] = (),
) -> list[Alert]:
    """Every alert that stands at ``now``, event alerts from ``since`` (UTC ISO text) on.

    ``rotators``: the actors expected to rotate; a rotation by anyone else is unexpected.
    Without them, an actor rotating for the first time, where others rotated before, is.
    """
    found: list[Alert] = []
    failures: list[Alert] = []
    previous_rotation: str | None = None
    rotated_before: set[str] = set()
    kinds = {"KeyRotated", "KeyRotationRejected", "MigrationCompleted"}
    for stored in recorder.query_events(types=kinds):
        event = stored.decode()
        recent = stored.occurred_at >= since
        if isinstance(event, ev.KeyRotated):
            if event.from_version is None:  # the ledger's first key: no schedule yet
                previous_rotation = stored.occurred_at
                continue
            if recent:
                found += _rotation_alerts(stored, event, previous_rotation, policy, rotators,
                                          rotated_before)
            previous_rotation = stored.occurred_at
            rotated_before.add(stored.actor)
        elif isinstance(event, ev.KeyRotationRejected) and recent:
            failures.append(Alert(
                "rotation_failed", "warning",
                f"a rotation to version {event.requested_version} by {stored.actor} was "
                f"refused: {event.reason}", stored.seq, stored.occurred_at,
                {"actor": stored.actor, "requested_version": event.requested_version}))
        elif isinstance(event, ev.MigrationCompleted) and recent and event.failed:
            failures.append(Alert(
                "migration_failed", "warning",
                f"migration run {event.run_id} to version {event.target_version} left "
                f"{event.failed} secret(s) behind", stored.seq, stored.occurred_at,
                {"actor": stored.actor, "run_id": event.run_id, "failed": event.failed}))
    found += failures
    if len(failures) >= REPEATED_FAILURES:
        found.append(Alert(
            "repeated_failures", "critical",
            f"{len(failures)} failed operations since {since}", failures[-1].seq,
            failures[-1].occurred_at, {"count": len(failures)}))
    found += _unfinished(runs, now)
    found += _cryptoperiods(keyring, policy, now)
    return sorted(found, key=lambda a: (a.occurred_at or "", a.kind))


def _rotation_alerts(stored: Any, event: ev.KeyRotated, previous: str | None,
                     policy: ev.RotationPolicySet, rotators: Collection[str],
                     rotated_before: set[str]) -> list[Alert]:
    found = []
    details = {"actor": stored.actor, "from_version": event.from_version,
               "to_version": event.to_version}
    if rotators and stored.actor not in rotators:
        found.append(Alert("unexpected_rotation", "critical",
                           f"{stored.actor} rotated to version {event.to_version}, and is not "
                           "one of the expected rotators", stored.seq, stored.occurred_at,
                           details))
    elif not rotators and rotated_before and stored.actor not in rotated_before:
        found.append(Alert("unexpected_rotation", "warning",
                           f"{stored.actor} rotated to version {event.to_version}, the first "
                           f"rotation this actor ever made (before: "
                           f"{', '.join(sorted(rotated_before)[:3])})", stored.seq,
                           stored.occurred_at, details))
    if previous is not None:
        interval = (parse_time(stored.occurred_at) - parse_time(previous)).total_seconds()
        early = policy.max_age_seconds - policy.warn_seconds
        if interval < early or interval > policy.max_age_seconds:
            when = "early" if interval < early else "late"
            found.append(Alert(
                "off_schedule_rotation", "warning",
                f"rotation to version {event.to_version} came {when}: "
                f"{_days(interval)} after the last one (the policy rotates between "
                f"{_days(early)} and {_days(policy.max_age_seconds)})",
                stored.seq, stored.occurred_at,
                {**details, "interval_seconds": int(interval), "when": when,
                 "reason": event.reason}))
    return found


def _unfinished(runs: Sequence[RotationMetric], now: datetime) -> list[Alert]:
    return [
        Alert("migration_incomplete", "warning",
              f"migration run {run.run_id} to version {run.new_version}, started "
              f"{run.rotation_start} by {run.actor}, never completed: run migrate again",
              None, run.rotation_start, {"run_id": run.run_id, "actor": run.actor})
        for run in runs
        if run.status == "incomplete" and now - parse_time(run.rotation_start) > STALE_MIGRATION
    ]


def _cryptoperiods(keyring: KeyringInfo, policy: ev.RotationPolicySet,
                   now: datetime) -> list[Alert]:
    found = []
    for v in keyring.versions:
        age = (now - parse_time(v.created_at)).total_seconds()
        current = v.version == keyring.current_version
        if (current or v.secrets) and age > policy.max_age_seconds:
            found.append(Alert(
                "cryptoperiod_exceeded", "warning",
                f"key version {v.version} is {_days(age)} old (the policy allows "
                f"{_days(policy.max_age_seconds)}) and "
                + ("is still current: rotate" if current
                   else f"still holds {v.secrets} secret(s): migrate"),
                None, v.created_at, {"key_version": v.version, "age_seconds": int(age),
                                     "secrets": v.secrets}))
        if v.encryptions >= policy.max_encryptions and (current or v.secrets):
            found.append(Alert(
                "encryption_limit", "critical",
                f"key version {v.version} made {v.encryptions:,} encryptions; the policy "
                f"allows {policy.max_encryptions:,}", None, v.created_at,
                {"key_version": v.version, "encryptions": v.encryptions}))
    return found


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"
