"""Secret versions: which secret sits on which key version, at which revision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.domain import held_under, needs_migration
from ledger.store_read_models import ReadModelTables

if TYPE_CHECKING:
    from projections.read_models.runner import Applied


class SecretProjection:
    """``proj_secrets`` (one row per secret ever written) and ``proj_secret_counts``.

    The counts (live secrets per key version and scheme) are kept by this code as rows
    change, not derived by SQL, so they answer ``report`` without a scan and a row
    edited behind keyledger's back shows up as a disagreement between the two tables.
    """

    name = "secrets"
    tables = ("proj_secrets", "proj_secret_counts")

    def create(self, tables: ReadModelTables) -> None:
        tables.create_secret_tables()

    def apply_batch(self, batch: Sequence[Applied], tables: ReadModelTables) -> None:
        """Write one row per secret event and move the per-version counts, in a few
        statements: the rows' previous states are read with one query per 500 names, then
        the rows that exist are updated and the new ones inserted. (The ciphertext stays in
        the events, where ``get`` reads it: a copy here would be one more thing to trust.)"""
        # name, key_version, revision, scheme, updated_at, updated_seq, deleted
        changes: dict[str, tuple[int | None, int, str | None, str, int, int]] = {}
        previous: dict[str, tuple[int, str] | None] = {}
        known = tables.secret_states({event.name for event, _ in batch
                                      if isinstance(event, _SECRET_EVENTS)})
        deltas: Counter[tuple[int, str]] = Counter()
        for event, stored in batch:
            if not isinstance(event, _SECRET_EVENTS):
                continue
            after = held_under(event)  # None: deleted
            name = event.name
            before = previous[name] if name in previous else known.get(name)
            if before is not None:
                deltas[before] -= 1
            if after is not None:
                deltas[after] += 1
            previous[name] = after
            version, scheme = after if after is not None else (None, None)
            changes[name] = (version, stored.stream_rev, scheme, stored.occurred_at, stored.seq,
                             int(after is None))
        if not changes:
            return
        tables.write_secrets([(*row, name) for name, row in changes.items() if name in known],
                             [(*row, name) for name, row in changes.items() if name not in known])
        tables.move_counts(deltas)


_SECRET_EVENTS = (ev.SecretMigrated, ev.SecretWritten, ev.SecretImported, ev.SecretDeleted)


@dataclass(frozen=True, slots=True)
class SecretRow:
    name: str
    key_version: int
    revision: int
    scheme: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class DistributionReport:
    total_secrets: int
    current_version: int | None
    needing_migration: int
    distribution: dict[int, int] = field(default_factory=dict)


def list_secrets(tables: ReadModelTables, limit: int | None = None) -> list[SecretRow]:
    """Live secrets in name order; the first ``limit`` of them when given."""
    return [SecretRow(*row) for row in tables.live_secret_rows(limit)]


def live_counts(tables: ReadModelTables) -> dict[int, int]:
    """Live secrets per key version, from the maintained counts."""
    return _per_version(tables.live_counts())


def distribution_report(tables: ReadModelTables, current: int | None) -> DistributionReport:
    counts = tables.live_counts()
    distribution = _per_version(counts)
    needing = sum(live for version, scheme, live in counts
                  if needs_migration(version, scheme, current))
    return DistributionReport(sum(distribution.values()), current, needing, distribution)


def _per_version(counts: Iterable[tuple[int, str, int]]) -> dict[int, int]:
    """``(key_version, scheme, live)`` rows summed per version, versions with none left out."""
    found: dict[int, int] = {}
    for version, _, live in counts:
        found[version] = found.get(version, 0) + live
    return {version: n for version, n in found.items() if n}


def secret_problems(tables: ReadModelTables, *, names: Collection[str] | None = None) -> list[str]:
    """Ways ``proj_secrets`` disagrees with the events: every row (``names`` None), or only
    the rows of ``names``.

    Every row: the rows against the counts kept beside them, each row's revision and seq
    against its stream's head, then each row against its event (version, scheme,
    time). Time grows with the secrets; ``names`` keeps it to a sample.
    """
    found = []
    if names is None:
        counted = {(v, s): n for v, s, n in tables.live_counts()}
        actual = {(v, s): n for v, s, n in tables.counted_from_rows()}
        if counted != actual:
            found.append("secret rows disagree with their per-version counts")
    bad = tables.secrets_disagreeing(names)
    if bad:
        shown = ", ".join(repr(name) for name in bad)
        found.append(f"secret rows disagree with their events (first: {shown})")
    return found
