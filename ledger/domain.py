"""Decide, then record: state folded from events, and pure functions returning new events.

Nothing in this module touches the disk or a key. The service reads a stream, folds it
into state here, asks a ``decide_*`` function for the events to append, and appends them.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import singledispatchmethod

from ledger import events as ev
from ledger.crypto import MAX_VERSION, MIN_VERSION, SCHEME_BOUND, SCHEME_SEED
from ledger.errors import IntegrityError, InvalidInputError, LedgerFormatError, VersionError

MAX_NAME_LENGTH = 256
#: Largest secret value, in bytes of UTF-8. Configuration secrets are small; a limit keeps
#: the ledger (which stores every version's ciphertext) from growing without bound.
MAX_VALUE_BYTES = 64 * 1024

REGULAR_VERSIONS = range(1, 21)
EMERGENCY_VERSION = 99


def format_time(moment: datetime) -> str:
    """UTC, ISO-8601, microseconds, ``Z``: sortable as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(stamp: str) -> datetime:
    """A time as the ledger stores it (:func:`format_time`), back as an aware UTC datetime."""
    return datetime.fromisoformat(stamp).astimezone(UTC)


def describe_duration(seconds: int) -> str:
    """The inverse of :func:`parse_duration`, rounded down: ``90d``, ``12h``, ``30m``."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w`` as a timedelta (a waiting period or a policy age)."""
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not (number.isascii() and number.isdigit()) or int(number) <= 0:
        raise InvalidInputError(f"{text!r} is not a duration like 7d, 12h, 30m or 2w")
    if len(number) > 7:  # a typo, and past what datetime can add
        raise InvalidInputError(f"{text!r} is too long a duration")
    duration = timedelta(**{units[unit]: int(number)})
    if duration > timedelta(days=36_525):
        raise InvalidInputError(f"{text!r} is longer than a century")
    return duration


def parse_moment(text: str, now: datetime) -> str:
    """A ``--since``/``--until`` bound as the ledger's sortable UTC text.

    Accepts an ISO-8601 date (``2026-11-01``, midnight UTC), date and time
    (``2026-11-01T02:00``, ``...Z`` or with an offset; naive means UTC), or a duration
    meaning that long before ``now`` (``24h``, ``7d``).

    :raises InvalidInputError: it is none of these.
    """
    text = text.strip()
    if text[-1:].lower() in ("m", "h", "d", "w") and text[:-1].isdigit():
        return format_time(now - parse_duration(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"{text!r} is not a time like 2026-11-01, 2026-11-01T02:00Z or 24h (ago)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment)


def version_range(version: int) -> str:
    """The old system's label for a key version number."""
    if 1 <= version <= 20:
        return "regular"
    if 21 <= version <= 80:
        return "reserved"
    if 81 <= version <= 98:
        return "testing"
    if version == EMERGENCY_VERSION:
        return "emergency"
    return "extended"


def range_warning(version: int) -> str | None:
    """Why rotating into ``version`` deserves a second look, or None."""
    label = version_range(version)
    if label == "reserved":
        return f"version {version} is in the reserved range 21-80"
    if label == "extended":
        return f"version {version} is outside the ranges the guide assigns (1-99)"
    return None


@dataclass(slots=True)
class KeyVersionState:
    version: int
    fingerprint: str
    origin: str
    created_at: str
    rotated_at: str | None = None
    retired: bool = False
    destroy_after: str | None = None
    destroyed: bool = False


ACTIVE = "active"
DECRYPT_ONLY = "decrypt-only"
RETIRED = "retired"
SCHEDULED = "scheduled-for-destruction"
DESTROYED = "destroyed"


@dataclass(slots=True)
class KeyringState:
    """The keyring aggregate: every key version ever created and which one encrypts."""

    revision: int = 0
    ledger_id: str | None = None
    current: int | None = None
    versions: dict[int, KeyVersionState] = field(default_factory=dict)

    def apply(self, event: ev.DomainEvent, occurred_at: str) -> None:
        self._apply(event, occurred_at)
        self.revision += 1

    @singledispatchmethod
    def _apply(self, event: ev.DomainEvent, occurred_at: str) -> None:
        pass  # rejections and re-wraps change no keyring state

    @_apply.register
    def _(self, event: ev.KeyVersionCreated, occurred_at: str) -> None:
        self.versions[event.version] = KeyVersionState(
            event.version, event.fingerprint, event.origin, occurred_at
        )

    @_apply.register
    def _(self, event: ev.KeyRotated, occurred_at: str) -> None:
        if event.from_version is not None:
            self.versions[event.from_version].rotated_at = occurred_at
        self.current = event.to_version

    @_apply.register
    def _(self, event: ev.MasterKeyRewrapped, occurred_at: str) -> None:
        for version, fp in event.fingerprints.items():
            self.versions[int(version)].fingerprint = fp

    @_apply.register
    def _(self, event: ev.KeyVersionRetired, occurred_at: str) -> None:
        self.versions[event.version].retired = True

    @_apply.register
    def _(self, event: ev.KeyVersionReinstated, occurred_at: str) -> None:
        self.versions[event.version].retired = False

    @_apply.register
    def _(self, event: ev.KeyDestructionScheduled, occurred_at: str) -> None:
        self.versions[event.version].destroy_after = event.not_before

    @_apply.register
    def _(self, event: ev.KeyDestructionCancelled, occurred_at: str) -> None:
        self.versions[event.version].destroy_after = None

    @_apply.register
    def _(self, event: ev.KeyVersionDestroyed, occurred_at: str) -> None:
        state = self.versions[event.version]
        state.destroyed, state.destroy_after = True, None

    def status(self, version: int) -> str:
        """active, decrypt-only, retired, scheduled-for-destruction or destroyed."""
        state = self.versions[version]
        if state.destroyed:
            return DESTROYED
        if state.destroy_after is not None:
            return SCHEDULED
        if state.retired:
            return RETIRED
        return ACTIVE if version == self.current else DECRYPT_ONLY

    def require_usable(self, version: int) -> None:
        """:raises VersionError: the version is unknown, retired or destroyed."""
        if version not in self.versions:
            raise VersionError(f"the ledger holds no key for version {version}")
        status = self.status(version)
        if status == DESTROYED:
            raise VersionError(f"key version {version} was destroyed; what it encrypted is gone")
        if status in (RETIRED, SCHEDULED):
            raise VersionError(
                f"key version {version} is retired; 'keyledger keys reinstate {version}' to use it"
            )

    def require_current(self) -> int:
        if self.current is None:
            raise VersionError("the ledger has no current key version")
        return self.current


@dataclass(frozen=True, slots=True)
class SecretState:
    """The latest state of one secret, as its stream's head event left it."""

    name: str
    revision: int
    deleted: bool
    key_version: int | None = None
    ciphertext: str | None = None
    scheme: str | None = None


#: Where each event that encrypts a value keeps the key version it used.
KEY_VERSION_FIELD: dict[type[ev.DomainEvent], str] = {
    ev.SecretWritten: "key_version", ev.SecretReset: "key_version",
    ev.SecretRestored: "key_version", ev.SecretImported: "key_version",
    ev.SecretMigrated: "to_version",
}
_HOLDING = (ev.SecretWritten, ev.SecretImported, ev.SecretMigrated)


def held_under(event: ev.DomainEvent) -> tuple[int, str] | None:
    """The key version and scheme holding the value ``event`` gives its secret: the one
    rule for it (the fold below, the signed tally, the read models, history, compliance).
    None for an event that holds no value (a deletion, or not a secret's)."""
    field = KEY_VERSION_FIELD.get(type(event))
    if field is None:
        return None
    # Every type in the map has these fields (an int version, a str scheme): the read
    # models call this for every event they replay, so no check is repeated here.
    return getattr(event, field), event.scheme  # type: ignore[attr-defined]


def needs_migration(key_version: int, scheme: str, current: int | None) -> bool:
    """Whether a live secret held under ``key_version`` in ``scheme`` is for ``migrate`` to
    re-encrypt: anything but the current version in the bound scheme."""
    return key_version != current or scheme != SCHEME_BOUND


def secret_state(name: str, revision: int, head: ev.DomainEvent | None) -> SecretState:
    """Fold a secret stream: every state event carries the whole state, so its head suffices."""
    if head is None or isinstance(head, ev.SecretDeleted):
        return SecretState(name, revision, deleted=True)
    if isinstance(head, ev.SecretMigrated | ev.SecretWritten) and head.scheme != SCHEME_BOUND:
        # keyledger writes and migrates only in the bound scheme: the unbound one is the
        # old system's, and only an import can carry it.
        raise IntegrityError(f"secret {name!r}: a {type(head).__name__} in scheme "
                             f"{head.scheme!r}, which keyledger never writes")
    held = held_under(head)
    if held is None or not isinstance(head, _HOLDING):
        raise TypeError(f"{type(head).__name__} is not a secret event")
    return SecretState(name, revision, False, held[0], head.ciphertext, held[1])


def require_scheme_allowed(keyring: KeyringState, state: SecretState) -> None:
    """The old system's unbound scheme (no name/version binding) only under a key version
    the authenticated keyring says was imported from it.

    :raises IntegrityError: any other combination.
    """
    if state.scheme == SCHEME_SEED:
        version = keyring.versions.get(state.key_version or 0)
        if version is None or version.origin != "seed-import":
            raise IntegrityError(
                f"secret {state.name!r} is in the old system's unbound scheme under key "
                f"version {state.key_version}, which did not come from the old system"
            )


def head_state(head: ev.StoredEvent) -> SecretState:
    """The state of the secret whose stream ends in ``head``."""
    name = head.stream.removeprefix(ev.SECRET_STREAM_PREFIX)
    return secret_state(name, head.stream_rev, head.decode())


def unproven_head_state(head: ev.StoredEvent) -> SecretState:
    """:func:`head_state` of a head read without a proof, for a decision the store proves
    later: one that is no secret's event (a forged row; a proven head always is one) is
    refused as that proof would refuse it, not raised as a TypeError.

    :raises IntegrityError: the head is not a secret event that decodes.
    """
    try:
        return head_state(head)
    except (TypeError, LedgerFormatError):
        raise IntegrityError(
            f"the head of stream {head.stream!r} is not a secret's event (changed behind "
            "keyledger's back); refusing to act on it: run `keyledger audit verify`"
        ) from None


# -- decisions -------------------------------------------------------------------------


def next_regular_version(keyring: KeyringState) -> int:
    """The next unused regular version (1-20) above every regular version used so far."""
    used_regular = [v for v in keyring.versions if v in REGULAR_VERSIONS]
    candidate = max(used_regular, default=0) + 1
    if candidate not in REGULAR_VERSIONS:
        raise VersionError(
            "every regular version (1-20) above the last one used is taken; "
            "pass --new-version with a free version"
        )
    return candidate


def decide_rotation(
    keyring: KeyringState, new_version: int | None, fingerprint: str, reason: str | None
) -> tuple[int, list[ev.DomainEvent]]:
    """The version to rotate to and the events that record it.

    :raises VersionError: the version is out of range or was ever used (never reused).
    """
    version = next_regular_version(keyring) if new_version is None else new_version
    check_rotation_target(keyring, version)
    return version, [
        ev.KeyVersionCreated(version=version, fingerprint=fingerprint, origin="generated"),
        ev.KeyRotated(from_version=keyring.current, to_version=version, reason=reason),
    ]


def check_rotation_target(keyring: KeyringState, version: int) -> None:
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise InvalidInputError(f"key version must be {MIN_VERSION}-{MAX_VERSION}, got {version}")
    if version in keyring.versions:
        raise VersionError(f"key version {version} was already used; versions are never reused")


def validate_name(name: str) -> str:
    """A secret name: 1-256 characters, no control or invisible formatting characters, no
    surrounding spaces."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidInputError(f"a secret name must be 1-{MAX_NAME_LENGTH} characters")
    if name != name.strip():
        raise InvalidInputError("a secret name may not start or end with whitespace")
    if name.isascii() and name.isprintable():  # the common case, without a per-character walk
        return name
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Cn") for ch in name):
        raise InvalidInputError("a secret name may not contain control characters")
    # Format characters (zero-width spaces and joiners, bidirectional overrides, a BOM)
    # make two different names look alike, or one look like another: refused.
    if any(unicodedata.category(ch) == "Cf" for ch in name):
        raise InvalidInputError("a secret name may not contain invisible formatting characters "
                                "(zero-width or bidirectional controls)")
    return name


def validate_value(value: str) -> bytes:
    """The UTF-8 bytes of a secret value, within :data:`MAX_VALUE_BYTES`."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("a secret value must be valid UTF-8 text") from None
    if len(data) > MAX_VALUE_BYTES:
        raise InvalidInputError(
            f"a secret value may be at most {MAX_VALUE_BYTES} bytes (got {len(data)})"
        )
    return data
