"""The hash chain that links every event row to the one before it: pure functions of
the rows' fields. The store walks the rows (:meth:`ledger.store.SQLRecorder.first_broken_link`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

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
