"""The hash chain that links every event row to the one before it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

GENESIS_HASH = "0" * 64
# Built once: json.dumps with options builds a new encoder on every call.
_MATERIAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def event_hash(
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
    """SHA-256 over the row's position, its predecessor's hash and its canonical content.

    The fields are serialised as one JSON array, so no two different rows can produce
    the same input by shifting text between fields.
    """
    material = _MATERIAL.encode(
        [seq, prev_hash, stream, stream_rev, type_name, schema_version, occurred_at, actor, origin,
         payload]
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


# The columns of an event row in the order the hash covers them, then the stored hash.
ChainRow = tuple[int, str, str, int, str, int, str, str, str, str, str]


def first_broken_link(rows: Iterable[ChainRow], prev_hash: str = GENESIS_HASH,
                      expected_seq: int = 1) -> int | None:
    """The seq of the first row whose link, position or hash is wrong; None if all hold.

    ``rows`` are ``(seq, prev_hash, stream, stream_rev, type, schema_version, occurred_at,
    actor, origin, payload, hash)`` tuples in seq order; ``prev_hash`` and
    ``expected_seq`` let a caller check a stretch of the chain. The loop is kept flat:
    it is what ``audit verify`` spends its time on.
    """
    encode, sha256 = _MATERIAL.encode, hashlib.sha256
    for row in rows:
        seq, row_prev = row[0], row[1]
        if seq != expected_seq:
            return expected_seq
        if row_prev != prev_hash:
            return seq
        digest = sha256(encode(row[:10]).encode("utf-8")).hexdigest()
        if digest != row[10]:
            return seq
        prev_hash, expected_seq = digest, expected_seq + 1
    return None
