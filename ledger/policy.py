"""Rotation policy: when the current key is due for rotation, and why.

Due when the current key version is older than the policy's maximum age (the old system's 90
days by default, PCI DSS 3.7.4's cryptoperiod), or has encrypted more values than its
limit (by default 2^31, half of NIST SP 800-38D's 2^32 bound for random 96-bit nonces,
to leave a margin). Within the warning window before the age limit, it is not yet due
but says so. Pure functions over state, so cron, ``health-check`` and tests agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.domain import describe_duration
from ledger.errors import InvalidInputError
from ledger.events import StoredEvent
from ledger.store import Recorder

if TYPE_CHECKING:
    from ledger.session import Session

NIST_GCM_LIMIT = 2**32
#: The old system's rotation period, and the cryptoperiod reports judge key ages against.
DEFAULT_MAX_AGE_DAYS = 90
DEFAULT_POLICY = ev.RotationPolicySet(
    max_age_seconds=int(timedelta(days=DEFAULT_MAX_AGE_DAYS).total_seconds()),
    warn_seconds=int(timedelta(days=14).total_seconds()),
    max_encryptions=NIST_GCM_LIMIT // 2,
)


@dataclass(frozen=True, slots=True)
class DueReport:
    due: bool
    current_version: int
    age_seconds: int
    encryptions: int
    policy: ev.RotationPolicySet
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def rotation_due(
    policy: ev.RotationPolicySet, current_version: int, current_since: datetime,
    encryptions: int, now: datetime,
) -> DueReport:
    """Whether the current key version is due for rotation under ``policy``, and why."""
    age = now - current_since
    age_s = max(0, int(age.total_seconds()))
    reasons, warnings = [], []
    if age_s >= policy.max_age_seconds:
        reasons.append(f"key version {current_version} is {_days(age_s)} old; the policy allows "
                       f"{_days(policy.max_age_seconds)}")
    elif age_s >= policy.max_age_seconds - policy.warn_seconds:
        left = policy.max_age_seconds - age_s
        warnings.append(f"key version {current_version} is due for rotation in {_days(left)}")
    if encryptions >= policy.max_encryptions:
        reasons.append(f"key version {current_version} has encrypted {encryptions:,} values; the "
                       f"policy allows {policy.max_encryptions:,} (NIST SP 800-38D: at most "
                       f"{NIST_GCM_LIMIT:,} with random nonces)")
    elif encryptions >= policy.max_encryptions * 0.9:
        warnings.append(f"key version {current_version} has encrypted {encryptions:,} values, "
                        f"near the policy's {policy.max_encryptions:,}")
    return DueReport(bool(reasons), current_version, age_s, encryptions, policy, reasons, warnings)


def current_policy(recorder: Recorder) -> ev.RotationPolicySet:
    """The policy in force as the file says, unproven: for display (``policy show``,
    ``due``), which needs no password. Decisions use :func:`proven_policy`."""
    return policy_at(recorder.stream_head(ev.POLICY_STREAM))


def proven_policy(session: Session) -> ev.RotationPolicySet:
    """The policy in force, its head event proven against the signed checkpoint: what
    ``policy set`` keeps of it and ``full-rotation --if-due`` decides on."""
    return policy_at(session.head(ev.POLICY_STREAM))


def policy_at(head: StoredEvent | None) -> ev.RotationPolicySet:
    """The policy a policy stream's head event records, or the defaults."""
    event = None if head is None else head.decode()
    return event if isinstance(event, ev.RotationPolicySet) else DEFAULT_POLICY


def set_policy(
    session: Session, *, max_age: timedelta | None = None, warn: timedelta | None = None,
    max_encryptions: int | None = None,
) -> ev.RotationPolicySet:
    """Record a new policy; unspecified settings keep their current values."""
    old = proven_policy(session)
    policy = ev.RotationPolicySet(
        max_age_seconds=int(max_age.total_seconds()) if max_age else old.max_age_seconds,
        warn_seconds=int(warn.total_seconds()) if warn else old.warn_seconds,
        max_encryptions=max_encryptions if max_encryptions is not None else old.max_encryptions,
    )
    if policy.warn_seconds >= policy.max_age_seconds:
        raise InvalidInputError("the warning window must be shorter than the maximum age")
    if not 1 <= policy.max_encryptions <= NIST_GCM_LIMIT:
        raise InvalidInputError(f"--max-encryptions must be 1 to {NIST_GCM_LIMIT:,} (NIST SP 800-38D)")
    session.append_to_stream(ev.POLICY_STREAM, policy)
    return policy


def _days(seconds: int) -> str:
    return describe_duration(seconds)
