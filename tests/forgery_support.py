"""Changing a ledger the way an attacker with write access but no password would.

Every helper works on a closed ledger (a file, or the ``postgresql://`` URL of a ledger's
schema) through a plain connection, not keyledger's, and the strongest of them redo
everything a forger can redo without the master password: the hash chain
(:func:`rehash_from`) and the map of stream heads with its Merkle tree
(:func:`rebuild_heads`), both of which are unkeyed recipes. What a forger cannot redo is a
checkpoint signature, and these tests show that nothing keyledger acts on rests on less.

On SQLite the forger drops the append-only triggers and puts them back exactly as they
were; on PostgreSQL, as the server's superuser, their session skips every trigger
(``session_replication_role = replica``), which leaves no trace in the catalog either.
Statements use ``?`` placeholders on both.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from ledger import heads
from ledger.chain import event_hash
from ledger.locations import is_server

Target = Path | str
Statement = str | tuple[str, tuple[object, ...]]


def _driver_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.IntegrityError,), (sqlite3.Error,)
    return ((sqlite3.IntegrityError, psycopg.errors.IntegrityError, psycopg.errors.DataError),
            (sqlite3.Error, psycopg.Error))


#: What a table's own constraints raise at a forger's edit (which then changes nothing),
#: and any database error, on either backend.
CONSTRAINT_ERRORS, DATABASE_ERRORS = _driver_errors()


class Forger:
    """A plain connection with the append-only triggers out of the way; ``?`` placeholders."""

    def __init__(self, conn: Any, server: bool) -> None:
        self._conn = conn
        self._server = server

    def execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        if self._server:
            return self._conn.execute(sql.replace("?", "%s"), tuple(args) or None)
        return self._conn.execute(sql, tuple(args))

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if self._server:
            self._conn.cursor().executemany(sql.replace("?", "%s"), rows)
        else:
            self._conn.executemany(sql, rows)


@contextmanager
def forger(target: Target, *, lifted: bool = True) -> Iterator[Forger]:
    """A forger's connection to the ledger at ``target``, committed on leaving. On SQLite,
    ``lifted=False`` leaves the triggers in place (a change to tables they do not guard,
    or a read, then leaves the schema cookie as it was)."""
    if is_server(str(target)):
        from tamper_support import server_connection

        with server_connection(str(target)) as conn:
            conn.execute("SET LOCAL session_replication_role = replica")
            yield Forger(conn, True)
        return
    with closing(sqlite3.connect(target)) as conn:
        if lifted:
            with triggers_lifted(conn):
                yield Forger(conn, False)
        else:
            yield Forger(conn, False)
        conn.commit()


@contextmanager
def triggers_lifted(conn: sqlite3.Connection) -> Iterator[None]:
    """The append-only triggers dropped for the block and put back exactly as they were
    after it, as a forger covering their tracks would (``audit verify`` names a trigger
    that is missing or altered: dropping them is a fault of its own, see
    ``tests/test_triggers.py``). The caller commits."""
    kept = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
        "('events_no_update', 'events_no_delete', 'checkpoints_no_update', "
        "'checkpoints_no_delete')").fetchall()
    for name, _ in kept:
        conn.execute(f"DROP TRIGGER {name}")
    yield
    for _, sql in kept:
        conn.execute(sql)


def run_sql(target: Target, *statements: Statement) -> None:
    """Run ``statements`` with the append-only triggers out of the way, as a forger set on
    it would."""
    with forger(target) as conn:
        for statement in statements:
            sql, args = statement if isinstance(statement, tuple) else (statement, ())
            conn.execute(sql, args)


def edit(target: Target, *statements: Statement) -> None:
    """Run ``statements`` on tables the append-only triggers do not guard (the streams,
    the heads tree), leaving every trigger in place: the one-UPDATE attack."""
    with forger(target, lifted=False) as conn:
        for statement in statements:
            sql, args = statement if isinstance(statement, tuple) else (statement, ())
            conn.execute(sql, args)


def rows(target: Target, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """What ``sql`` reads on a plain connection."""
    with forger(target, lifted=False) as conn:
        return [tuple(row) for row in conn.execute(sql, args).fetchall()]


def duplicate(source: Target, to: Target) -> Target:
    """A copy of the (untouched) ledger at ``source`` at ``to``: the file with its WAL, or
    the schema copied by ``keyledger copy``; ``to``."""
    if is_server(str(source)):
        from ledger.copying import copy_ledger

        copy_ledger(source, to)
        return to
    shutil.copy(source, to)
    for suffix in ("-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", f"{to}{suffix}")
    return to


def rehash_from(target: Target, seq: int = 1) -> None:
    """Recompute every event hash from ``seq`` on, so the chain verifies again."""
    with forger(target) as conn:
        prev = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq - 1,)).fetchone()
        prev_hash = prev[0] if prev else "0" * 64
        found = conn.execute(
            "SELECT seq, stream, stream_rev, type, schema_version, occurred_at, actor, "
            "origin, payload FROM events WHERE seq >= ? ORDER BY seq", (seq,)).fetchall()
        for row in found:
            digest = event_hash(row[0], prev_hash, *row[1:])
            conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?",
                         (prev_hash, digest, row[0]))
            prev_hash = digest


def rebuild_heads(target: Target) -> str:
    """Make the streams table and the heads tree agree with the events as they now are,
    with ledger.heads' own recipe; the root a forger would need signed."""
    with forger(target, lifted=False) as conn:
        leaves: dict[str, heads.Leaf] = {}
        for seq, stream, rev, digest in conn.execute(
                "SELECT seq, stream, stream_rev, hash FROM events ORDER BY stream, stream_rev"
        ).fetchall():
            previous = leaves.get(stream)
            leaves[stream] = (stream, rev, seq, digest, heads.next_stream_digest(
                previous[4] if previous else heads.STREAM_START, digest))
        conn.execute("DELETE FROM streams")
        conn.executemany(
            "INSERT INTO streams (stream, revision, head_seq, head_hash, digest, bucket) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(*leaf, heads.bucket_of(stream)) for stream, leaf in leaves.items()])
    return rebuild_tree(target)


def rebuild_tree(target: Target) -> str:
    """Make the heads tree agree with the streams rows as they now are; its root."""
    with forger(target, lifted=False) as conn:
        by_bucket: dict[int, list[heads.Leaf]] = {}
        for stream, revision, seq, head_hash, digest in conn.execute(
                "SELECT stream, revision, head_seq, head_hash, digest FROM streams").fetchall():
            by_bucket.setdefault(heads.bucket_of(stream), []).append(
                (stream, revision, seq, head_hash, digest))
        root, nodes = heads.recompute(
            {b: heads.bucket_digest(members) for b, members in by_bucket.items()}, {})
        conn.execute("DELETE FROM heads_tree")
        conn.executemany("INSERT INTO heads_tree (node, digest) VALUES (?, ?)", list(nodes.items()))
    return root


def forge_everything(target: Target, from_seq: int = 1) -> None:
    """After an edit: the chain rehashed from ``from_seq``, the heads rebuilt, and the
    latest checkpoint moved onto the new head with the new root (its signature cannot be
    redone, so it is kept: the forger's best try)."""
    rehash_from(target, from_seq)
    root = rebuild_heads(target)
    top, head = rows(target, "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")[0]
    latest = rows(target, "SELECT max(seq) FROM checkpoints")[0][0]
    with forger(target) as conn:
        conn.execute("UPDATE checkpoints SET seq = ?, head_hash = ?, heads_root = ? "
                     "WHERE seq = ?", (top, head, root, latest))


def head_seq(target: Target, stream: str) -> int:
    return int(rows(target, "SELECT head_seq FROM streams WHERE stream = ?", (stream,))[0][0])


def seqs_of(target: Target, stream: str) -> list[int]:
    return [r[0] for r in rows(
        target, "SELECT seq FROM events WHERE stream = ? ORDER BY stream_rev", (stream,))]
