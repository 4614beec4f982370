"""The fast serialisation path for flat events writes exactly what pydantic's dump would."""

from __future__ import annotations

import json
import sqlite3
import typing
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import chain
from ledger import events as ev
from ledger import store_sqlite as store

TEXT = st.text(max_size=20)  # any code point: quotes, backslashes, control and non-ASCII


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # a bounded number (ev.Int64)
        return strategy_for(typing.get_args(annotation)[0])
    if origin is Literal:
        return st.sampled_from(typing.get_args(annotation))
    if origin is not None:  # a union such as ``str | None``
        return st.one_of(*(strategy_for(a) for a in typing.get_args(annotation)))
    return {str: TEXT, int: st.integers(0, 2**40), bool: st.booleans(),
            float: st.floats(allow_nan=False, allow_infinity=False), type(None): st.none()}[annotation]


FLAT = sorted(ev._FLAT_EVENTS, key=lambda cls: cls.__name__)
EVENTS = st.sampled_from(FLAT).flatmap(lambda cls: st.fixed_dictionaries(
    {name: strategy_for(info.annotation) for name, info in cls.model_fields.items()}
).map(lambda fields: cls.model_validate(fields)))


@given(EVENTS)
def test_flat_payload_equals_the_pydantic_dump(event: ev.DomainEvent) -> None:
    """For every flat event type, the payload text is byte-identical to pydantic's JSON dump,
    and it reads back as the same event."""
    type_name, version, payload = ev.to_payload(event)
    assert payload == ev.canonical_json(event.model_dump(mode="json"))
    assert ev.from_payload(type_name, version, payload) == event


def test_secret_events_take_the_fast_path() -> None:
    """The hot events (secret writes, imports, migrations) are among the flat ones."""
    assert {ev.SecretWritten, ev.SecretImported, ev.SecretMigrated, ev.SecretRead} <= ev._FLAT_EVENTS
    assert ev.MigrationCompleted not in ev._FLAT_EVENTS


ANY_TEXT = st.text(max_size=60)  # quotes, backslashes, control characters, non-ASCII
INTS = st.integers(-(2**63), 2**63 - 1)


@given(st.tuples(INTS, ANY_TEXT, ANY_TEXT, INTS, ANY_TEXT, INTS, ANY_TEXT, ANY_TEXT, ANY_TEXT, ANY_TEXT))
def test_hash_material_is_the_compact_json_array(fields: tuple[Any, ...]) -> None:
    """The hash covers exactly json.dumps(fields, ensure_ascii=False, separators=(",", ":"))."""
    expected = json.dumps(list(fields), ensure_ascii=False, separators=(",", ":"))
    assert chain.hash_material(*fields) == expected


@given(st.integers(0, 9), st.one_of(st.text(max_size=3), st.floats(), st.none(), st.binary(max_size=3)))
def test_a_column_of_another_type_breaks_the_link(position: int, value: Any) -> None:
    """A row whose int column holds text (or a text column a number, NULL or bytes) is never
    hashed as if it held the right type: the chain check reports it."""
    row: list[Any] = [1, chain.GENESIS_HASH, "s", 1, "T", 1, "t", "a", "o", "{}"]
    row.append(chain.event_hash(*row))
    if isinstance(value, str) and position not in (0, 3, 5):
        value = 1.5  # a str in a str column is no type change
    row[position] = value
    assert chain.first_broken_link([tuple(row)]) == 1


STORED_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@given(st.tuples(INTS, STORED_TEXT, STORED_TEXT, INTS, STORED_TEXT, INTS, STORED_TEXT,
                 STORED_TEXT, STORED_TEXT, STORED_TEXT))
def test_sqlite_writes_the_same_hash_material(fields: tuple[Any, ...]) -> None:
    """``audit verify`` lets SQLite's json_array() write the material: the same text as
    hash_material for any values a row can hold (SQLite stores no lone surrogates)."""
    conn = sqlite3.connect(":memory:")
    (material,) = conn.execute(f"SELECT json_array({', '.join('?' * 10)})", fields).fetchone()
    conn.close()
    assert material == chain.hash_material(*fields)


COLUMNS = ("seq INTEGER PRIMARY KEY, prev_hash, stream, stream_rev, type, schema_version, "
           "occurred_at, actor, origin, payload, hash")


def events_table(rows: int) -> sqlite3.Connection:
    """An in-memory ``events`` table of ``rows`` well-chained rows (every column untyped,
    so a test may store any type in it)."""
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE TABLE events ({COLUMNS})")
    prev = chain.GENESIS_HASH
    for seq in range(1, rows + 1):
        row = [seq, prev, f"secret:s{seq}", 1, "SecretWritten", 1, "2026-11-28T00:00:00Z",
               "ops@host", "cli", '{"v":"é\\n\\u0001"}']
        prev = chain.event_hash(*row)
        conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)", (*row, prev))
    return conn


@pytest.mark.parametrize("material_sql", [
    store.MATERIAL_SQL,  # SQLite writes the material
    store.MATERIAL_SQL.replace("json_array(", "'x' || json_array("),  # a text of its own: checked again
    "SELECT no_such_function()",  # an SQLite without JSON functions: the Python walk
], ids=["sqlite", "differs", "unavailable"])
def test_the_chain_check_in_sqlite_finds_what_the_python_walk_finds(
    material_sql: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MATERIAL_SQL", material_sql)
    conn = events_table(6)
    assert store.first_broken_link_in(conn) is None
    assert store.first_broken_link_in(conn, 3, 5, conn.execute(
        "SELECT hash FROM events WHERE seq = 3").fetchone()[0]) is None
    conn.execute("UPDATE events SET stream_rev = '1' WHERE seq = 4")  # same text, other type
    assert store.first_broken_link_in(conn) == 4
    conn.execute("UPDATE events SET stream_rev = 1, actor = 'mallory' WHERE seq = 4")
    assert store.first_broken_link_in(conn) == 4
    conn.execute("UPDATE events SET actor = 'ops@host' WHERE seq = 4")
    conn.execute("DELETE FROM events WHERE seq = 5")
    assert store.first_broken_link_in(conn) == 5
