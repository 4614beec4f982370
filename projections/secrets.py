"""Secret versions: which secret sits on which key version, at which revision."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from functools import singledispatchmethod

from ledger import events as ev
from ledger.crypto import SCHEME_BOUND
from ledger.store import StoredEvent


class SecretProjection:
    """``proj_secrets`` (one row per secret ever written) and ``proj_secret_counts``.

    The counts (live secrets per key version and scheme) are kept by this code as rows
    change, not derived by SQL, so they answer ``report`` without a scan and a row
    edited behind keyledger's back shows up as a disagreement between the two tables.
    """

    name = "secrets"
    tables = ("proj_secrets", "proj_secret_counts")

    def create(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS proj_secrets (
                name TEXT PRIMARY KEY, key_version INTEGER, revision INTEGER NOT NULL,
                ciphertext TEXT, scheme TEXT, updated_at TEXT NOT NULL, updated_seq INTEGER NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0)"""
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS proj_secrets_live ON proj_secrets (deleted, key_version, scheme)"
        )
        conn.execute(
            """CREATE TABLE IF NOT EXISTS proj_secret_counts (
                key_version INTEGER NOT NULL, scheme TEXT NOT NULL, live INTEGER NOT NULL,
                PRIMARY KEY (key_version, scheme))"""
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
        before = conn.execute(
            "SELECT key_version, scheme FROM proj_secrets WHERE name = ? AND deleted = 0", (name,)
        ).fetchone()
        if before is not None:
            _count(conn, before[0], before[1], -1)
        if version is not None and scheme is not None:
            _count(conn, version, scheme, +1)
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


def _count(conn: sqlite3.Connection, version: int, scheme: str, delta: int) -> None:
    conn.execute(
        """INSERT INTO proj_secret_counts (key_version, scheme, live) VALUES (?, ?, ?)
           ON CONFLICT (key_version, scheme) DO UPDATE SET live = live + excluded.live""",
        (version, scheme, delta),
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


def live_counts(conn: sqlite3.Connection) -> dict[int, int]:
    """Live secrets per key version, from the maintained counts."""
    rows = conn.execute(
        """SELECT key_version, sum(live) FROM proj_secret_counts GROUP BY key_version
           HAVING sum(live) != 0 ORDER BY key_version"""
    )
    return {version: int(live) for version, live in rows}


def distribution_report(conn: sqlite3.Connection, current: int | None) -> DistributionReport:
    distribution = live_counts(conn)
    row = conn.execute(
        "SELECT live FROM proj_secret_counts WHERE key_version = ? AND scheme = ?",
        (current, SCHEME_BOUND),
    ).fetchone()
    total = sum(distribution.values())
    return DistributionReport(total, current, total - (row[0] if row else 0), distribution)


def secret_problems(conn: sqlite3.Connection, *, deep: bool = False) -> list[str]:
    """Ways ``proj_secrets`` disagrees with its counts, or (``deep``) with the events.

    The quick check compares the rows with the counts kept beside them and each row's
    name, revision and seq with its stream's head (index scans). The deep check also
    reads every row's event and compares version, scheme and ciphertext.
    """
    found = []
    counted = {
        (v, s): n for v, s, n in conn.execute(
            "SELECT key_version, scheme, live FROM proj_secret_counts WHERE live != 0"
        )
    }
    actual = {
        (v, s): n for v, s, n in conn.execute(
            """SELECT key_version, scheme, count(*) FROM proj_secrets WHERE deleted = 0
               GROUP BY key_version, scheme"""
        )
    }
    if counted != actual:
        found.append("secret rows disagree with their per-version counts")
    unmatched = conn.execute(
        """SELECT count(*) FROM proj_secrets p LEFT JOIN streams s
           ON s.stream = 'secret:' || p.name AND s.revision = p.revision AND s.head_seq = p.updated_seq
           WHERE s.stream IS NULL"""
    ).fetchone()[0]
    if unmatched:
        found.append(f"{unmatched} secret row(s) do not match their stream's latest event")
    if deep:
        bad = conn.execute(
            """SELECT p.name FROM proj_secrets p
               LEFT JOIN streams s ON s.stream = 'secret:' || p.name
               LEFT JOIN events e ON e.seq = p.updated_seq
               WHERE s.head_seq IS NOT p.updated_seq OR e.seq IS NULL
                  OR e.stream_rev IS NOT p.revision
                  OR (p.deleted = 1) != (e.type = 'SecretDeleted')
                  OR (p.deleted = 0 AND (
                        json_extract(e.payload, '$.ciphertext') IS NOT p.ciphertext
                     OR json_extract(e.payload, '$.scheme') IS NOT p.scheme
                     OR coalesce(json_extract(e.payload, '$.to_version'),
                                 json_extract(e.payload, '$.key_version')) IS NOT p.key_version))
               LIMIT 3"""
        ).fetchall()
        if bad:
            names = ", ".join(repr(r[0]) for r in bad)
            found.append(f"secret rows disagree with their events (first: {names})")
    return found
