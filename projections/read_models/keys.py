"""Key metadata: every key version, when it was created and rotated, what it encrypted."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import singledispatchmethod
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.domain import ACTIVE, DECRYPT_ONLY, DESTROYED, RETIRED, SCHEDULED, KeyringState, version_range
from ledger.events import StoredEvent
from projections.read_models.secrets import live_counts

if TYPE_CHECKING:
    from projections.read_models.runner import Applied


class KeyProjection:
    name = "keys"
    tables = ("proj_key_versions", "proj_keyring")

    def create(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS proj_key_versions (
                version INTEGER PRIMARY KEY, created_at TEXT NOT NULL, rotated_at TEXT,
                status TEXT NOT NULL, origin TEXT NOT NULL, fingerprint TEXT NOT NULL,
                algorithm TEXT NOT NULL, encryptions INTEGER NOT NULL DEFAULT 0,
                destroy_after TEXT, destroyed_at TEXT)"""
        )
        conn.execute(
            """CREATE TABLE IF NOT EXISTS proj_keyring (
                id INTEGER PRIMARY KEY CHECK (id = 1), current_version INTEGER,
                kdf_iterations INTEGER, rotations INTEGER NOT NULL DEFAULT 0,
                rejections INTEGER NOT NULL DEFAULT 0)"""
        )
        conn.execute("INSERT OR IGNORE INTO proj_keyring (id) VALUES (1)")

    @singledispatchmethod
    def apply(self, event: ev.DomainEvent, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        pass

    @apply.register
    def _(self, event: ev.LedgerInitialized, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE proj_keyring SET kdf_iterations = ?", (event.kdf_iterations,))

    @apply.register
    def _(self, event: ev.KeyVersionCreated, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        conn.execute(
            """INSERT INTO proj_key_versions
               (version, created_at, status, origin, fingerprint, algorithm)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (event.version, stored.occurred_at, DECRYPT_ONLY, event.origin, event.fingerprint,
             event.algorithm),
        )

    @apply.register
    def _(self, event: ev.KeyRotated, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        if event.from_version is not None:
            conn.execute(
                "UPDATE proj_key_versions SET rotated_at = ?, status = ? WHERE version = ?",
                (stored.occurred_at, DECRYPT_ONLY, event.from_version),
            )
        conn.execute(
            "UPDATE proj_key_versions SET status = ? WHERE version = ?", (ACTIVE, event.to_version)
        )
        conn.execute(
            "UPDATE proj_keyring SET current_version = ?, rotations = rotations + ?",
            (event.to_version, 0 if event.from_version is None else 1),
        )

    @apply.register
    def _(self, event: ev.KeyVersionRetired, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        _set(conn, event.version, status=RETIRED)

    @apply.register
    def _(self, event: ev.KeyVersionReinstated, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        _set(conn, event.version, status=DECRYPT_ONLY)  # the current version is never retired

    @apply.register
    def _(self, event: ev.KeyDestructionScheduled, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        _set(conn, event.version, status=SCHEDULED, destroy_after=event.not_before)

    @apply.register
    def _(self, event: ev.KeyDestructionCancelled, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        _set(conn, event.version, status=RETIRED, destroy_after=None)

    @apply.register
    def _(self, event: ev.KeyVersionDestroyed, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        _set(conn, event.version, status=DESTROYED, destroy_after=None, destroyed_at=stored.occurred_at)

    @apply.register
    def _(self, event: ev.KeyRotationRejected, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE proj_keyring SET rejections = rejections + 1")

    @apply.register
    def _(self, event: ev.MasterKeyRewrapped, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE proj_keyring SET kdf_iterations = ?", (event.kdf_iterations,))
        conn.executemany(
            "UPDATE proj_key_versions SET fingerprint = ? WHERE version = ?",
            [(fp, int(v)) for v, fp in event.fingerprints.items()],
        )

    def apply_batch(self, batch: Sequence[Applied], conn: sqlite3.Connection) -> None:
        """Key events one by one; encryptions per version (every secret event) summed and
        added at the end, since nothing in between reads them."""
        encryptions: Counter[int] = Counter()
        for event, stored in batch:
            if isinstance(event, ev.SecretMigrated):
                encryptions[event.to_version] += 1
            elif isinstance(event, ev.SecretWritten | ev.SecretImported):
                encryptions[event.key_version] += 1
            elif not isinstance(event, ev.SecretDeleted | ev.SecretRead):
                self.apply(event, stored, conn)
        conn.executemany(
            "UPDATE proj_key_versions SET encryptions = encryptions + ? WHERE version = ?",
            [(count, version) for version, count in encryptions.items()],
        )


def _set(conn: sqlite3.Connection, version: int, **columns: object) -> None:
    assignments = ", ".join(f"{name} = ?" for name in columns)  # names are ours, never input
    conn.execute(f"UPDATE proj_key_versions SET {assignments} WHERE version = ?",
                 (*columns.values(), version))


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


def keyring_info(conn: sqlite3.Connection) -> KeyringInfo:
    current, iterations = conn.execute(
        "SELECT current_version, kdf_iterations FROM proj_keyring WHERE id = 1"
    ).fetchone()
    per_version = live_counts(conn)
    rows = conn.execute(
        """SELECT version, created_at, rotated_at, status, origin, algorithm, fingerprint,
                  encryptions, destroy_after, destroyed_at FROM proj_key_versions ORDER BY version"""
    ).fetchall()
    versions = [
        KeyVersionInfo(
            version=r[0], created_at=r[1], rotated_at=r[2], status=r[3], range=version_range(r[0]),
            origin=r[4], algorithm=r[5], fingerprint=r[6], encryptions=r[7],
            secrets=per_version.get(r[0], 0), destroy_after=r[8], destroyed_at=r[9],
        )
        for r in rows
    ]
    return KeyringInfo(current, iterations, versions)


def keyring_problems(conn: sqlite3.Connection, keyring: KeyringState) -> list[str]:
    """Ways the key read models disagree with the keyring stream folded afresh (small)."""
    current = conn.execute("SELECT current_version FROM proj_keyring WHERE id = 1").fetchone()
    rows = {
        r[0]: (r[1], r[2], r[3], r[4])
        for r in conn.execute(
            "SELECT version, created_at, rotated_at, status, fingerprint FROM proj_key_versions"
        )
    }
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
