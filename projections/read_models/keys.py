"""Key metadata: every key version, when it was created and rotated, what it encrypted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import singledispatchmethod
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.domain import ACTIVE, DECRYPT_ONLY, DESTROYED, RETIRED, SCHEDULED, KeyringState, version_range
from ledger.events import StoredEvent
from ledger.store_read_models import ReadModelTables
from ledger.tally import encrypted_under
from projections.read_models.secrets import live_counts

if TYPE_CHECKING:
    from projections.read_models.runner import Applied


class KeyProjection:
    name = "keys"
    tables = ("proj_key_versions", "proj_keyring")

    def create(self, tables: ReadModelTables) -> None:
        tables.create_key_tables()

    @singledispatchmethod
    def apply(self, event: ev.DomainEvent, stored: StoredEvent, tables: ReadModelTables) -> None:
        pass

    @apply.register
    def _(self, event: ev.LedgerInitialized, stored: StoredEvent, tables: ReadModelTables) -> None:
        tables.set_kdf_iterations(event.kdf_iterations)

    @apply.register
    def _(self, event: ev.KeyVersionCreated, stored: StoredEvent, tables: ReadModelTables) -> None:
        tables.insert_key_version(event.version, stored.occurred_at, DECRYPT_ONLY, event.origin,
                                  event.fingerprint, event.algorithm)

    @apply.register
    def _(self, event: ev.KeyRotated, stored: StoredEvent, tables: ReadModelTables) -> None:
        if event.from_version is not None:
            tables.update_key_version(event.from_version, rotated_at=stored.occurred_at,
                                      status=DECRYPT_ONLY)
        tables.update_key_version(event.to_version, status=ACTIVE)
        tables.set_current_version(event.to_version,
                                   rotations_added=0 if event.from_version is None else 1)

    @apply.register
    def _(self, event: ev.KeyVersionRetired, stored: StoredEvent, tables: ReadModelTables) -> None:
        tables.update_key_version(event.version, status=RETIRED)

    @apply.register
    def _(self, event: ev.KeyVersionReinstated, stored: StoredEvent, tables: ReadModelTables) -> None:
        tables.update_key_version(event.version, status=DECRYPT_ONLY)  # the current one is never retired

    @apply.register
    def _(self, event: ev.KeyDestructionScheduled, stored: StoredEvent,
          tables: ReadModelTables) -> None:
        tables.update_key_version(event.version, status=SCHEDULED, destroy_after=event.not_before)

    @apply.register
    def _(self, event: ev.KeyDestructionCancelled, stored: StoredEvent,
          tables: ReadModelTables) -> None:
        tables.update_key_version(event.version, status=RETIRED, destroy_after=None)

    @apply.register
    def _(self, event: ev.KeyVersionDestroyed, stored: StoredEvent, tables: ReadModelTables) -> None:
        tables.update_key_version(event.version, status=DESTROYED, destroy_after=None,
                                  destroyed_at=stored.occurred_at)

    @apply.register
    def _(self, event: ev.KeyRotationRejected, stored: StoredEvent, tables: ReadModelTables) -> None:
        tables.add_rejection()

    @apply.register
    def _(self, event: ev.MasterKeyRewrapped, stored: StoredEvent, tables: ReadModelTables) -> None:
        tables.set_kdf_iterations(event.kdf_iterations)
        tables.set_fingerprints({int(v): fp for v, fp in event.fingerprints.items()})

    def apply_batch(self, batch: Sequence[Applied], tables: ReadModelTables) -> None:
        """Key events one by one; encryptions per version (every secret event) summed and
        added at the end, since nothing in between reads them."""
        encryptions: Counter[int] = Counter()
        for event, stored in batch:
            version = encrypted_under(event)
            if version is not None:
                encryptions[version] += 1
            elif not isinstance(event, ev.SecretDeleted | ev.SecretRead):
                self.apply(event, stored, tables)
        tables.add_encryptions(encryptions)


@dataclass(frozen=True, slots=True)
class KeyVersionInfo:
    version: int
    created_at: str
    rotated_at: str | None
    status: str
    range: str
    origin: str
    algorithm: str
    fingerprint: str
    encryptions: int
    secrets: int
    destroy_after: str | None = None
    destroyed_at: str | None = None


@dataclass(frozen=True, slots=True)
class KeyringInfo:
    current_version: int | None
    kdf_iterations: int | None
    versions: list[KeyVersionInfo]

    @property
    def available_versions(self) -> list[int]:
        """Versions that can decrypt now (active or decrypt-only)."""
        return [v.version for v in self.versions if v.status in (ACTIVE, DECRYPT_ONLY)]


def keyring_info(tables: ReadModelTables) -> KeyringInfo:
    current, iterations = tables.keyring_row()
    per_version = live_counts(tables)
    rows = tables.key_version_rows()
    versions = [
        KeyVersionInfo(
            version=r[0], created_at=r[1], rotated_at=r[2], status=r[3], range=version_range(r[0]),
            origin=r[4], algorithm=r[5], fingerprint=r[6], encryptions=r[7],
            secrets=per_version.get(r[0], 0), destroy_after=r[8], destroyed_at=r[9],
        )
        for r in rows
    ]
    return KeyringInfo(current, iterations, versions)


def keyring_problems(tables: ReadModelTables, keyring: KeyringState) -> list[str]:
    """Ways the key read models disagree with the keyring stream folded afresh (small)."""
    current = tables.current_version_row()
    rows = {r[0]: (r[1], r[2], r[3], r[6]) for r in tables.key_version_rows()}
    expected = {
        v.version: (v.created_at, v.rotated_at, keyring.status(v.version), v.fingerprint)
        for v in keyring.versions.values()
    }
    found = []
    if current is None or current[0] != keyring.current:
        found.append("the read models name another current key version than the events")
    if rows != expected:
        found.append("key version rows disagree with the keyring's events")
    return found
