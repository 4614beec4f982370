"""The fast serialisation path for flat events writes exactly what pydantic's dump would."""

from __future__ import annotations

import json
import typing
from typing import Any, Literal

from hypothesis import given
from hypothesis import strategies as st

from ledger import chain
from ledger import events as ev

TEXT = st.text(max_size=20)  # any code point: quotes, backslashes, control and non-ASCII


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
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
