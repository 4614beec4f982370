"""Secret versions: which secret sits on which key version, at which revision."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.domain import held_under, needs_migration

if TYPE_CHECKING:
    from projections.read_models.runner import Applied


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
                scheme TEXT, updated_at TEXT NOT NULL, updated_seq INTEGER NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0)"""
        )
        conn.execute(
            """CREATE TABLE IF NOT EXISTS proj_secret_counts (
                key_version INTEGER NOT NULL, scheme TEXT NOT NULL, live INTEGER NOT NULL,
                PRIMARY KEY (key_version, scheme))"""
        )

    def apply_batch(self, batch: Sequence[Applied], conn: sqlite3.Connection) -> None:
        """Write one row per secret event and move the per-version counts, in a few
        statements: the rows' previous states are read with one query per 500 names, then
        the rows that exist are updated and the new ones inserted. (The ciphertext stays in
        the events, where ``get`` reads it: a copy here would be one more thing to trust.)"""
        # name, key_version, revision, scheme, updated_at, updated_seq, deleted
        changes: dict[str, tuple[int | None, int, str | None, str, int, int]] = {}
        previous: dict[str, tuple[int, str] | None] = {}
        known = _stored_states(conn, {event.name for event, _ in batch
                                      if isinstance(event, _SECRET_EVENTS)})
        deltas: Counter[tuple[int, str]] = Counter()
        for event, stored in batch:
            if not isinstance(event, _SECRET_EVENTS):
                continue
            after = held_under(event)  # None: deleted
            name = event.name
            before = previous[name] if name in previous else known.get(name)
            if before is not None:
                deltas[before] -= 1
            if after is not None:
                deltas[after] += 1
            previous[name] = after
            version, scheme = after if after is not None else (None, None)
            changes[name] = (version, stored.stream_rev, scheme, stored.occurred_at, stored.seq,
                             int(after is None))
        if not changes:
            return
        conn.executemany(
            """UPDATE proj_secrets SET key_version = ?, revision = ?, scheme = ?, updated_at = ?,
               updated_seq = ?, deleted = ? WHERE name = ?""",
            [(*row, name) for name, row in changes.items() if name in known],
        )
        conn.executemany(
            """INSERT INTO proj_secrets
               (key_version, revision, scheme, updated_at, updated_seq, deleted, name)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [(*row, name) for name, row in changes.items() if name not in known],
        )
        conn.executemany(
            """INSERT INTO proj_secret_counts (key_version, scheme, live) VALUES (?, ?, ?)
               ON CONFLICT (key_version, scheme) DO UPDATE SET live = live + excluded.live""",
            [(version, scheme, delta) for (version, scheme), delta in deltas.items() if delta],
        )


_SECRET_EVENTS = (ev.SecretMigrated, ev.SecretWritten, ev.SecretImported, ev.SecretDeleted)


def _stored_states(
    conn: sqlite3.Connection, names: set[str]
) -> dict[str, tuple[int, str] | None]:
    """``name -> (key_version, scheme)`` of those of ``names`` that have a row: None for a
    deleted secret's row."""
    found: dict[str, tuple[int, str] | None] = {}
    pending = list(names)
    for i in range(0, len(pending), 500):
        chunk = pending[i:i + 500]
        rows = conn.execute(
            f"""SELECT name, key_version, scheme, deleted FROM proj_secrets
                WHERE name IN ({", ".join("?" * len(chunk))})""",
            chunk,
        )
        found.update((name, None if deleted else (version, scheme))
                     for name, version, scheme, deleted in rows)
    return found


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


def list_secrets(conn: sqlite3.Connection, limit: int | None = None) -> list[SecretRow]:
    """Live secrets in name order; the first ``limit`` of them when given."""
    rows = conn.execute(  # walks the name key, so it stops at ``limit``
        """SELECT name, key_version, revision, scheme, updated_at FROM proj_secrets
           WHERE deleted = 0 ORDER BY name LIMIT ?""",
        (-1 if limit is None else limit,),
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
    distribution: dict[int, int] = {}
    needing = 0
    for version, scheme, live in conn.execute(
        "SELECT key_version, scheme, live FROM proj_secret_counts WHERE live != 0 ORDER BY key_version"
    ):
        distribution[version] = distribution.get(version, 0) + live
        needing += live if needs_migration(version, scheme, current) else 0
    return DistributionReport(sum(distribution.values()), current, needing, distribution)


def secret_problems(conn: sqlite3.Connection, *, names: Collection[str] | None = None) -> list[str]:
    """Ways ``proj_secrets`` disagrees with the events: every row (``names`` None), or only
    the rows of ``names``.

    Every row: the rows against the counts kept beside them, each row's revision and seq
    against its stream's head, then each row against its event (version, scheme,
    time). Time grows with the secrets; ``names`` keeps it to a sample.
    """
    found = []
    if names is None:
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
        rows_sql, params = "proj_secrets p", []
    else:
        rows_sql = "json_each(?) AS wanted CROSS JOIN proj_secrets p ON p.name = wanted.value"
        params = [json.dumps(sorted(names))]
    bad = conn.execute(
        f"""SELECT p.name FROM {rows_sql}
           LEFT JOIN streams s ON s.stream = 'secret:' || p.name
           LEFT JOIN events e ON e.seq = p.updated_seq
           WHERE s.head_seq IS NOT p.updated_seq OR s.revision IS NOT p.revision OR e.seq IS NULL
              OR e.stream IS NOT 'secret:' || p.name OR e.stream_rev IS NOT p.revision
              OR e.occurred_at IS NOT p.updated_at
              OR (p.deleted = 1) != (e.type = 'SecretDeleted')
              OR (p.deleted = 0 AND (
                    json_extract(e.payload, '$.scheme') IS NOT p.scheme
                 OR coalesce(json_extract(e.payload, '$.to_version'),
                             json_extract(e.payload, '$.key_version')) IS NOT p.key_version))
           LIMIT 3""",
        params,
    ).fetchall()
    if bad:
        shown = ", ".join(repr(r[0]) for r in bad)
        found.append(f"secret rows disagree with their events (first: {shown})")
    return found
