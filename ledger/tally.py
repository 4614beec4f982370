"""The signed tally: how many live secrets sit on each key version and scheme, and how
many values each key version has encrypted, as of a checkpoint.

``report``'s "needing migration" and ``due``'s encryption count are decisions made
without reading every secret. The read models hold those figures, but nothing
authenticates a read model: an attacker with write access can edit one row. So the
store keeps the same figures itself, moves them with each append from what it proves
(the appended events, and the proven previous head of each secret stream they touch),
and every checkpoint signs them (:func:`ledger.signing.checkpoint_message`). A reader
checks the read models' figures against the signed tally in constant time.

The rules here are pure: they read events, never the store.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ledger import events as ev
from ledger.domain import KEY_VERSION_FIELD, held_under, needs_migration


@dataclass(frozen=True)
class Tally:
    """``live``: live secrets by ``"VERSION/SCHEME"``; ``encryptions``: values encrypted
    under each key version, ever (every write, import and migration)."""

    live: Mapping[str, int] = field(default_factory=dict)
    encryptions: Mapping[int, int] = field(default_factory=dict)

    def to_text(self) -> str:
        """The canonical text a checkpoint stores and signs."""
        return json.dumps(
            {"encryptions": {str(v): n for v, n in sorted(self.encryptions.items()) if n},
             "live": {tag: n for tag, n in sorted(self.live.items()) if n}},
            separators=(",", ":"), sort_keys=True,
        )

    @classmethod
    def from_text(cls, text: str) -> Tally:
        """The tally a checkpoint stores; only ever called on a signed one.

        :raises ValueError: it is not a tally.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {"encryptions", "live"}:
            raise ValueError("not a tally")
        live = {str(tag): _count(n) for tag, n in data["live"].items()}
        encryptions = {int(v): _count(n) for v, n in data["encryptions"].items()}
        tally = cls(live, encryptions)
        if tally.to_text() != text:
            raise ValueError("not a canonical tally")
        return tally

    @property
    def distribution(self) -> dict[int, int]:
        """Live secrets per key version."""
        found: Counter[int] = Counter()
        for tag, n in self.live.items():
            found[_split(tag)[0]] += n
        return dict(sorted(found.items()))

    @property
    def total(self) -> int:
        return sum(self.live.values())

    def needing_migration(self, current: int | None) -> int:
        """Live secrets :func:`ledger.domain.needs_migration` counts."""
        return sum(n for tag, n in self.live.items() if needs_migration(*_split(tag), current))

    def advanced(self, gone: Iterable[str | None], new: Iterable[str | None],
                 encrypted: Iterable[int]) -> Tally:
        """This tally with the live tags in ``gone`` replaced by those in ``new`` (None: no
        live secret) and one encryption more under each version in ``encrypted``.

        :raises ValueError: a tag leaves that the tally does not hold (it was not kept
            from the proven heads).
        """
        live = Counter(self.live)
        for tag in gone:
            if tag is not None:
                live[tag] -= 1
                if live[tag] < 0:
                    raise ValueError(f"the tally holds no live secret on {tag}")
        for tag in new:
            if tag is not None:
                live[tag] += 1
        encryptions = Counter(self.encryptions)
        encryptions.update(encrypted)
        return Tally({t: n for t, n in live.items() if n},
                     {v: n for v, n in encryptions.items() if n})


def fold(events: Iterable[tuple[str, ev.DomainEvent]]) -> Tally:
    """The tally of a whole ledger from its ``(stream, event)`` pairs in seq order: each
    secret's last event gives its tag, every encrypting event counts."""
    tags: dict[str, str | None] = {}
    encrypted: list[int] = []
    for stream, event in events:
        if stream.startswith(ev.SECRET_STREAM_PREFIX):
            tags[stream] = live_tag(stream, event)
            version = encrypted_under(event)
            if version is not None:
                encrypted.append(version)
    return Tally().advanced((), tags.values(), encrypted)


def tag(version: int, scheme: str) -> str:
    """The tally tag of a live secret held under ``version`` in ``scheme``."""
    return f"{version}/{scheme}"


def live_tag(stream: str, event: ev.DomainEvent | None) -> str | None:
    """The tally tag of the secret whose stream ends in ``event``: ``"VERSION/SCHEME"``,
    or None for a deleted secret, no event, or a stream that is not a secret's."""
    if event is None or not stream.startswith(ev.SECRET_STREAM_PREFIX):
        return None
    held = held_under(event)
    return None if held is None else tag(*held)


def _split(tag: str) -> tuple[int, str]:
    version, scheme = tag.split("/", 1)
    return int(version), scheme


_BY_NAME = {cls.__name__: (cls, field) for cls, field in KEY_VERSION_FIELD.items()}


def stored_tag(stream: str, type_name: str, schema_version: int, payload: str) -> str | None:
    """:func:`live_tag` of a stored event without building the event: its payload read as
    JSON when it is of the current schema (every proven event keyledger writes is
    canonical), else decoded and upcast. For the append path, which reads the previous
    head of every secret it touches."""
    if not stream.startswith(ev.SECRET_STREAM_PREFIX):
        return None
    found = _BY_NAME.get(type_name)
    if found is None or schema_version != found[0].SCHEMA_VERSION:
        return live_tag(stream, ev.from_payload(type_name, schema_version, payload))
    data = json.loads(payload)
    return tag(data[found[1]], data["scheme"])


def encrypted_under(event: ev.DomainEvent) -> int | None:
    """The key version ``event`` encrypted a value under, if it did."""
    held = held_under(event)
    return None if held is None else held[0]


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("not a count")
    return value
