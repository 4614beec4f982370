"""Secret versions: which secret sits on which key version, at which revision."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from functools import singledispatchmethod

from ledger import events as ev
from ledger.crypto import SCHEME_BOUND
from ledger.store import StoredEvent


class SecretProjection:
    name = "secrets"
    tables = ("proj_secrets",)

    def create(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS proj_secrets (
                name TEXT PRIMARY KEY, key_version INTEGER, revision INTEGER NOT NULL,
                ciphertext TEXT, scheme TEXT, updated_at TEXT NOT NULL, updated_seq INTEGER NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0)"""
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS proj_secrets_version ON proj_secrets (key_version, deleted)"
        )

    @singledispatchmethod
    def apply(self, event: ev.DomainEvent, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        pass

    @apply.register
    def _(self, event: ev.SecretWritten, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        self._upsert(conn, stored, event.name, event.key_version, event.ciphertext, event.scheme)

    @apply.register
    def _(self, event: ev.SecretImported, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        self._upsert(conn, stored, event.name, event.key_version, event.ciphertext, event.scheme)

    @apply.register
    def _(self, event: ev.SecretMigrated, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        self._upsert(conn, stored, event.name, event.to_version, event.ciphertext, event.scheme)

    @apply.register
    def _(self, event: ev.SecretDeleted, stored: StoredEvent, conn: sqlite3.Connection) -> None:
        self._upsert(conn, stored, event.name, None, None, None)

    @staticmethod
    def _upsert(
        conn: sqlite3.Connection, stored: StoredEvent, name: str, version: int | None,
        ciphertext: str | None, scheme: str | None,
    ) -> None:
        conn.execute(
            """INSERT INTO proj_secrets
               (name, key_version, revision, ciphertext, scheme, updated_at, updated_seq, deleted)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET key_version = excluded.key_version,
                 revision = excluded.revision, ciphertext = excluded.ciphertext,
                 scheme = excluded.scheme, updated_at = excluded.updated_at,
                 updated_seq = excluded.updated_seq, deleted = excluded.deleted""",
            (name, version, stored.stream_rev, ciphertext, scheme, stored.occurred_at, stored.seq,
             int(ciphertext is None)),
        )


@dataclass(frozen=True, slots=True)
class SecretRow:
    name: str
    key_version: int
    revision: int
    scheme: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class DistributionReport:
    total_secrets: int
    current_version: int | None
    needing_migration: int
    distribution: dict[int, int] = field(default_factory=dict)


def list_secrets(conn: sqlite3.Connection) -> list[SecretRow]:
    rows = conn.execute(
        """SELECT name, key_version, revision, scheme, updated_at FROM proj_secrets
           WHERE deleted = 0 ORDER BY name"""
    )
    return [SecretRow(*row) for row in rows]


def distribution_report(conn: sqlite3.Connection, current: int | None) -> DistributionReport:
    distribution = dict(
        conn.execute(
            """SELECT key_version, count(*) FROM proj_secrets WHERE deleted = 0
               GROUP BY key_version ORDER BY key_version"""
        ).fetchall()
    )
    up_to_date = conn.execute(
        "SELECT count(*) FROM proj_secrets WHERE deleted = 0 AND key_version = ? AND scheme = ?",
        (current, SCHEME_BOUND),
    ).fetchone()[0]
    total = sum(distribution.values())
    return DistributionReport(total, current, total - up_to_date, distribution)
