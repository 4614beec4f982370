"""One secret's history, read straight from the events: every change, and every recorded read.

The secret's own stream holds its writes, imports, migrations, resets, restores and
deletion; the ``reads`` stream holds the ``SecretRead`` events that read auditing
recorded. Both are merged in seq order. Fields are copied by name from a short list, so
a ciphertext (or any field added later) never reaches the output unless listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import events as ev
from ledger.domain import held_under, validate_name
from ledger.errors import UnknownSecretError
from ledger.events import StoredEvent
from ledger.store import Recorder

# The event fields a history entry shows besides the key version, by event type.
_DETAILS: dict[type[ev.DomainEvent], tuple[str, ...]] = {
    ev.SecretImported: ("source", "seed_version", "legacy", "reencrypted"),
    ev.SecretMigrated: ("run_id", "from_version", "to_version"),
    ev.SecretReset: ("reason",),
    ev.SecretRestored: ("backup_file", "backup_revision"),
}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One event of a secret's history: where it sits, who did it, and under which key."""

    seq: int
    occurred_at: str
    actor: str
    origin: str
    type: str
    key_version: int | None  # None for a deletion
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "occurred_at": self.occurred_at, "actor": self.actor,
            "origin": self.origin, "type": self.type, "key_version": self.key_version,
            **self.details,
        }


@dataclass(frozen=True, slots=True)
class SecretHistory:
    name: str
    entries: list[HistoryEntry]
    as_of: tuple[int, str]  # (seq, head hash) of the last event in the ledger when read

    @property
    def reads(self) -> int:
        return sum(e.type == "SecretRead" for e in self.entries)


def secret_history(recorder: Recorder, name: str) -> SecretHistory:
    """Every change to ``name`` and every read of it that was recorded, in seq order.

    A deleted secret still has its history.

    :raises InvalidInputError: ``name`` is not a valid secret name.
    :raises UnknownSecretError: no secret of that name was ever written.
    """
    validate_name(name)
    with recorder.snapshot():
        changes = recorder.read_stream(ev.secret_stream(name))
        reads = recorder.read_stream_naming(ev.READS_STREAM, name) if changes else []
        as_of = recorder.head()
    if not changes:
        raise UnknownSecretError(f"no secret named {name!r} was ever written")
    rows = sorted([*changes, *reads], key=lambda stored: stored.seq)
    return SecretHistory(name, [_entry(stored) for stored in rows], as_of)


def _entry(stored: StoredEvent) -> HistoryEntry:
    event = stored.decode()
    held = held_under(event)  # a read names the version it decrypted under; a deletion none
    version = held[0] if held is not None else getattr(event, "key_version", None)
    fields = _DETAILS.get(type(event), ())
    details = {field: getattr(event, field) for field in fields}
    return HistoryEntry(stored.seq, stored.occurred_at, stored.actor, stored.origin, stored.type,
                        version, details)
