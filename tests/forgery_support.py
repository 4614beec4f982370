"""Changing a ledger file the way an attacker with write access but no password would.

Every helper works on a closed ledger through a plain ``sqlite3`` connection, and the
strongest of them redo everything a forger can redo without the master password: the hash
chain (:func:`rehash_from`) and the map of stream heads with its Merkle tree
(:func:`rebuild_heads`), both of which are unkeyed recipes. What a forger cannot redo is a
checkpoint signature, and these tests show that nothing keyledger acts on rests on less.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from ledger import heads
from ledger.chain import event_hash


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


def run_sql(path: Path, *statements: str | tuple[str, tuple[object, ...]]) -> None:
    """Run ``statements`` with the append-only triggers lifted, as a forger set on it would."""
    with closing(sqlite3.connect(path)) as conn:
        with triggers_lifted(conn):
            for statement in statements:
                sql, args = statement if isinstance(statement, tuple) else (statement, ())
                conn.execute(sql, args)
        conn.commit()


def rehash_from(path: Path, seq: int = 1) -> None:
    """Recompute every event hash from ``seq`` on, so the chain verifies again."""
    with closing(sqlite3.connect(path)) as conn:
        with triggers_lifted(conn):
            prev = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq - 1,)).fetchone()
            prev_hash = prev[0] if prev else "0" * 64
            rows = conn.execute(
                "SELECT seq, stream, stream_rev, type, schema_version, occurred_at, actor, "
                "origin, payload FROM events WHERE seq >= ? ORDER BY seq", (seq,)).fetchall()
            for row in rows:
                digest = event_hash(row[0], prev_hash, *row[1:])
                conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?",
                             (prev_hash, digest, row[0]))
                prev_hash = digest
        conn.commit()


def rebuild_heads(path: Path) -> str:
    """Make the streams table and the heads tree agree with the events as they now are,
    with ledger.heads' own recipe; the root a forger would need signed."""
    with closing(sqlite3.connect(path)) as conn:
        leaves: dict[str, heads.Leaf] = {}
        for seq, stream, rev, digest in conn.execute(
                "SELECT seq, stream, stream_rev, hash FROM events ORDER BY stream, stream_rev"):
            previous = leaves.get(stream)
            leaves[stream] = (stream, rev, seq, digest, heads.next_stream_digest(
                previous[4] if previous else heads.STREAM_START, digest))
        conn.execute("DELETE FROM streams")
        conn.executemany(
            "INSERT INTO streams (stream, revision, head_seq, head_hash, digest, bucket) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(*leaf, heads.bucket_of(stream)) for stream, leaf in leaves.items()])
        conn.commit()
    return rebuild_tree(path)


def rebuild_tree(path: Path) -> str:
    """Make the heads tree agree with the streams rows as they now are; its root."""
    with closing(sqlite3.connect(path)) as conn:
        by_bucket: dict[int, list[heads.Leaf]] = {}
        for stream, revision, seq, head_hash, digest in conn.execute(
                "SELECT stream, revision, head_seq, head_hash, digest FROM streams"):
            by_bucket.setdefault(heads.bucket_of(stream), []).append(
                (stream, revision, seq, head_hash, digest))
        root, nodes = heads.recompute(
            {b: heads.bucket_digest(members) for b, members in by_bucket.items()}, {})
        conn.execute("DELETE FROM heads_tree")
        conn.executemany("INSERT INTO heads_tree (node, digest) VALUES (?, ?)", list(nodes.items()))
        conn.commit()
    return root


def forge_everything(path: Path, from_seq: int = 1) -> None:
    """After an edit: the chain rehashed from ``from_seq``, the heads rebuilt, and the
    latest checkpoint moved onto the new head with the new root (its signature cannot be
    redone, so it is kept: the forger's best try)."""
    rehash_from(path, from_seq)
    root = rebuild_heads(path)
    with closing(sqlite3.connect(path)) as conn:
        top, head = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        latest = conn.execute("SELECT max(seq) FROM checkpoints").fetchone()[0]
        with triggers_lifted(conn):
            conn.execute("UPDATE checkpoints SET seq = ?, head_hash = ?, heads_root = ? "
                         "WHERE seq = ?", (top, head, root, latest))
        conn.commit()


def head_seq(path: Path, stream: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT head_seq FROM streams WHERE stream = ?",
                                (stream,)).fetchone()[0])


def seqs_of(path: Path, stream: str) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        return [r[0] for r in conn.execute(
            "SELECT seq FROM events WHERE stream = ? ORDER BY stream_rev", (stream,))]
