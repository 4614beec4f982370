"""Key lifecycle beyond rotation: retire, reinstate, and destroy (crypto-shredding).

A retired version may neither encrypt nor decrypt, like a version below Vault's
``min_decryption_version``, but reversibly. Destroying a retired version with no live
secret erases its wrapped data key from the key table, so everything ever encrypted under
it, in the ledger's history and in any backup taken afterwards, is unreadable; the event
that records it keeps the key's fingerprint. Destruction may be scheduled after a waiting
period and cancelled until then, as AWS KMS does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.domain import DESTROYED, RETIRED, SCHEDULED, KeyringState, format_time
from ledger.errors import InvalidInputError, VersionError
from ledger.events import NewEvent

if TYPE_CHECKING:
    from ledger.session import Session


@dataclass(frozen=True, slots=True)
class LifecycleResult:
    version: int
    status: str
    live_secrets: int
    destroy_after: str | None = None
    # Destroyed in the ledger, but another process's older snapshot keeps the wrapped
    # key in the database file until it ends; the next command that unlocks erases it.
    erase_pending: bool = False


def _known(keyring: KeyringState, version: int) -> None:
    if version not in keyring.versions:
        raise InvalidInputError(f"the ledger has no key version {version}")


def live_secrets_on(session: Session, version: int) -> int:
    """How many live secrets are stored under ``version`` (reads every secret's head)."""
    return session.report().distribution.get(version, 0)


def retire(
    session: Session, version: int, *, force: bool = False, reason: str | None = None
) -> LifecycleResult:
    """Stop ``version`` from encrypting or decrypting.

    :raises VersionError: it is the current version, already retired or destroyed, or
        (without ``force``) live secrets are still on it.
    """
    keyring = session.keyring()
    _known(keyring, version)
    if version == keyring.current:
        raise VersionError(f"key version {version} is the current one; rotate first")
    status = keyring.status(version)
    if status in (RETIRED, SCHEDULED, DESTROYED):
        raise VersionError(f"key version {version} is already {status}")
    live = live_secrets_on(session, version)
    if live and not force:
        raise VersionError(
            f"{live} live secret(s) are still on key version {version}; migrate them first "
            "(or --force, leaving them unreadable until the version is reinstated)"
        )
    _append_keyring(
        session, keyring, ev.KeyVersionRetired(version=version, reason=reason, forced=bool(live))
    )
    return LifecycleResult(version, RETIRED, live)


def reinstate(session: Session, version: int, *, reason: str | None = None) -> LifecycleResult:
    """Let a retired version decrypt (and, if current, encrypt) again."""
    keyring = session.keyring()
    _known(keyring, version)
    status = keyring.status(version)
    if status == SCHEDULED:
        raise VersionError(f"key version {version} is scheduled for destruction; "
                           f"'keyledger keys cancel-destroy {version}' first")
    if status != RETIRED:
        raise VersionError(f"key version {version} is {status}, not retired")
    _append_keyring(session, keyring, ev.KeyVersionReinstated(version=version, reason=reason))
    return LifecycleResult(version, session.keyring().status(version), live_secrets_on(session, version))


def destroy(
    session: Session, version: int, *, after: timedelta | None = None, reason: str | None = None,
) -> LifecycleResult:
    """Erase a retired version's data key now, or schedule it ``after`` a waiting period.

    A scheduled destruction happens when ``destroy`` is called again once the waiting
    period is over.

    :raises VersionError: the version is not retired, still holds live secrets, is
        already destroyed, or its waiting period is not over.
    """
    keyring = session.keyring()
    _known(keyring, version)
    state = keyring.versions[version]
    status = keyring.status(version)
    if status == DESTROYED:
        raise VersionError(f"key version {version} is already destroyed")
    if status not in (RETIRED, SCHEDULED):
        raise VersionError(f"key version {version} is {status}; retire it before destroying it")
    live = live_secrets_on(session, version)
    if live:
        raise VersionError(f"{live} live secret(s) are still on key version {version}; "
                           "migrate or delete them first")
    now = session.clock()
    if after is not None:
        if state.destroy_after is not None:
            raise VersionError(f"key version {version} is already scheduled for destruction "
                               f"after {state.destroy_after}")
        not_before = format_time(now + after)
        _append_keyring(
            session, keyring, ev.KeyDestructionScheduled(version=version, not_before=not_before)
        )
        return LifecycleResult(version, SCHEDULED, 0, not_before)
    if state.destroy_after is not None and format_time(now) < state.destroy_after:
        raise VersionError(f"key version {version} is scheduled for destruction after "
                           f"{state.destroy_after}; not before")
    session.refuse_if_triggers_altered(f"destroy key version {version}")
    _append_keyring(session, keyring, ev.KeyVersionDestroyed(version=version, reason=reason),
                    keys={version: None})
    erased = session.finish_erasure(f"key version {version}'s wrapped data key")
    return LifecycleResult(version, DESTROYED, 0, erase_pending=not erased)


def cancel_destroy(session: Session, version: int) -> LifecycleResult:
    keyring = session.keyring()
    _known(keyring, version)
    if keyring.status(version) != SCHEDULED:
        raise VersionError(f"key version {version} is not scheduled for destruction")
    _append_keyring(session, keyring, ev.KeyDestructionCancelled(version=version))
    return LifecycleResult(version, RETIRED, 0)


def _append_keyring(
    session: Session, keyring: KeyringState, event: ev.DomainEvent,
    keys: dict[int, bytes | None] | None = None,
) -> None:
    session.append([NewEvent(ev.KEYRING_STREAM, keyring.revision + 1, event)], keys=keys)
    session.refresh_keyring()
