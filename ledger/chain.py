"""The hash chain that links every event row to the one before it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.store import StoredEvent

GENESIS_HASH = "0" * 64


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
    material = json.dumps(
        [seq, prev_hash, stream, stream_rev, type_name, schema_version, occurred_at, actor, origin,
         payload],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def first_broken_link(rows: Iterable[StoredEvent], prev_hash: str = GENESIS_HASH,
                      expected_seq: int = 1) -> int | None:
    """The seq of the first row whose link, position or hash is wrong; None if all hold.

    ``prev_hash`` and ``expected_seq`` let a caller check a tail of the chain.
    """
    for row in rows:
        if row.seq != expected_seq or row.prev_hash != prev_hash:
            return expected_seq if row.seq != expected_seq else row.seq
        digest = event_hash(row.seq, row.prev_hash, row.stream, row.stream_rev, row.type,
                            row.schema_version, row.occurred_at, row.actor, row.origin, row.payload)
        if digest != row.hash:
            return row.seq
        prev_hash, expected_seq = digest, expected_seq + 1
    return None
