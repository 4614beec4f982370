"""The recorder: stores event rows and wrapped keys, and knows nothing of domain classes.

All SQL of the event store lives in this module, behind the :class:`Recorder` protocol, so
that another backend (PostgreSQL for several hosts) can be written without touching the
domain. Rows go in and out as :class:`NewEvent` / :class:`StoredEvent`; turning them into
domain events is the mapper's job (:mod:`ledger.events`).

One SQLite file holds:

- ``events``: append-only (UPDATE and DELETE abort in triggers), hash-chained, with a
  unique ``(stream, stream_rev)`` key for optimistic concurrency;
- ``streams``: each stream's revision and head row, an index the recorder keeps;
- ``keys``: wrapped data keys, outside the immutable events so they can be re-wrapped
  and, later, destroyed;
- ``meta``: format version, ledger id, KDF parameters and the wrapped signing key;
- ``checkpoints``: append-only; each append's last seq and head hash, signed with the
  ledger's Ed25519 key (:mod:`ledger.signing`) in the same transaction.

Projections hook in through :class:`Projector` and run inside the append transaction.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote

from ledger import events as ev
from ledger.chain import GENESIS_HASH, ChainRow, chain_rows, event_hash
from ledger.errors import (
    ConcurrencyError,
    IntegrityError,
    LedgerBusyError,
    LedgerFormatError,
    LedgerNotFoundError,
    LedgerReadOnlyError,
    printable_ascii,
)

APPLICATION_ID = 0x4B4C4447  # "KLDG"
# 1 lacked events.origin, 2 lacked signed checkpoints: pre-release layouts, never shipped.
FORMAT_VERSION = 3
BUSY_TIMEOUT_MS = 2_000
LOCK_RETRY_SECONDS = 30.0
#: An SQL function that exists only on keyledger's own connections. Triggers that must
#: refuse every other writer (the read models' guards) test it: on a foreign connection
#: the statement fails with "no such function" before it changes anything.
WRITER_FUNCTION = "keyledger_writer"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended at ``stream_rev`` of ``stream`` (revisions start at 1).

    ``payload``, when given, is ``event``'s canonical JSON already made (by
    :func:`ledger.events.to_payload`, in a worker process): it is stored as it is.
    """

    stream: str
    stream_rev: int
    event: ev.DomainEvent
    payload: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the ``events`` table."""

    seq: int
    stream: str
    stream_rev: int
    type: str
    schema_version: int
    payload: str
    occurred_at: str
    actor: str
    origin: str
    prev_hash: str
    hash: str

    def decode(self) -> ev.DomainEvent:
        try:
            return ev.from_payload(self.type, self.schema_version, self.payload)
        except ev.DamagedEventError as exc:
            raise ev.DamagedEventError(f"event {self.seq}: {exc}") from None


@dataclass(frozen=True, slots=True)
class KdfRecord:
    """How the KEK is derived from the master password, and how to tell it is right."""

    algorithm: str
    iterations: int
    salt: bytes
    kek_check: str


@dataclass(frozen=True, slots=True)
class LedgerMeta:
    ledger_id: str
    format_version: int
    kdf: KdfRecord
    signing_key: bytes  # the Ed25519 private key, wrapped under the KEK


class Signer(Protocol):
    """Signs checkpoints, and tells whether a stored one carries a valid signature."""

    def sign(self, seq: int, head: str, signed_at: str) -> bytes: ...

    def holds(self, seq: int, head: str, signed_at: str, signature: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One row of ``checkpoints``; ``event_hash`` is the hash stored at ``seq`` (None: no
    such event)."""

    seq: int
    head_hash: str
    signed_at: str
    signature: bytes
    event_hash: str | None


class Projector(Protocol):
    """A read model kept in the same file, brought up to date inside each append."""

    def setup(self, conn: sqlite3.Connection) -> None: ...

    def catch_up(
        self, recorder: SQLiteRecorder,
        appended: Sequence[tuple[ev.DomainEvent, StoredEvent]] = (),
    ) -> None: ...


class Recorder(Protocol):
    """What the domain needs from an event store."""

    def initialize(
        self, meta: LedgerMeta, events: Sequence[NewEvent], keys: dict[int, bytes], *,
        actor: str, occurred_at: str, origin: str = "", signer: Signer | None = None,
    ) -> list[StoredEvent]: ...

    def is_initialized(self) -> bool: ...

    def read_meta(self) -> LedgerMeta: ...

    def read_wrapped_keys(self) -> dict[int, bytes | None]: ...

    def append(
        self, events: Sequence[NewEvent], *, actor: str, occurred_at: str, origin: str = "",
        keys: Mapping[int, bytes | None] | None = None, kdf: KdfRecord | None = None,
        signing_key: bytes | None = None, expect: Mapping[str, int] | None = None,
        signer: Signer | None = None,
    ) -> list[StoredEvent]: ...

    def append_chunks(
        self, chunks: Iterable[Sequence[NewEvent]], *, actor: str, occurred_at: str,
        origin: str = "", expect: Mapping[str, int] | None = None, signer: Signer | None = None,
    ) -> int: ...

    def shred(self) -> None: ...

    def stream_head(self, stream: str) -> StoredEvent | None: ...

    def stream_heads_of(self, streams: Collection[str]) -> dict[str, StoredEvent]: ...

    def read_stream(self, stream: str) -> list[StoredEvent]: ...

    def stream_heads(self, prefix: str, after: str, limit: int) -> list[StoredEvent]: ...

    def stream_count(self, prefix: str) -> int: ...

    def read_events(self, after_seq: int = 0) -> Iterator[StoredEvent]: ...

    def head(self) -> tuple[int, str]: ...

    def event_at(self, seq: int) -> StoredEvent | None: ...

    def checkpoints(self) -> Iterator[CheckpointRow]: ...

    def latest_checkpoint(self) -> CheckpointRow | None: ...

    def snapshot(self) -> contextlib.AbstractContextManager[object]: ...

    def close(self) -> None: ...


_EVENT_COLUMNS = (
    "seq, stream, stream_rev, type, schema_version, payload, occurred_at, actor, origin, "
    "prev_hash, hash"
)

_TRIGGERS = [
    f"""CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}
        BEGIN SELECT RAISE(ABORT, 'keyledger {table} are append-only'); END"""
    for table in ("events", "checkpoints")
    for action in ("UPDATE", "DELETE")
]


Durability = Literal["full", "normal"]


class SQLiteRecorder:
    """The event store in one SQLite file (WAL, ``BEGIN IMMEDIATE``).

    ``durability="full"`` (``synchronous=FULL``, the default) makes every commit survive
    power loss; ``"normal"`` may lose the last commits on power loss (never on a process
    crash) in exchange for fewer fsyncs. ``lock_timeout`` bounds how long a writer waits
    for another one before :class:`LedgerBusyError`.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = False,
        projector: Projector | None = None, durability: Durability = "full",
        lock_timeout: float = LOCK_RETRY_SECONDS,
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.path = Path(path)
        # Where it is, whatever the working directory later: for the processes and
        # connections that open it again (the migrate worker, audit verify's checks).
        self.file = self.path.absolute()
        self.projector = projector
        self.lock_timeout = lock_timeout
        if create:
            _create_private_file(self.path)
        elif not self.path.exists():
            raise LedgerNotFoundError(f"no ledger at {self.path} (run 'keyledger init' first)")
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.conn.create_function(WRITER_FUNCTION, 0, _is_keyledger, deterministic=True)
            # SQLite's own wait, capped by the caller's budget; _retry_locked does the rest.
            busy_ms = int(min(BUSY_TIMEOUT_MS, lock_timeout * 1000))
            self.conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            self._check_format(allow_empty=create)
            self._retry_locked(lambda: self.conn.execute("PRAGMA journal_mode = WAL"))
            self.conn.execute(f"PRAGMA synchronous = {durability.upper()}")
            # Freed content is overwritten with zeros, so an erased key leaves no copy behind.
            self.conn.execute("PRAGMA secure_delete = ON")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self.conn.close()
            if "readonly" in str(exc) or "unable to open" in str(exc):
                raise LedgerReadOnlyError(
                    f"{self.path} is read-only for this user; keyledger needs write access to "
                    "the file and its directory, even to read (SQLite's WAL)"
                ) from None
            raise LedgerFormatError(
                f"{self.path} is not a keyledger ledger ({printable_ascii(str(exc))})"
            ) from None

    # -- lifecycle ---------------------------------------------------------------------

    def _check_format(self, *, allow_empty: bool) -> None:
        app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id == 0 and version == 0 and allow_empty:
            has_tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if not has_tables:
                return
        if app_id == 0 and version == 0 and not self._has_meta():
            raise LedgerNotFoundError(
                f"{self.path} holds no keyledger ledger (run 'keyledger init' first)"
            )
        if app_id != APPLICATION_ID:
            raise LedgerFormatError(f"{self.path} is not a keyledger ledger")
        if version < FORMAT_VERSION:
            raise LedgerFormatError(
                f"{self.path} has ledger format {version}, written by a pre-release keyledger; "
                "re-create it (export the values with the pre-release tool, then import)"
            )
        if version > FORMAT_VERSION:
            raise LedgerFormatError(
                f"{self.path} has ledger format {version}; this keyledger reads up to "
                f"{FORMAT_VERSION}: upgrade keyledger"
            )

    def _has_meta(self) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone() is not None

    def is_initialized(self) -> bool:
        return self._has_meta()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SQLiteRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def initialize(
        self, meta: LedgerMeta, events: Sequence[NewEvent], keys: dict[int, bytes], *,
        actor: str, occurred_at: str, origin: str = "", signer: Signer | None = None,
    ) -> list[StoredEvent]:
        """Create the schema and append the first events, all in one transaction."""
        import sqlite_utils  # only creating a ledger needs it; keeps every other command's start-up lean

        with self.write_transaction():
            db = sqlite_utils.Database(self.conn)
            db.create_table("meta", {"key": str, "value": str}, pk="key", not_null={"value"})
            db.create_table("keys", {"version": int, "wrapped": bytes}, pk="version")
            self.conn.execute(
                """CREATE TABLE events (
                    seq INTEGER PRIMARY KEY, stream TEXT NOT NULL, stream_rev INTEGER NOT NULL,
                    type TEXT NOT NULL, schema_version INTEGER NOT NULL, payload TEXT NOT NULL,
                    occurred_at TEXT NOT NULL, actor TEXT NOT NULL, origin TEXT NOT NULL,
                    prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
                    UNIQUE (stream, stream_rev))"""
            )
            self.conn.execute(
                """CREATE TABLE streams (stream TEXT PRIMARY KEY, revision INTEGER NOT NULL,
                    head_seq INTEGER NOT NULL) WITHOUT ROWID"""
            )
            self.conn.execute(
                """CREATE TABLE checkpoints (seq INTEGER PRIMARY KEY, head_hash TEXT NOT NULL,
                    signed_at TEXT NOT NULL, signature BLOB NOT NULL)"""
            )
            for trigger in _TRIGGERS:
                self.conn.execute(trigger)
            self.conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("format_version", str(meta.format_version)),
                    ("ledger_id", meta.ledger_id),
                    ("signing_key", base64.b64encode(meta.signing_key).decode("ascii")),
                    *_kdf_rows(meta.kdf),
                ],
            )
            self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
            if self.projector is not None:
                self.projector.setup(self.conn)
            return self._append_locked(events, actor, occurred_at, origin, keys, None, None, signer)

    # -- reads -------------------------------------------------------------------------

    def read_meta(self) -> LedgerMeta:
        rows = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        try:
            kdf = KdfRecord(
                algorithm=rows["kdf_algorithm"],
                iterations=int(rows["kdf_iterations"]),
                salt=base64.b64decode(rows["kdf_salt"]),
                kek_check=rows["kek_check"],
            )
            return LedgerMeta(
                rows["ledger_id"], int(rows["format_version"]), kdf,
                base64.b64decode(rows["signing_key"]),
            )
        except (KeyError, ValueError):
            raise LedgerFormatError(f"{self.path}: ledger metadata is incomplete") from None

    def read_wrapped_keys(self) -> dict[int, bytes | None]:
        return {v: w for v, w in self.conn.execute("SELECT version, wrapped FROM keys")}

    def head(self) -> tuple[int, str]:
        row = self.conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH) if row is None else (row[0], row[1])

    def event_at(self, seq: int) -> StoredEvent | None:
        row = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq = ?", (seq,)
        ).fetchone()
        return None if row is None else StoredEvent(*row)

    def checkpoints(self) -> Iterator[CheckpointRow]:
        """Every signed checkpoint in seq order, with the hash the events hold at its seq."""
        cursor = self.conn.execute(
            """SELECT c.seq, c.head_hash, c.signed_at, c.signature, e.hash
               FROM checkpoints c LEFT JOIN events e ON e.seq = c.seq ORDER BY c.seq"""
        )
        while batch := cursor.fetchmany(1000):
            for row in batch:
                yield CheckpointRow(*row)

    def latest_checkpoint(self) -> CheckpointRow | None:
        row = self.conn.execute(
            """SELECT c.seq, c.head_hash, c.signed_at, c.signature, e.hash
               FROM checkpoints c LEFT JOIN events e ON e.seq = c.seq
               ORDER BY c.seq DESC LIMIT 1"""
        ).fetchone()
        return None if row is None else CheckpointRow(*row)

    def stream_head(self, stream: str) -> StoredEvent | None:
        row = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream = ? "
            "ORDER BY stream_rev DESC LIMIT 1",
            (stream,),
        ).fetchone()
        return None if row is None else StoredEvent(*row)

    def read_stream(self, stream: str) -> list[StoredEvent]:
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream = ? ORDER BY stream_rev",
            (stream,),
        )
        return [StoredEvent(*row) for row in rows]

    def read_stream_naming(self, stream: str, name: str) -> list[StoredEvent]:
        """The events of ``stream`` whose payload's ``name`` field is ``name``, in stream
        order (the ``SecretRead`` events of one secret, say).

        The ``(stream, stream_rev)`` key narrows the search to that stream; within it
        every payload is read, so the cost grows with the stream, not the ledger. A
        payload that is not JSON (damaged; ``audit verify`` reports it) is passed over.
        """
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream = ? "
            "AND CASE WHEN json_valid(payload) THEN json_extract(payload, '$.name') END = ? "
            "ORDER BY stream_rev",
            (stream, name),
        )
        return [StoredEvent(*row) for row in rows]

    def stream_heads(self, prefix: str, after: str, limit: int) -> list[StoredEvent]:
        """The head rows of streams named ``prefix...``, past ``after``, in name order."""
        columns = ", ".join("e." + c.strip() for c in _EVENT_COLUMNS.split(","))
        return [StoredEvent(*row) for row in _heads(self.conn, columns, prefix, after, limit)]

    def stream_heads_of(self, streams: Collection[str]) -> dict[str, StoredEvent]:
        """The head row of each of ``streams`` that has one, by stream, in one query."""
        rows = self.conn.execute(
            f"""SELECT {", ".join("e." + c.strip() for c in _EVENT_COLUMNS.split(","))}
                FROM json_each(?) AS wanted CROSS JOIN streams s ON s.stream = wanted.value
                JOIN events e ON e.seq = s.head_seq""",
            (json.dumps(list(streams)),),
        )
        return {row[1]: StoredEvent(*row) for row in rows}

    def stream_count(self, prefix: str) -> int:
        """How many streams are named ``prefix...``."""
        row = self.conn.execute(
            "SELECT count(*) FROM streams WHERE stream > ? AND stream < ?",
            (prefix, _prefix_upper_bound(prefix)),
        ).fetchone()
        return int(row[0])

    def chain_rows(self, after_seq: int = 0, last_seq: int | None = None) -> Iterator[ChainRow]:
        """Rows ``after_seq + 1 .. last_seq`` as plain tuples in the order the hash covers
        their columns (:data:`ledger.chain.ChainRow`), streamed: for checking the chain."""
        return chain_rows(self.conn, after_seq, last_seq)

    def read_events(self, after_seq: int = 0) -> Iterator[StoredEvent]:
        """Every row past ``after_seq`` in seq order, streamed in batches."""
        cursor = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", (after_seq,)
        )
        while batch := cursor.fetchmany(1000):
            for row in batch:
                yield StoredEvent(*row)

    def query_events(
        self, *, types: Collection[str] = (), actor: str | None = None,
        since: str | None = None, until: str | None = None,
        stream: str | None = None, named: str | None = None,
    ) -> Iterator[StoredEvent]:
        """The rows meeting every condition given, in seq order, streamed in batches.

        ``types``: one of these types; ``actor``: exactly this actor; ``since``/``until``:
        ``occurred_at`` within these inclusive bounds (the same sortable UTC text).
        ``stream`` and ``named`` select rows about one subject: rows of ``stream``, or
        whose payload has a ``name`` member (at any depth) equal to ``named``.
        """
        where: list[str] = ["1"]
        params: list[object] = []
        if types:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            params += sorted(types)
        for clause, value in (("actor = ?", actor), ("occurred_at >= ?", since),
                              ("occurred_at <= ?", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        subject = []
        if stream is not None:
            subject.append("stream = ?")
            params.append(stream)
        if named is not None:
            # instr() on the name as the mapper encodes it skips most rows cheaply; CASE
            # keeps json_tree() off a payload that is not JSON (`audit verify` reports it).
            subject.append("CASE WHEN instr(payload, ?) > 0 AND json_valid(payload) THEN EXISTS "
                           "(SELECT 1 FROM json_tree(payload) WHERE key = 'name' AND type = 'text' "
                           "AND atom = ?) ELSE 0 END")
            params += [ev.canonical_json(named), named]
        if subject:
            where.append(f"({' OR '.join(subject)})")
        cursor = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq",
            params,
        )
        while batch := cursor.fetchmany(1000):
            for row in batch:
                yield StoredEvent(*row)

    # -- writes ------------------------------------------------------------------------

    def append(
        self, events: Sequence[NewEvent], *, actor: str, occurred_at: str, origin: str = "",
        keys: Mapping[int, bytes | None] | None = None, kdf: KdfRecord | None = None,
        signing_key: bytes | None = None, expect: Mapping[str, int] | None = None,
        signer: Signer | None = None,
    ) -> list[StoredEvent]:
        """Append ``events`` atomically, with any key-table and KDF changes they describe,
        and, given a ``signer``, a signed checkpoint of the new head.

        Each event's ``stream_rev`` must follow its stream's stored revision; ``expect``
        adds streams that were read but are not appended to (the keyring, when a secret
        is encrypted under its current key).

        :raises ConcurrencyError: a stream's revision is no longer the one the events
            were decided against; nothing is written.
        """
        with self.write_transaction():
            self._check_revisions(events, expect or {})
            return self._append_locked(
                events, actor, occurred_at, origin, keys, kdf, signing_key, signer
            )

    def append_chunks(
        self, chunks: Iterable[Sequence[NewEvent]], *, actor: str, occurred_at: str,
        origin: str = "", expect: Mapping[str, int] | None = None, signer: Signer | None = None,
    ) -> int:
        """Append the events of every chunk in one transaction, with one signed checkpoint
        of the final head: :meth:`append` for more events than fit in memory at once.

        ``chunks`` is consumed inside the transaction, so each chunk may be decided from
        what the ledger holds after the chunks before it (read through this recorder).
        ``expect`` is checked once, first; then each chunk's revisions as :meth:`append`
        checks them, and the read models catch up after each chunk. An error raised by
        a check or by ``chunks`` itself rolls everything back. Returns the number of
        events appended.

        :raises ConcurrencyError: a revision is not the one the events were decided against.
        :raises IntegrityError: with a ``signer``, the ledger ends in unsigned events.
        """
        with self.write_transaction():
            self._check_revisions((), expect or {})
            if signer is not None and (top := self.head()[0]):
                self._refuse_unsigned_tail(top, signer)
            appended = 0
            for chunk in chunks:
                if chunk:
                    self._check_revisions(chunk, {})
                    appended += len(self._append_locked(
                        chunk, actor, occurred_at, origin, None, None, None, None
                    ))
            if signer is not None and appended:
                self._sign_head(*self.head(), occurred_at, signer)
            return appended

    def _append_locked(
        self, events: Sequence[NewEvent], actor: str, occurred_at: str, origin: str,
        keys: Mapping[int, bytes | None] | None, kdf: KdfRecord | None,
        signing_key: bytes | None, signer: Signer | None,
    ) -> list[StoredEvent]:
        seq, prev_hash = self.head()
        if signer is not None and seq:
            self._refuse_unsigned_tail(seq, signer)
        stored: list[StoredEvent] = []
        for new in events:
            seq += 1
            if new.payload is None:
                type_name, schema_version, payload = ev.to_payload(new.event)
            else:
                cls = type(new.event)
                type_name, schema_version, payload = cls.__name__, cls.SCHEMA_VERSION, new.payload
            digest = event_hash(
                seq, prev_hash, new.stream, new.stream_rev, type_name, schema_version,
                occurred_at, actor, origin, payload,
            )
            stored.append(
                StoredEvent(
                    seq, new.stream, new.stream_rev, type_name, schema_version, payload,
                    occurred_at, actor, origin, prev_hash, digest,
                )
            )
            prev_hash = digest
        self.conn.executemany(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (s.seq, s.stream, s.stream_rev, s.type, s.schema_version, s.payload,
                 s.occurred_at, s.actor, s.origin, s.prev_hash, s.hash)
                for s in stored
            ],
        )
        self.conn.executemany(
            "INSERT INTO streams (stream, revision, head_seq) VALUES (?, ?, ?) "
            "ON CONFLICT (stream) DO UPDATE SET revision = excluded.revision, "
            "head_seq = excluded.head_seq",
            [(s.stream, s.stream_rev, s.seq) for s in stored],
        )
        if keys:
            self.conn.executemany(
                "INSERT INTO keys (version, wrapped) VALUES (?, ?) "
                "ON CONFLICT (version) DO UPDATE SET wrapped = excluded.wrapped",
                list(keys.items()),
            )
        if kdf is not None:
            self.conn.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [(value, key) for key, value in _kdf_rows(kdf)],
            )
        if signing_key is not None:
            self.conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'signing_key'",
                (base64.b64encode(signing_key).decode("ascii"),),
            )
        if signer is not None and stored:
            self._sign_head(seq, prev_hash, occurred_at, signer)
        if self.projector is not None:
            self.projector.catch_up(self, [(new.event, row) for new, row in zip(events, stored, strict=True)])
        return stored

    def _sign_head(self, seq: int, head_hash: str, signed_at: str, signer: Signer) -> None:
        """Store the signed checkpoint of the head the transaction is about to commit."""
        self.conn.execute(
            "INSERT INTO checkpoints (seq, head_hash, signed_at, signature) VALUES (?, ?, ?, ?)",
            (seq, head_hash, signed_at, signer.sign(seq, head_hash, signed_at)),
        )

    def _refuse_unsigned_tail(self, top: int, signer: Signer) -> None:
        """A signature over the new head would vouch for every event before it, so the
        last event must already carry a checkpoint that holds: at ``top``, naming the hash
        stored there, signed with this ledger's key. Events or checkpoints written by
        someone bypassing keyledger are never signed over."""
        latest = self.latest_checkpoint()
        if (latest is None or latest.seq != top or latest.event_hash != latest.head_hash
                or not signer.holds(latest.seq, latest.head_hash, latest.signed_at,
                                    latest.signature)):
            signed = 0 if latest is None else latest.seq
            raise IntegrityError(
                f"the last event (seq {top}) is not covered by a valid signed checkpoint "
                f"(latest: seq {signed}; written behind keyledger's back?); refusing to sign "
                "over it: run `keyledger audit verify`"
            )

    def _check_revisions(self, events: Sequence[NewEvent], expect: Mapping[str, int]) -> None:
        expected = dict(expect)
        for new in events:
            expected.setdefault(new.stream, new.stream_rev - 1)
        streams = list(expected)
        stored: dict[str, int] = {}
        for i in range(0, len(streams), 500):  # one query per 500 streams
            chunk = streams[i:i + 500]
            stored.update(self.conn.execute(
                f"SELECT stream, revision FROM streams WHERE stream IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall())
        conflicts = [s for s, revision in expected.items() if stored.get(s, 0) != revision]
        if conflicts:
            raise ConcurrencyError(conflicts)

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, waiting out other writers within a bound."""
        self._retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def backup_to(self, path: Path, *, overwrite: bool = False) -> None:
        """Copy this database to ``path`` in one step: a consistent snapshot even while
        other processes write. A new file is created 0600; ``overwrite`` replaces an
        existing database's content in one transaction."""
        if not overwrite:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        dest = sqlite3.connect(path)
        try:
            self._retry_locked(lambda: self.conn.backup(dest))
            dest.execute("PRAGMA journal_mode = WAL")
        finally:
            dest.close()

    def shred(self) -> None:
        """Copy the WAL into the database file and truncate it, so overwritten or erased
        content (a destroyed key) survives in neither file. Best effort while other
        connections hold old snapshots open."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads (WAL readers never block the writer)."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def _retry_locked(self, statement: Callable[[], object]) -> None:
        # busy_timeout already waits inside SQLite; this adds a bounded, jittered retry
        # so a long migration in another process delays us rather than failing us.
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.01
        while True:
            try:
                statement()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise LedgerBusyError(
                        f"{self.path} stayed locked by another writer for "
                        f"{self.lock_timeout:g}s; try again"
                    ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)


def _is_keyledger() -> int:
    return 1


def open_reader(path: Path) -> sqlite3.Connection:
    """A connection of its own that only reads the ledger at ``path`` (absolute), which
    another connection of this program holds open: for a forked worker, which must not
    use the connection it inherited."""
    conn = sqlite3.connect(f"file://{quote(os.fsencode(path))}?mode=ro", uri=True,
                           isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only = ON")
    return conn


def head_rows(
    conn: sqlite3.Connection, prefix: str, after: str, limit: int
) -> list[tuple[str, int, str, int, str]]:
    """``(stream, stream_rev, type, schema_version, payload)`` of the head event of each
    stream named ``prefix...`` past ``after``, in name order: :meth:`SQLiteRecorder.stream_heads`
    as plain tuples."""
    columns = "s.stream, e.stream_rev, e.type, e.schema_version, e.payload"
    return _heads(conn, columns, prefix, after, limit).fetchall()


def _heads(conn: sqlite3.Connection, columns: str, prefix: str, after: str,
           limit: int) -> sqlite3.Cursor:
    """``columns`` of the head events of the streams named ``prefix...`` past ``after``."""
    return conn.execute(
        f"""SELECT {columns} FROM streams s JOIN events e ON e.seq = s.head_seq
            WHERE s.stream > ? AND s.stream < ? ORDER BY s.stream LIMIT ?""",
        (max(prefix, after), _prefix_upper_bound(prefix), limit),
    )


def _kdf_rows(kdf: KdfRecord) -> list[tuple[str, str]]:
    return [
        ("kdf_algorithm", kdf.algorithm),
        ("kdf_iterations", str(kdf.iterations)),
        ("kdf_salt", base64.b64encode(kdf.salt).decode("ascii")),
        ("kek_check", kdf.kek_check),
    ]


def _prefix_upper_bound(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _create_private_file(path: Path) -> None:
    """Create the ledger file with mode 0600 before SQLite opens it.

    SQLite gives its -wal and -shm files the database file's permissions, so they are
    private too. An existing empty file is made private; any other existing file is left
    as it is (``init`` then checks what it holds).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if path.stat().st_size == 0:  # an empty file made for us: take it private
            os.chmod(path, 0o600)
        return
    os.close(fd)
