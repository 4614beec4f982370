"""The hash chain that links every event row to the one before it.

This module imports nothing from keyledger, so that ``audit verify`` can run it as a
script in a second, lean process to check the later half of a long chain::

    python ledger/chain.py LEDGER_FILE AFTER_SEQ PREV_HASH   # prints the first bad seq or 0
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterable, Iterator

GENESIS_HASH = "0" * 64
# A JSON string literal, non-ASCII kept (what json.dumps(..., ensure_ascii=False) writes
# for a str); json's C implementation when there is one.
_string = json.encoder.encode_basestring


def hash_material(
    seq: int,
    prev_hash: str,
    stream: str,
    stream_rev: int,
    type_name: str,
    schema_version: int,
    occurred_at: str,
    actor: str,
    origin: str,
    payload: str,
) -> str:
    """The text an event's hash covers: its fields as one compact JSON array.

    Byte for byte ``json.dumps([seq, prev_hash, ...], ensure_ascii=False,
    separators=(",", ":"))`` (a property test holds it to that), built directly: the list
    encoder costs more than the hash. A value of the wrong type raises TypeError or
    ValueError instead of being encoded as something else.
    """
    return (
        f"[{seq:d},{_string(prev_hash)},{_string(stream)},{stream_rev:d},{_string(type_name)},"
        f"{schema_version:d},{_string(occurred_at)},{_string(actor)},{_string(origin)},"
        f"{_string(payload)}]"
    )


# The fields an event's hash covers, in the order :func:`hash_material` takes them.
HashFields = tuple[int, str, str, int, str, int, str, str, str, str]


def event_hash(*fields: *HashFields) -> str:
    """SHA-256 over the row's position, its predecessor's hash and its canonical content
    (the fields of :func:`hash_material`, in its order).

    The fields are serialised as one JSON array (:func:`hash_material`), so no two
    different rows can produce the same input by shifting text between fields.
    """
    return hashlib.sha256(hash_material(*fields).encode("utf-8")).hexdigest()


# The columns of an event row in the order the hash covers them, then the stored hash.
ChainRow = tuple[int, str, str, int, str, int, str, str, str, str, str]
CHAIN_ROWS_SQL = (
    "SELECT seq, prev_hash, stream, stream_rev, type, schema_version, occurred_at, actor, "
    "origin, payload, hash FROM events WHERE seq > ? AND seq <= ? ORDER BY seq"
)


def chain_rows(conn: sqlite3.Connection, after_seq: int = 0,
               last_seq: int | None = None) -> Iterator[ChainRow]:
    """Rows ``after_seq + 1 .. last_seq`` as :data:`ChainRow` tuples, streamed."""
    cursor = conn.execute(CHAIN_ROWS_SQL, (after_seq, last_seq if last_seq is not None else 2**62))
    while batch := cursor.fetchmany(5000):
        yield from batch


# Each row's hash material written by SQLite: its json_array() escapes strings as
# hash_material does (quote, backslash, control characters; non-ASCII kept), so the
# text is the same byte for byte, and Python only hashes it. A property test holds the
# two to each other; a row where they differ is decided by hash_material all the same.
MATERIAL_SQL = (
    "SELECT seq, prev_hash, hash, json_array(seq, prev_hash, stream, stream_rev, type, "
    "schema_version, occurred_at, actor, origin, payload) "
    "FROM events WHERE seq > ? AND seq <= ? ORDER BY seq"
)


def first_broken_link_in(conn: sqlite3.Connection, after_seq: int = 0,
                         last_seq: int | None = None, prev_hash: str = GENESIS_HASH) -> int | None:
    """:func:`first_broken_link` over rows ``after_seq + 1 .. last_seq`` of ``conn``, with
    SQLite building each row's hash material (about a third faster). A row whose
    material does not hash to its stored hash is checked again, with the rows after it,
    by :func:`hash_material` before it is called broken."""
    end = last_seq if last_seq is not None else 2**62
    try:
        cursor = conn.execute(MATERIAL_SQL, (after_seq, end))
    except sqlite3.OperationalError:  # an SQLite built without its JSON functions
        return first_broken_link(chain_rows(conn, after_seq, last_seq), prev_hash, after_seq + 1)
    sha256, expected = hashlib.sha256, after_seq + 1
    while batch := cursor.fetchmany(5000):
        for seq, row_prev, stored, material in batch:
            if seq != expected:
                return expected
            if row_prev != prev_hash:
                return expected
            if sha256(material.encode("utf-8")).hexdigest() != stored:
                return first_broken_link(chain_rows(conn, seq - 1, last_seq), prev_hash, expected)
            prev_hash, expected = stored, expected + 1
    return None


def first_broken_link(rows: Iterable[ChainRow], prev_hash: str = GENESIS_HASH,
                      expected_seq: int = 1) -> int | None:
    """The seq of the first row whose link, position or hash is wrong; None if all hold.

    ``rows`` are ``(seq, prev_hash, stream, stream_rev, type, schema_version, occurred_at,
    actor, origin, payload, hash)`` tuples in seq order; ``prev_hash`` and
    ``expected_seq`` let a caller check a stretch of the chain. The loop is kept flat:
    it is what ``audit verify`` spends its time on.
    """
    material, sha256 = hash_material, hashlib.sha256
    for row in rows:
        seq, row_prev = row[0], row[1]
        if seq != expected_seq:
            return expected_seq
        if row_prev != prev_hash:
            return seq
        try:
            digest = sha256(material(*row[:10]).encode("utf-8")).hexdigest()
        except (TypeError, ValueError):  # a column holding another type than keyledger writes
            return seq
        if digest != row[10]:
            return seq
        prev_hash, expected_seq = digest, expected_seq + 1
    return None


def _main(argv: list[str]) -> int:
    """Check the chain after ``AFTER_SEQ`` from ``PREV_HASH``; print the first bad seq (0: none)."""
    path, after, prev_hash = argv[0], int(argv[1]), argv[2]
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA query_only = ON")
        bad = first_broken_link_in(conn, after, prev_hash=prev_hash)
    finally:
        conn.close()
    print(bad or 0)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
