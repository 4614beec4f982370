"""The projection runner: keeps read models in step with the events, or rebuilds them.

Each :class:`Projection` owns a few tables and turns events into row changes. The
:class:`ProjectionRunner` applies every event past its checkpoint and moves the
checkpoint in the same transaction, so a read model is never ahead of or silently behind
the ledger; attached to a recorder it runs inside every append. Projections read events
and never write them.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Protocol

from ledger.errors import printable_ascii
from ledger.events import DomainEvent, StoredEvent
from ledger.store import Recorder, TriggerFault
from ledger.store_read_models import (
    CHECKPOINT_TABLE,
    ReadModelTables,
    guard_name,
    read_model_tables,
)

Applied = tuple[DomainEvent, StoredEvent]


class Projection(Protocol):
    """One read model: its tables, how a batch of events changes them, how to empty them.

    ``apply_batch`` gets the events of one append (or a page of a rebuild) in seq order,
    so a read model can turn many events into a few statements."""

    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> Sequence[str]: ...

    def create(self, tables: ReadModelTables) -> None: ...

    def apply_batch(self, batch: Sequence[Applied], tables: ReadModelTables) -> None: ...


REBUILD_PAGE = 5_000  # events decoded and applied together when reading them back

#: The fingerprint (:func:`layout_fingerprint`) of the read models this keyledger
#: creates. A test holds it to :attr:`ProjectionRunner.schema`: when the tables, indexes or
#: guards change, the outgoing value moves to :data:`EARLIER_LAYOUTS`.
LAYOUT = "6c149f383ab2aea5fbc6d9f769c5e0902164e982e5eccd9078c729a29f2a398d"

#: The read models of earlier keyledgers, exactly as each created them: found untouched
#: on open, they are rebuilt as an upgrade rather than reported as an edit.
EARLIER_LAYOUTS = {
    "fbf04cb9f10b85d8fce06451fd9f2725191a100f3c5c3189fad9bb1388a40f23":
        "with the index proj_secrets_live, without proj_checkpoint.unreported_repair",
    "6d5c6cf64059f436a103b82ddd76387931362d6d14c8f18f9402b082c4fa0782":
        "without proj_checkpoint.unreported_repair",
}


def layout_fingerprint(schema: Mapping[str, str]) -> str:
    """SHA-256 over every ``proj_*`` table, index and trigger's name and SQL."""
    return hashlib.sha256(json.dumps(sorted(schema.items())).encode("utf-8")).hexdigest()


class ProjectionRunner:
    """Applies events to a set of projections; implements ``ledger.store.Projector``."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        self.projections = list(projections)

    @property
    def tables(self) -> list[str]:
        """Every table of the read models, the checkpoint first."""
        return [CHECKPOINT_TABLE] + [t for p in self.projections for t in p.tables]

    def _create(self, tables: ReadModelTables, *, guarded: bool = True) -> None:
        tables.create_checkpoint()
        for projection in self.projections:
            projection.create(tables)
        if guarded:
            for table in self.tables:
                tables.create_guards(table)

    @functools.cached_property
    def schema(self) -> dict[str, str]:
        """Name to SQL of every table, index and guard the read models have, as the store
        records them: made once in an empty database, to compare a ledger's with."""
        with ReadModelTables.in_memory() as tables:
            self._create(tables)
            return tables.schema()

    def setup(self, recorder: Recorder, *, guarded: bool = True) -> None:
        """Create what is missing (tables, guards, the checkpoint row), and store the
        schema cookie beside the checkpoint after a schema change of its own. A cookie that
        had already moved (someone dropped a guard?) is left as found, for
        :meth:`cookie_moved` to report: recreating a guard must not hide that it was gone.
        ``guarded=False`` leaves the guards for a later call (a rebuild adds them after
        replaying)."""
        tables = read_model_tables(recorder)
        before = tables.cookies()
        self._create(tables, guarded=guarded)
        tables.ensure_checkpoint_row()
        if before is None or before[0] == before[1]:  # fresh, or the cookie was ours
            tables.store_cookie()

    @staticmethod
    def cookie_moved(recorder: Recorder) -> bool:
        """Whether the schema cookie moved since keyledger last changed the schema: a
        guard dropped and put back, or only a copy made with SQLite's backup API (which
        sets a new cookie), or a VACUUM."""
        found = read_model_tables(recorder).cookies()
        return found is not None and found[0] != found[1]

    def accept_cookie(self, recorder: Recorder) -> None:
        """Store the present cookie, once every row was found to agree with the events."""
        with recorder.write_transaction():
            read_model_tables(recorder).store_cookie()

    def earlier_layout(self, recorder: Recorder) -> bool:
        """Whether the read models are an earlier keyledger's, as it left them: their
        tables, indexes and guards are one of :data:`EARLIER_LAYOUTS`, and the schema
        cookie is the one it stored after its own last change. (With the guards in place
        and the cookie unmoved, no row can have been edited either.)"""
        return (layout_fingerprint(read_model_tables(recorder).schema()) in EARLIER_LAYOUTS
                and not self.cookie_moved(recorder))

    def schema_problems(self, recorder: Recorder) -> list[str]:
        """A table, index or guard of the read models missing, added or different from
        :attr:`schema`: written by another version of keyledger, or edited (a guard dropped
        to change a row, say). Constant time. (A moved schema cookie is not a problem by
        itself: see :meth:`cookie_moved`.)"""
        tables = read_model_tables(recorder)
        found = tables.schema()
        if not found:
            return []  # no read models yet: the first catch-up creates them from the events
        expected = tables.expected_layout(self.schema)
        if (found != self.schema if expected is None
                else layout_fingerprint(found) != expected):
            return ["the read models' tables or write guards differ from this keyledger's "
                    "(another version's, or edited)"]
        return []

    def guard_faults(self, recorder: Recorder) -> list[TriggerFault]:
        """The read models' guards missing or altered, and any other trigger on their
        tables ([] while there are no read models). Reads the schema only."""
        tables = read_model_tables(recorder)
        if not tables.schema():
            return []
        expected = {
            guard_name(table, action): (table, tables.expected_guard(
                table, action, self.schema.get(guard_name(table, action), "")))
            for table in self.tables for action in tables.guard_actions()}
        return tables.trigger_faults(expected, self.tables)

    @staticmethod
    def position(recorder: Recorder) -> tuple[int, str]:
        """``(seq, hash)`` of the last event applied; ``(0, '')`` before any."""
        return read_model_tables(recorder).position()

    def is_current(self, recorder: Recorder) -> bool:
        return self.position(recorder) == recorder.head()

    def catch_up(
        self, recorder: Recorder, appended: Sequence[Applied] = (), *, guarded: bool = True,
    ) -> None:
        """Apply every event past the checkpoint; the caller holds the write transaction.

        ``appended`` are the events the caller just appended, already decoded: when they
        follow the checkpoint directly they are applied as they are, without reading them
        back; otherwise the events are read from the ledger from the checkpoint on.
        """
        tables = read_model_tables(recorder)
        self.setup(recorder, guarded=guarded)
        last_seq, last_hash = tables.position()
        if appended and appended[0][1].seq == last_seq + 1:
            self._apply(appended, tables)
            last_seq, last_hash = appended[-1][1].seq, appended[-1][1].hash
        else:
            page: list[Applied] = []
            for stored in recorder.read_events(last_seq):
                page.append((stored.decode(), stored))
                if len(page) == REBUILD_PAGE:
                    self._apply(page, tables)
                    page = []
                last_seq, last_hash = stored.seq, stored.hash
            self._apply(page, tables)
        tables.set_position(last_seq, last_hash)

    def _apply(self, batch: Sequence[Applied], tables: ReadModelTables) -> None:
        if batch:
            for projection in self.projections:
                projection.apply_batch(batch, tables)

    def refresh(self, recorder: Recorder) -> None:
        """Bring the read models up to date if the ledger moved on without them."""
        if not self.is_current(recorder):
            with recorder.write_transaction():
                self.catch_up(recorder)

    @staticmethod
    def unreported_repair(recorder: Recorder) -> str:
        """What the first repair since the last :meth:`clear_repair` found ('' for none)."""
        note = read_model_tables(recorder).unreported_repair()
        # The file's own text, shown to an operator: kept printable.
        return printable_ascii(note, 500) if isinstance(note, str) else ""

    @staticmethod
    def clear_repair(recorder: Recorder, reported: str) -> None:
        """Forget the repair ``reported`` described, once someone was told (a newer one
        stored meanwhile by another process stays)."""
        if reported:
            with recorder.write_transaction():
                if ProjectionRunner.unreported_repair(recorder) == reported:
                    read_model_tables(recorder).set_unreported_repair("")

    def rebuild(self, recorder: Recorder, *, repair: str = "") -> int:
        """Drop every read model and replay all events into fresh tables; the count applied.

        ``repair`` says what disagreed with the events, when that is why: it is kept for
        the next health check unless an earlier repair is still unreported (the first is
        kept). An unreported repair survives the rebuild either way."""
        with recorder.write_transaction():
            tables = read_model_tables(recorder)
            unreported = self.unreported_repair(recorder) or repair
            # Anything else in the read models' namespace goes too (an index or trigger
            # someone added), or the schema check would fail again after every rebuild.
            tables.drop_all(t for p in self.projections for t in p.tables)
            # The guards come last: every replayed row would otherwise call them.
            self.catch_up(recorder, guarded=False)
            self.setup(recorder)
            if unreported:
                tables.set_unreported_repair(unreported)
        return self.position(recorder)[0]
