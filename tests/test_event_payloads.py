"""The fast serialisation path for flat events writes exactly what pydantic's dump would."""

from __future__ import annotations

import typing
from typing import Any, Literal

from hypothesis import given
from hypothesis import strategies as st

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
