"""The domain events: the only source of truth.

Each event is a frozen pydantic model named in the past tense with a schema version. The
mapper at the bottom turns events into ``(type, schema_version, payload)`` rows and back,
upcasting older schema versions on the way in. No plaintext value and no key material
ever enters an event: ciphertexts, fingerprints and counts only.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ledger.errors import LedgerFormatError

# Streams group events for optimistic concurrency: one per secret, one for the keyring.
LEDGER_STREAM = "ledger"
KEYRING_STREAM = "keyring"
# Refusals live apart from the keyring so that recording one never disturbs a writer or
# a migration that checked the keyring's revision.
REJECTIONS_STREAM = "rejections"
POLICY_STREAM = "policy"
BACKUP_STREAM = "backups"
AUDIT_SETTINGS_STREAM = "audit-settings"
READS_STREAM = "reads"
SECRET_STREAM_PREFIX = "secret:"
MIGRATION_STREAM_PREFIX = "migration:"


def secret_stream(name: str) -> str:
    return SECRET_STREAM_PREFIX + name


def migration_stream(run_id: str) -> str:
    return MIGRATION_STREAM_PREFIX + run_id


#: Every whole number an event records (key versions, counts), within SQLite's integer
#: range: a damaged payload with an absurd number (10**30) is a damaged event, one clear
#: line, not an overflow in whatever stores it next.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class DomainEvent(BaseModel):
    """Base of every event. Subclasses set ``SCHEMA_VERSION``; a new field means a new
    version and an upcaster, never a silent change of meaning."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    SCHEMA_VERSION: ClassVar[int] = 1


class LedgerInitialized(DomainEvent):
    ledger_id: str
    kdf_algorithm: str
    kdf_iterations: Int64


class SigningKeyCreated(DomainEvent):
    """The ledger's checkpoint-signing key; its private half is wrapped under the KEK."""

    public_key: str  # "ed25519:" + base64 of the raw 32 bytes
    algorithm: str = "Ed25519"


KeyOrigin = Literal["generated", "seed-import"]


class KeyVersionCreated(DomainEvent):
    version: Int64
    fingerprint: str
    origin: KeyOrigin
    algorithm: str = "AES-256-GCM"


class KeyRotated(DomainEvent):
    from_version: Int64 | None
    to_version: Int64
    reason: str | None = None


class KeyVersionRetired(DomainEvent):
    """The version may no longer encrypt or decrypt (reversible)."""

    version: Int64
    reason: str | None = None
    forced: bool = False  # retired although live secrets were still on it


class KeyVersionReinstated(DomainEvent):
    version: Int64
    reason: str | None = None


class KeyDestructionScheduled(DomainEvent):
    version: Int64
    not_before: str  # UTC ISO-8601; `keys destroy` run after this erases the key


class KeyDestructionCancelled(DomainEvent):
    version: Int64


class KeyVersionDestroyed(DomainEvent):
    """The wrapped data key was erased from the key table: crypto-shredding."""

    version: Int64
    reason: str | None = None


class RotationPolicySet(DomainEvent):
    """When rotation falls due: the current key's age, or its encryption count."""

    max_age_seconds: Int64
    warn_seconds: Int64
    max_encryptions: Int64


class ReadAuditingSet(DomainEvent):
    """Whether every read of a secret's value appends a ``SecretRead`` event."""

    enabled: bool
    reason: str | None = None


class SecretRead(DomainEvent):
    """A secret's value was decrypted for ``actor`` (recorded only with read auditing on)."""

    name: str
    key_version: Int64


class BackupTaken(DomainEvent):
    """A verified copy of the ledger (up to ``events``) was written to ``file_name``."""

    file_name: str
    events: Int64
    head_hash: str
    sha256: str


class LedgerRestored(DomainEvent):
    """The ledger was replaced by a backup; recorded as the first event after it."""

    file_name: str
    events_before: Int64
    events_restored: Int64
    forced: bool = False


class LedgerUpgraded(DomainEvent):
    """The ledger's format was brought up to date after its whole chain verified (format 4:
    every checkpoint from this event on signs the heads of every stream)."""

    from_format: Int64
    to_format: Int64


class KeyRotationRejected(DomainEvent):
    requested_version: Int64
    reason: str


class MasterKeyRewrapped(DomainEvent):
    kdf_algorithm: str
    kdf_iterations: Int64
    fingerprints: dict[str, str]  # version -> fingerprint, unchanged by a re-wrap


SecretSource = Literal["set", "json", "dotenv", "seed"]


class SecretWritten(DomainEvent):
    name: str
    key_version: Int64
    ciphertext: str
    scheme: str


class SecretReset(SecretWritten):
    """An operator replaced a secret's value to repair it (``secrets reset``)."""

    reason: str | None = None


class SecretRestored(SecretWritten):
    """A secret's value was brought back from a backup, re-encrypted under the current key."""

    backup_file: str
    backup_revision: Int64


class SecretImported(DomainEvent):
    name: str
    key_version: Int64
    ciphertext: str
    scheme: str
    source: SecretSource
    # For the old system's data: the version it was under, whether it was the legacy layout,
    # and whether it was re-encrypted (its version was taken by another key here).
    seed_version: Int64 | None = None
    legacy: bool = False
    reencrypted: bool = False


class SecretMigrated(DomainEvent):
    name: str
    run_id: str
    from_version: Int64
    to_version: Int64
    ciphertext: str
    scheme: str


class SecretDeleted(DomainEvent):
    name: str


class MigrationStarted(DomainEvent):
    run_id: str
    target_version: Int64
    batch_size: Int64
    candidates: Int64  # secret streams the run will examine (live or deleted)
    resumes: str | None = None


class MigrationFailure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    name: str
    error: str


class MigrationCompleted(DomainEvent):
    run_id: str
    target_version: Int64
    migrated: Int64
    already_current: Int64
    failed: Int64
    failures: tuple[MigrationFailure, ...] = ()
    duration_seconds: float
    status: Literal["success", "partial"]


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.__name__: cls
    for cls in (
        LedgerInitialized,
        SigningKeyCreated,
        KeyVersionCreated,
        KeyRotated,
        KeyRotationRejected,
        KeyVersionRetired,
        KeyVersionReinstated,
        KeyDestructionScheduled,
        KeyDestructionCancelled,
        KeyVersionDestroyed,
        RotationPolicySet,
        ReadAuditingSet,
        SecretRead,
        BackupTaken,
        LedgerRestored,
        LedgerUpgraded,
        MasterKeyRewrapped,
        SecretWritten,
        SecretReset,
        SecretRestored,
        SecretImported,
        SecretMigrated,
        SecretDeleted,
        MigrationStarted,
        MigrationCompleted,
    )
}

# (type, stored schema version) -> function lifting that payload one version up.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownEventError(LedgerFormatError):
    """A row names an event type or schema version this code does not know."""


class DamagedEventError(LedgerFormatError):
    """A stored event's payload does not parse as the event its row names."""


def to_payload(event: DomainEvent) -> tuple[str, int, str]:
    """``(type, schema_version, canonical JSON)`` for one event."""
    cls = type(event)
    # Events whose fields are all plain JSON scalars serialise straight from their
    # attributes, skipping pydantic's dump (the hot path: secret events).
    data = dict(event.__dict__) if cls in _FLAT_EVENTS else event.model_dump(mode="json")
    return cls.__name__, cls.SCHEMA_VERSION, canonical_json(data)


def from_payload(type_name: str, schema_version: int, payload: str) -> DomainEvent:
    """The event a stored row describes, upcast to the current schema version."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEventError(
            f"the ledger holds an event of type {type_name!r}, unknown to this keyledger: "
            "upgrade keyledger"
        )
    if schema_version > cls.SCHEMA_VERSION:
        raise UnknownEventError(
            f"{type_name} schema v{schema_version} is newer than this keyledger knows"
        )
    try:
        if schema_version == cls.SCHEMA_VERSION:  # nothing to upcast: parse in pydantic-core
            return cls.model_validate_json(payload)
        data: dict[str, Any] = json.loads(payload)
        for version in range(schema_version, cls.SCHEMA_VERSION):
            data = UPCASTERS[(type_name, version)](data)
        return cls.model_validate(data)
    except (ValueError, TypeError, KeyError, RecursionError):  # pydantic's errors are ValueErrors
        # Never echo the payload: it is damaged, and may be anything.
        raise DamagedEventError(
            f"a stored {type_name} event is damaged: its payload does not parse"
        ) from None


#: :attr:`NewEvent.based_on_tag` when the caller did not read the head's tag.
UNTOLD = "?"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended at ``stream_rev`` of ``stream`` (revisions start at 1).

    ``payload``, when given, is ``event``'s canonical JSON already made (by
    :func:`to_payload`, in a worker process): it is stored as it is.
    """

    stream: str
    stream_rev: int
    event: DomainEvent
    payload: str | None = None
    # The hash of the head event this one was decided from, as its own fields produce it
    # (content_hash), when that head was read without a proof: the append is refused
    # unless the stream's proven head is that very event.
    based_on: str | None = None
    # That head's tally tag ("VERSION/SCHEME", or None for a deleted secret), read from
    # the same row as ``based_on``: once the store has matched ``based_on`` to the proven
    # leaf, the tally takes it instead of reading and hashing the head again. UNTOLD: the
    # caller did not read it, and the store does.
    based_on_tag: str | None = UNTOLD

    def row_fields(self) -> tuple[str, int, str]:
        """``(type, schema_version, payload)``: what the row stores of the event."""
        if self.payload is None:
            return to_payload(self.event)
        cls = type(self.event)
        return cls.__name__, cls.SCHEMA_VERSION, self.payload


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as the ledger stores it: a plain row, decoded here (not by the store)."""

    seq: int
    stream: str
    stream_rev: int
    type: str
    schema_version: int
    payload: str
    occurred_at: str
    actor: str
    origin: str
    prev_hash: str
    hash: str

    def decode(self) -> DomainEvent:
        """The event this row records, upcast to the current schema version."""
        try:
            return from_payload(self.type, self.schema_version, self.payload)
        except DamagedEventError as exc:
            raise DamagedEventError(f"event {self.seq}: {exc}") from None


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(data: Any) -> str:
    """Keys sorted, no whitespace, non-ASCII kept: the one text an event's fields have."""
    return _CANONICAL.encode(data)


def _is_flat(cls: type[DomainEvent]) -> bool:
    """Whether every field holds a JSON scalar (str, int, bool, float, None, a Literal)."""
    return all(_is_scalar(info.annotation) for info in cls.model_fields.values())


def _is_scalar(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # a bounded number (Int64) is still a number
        return _is_scalar(typing.get_args(annotation)[0])
    if origin is Literal:
        return all(isinstance(a, str | int | bool) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return all(_is_scalar(a) for a in typing.get_args(annotation))
    return annotation in (str, int, bool, float, type(None))


_FLAT_EVENTS = frozenset(cls for cls in EVENT_TYPES.values() if _is_flat(cls))
