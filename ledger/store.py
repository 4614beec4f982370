"""The recorder: stores event rows and wrapped keys, behind the :class:`Recorder` protocol.

All SQL of the event store lives in this module (the read models' tables in
:mod:`ledger.store_read_models`), so that another backend (PostgreSQL for several hosts)
can be written without touching the domain. Rows go in as the fields of a
:class:`~ledger.events.NewEvent` and come out as :class:`~ledger.events.StoredEvent`;
serialising and decoding events is the mapper's job (:mod:`ledger.events`). The store
reads events only for the rules it enforces inside the append: the signed tally
(:mod:`ledger.tally`) and the read models it hands them to.

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
import functools
import inspect
import itertools
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

from ledger import events as ev
from ledger import heads
from ledger import tally as tally_rules
from ledger.chain import GENESIS_HASH, ChainRow, event_hash, first_broken_link
from ledger.errors import (
    ConcurrencyError,
    IntegrityError,
    LedgerDatabaseError,
    LedgerFormatError,
)
from ledger.events import NewEvent, StoredEvent
from ledger.store_header import parse_kdf
from ledger.tally import Tally

APPLICATION_ID = 0x4B4C4447  # "KLDG"
# More KDF iterations than any ledger is made with (minutes per unlock): a larger count,
# or one below 1, is damage to the KDF record, refused before anything derives with it.
# 1 lacked events.origin, 2 lacked signed checkpoints: pre-release layouts, never shipped.
# 3 lacked the authenticated map of stream heads (ledger.heads): upgraded on first unlock.
FORMAT_VERSION = 5
HEADS_FORMAT = 4  # the first format with the heads map (ledger.heads)
UPGRADABLE_FORMAT = 3
BUSY_TIMEOUT_MS = 2_000
# The meta row naming what a destroy or rekey has not yet erased from the file.
ERASE_PENDING = "erase_pending"
LOCK_RETRY_SECONDS = 30.0
#: An SQL function that exists only on keyledger's own connections. Triggers that must
#: refuse every other writer (the read models' guards) test it: on a foreign connection
#: the statement fails with "no such function" before it changes anything.
WRITER_FUNCTION = "keyledger_writer"


# Decisions taken on heads read without a proof (a stream skipped by migrate or by an
# import): stream -> (the revision, the content_hash of the head event) they were made
# on; (0, None) for a stream that had no events. Checked against the proven heads.
Decided = Mapping[str, tuple[int, str | None]]


#: A head row as a forked worker reads it (:meth:`Recorder.worker_heads`): stream,
#: stream_rev, type, schema_version, payload, and the hash its own fields produce (None:
#: fields keyledger never writes).
HeadRow = tuple[str, int, str, int, str, str | None]

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

    def sign(self, seq: int, head: str, signed_at: str, heads_root: str | None,
             tally: str | None = None) -> bytes: ...

    def holds(self, seq: int, head: str, signed_at: str, signature: bytes,
              heads_root: str | None, tally: str | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One row of ``checkpoints``; ``event_hash`` is the hash stored at ``seq`` (None: no
    such event); ``heads_root`` the root of the stream heads it signs (None: signed by a
    format-3 keyledger, before heads were committed to); ``tally`` the
    :class:`ledger.tally.Tally` text it signs (None: signed before format 5)."""

    seq: int
    head_hash: str
    signed_at: str
    signature: bytes
    event_hash: str | None
    heads_root: str | None = None
    tally: str | None = None


@dataclass(frozen=True, slots=True)
class TriggerFault:
    """A trigger on keyledger's tables that is not as keyledger created it: one of its own
    ``missing`` or ``altered`` (other SQL: one that does nothing counts as dropped), or a
    ``foreign`` one it never creates. Names come from the file: untrusted text."""

    name: str
    table: str
    fault: Literal["missing", "altered", "foreign"]


class Projector(Protocol):
    """A read model kept in the same file, brought up to date inside each append."""

    def setup(self, recorder: Recorder) -> None: ...

    def catch_up(
        self, recorder: Recorder,
        appended: Sequence[tuple[ev.DomainEvent, StoredEvent]] = (),
    ) -> None: ...


RP = TypeVar("RP", bound="Recorder")


class Recorder(Protocol):
    """What the domain needs from an event store."""

    def initialize(
        self, meta: LedgerMeta, events: Sequence[NewEvent], keys: dict[int, bytes], *,
        actor: str, occurred_at: str, origin: str = "", signer: Signer | None = None,
    ) -> list[StoredEvent]: ...

    def is_initialized(self) -> bool: ...

    @property
    def location(self) -> str:
        """Where this ledger lives (a file's absolute path), as the host names it."""
        ...

    def read_meta(self) -> LedgerMeta: ...

    def read_wrapped_keys(self) -> dict[int, bytes | None]: ...

    def ledger_id(self) -> str: ...

    def wrapped_signing_key(self) -> bytes | None: ...

    def append(
        self, events: Sequence[NewEvent], *, actor: str, occurred_at: str, origin: str = "",
        keys: Mapping[int, bytes | None] | None = None, kdf: KdfRecord | None = None,
        signing_key: bytes | None = None, expect: Mapping[str, int] | None = None,
        signer: Signer | None = None, decided: Decided | None = None,
    ) -> list[StoredEvent]: ...

    def append_chunks(
        self, chunks: Iterable[Sequence[NewEvent]], *, actor: str, occurred_at: str,
        origin: str = "", expect: Mapping[str, int] | None = None, signer: Signer | None = None,
        decided: dict[str, tuple[int, str | None]] | None = None,
    ) -> int: ...

    def prove_decided(self, decided: Decided, signer: Signer) -> None: ...

    def shred(self, *, wait: bool = True) -> bool: ...

    def ready_to_erase(self) -> bool: ...

    def erase_pending(self) -> str | None: ...

    def set_erase_pending(self, what: str | None) -> None: ...

    def finish_pending_erasure(self) -> bool: ...

    def stream_head(self, stream: str) -> StoredEvent | None: ...

    def stream_heads_of(self, streams: Collection[str]) -> dict[str, StoredEvent]: ...

    def read_stream(self, stream: str) -> list[StoredEvent]: ...

    def stream_heads(self, prefix: str, after: str, limit: int) -> list[StoredEvent]: ...

    def stream_count(self, prefix: str) -> int: ...

    def worker_heads(self, prefix: str, size: int
                     ) -> Callable[[], Iterator[list[HeadRow]]] | None: ...

    def read_events(self, after_seq: int = 0) -> Iterator[StoredEvent]: ...

    def head(self) -> tuple[int, str]: ...

    def event_at(self, seq: int) -> StoredEvent | None: ...

    def chain_rows(self, after_seq: int = 0, last_seq: int | None = None
                   ) -> Iterator[ChainRow]: ...

    def first_broken_link(self, after_seq: int = 0, last_seq: int | None = None,
                          prev_hash: str = GENESIS_HASH) -> int | None: ...

    def worker_first_broken_link(self, after_seq: int, prev_hash: str
                                 ) -> Callable[[], int | None] | None: ...

    def event_count(self) -> int: ...

    def first_gap(self) -> int: ...

    def storage_check(self, *, quick: bool = False) -> str: ...

    def write_transaction(self) -> contextlib.AbstractContextManager[object]: ...

    @property
    def in_transaction(self) -> bool: ...

    def trigger_faults(self) -> list[TriggerFault]: ...

    def heads_map_matches(self, signer: Signer, prefix: str = "") -> int: ...

    def rewrite_heads_tree(self, signer: Signer) -> bool: ...

    def checkpoints(self) -> Iterator[CheckpointRow]: ...

    def latest_checkpoint(self) -> CheckpointRow | None: ...

    def verified_tip(self, signer: Signer) -> CheckpointRow: ...

    def verified_stream(self, stream: str, signer: Signer, *, whole: bool = False
                        ) -> list[StoredEvent]: ...

    def verified_head(self, stream: str, signer: Signer) -> StoredEvent | None: ...

    def verified_tally(self, signer: Signer) -> Tally: ...

    def fold_verified_heads(self, signer: Signer, prefix: str,
                            fold: Callable[[StoredEvent], None]) -> None: ...

    def verify_whole_chain(self, signer: Signer) -> None: ...

    @property
    def needs_upgrade(self) -> bool: ...

    @property
    def has_heads_map(self) -> bool: ...

    @property
    def has_tally(self) -> bool: ...

    @property
    def format_version(self) -> int: ...

    def upgrade(self, event: NewEvent, *, actor: str, occurred_at: str, origin: str,
                signer: Signer) -> bool: ...

    def snapshot(self) -> contextlib.AbstractContextManager[object]: ...

    def backup_to(self, path: Path, *, overwrite: bool = False,
                  replacing: tuple[int, str] | None = None) -> None: ...

    def query_events(
        self, *, types: Collection[str] = (), actor: str | None = None,
        since: str | None = None, until: str | None = None,
        stream: str | None = None, named: str | None = None,
        after_seq: int = 0, through_seq: int | None = None,
    ) -> Iterator[StoredEvent]: ...

    def read_stream_naming(self, stream: str, name: str) -> list[StoredEvent]: ...

    def close(self) -> None: ...

    def __enter__(self: RP) -> RP: ...

    def __exit__(self, *exc: object) -> None: ...


_EVENT_COLUMNS = (
    "seq, stream, stream_rev, type, schema_version, payload, occurred_at, actor, origin, "
    "prev_hash, hash"
)
LEDGER_TABLES = ("meta", "keys", "events", "streams", "checkpoints", "heads_tree")

# The heads map (ledger.heads), added the same way to a new ledger and to an upgraded one.
# Every table of the event store, created one way: these statements (the read models'
# in ledger.store_read_models); the heads map and the tally were added by later formats,
# and an upgrade adds them to an older ledger.
_LEDGER_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE keys (version INTEGER PRIMARY KEY, wrapped BLOB)",
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY, stream TEXT NOT NULL, stream_rev INTEGER NOT NULL,
        type TEXT NOT NULL, schema_version INTEGER NOT NULL, payload TEXT NOT NULL,
        occurred_at TEXT NOT NULL, actor TEXT NOT NULL, origin TEXT NOT NULL,
        prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        UNIQUE (stream, stream_rev))""",
    """CREATE TABLE streams (stream TEXT PRIMARY KEY, revision INTEGER NOT NULL,
        head_seq INTEGER NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE checkpoints (seq INTEGER PRIMARY KEY, head_hash TEXT NOT NULL,
        signed_at TEXT NOT NULL, signature BLOB NOT NULL)""",
]
#: The tables a copy (:meth:`SQLRecorder.load_copy`) moves, with their columns: everything
#: but the read models, which are built again from the events.
COPY_TABLES = {
    "meta": "key, value",
    "keys": "version, wrapped",
    "events": _EVENT_COLUMNS,
    "streams": "stream, revision, head_seq, head_hash, digest, bucket",
    "checkpoints": "seq, head_hash, signed_at, signature, heads_root, tally",
    "heads_tree": "node, digest",
}
_HEADS_SCHEMA = [
    "ALTER TABLE streams ADD COLUMN head_hash TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE streams ADD COLUMN digest TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE streams ADD COLUMN bucket INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX streams_by_bucket ON streams (bucket, stream)",
    "CREATE TABLE heads_tree (node INTEGER PRIMARY KEY, digest BLOB NOT NULL)",
    "ALTER TABLE checkpoints ADD COLUMN heads_root TEXT",
]
# The signed tally (ledger.tally), format 5 on.
_TALLY_SCHEMA = ["ALTER TABLE checkpoints ADD COLUMN tally TEXT"]

def _first_node_not_given(given: Mapping[int, bytes],
                          stored: Iterable[tuple[int, bytes]]) -> int | None:
    """The lowest node where the ``stored`` (node, digest) rows are not exactly ``given``:
    a digest differs, a node is missing, or one is stored that nothing gives."""
    rows = dict(stored)
    bad = [n for n in given.keys() | rows.keys() if given.get(n) != rows.get(n)]
    return min(bad) if bad else None


@dataclass(frozen=True, slots=True)
class _Base:
    """What an append builds on: the signed heads root and tally (see _verified_base)."""

    root: str | None
    tally: Tally | None


def _signed_tally(tip: CheckpointRow) -> Tally:
    if tip.tally is None:
        raise _tally_error()
    try:
        return Tally.from_text(tip.tally)
    except (ValueError, TypeError, AttributeError, RecursionError):
        raise _tally_error() from None


def _tally_error() -> IntegrityError:
    return IntegrityError(
        "the latest checkpoint signs no tally of the ledger's secrets, or one that the "
        "proven heads contradict (written behind keyledger's back?); refusing to act on "
        "it: run `keyledger audit verify`"
    )


def _heads_error(stream: str | None = None) -> IntegrityError:
    subject = f"stream {stream!r} does" if stream is not None else "the streams' heads do"
    return IntegrityError(
        f"{subject} not match the latest signed checkpoint (the streams table, the "
        "heads tree or an event changed behind keyledger's back); refusing to act on "
        "them: run `keyledger audit verify`"
    )


def _check_decided(leaves: Mapping[int, Mapping[str, heads.Leaf]], bucket_of: Mapping[str, int],
                   decided: Decided) -> None:
    """Each decision's (revision, head hash) against the stream's proven leaf: another
    revision is a write that came meanwhile, the same revision with another hash a head
    that was not the signed one."""
    moved = []
    for stream, (revision, head_hash) in decided.items():
        leaf = leaves[bucket_of[stream]].get(stream)
        if (leaf[1] if leaf else 0) != revision:
            moved.append(stream)
        elif (leaf[3] if leaf else None) != head_hash:
            raise _heads_error(stream)
    if moved:
        raise ConcurrencyError(moved)


def _leaf_digests(leaves: Mapping[int, Mapping[str, heads.Leaf]]) -> dict[str, bytes]:
    try:
        return {stream: heads.leaf_digest(leaf)
                for members in leaves.values() for stream, leaf in members.items()}
    except ValueError:
        raise _heads_error() from None


def _bucket_digests(leaves: Mapping[int, Mapping[str, heads.Leaf]],
                    digests: Mapping[str, bytes]) -> dict[int, bytes]:
    return {bucket: heads.bucket_digest_of((stream, digests[stream]) for stream in sorted(members))
            for bucket, members in leaves.items()}


def content_hash(event: StoredEvent) -> str | None:
    """The hash ``event``'s own fields produce (None for fields keyledger never writes):
    what its stored ``hash`` must be, and what a proven leaf names."""
    try:
        return event_hash(event.seq, event.prev_hash, event.stream, event.stream_rev,
                          event.type, event.schema_version, event.occurred_at, event.actor,
                          event.origin, event.payload)
    except (TypeError, ValueError):
        return None


#: What a decision names as its head's hash when the head's fields produce none (a column
#: of a type keyledger never writes): not hex, so no proven leaf ever holds it, and the
#: decision is refused rather than left unchecked.
UNHASHABLE = "unhashable"


def decision_hash(event: StoredEvent) -> str:
    """The hash a decision made on ``event`` (read without a proof) names: its
    :func:`content_hash`, or :data:`UNHASHABLE`."""
    return content_hash(event) or UNHASHABLE


def checked_heads(rows: Iterable[Sequence[Any]]) -> list[StoredEvent]:
    """The head events of :func:`_heads`'s rows (``s.stream, s.revision`` then the event's
    columns), each one shown to be the event its streams row names: the stream and the
    revision must agree, so a page never follows a name that a forged event carries.

    :raises IntegrityError: a row's event belongs to another stream or revision.
    """
    found = []
    for row in rows:
        event = StoredEvent(*row[2:])
        if event.stream != row[0] or event.stream_rev != row[1]:
            raise _heads_error(row[0] if isinstance(row[0], str) else None)
        found.append(event)
    return found


def _row_hash(row: ChainRow) -> str | None:
    """The hash a chain row's own fields produce (None: a column of the wrong type)."""
    try:
        return event_hash(*row[:10])
    except (TypeError, ValueError):
        return None


# -- database errors, translated once ---------------------------------------------------

T = TypeVar("T")
R = TypeVar("R", bound="SQLRecorder")
E = TypeVar("E", bound=Exception)


class _Depth(threading.local):
    calls = 0  # how deep this thread is in translated methods


_depth = _Depth()


#: Each database driver's root error class, with what turns one into keyledger's error.
#: A backend's module registers its driver when it is imported (:func:`driver_errors`).
_TRANSLATORS: dict[type[Exception], Callable[[Exception], LedgerDatabaseError]] = {}
_driver_errors: tuple[type[Exception], ...] = ()


def driver_errors(error: type[E], translate: Callable[[E], LedgerDatabaseError]) -> None:
    """Have every translated store method raise ``translate(exc)`` for a driver's
    ``error`` (``sqlite3.Error``, ``psycopg.Error``) that reaches its outermost call."""
    global _driver_errors
    _TRANSLATORS[error] = translate  # type: ignore[assignment]
    _driver_errors = tuple(_TRANSLATORS)


def _database_error(exc: Exception) -> LedgerDatabaseError:
    for kind, translate in _TRANSLATORS.items():
        if isinstance(exc, kind):
            return translate(exc)
    raise TypeError(f"not a registered driver error: {type(exc).__name__}")


def _outermost(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``, a driver's error raised as :class:`LedgerDatabaseError`
    when this is the thread's outermost translated call; inner calls let it through, so
    that the store's own code still sees the driver's errors where it handles them."""
    depth = _depth.calls
    _depth.calls = depth + 1
    try:
        return func(*args, **kwargs)
    except _driver_errors as exc:
        if depth:
            raise
        raise _database_error(exc) from None
    finally:
        _depth.calls = depth


def _translated(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` translating the drivers' errors (:func:`_outermost`). A generator is
    translated as each item is asked for, a context manager (``write_transaction``) on
    entry and exit."""
    wrapped = getattr(func, "__wrapped__", None)
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def items(*args: Any, **kwargs: Any) -> Iterator[Any]:
            # Delegated at C speed; whether to translate is decided by the depth of the
            # code that asked for the item that failed (a store method, or a caller).
            try:
                yield from func(*args, **kwargs)
            except _driver_errors as exc:
                if _depth.calls:
                    raise
                raise _database_error(exc) from None
        return items
    if wrapped is not None and inspect.isgeneratorfunction(wrapped):  # @contextmanager
        @functools.wraps(func)
        def managed(*args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[Any]:
            return _TranslatedContext(func(*args, **kwargs))
        return managed

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        return _outermost(func, *args, **kwargs)
    return call


class _TranslatedContext(contextlib.AbstractContextManager[Any]):
    def __init__(self, inner: contextlib.AbstractContextManager[Any]) -> None:
        self._inner = inner

    def __enter__(self) -> Any:
        return _outermost(self._inner.__enter__)

    def __exit__(self, *exc: Any) -> bool | None:
        suppressed: bool | None = _outermost(self._inner.__exit__, *exc)
        return suppressed


def translates_database_errors(cls: type[T]) -> type[T]:
    """Make every public method and property of ``cls`` (and its constructor) raise
    keyledger's errors, never a driver's: the one place they are translated."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_") and name != "__init__":
            continue
        if isinstance(member, property):
            setattr(cls, name, property(_translated(member.fget) if member.fget else None,
                                        member.fset, member.fdel, member.__doc__))
        elif isinstance(member, classmethod | staticmethod):
            setattr(cls, name, type(member)(_translated(member.__func__)))
        elif inspect.isfunction(member):
            setattr(cls, name, _translated(member))
    return cls


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ..., /) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the shared code uses (``?`` placeholders):
    ``sqlite3``'s, or :mod:`ledger.store_postgres`'s adapter over psycopg."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...

    def close(self) -> None: ...

    @property
    def in_transaction(self) -> bool: ...


@translates_database_errors
class SQLRecorder:
    """The event store's rules, over SQL that SQLite and PostgreSQL both speak: the
    append (hash chain, stream revisions, heads map, tally, signed checkpoint, read
    models), the proven reads, the upgrade. A backend's subclass opens ``conn``, owns its
    transactions and locking, and answers the few questions its SQL asks differently
    (the hooks at the end of this class)."""

    conn: Connection
    projector: Projector | None
    format_version: int
    lock_timeout: float
    _signed_tip: tuple[Signer, CheckpointRow] | None

    @property
    def _root_column(self) -> str:
        return ("c.heads_root" if self.format_version >= HEADS_FORMAT else "NULL") + ", " + (
            "c.tally" if self.format_version >= FORMAT_VERSION else "NULL")

    @property
    def needs_upgrade(self) -> bool:
        """Whether this ledger was written by a keyledger that did not yet commit to the
        stream heads, or to the tally: :meth:`upgrade` makes it current (needs the
        signing key)."""
        return self.format_version < FORMAT_VERSION

    @property
    def has_heads_map(self) -> bool:
        """Whether its checkpoints sign a root over the stream heads (format 4 on)."""
        return self.format_version >= HEADS_FORMAT

    @property
    def has_tally(self) -> bool:
        """Whether its checkpoints sign the tally (format 5 on)."""
        return self.format_version >= FORMAT_VERSION

    def close(self) -> None:
        self.conn.close()

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def initialize(
        self, meta: LedgerMeta, events: Sequence[NewEvent], keys: dict[int, bytes], *,
        actor: str, occurred_at: str, origin: str = "", signer: Signer | None = None,
    ) -> list[StoredEvent]:
        """Create the schema and append the first events, all in one transaction."""
        with self._creating_tables():
            self._create_schema()
            self.conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("format_version", str(meta.format_version)),
                    ("ledger_id", meta.ledger_id),
                    ("signing_key", base64.b64encode(meta.signing_key).decode("ascii")),
                    *_kdf_rows(meta.kdf),
                ],
            )
            self._store_format_version(FORMAT_VERSION)
            if self.projector is not None:
                self.projector.setup(cast(Recorder, self))
            self.format_version = FORMAT_VERSION
            return self._append_locked(
                events, actor, occurred_at, origin, keys, None, None, signer,
                _Base(heads.EMPTY_ROOT, Tally()),
            )[0]

    # -- reads -------------------------------------------------------------------------

    def read_meta(self) -> LedgerMeta:
        rows = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        try:
            algorithm, salt, iterations = parse_kdf(rows)
            kdf = KdfRecord(algorithm, iterations, salt, rows["kek_check"])
            return LedgerMeta(
                rows["ledger_id"], int(rows["format_version"]), kdf,
                base64.b64decode(rows["signing_key"]),
            )
        except (KeyError, ValueError):
            raise LedgerFormatError(
                f"{self.location}: ledger metadata is incomplete or damaged") from None

    def ledger_id(self) -> str:
        """The ledger's id (the one ``meta`` row every role may read)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
        if row is None or not isinstance(row[0], str):
            raise LedgerFormatError(f"{self.location}: ledger metadata is incomplete or damaged")
        return row[0]

    def wrapped_signing_key(self) -> bytes | None:
        """The wrapped signing key as ``meta`` holds it; None where this database role is
        not shown it (PostgreSQL's auditor role).

        :raises LedgerFormatError: it is missing or not base64 where nothing hides it.
        """
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'signing_key'").fetchone()
        if row is None and self._hides_key_material():
            return None
        try:
            return base64.b64decode(row[0])  # as read_meta decodes it
        except (ValueError, TypeError):
            raise LedgerFormatError(
                f"{self.location}: ledger metadata is incomplete or damaged") from None

    def _hides_key_material(self) -> bool:
        """Whether this connection's role may be refused the key rows (by grants)."""
        return False

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
        for row in paged_by_seq(
                self.conn, f"""SELECT c.seq, c.head_hash, c.signed_at, c.signature, e.hash,
                {self._root_column} FROM checkpoints c LEFT JOIN events e ON e.seq = c.seq""",
                None, seq_column="c.seq"):
            yield CheckpointRow(*row)

    def latest_checkpoint(self) -> CheckpointRow | None:
        row = self.conn.execute(
            f"""SELECT c.seq, c.head_hash, c.signed_at, c.signature, e.hash, {self._root_column}
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

    def stream_heads(self, prefix: str, after: str, limit: int) -> list[StoredEvent]:
        """The head rows of streams named ``prefix...``, past ``after``, in name order."""
        return _heads(self.conn, prefix, after, limit)

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
        yield from chain_rows(self.conn, after_seq, last_seq)

    def event_count(self) -> int:
        """How many event rows the table holds (beside the head's seq, a gap shows)."""
        return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def first_gap(self) -> int:
        """The first seq missing below the head (1 when the first rows are gone)."""
        row = self.conn.execute(
            "SELECT min(seq) + 1 FROM events e WHERE NOT EXISTS (SELECT 1 FROM events n "
            "WHERE n.seq = e.seq + 1) AND seq < (SELECT max(seq) FROM events)"
        ).fetchone()
        return int(row[0] or 1)

    def read_events(self, after_seq: int = 0) -> Iterator[StoredEvent]:
        """Every row past ``after_seq`` in seq order, streamed in pages."""
        for row in paged_by_seq(self.conn, f"SELECT {_EVENT_COLUMNS} FROM events", after_seq):
            yield StoredEvent(*row)

    def query_events(
        self, *, types: Collection[str] = (), actor: str | None = None,
        since: str | None = None, until: str | None = None,
        stream: str | None = None, named: str | None = None,
        after_seq: int = 0, through_seq: int | None = None,
    ) -> Iterator[StoredEvent]:
        """The rows meeting every condition given, in seq order, streamed in batches.

        ``types``: one of these types; ``actor``: exactly this actor; ``since``/``until``:
        ``occurred_at`` within these inclusive bounds (the same sortable UTC text).
        ``stream`` and ``named`` select rows about one subject: rows of ``stream``, or
        whose payload has a ``name`` member (at any depth) equal to ``named``.
        ``after_seq``/``through_seq``: seq past the one and up to the other.
        """
        where: list[str] = []
        params: list[object] = []
        if through_seq is not None:
            where.append("seq <= ?")
            params.append(through_seq)
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
            clause, values = self._naming_clause(named)
            subject.append(clause)
            params += values
        if subject:
            where.append(f"({' OR '.join(subject)})")
        for row in paged_by_seq(self.conn, f"SELECT {_EVENT_COLUMNS} FROM events", after_seq,
                                " AND ".join(where) or "1 = 1", params):
            yield StoredEvent(*row)

    # -- writes ------------------------------------------------------------------------

    def append(
        self, events: Sequence[NewEvent], *, actor: str, occurred_at: str, origin: str = "",
        keys: Mapping[int, bytes | None] | None = None, kdf: KdfRecord | None = None,
        signing_key: bytes | None = None, expect: Mapping[str, int] | None = None,
        signer: Signer | None = None, decided: Decided | None = None,
    ) -> list[StoredEvent]:
        """Append ``events`` atomically, with any key-table and KDF changes they describe,
        and, given a ``signer``, a signed checkpoint of the new head. ``decided`` and each
        event's ``based_on`` must match the proven heads (see :data:`Decided`).

        Each event's ``stream_rev`` must follow its stream's stored revision; ``expect``
        adds streams that were read but are not appended to (the keyring, when a secret
        is encrypted under its current key).

        :raises ConcurrencyError: a stream's revision is no longer the one the events
            were decided against; nothing is written.
        """
        with self.write_transaction():
            self._check_revisions(events, expect or {})
            base = self._verified_base(signer)
            return self._append_locked(
                events, actor, occurred_at, origin, keys, kdf, signing_key, signer, base,
                also=expect or {}, decided=decided or {},
            )[0]

    def append_chunks(
        self, chunks: Iterable[Sequence[NewEvent]], *, actor: str, occurred_at: str,
        origin: str = "", expect: Mapping[str, int] | None = None, signer: Signer | None = None,
        decided: dict[str, tuple[int, str | None]] | None = None,
    ) -> int:
        """Append the events of every chunk in one transaction, with one signed checkpoint
        of the final head: :meth:`append` for more events than fit in memory at once.

        ``chunks`` is consumed inside the transaction, so each chunk may be decided from
        what the ledger holds after the chunks before it (read through this recorder).
        ``expect`` is checked once, first; then each chunk's revisions as :meth:`append`
        checks them, and the read models catch up after each chunk. ``decided`` may be
        filled by ``chunks`` as it goes: what it holds after each chunk is checked with
        that chunk (see :data:`Decided`), then emptied. An error raised by
        a check or by ``chunks`` itself rolls everything back. Returns the number of
        events appended.

        :raises ConcurrencyError: a revision is not the one the events were decided against.
        :raises IntegrityError: with a ``signer``, the ledger's tail, checkpoint or a
            touched stream does not verify.
        """
        with self.write_transaction():
            self._check_revisions((), expect or {})
            base = self._verified_base(signer)
            self._verify_streams(expect or {}, base.root)
            appended = 0
            for chunk in chunks:
                if chunk:
                    self._check_revisions(chunk, {})
                skipped = dict(decided or {})
                if decided:
                    decided.clear()
                if chunk or skipped:
                    stored, base = self._append_locked(
                        chunk, actor, occurred_at, origin, None, None, None, None, base,
                        decided=skipped,
                    )
                    appended += len(stored)
            if signer is not None and appended:
                self._sign_head(*self.head(), occurred_at, signer, base)
            return appended

    def _append_locked(
        self, events: Sequence[NewEvent], actor: str, occurred_at: str, origin: str,
        keys: Mapping[int, bytes | None] | None, kdf: KdfRecord | None,
        signing_key: bytes | None, signer: Signer | None, base: _Base,
        also: Collection[str] = (), decided: Decided | None = None,
    ) -> tuple[list[StoredEvent], _Base]:
        """Write the rows. ``base`` is what the latest checkpoint signs before them: its
        heads root, when known, is what the touched streams (and ``also`` and
        ``decided``'s) must prove against, as the events' ``based_on`` and ``decided``
        must match; its tally, when known, is moved by the events. Returns the rows and
        the new base, which a checkpoint signs."""
        checks = dict(decided or {})
        for new in events:
            if new.based_on is not None and new.stream not in checks:
                checks[new.stream] = (new.stream_rev - 1, new.based_on)
        seq, prev_hash = self.head()
        stored: list[StoredEvent] = []
        for new in events:
            seq += 1
            type_name, schema_version, payload = new.row_fields()
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
        self._insert_events(stored)
        new_root, previous = self._advance_heads(stored, base.root, also, checks)
        new_base = _Base(new_root, None if base.tally is None
                         else self._advance_tally(base.tally, events, stored, previous))
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
            self._sign_head(seq, prev_hash, occurred_at, signer, new_base)
        if self.projector is not None:
            self.projector.catch_up(cast(Recorder, self), [
                (new.event, row) for new, row in zip(events, stored, strict=True)])
        return stored, new_base

    def _advance_tally(self, tally: Tally, events: Sequence[NewEvent],
                       stored: Sequence[StoredEvent],
                       previous: Mapping[str, heads.Leaf | None]) -> Tally:
        """``tally`` moved by ``events``: each touched secret's tag before (from its proven
        previous head, read and checked against the leaf's hash) gives way to the tag of
        its last event here; every encrypting event counts once."""
        last: dict[str, ev.DomainEvent] = {}
        told: dict[str, tuple[str, str | None]] = {}  # stream -> (based_on, its tag)
        for new in events:
            if new.stream.startswith(ev.SECRET_STREAM_PREFIX):
                last[new.stream] = new.event
                if (new.based_on is not None and new.based_on_tag != ev.UNTOLD
                        and new.stream not in told):
                    told[new.stream] = (new.based_on, new.based_on_tag)
        before = {stream: previous.get(stream) for stream in last}
        gone: list[str | None] = []
        unread: dict[str, heads.Leaf] = {}
        for stream, leaf in before.items():
            if leaf is None:
                continue
            # The head this stream's first event was decided on is the proven one (the
            # leaf names its hash): its tag, read with that hash, needs no second look.
            if stream in told and told[stream][0] == leaf[3]:
                gone.append(told[stream][1])
            else:
                unread[stream] = leaf
        prior = self._events_at([leaf[2] for leaf in unread.values()])
        for stream, leaf in unread.items():
            event = prior.get(leaf[2])
            if event is None or event.stream != stream or content_hash(event) != leaf[3]:
                raise _heads_error(stream)
            gone.append(tally_rules.stored_tag(stream, event.type, event.schema_version,
                                               event.payload))
        try:
            return tally.advanced(
                gone, [tally_rules.live_tag(s, e) for s, e in last.items()],
                [v for v in (tally_rules.encrypted_under(new.event) for new in events)
                 if v is not None])
        except ValueError:
            raise _tally_error() from None

    def _insert_events(self, stored: Sequence[StoredEvent]) -> None:
        self.conn.executemany(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (s.seq, s.stream, s.stream_rev, s.type, s.schema_version, s.payload,
                 s.occurred_at, s.actor, s.origin, s.prev_hash, s.hash)
                for s in stored
            ],
        )

    def _rows_in(self, select: str, keys: Iterable[object]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``select ... IN (?)`` for every one of ``keys``, asked 500 at a time
        (SQLite bounds the parameters of one statement)."""
        pending = list(keys)
        for i in range(0, len(pending), 500):
            chunk = pending[i:i + 500]
            yield from self.conn.execute(select.replace("(?)", f"({', '.join('?' * len(chunk))})"),
                                         chunk)

    def _events_at(self, seqs: Iterable[int]) -> dict[int, StoredEvent]:
        return {row[0]: StoredEvent(*row) for row in self._rows_in(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN (?)", sorted(set(seqs)))}

    # -- the heads map -------------------------------------------------------------------

    def _bucket_leaves(self, buckets: Collection[int]) -> dict[int, dict[str, heads.Leaf]]:
        """Every leaf in each of ``buckets``, by bucket and stream."""
        found: dict[int, dict[str, heads.Leaf]] = {b: {} for b in buckets}
        for bucket, stream, revision, head_seq, head_hash, digest in self._rows_in(
                "SELECT bucket, stream, revision, head_seq, head_hash, digest FROM streams "
                "WHERE bucket IN (?)", sorted(buckets)):
            if bucket in found:
                found[bucket][stream] = (stream, revision, head_seq, head_hash, digest)
        return found

    def _node_digests(self, nodes: Collection[int]) -> dict[int, bytes]:
        return dict(self._rows_in("SELECT node, digest FROM heads_tree WHERE node IN (?)",
                                  sorted(nodes)))

    def _proven_leaves(
        self, bucket_of: Mapping[str, int], root: str
    ) -> tuple[dict[int, dict[str, heads.Leaf]], dict[int, bytes], dict[str, bytes]]:
        """The leaves of the buckets the streams of ``bucket_of`` (stream -> its bucket)
        fall in, the sibling digests above them and each leaf's digest, once they are
        shown to produce ``root``.

        :raises IntegrityError: they do not: a streams row or a tree node was changed
            behind keyledger's back.
        """
        leaves, siblings, digests = self._load_leaves(bucket_of)
        # A row's bucket column is only an index (the name decides the bucket), but it
        # needs no check of its own here: each leaf digest covers the stream's name, so
        # the rows a bucket's column gathers give the signed bucket digest only if they
        # are exactly the streams whose names fall in it. A row moved into or out of a
        # bucket changes that bucket's digest, and the root below. (At a million streams
        # hashing every member's name again was a fifth of a migrate.)
        computed, _ = heads.recompute(_bucket_digests(leaves, digests), siblings)
        if computed != root:
            raise _heads_error()
        return leaves, siblings, digests

    def _load_leaves(
        self, bucket_of: Mapping[str, int]
    ) -> tuple[dict[int, dict[str, heads.Leaf]], dict[int, bytes], dict[str, bytes]]:
        """The leaves of the buckets of ``bucket_of``'s streams, the sibling digests above
        them and each leaf's digest, as stored (unproven)."""
        buckets = set(bucket_of.values())
        leaves = self._bucket_leaves(buckets)
        siblings = self._node_digests(heads.siblings_needed(buckets))
        return leaves, siblings, _leaf_digests(leaves)

    def _verify_streams(self, streams: Iterable[str], root: str | None) -> None:
        if root is not None:
            self._proven_leaves({stream: heads.bucket_of(stream) for stream in streams}, root)

    def prove_decided(self, decided: Decided, signer: Signer) -> None:
        """Show that decisions taken on unproven heads, with nothing to append, were taken
        on the proven ones (see :data:`Decided`).

        :raises ConcurrencyError: a stream moved on since (written meanwhile).
        :raises IntegrityError: a head it was decided on is not the one signed for.
        """
        if not decided:
            return
        with self._reading():
            root = self._verified_root(signer)
            bucket_of = {stream: heads.bucket_of(stream) for stream in decided}
            leaves, _, _ = (self._load_leaves(bucket_of) if root is None
                            else self._proven_leaves(bucket_of, root))
            _check_decided(leaves, bucket_of, decided)

    def _advance_heads(
        self, stored: Sequence[StoredEvent], root: str | None, also: Collection[str],
        decided: Decided | None = None,
    ) -> tuple[str | None, dict[str, heads.Leaf | None]]:
        """Move the touched streams' leaves and the tree over them; the new root (None
        on a format-3 ledger, which has no tree until :meth:`upgrade`) and each touched
        stream's leaf before (None: a new stream).

        With ``root`` given, the touched streams and ``also`` are first proven against it,
        so a signature over the new root never vouches for a head nobody checked."""
        if self.format_version < HEADS_FORMAT:
            self.conn.executemany(
                "INSERT INTO streams (stream, revision, head_seq) VALUES (?, ?, ?) "
                "ON CONFLICT (stream) DO UPDATE SET revision = excluded.revision, "
                "head_seq = excluded.head_seq",
                [(s.stream, s.stream_rev, s.seq) for s in stored],
            )
            return None, {}
        decided = decided or {}
        bucket_of = {stream: heads.bucket_of(stream) for stream in {s.stream for s in stored}}
        bucket_of.update((stream, heads.bucket_of(stream)) for stream in (*also, *decided)
                         if stream not in bucket_of)
        leaves, siblings, digests = (self._load_leaves(bucket_of) if root is None
                                     else self._proven_leaves(bucket_of, root))
        _check_decided(leaves, bucket_of, decided)
        changed: dict[str, tuple[heads.Leaf, int]] = {}
        before: dict[str, heads.Leaf | None] = {}
        for row in stored:
            bucket = bucket_of[row.stream]
            previous = leaves[bucket].get(row.stream)
            before.setdefault(row.stream, previous)
            if (previous[1] if previous else 0) + 1 != row.stream_rev:
                raise _heads_error()
            leaf = (row.stream, row.stream_rev, row.seq, row.hash,
                    heads.next_stream_digest(previous[4] if previous else heads.STREAM_START,
                                             row.hash))
            leaves[bucket][row.stream] = leaf
            changed[row.stream] = (leaf, bucket)
        for stream, (leaf, _) in changed.items():
            digests[stream] = heads.leaf_digest(leaf)
        # A stream with no leaf in its name's bucket is new: a row already there under
        # its name sits in another bucket (planted; the proofs never read that bucket),
        # and the upsert below, which keeps a row's bucket, would sign it in place.
        planted = next(iter(self._rows_in("SELECT stream FROM streams WHERE stream IN (?)",
                                          [s for s, leaf in before.items() if leaf is None])),
                       None)
        if planted is not None:
            raise _heads_error(planted[0])
        self.conn.executemany(
            "INSERT INTO streams (stream, revision, head_seq, head_hash, digest, bucket) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stream) DO UPDATE SET "
            "revision = excluded.revision, head_seq = excluded.head_seq, "
            "head_hash = excluded.head_hash, digest = excluded.digest",
            [(*leaf[:5], bucket) for leaf, bucket in changed.values()],
        )
        new_root, nodes = heads.recompute(_bucket_digests(leaves, digests), siblings)
        self.conn.executemany(
            "INSERT INTO heads_tree (node, digest) VALUES (?, ?) "
            "ON CONFLICT (node) DO UPDATE SET digest = excluded.digest",
            list(nodes.items()),
        )
        return new_root, before

    def _sign_head(self, seq: int, head_hash: str, signed_at: str, signer: Signer,
                   base: _Base) -> None:
        """Store the signed checkpoint of the head the transaction is about to commit."""
        heads_root = base.root
        tally = None if base.tally is None else base.tally.to_text()
        signature = signer.sign(seq, head_hash, signed_at, heads_root, tally)
        if self.format_version >= FORMAT_VERSION:
            self.conn.execute(
                "INSERT INTO checkpoints (seq, head_hash, signed_at, signature, heads_root, "
                "tally) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, head_hash, signed_at, signature, heads_root, tally),
            )
        elif self.format_version >= HEADS_FORMAT:
            self.conn.execute(
                "INSERT INTO checkpoints (seq, head_hash, signed_at, signature, heads_root) "
                "VALUES (?, ?, ?, ?, ?)", (seq, head_hash, signed_at, signature, heads_root),
            )
        else:
            self.conn.execute(
                "INSERT INTO checkpoints (seq, head_hash, signed_at, signature) VALUES (?, ?, ?, ?)",
                (seq, head_hash, signed_at, signature),
            )

    def verified_tip(self, signer: Signer) -> CheckpointRow:
        """The latest checkpoint, once shown to cover the ledger's last event: at its seq,
        naming the hash stored there, which that event's own fields produce, and signed
        with this ledger's key. Constant time.

        :raises IntegrityError: it does not (events or checkpoints written, cut or edited
            behind keyledger's back).
        """
        with self._reading():  # one snapshot: a commit between the two reads is no fault
            latest = self.latest_checkpoint()
            row = self.conn.execute(
                "SELECT seq, prev_hash, stream, stream_rev, type, schema_version, occurred_at, "
                "actor, origin, payload, hash FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        top = 0 if row is None else row[0]
        if row is not None and _row_hash(row) != row[10]:
            raise IntegrityError(
                f"the last event (seq {top}) does not match its hash (edited behind "
                "keyledger's back?); refusing to use this ledger: run `keyledger audit verify`"
            )
        if (latest is None or latest.seq != top or latest.event_hash != latest.head_hash
                or not self._signed(latest, signer)):
            signed = 0 if latest is None else latest.seq
            raise IntegrityError(
                f"the last event (seq {top}) is not covered by a valid signed checkpoint "
                f"(latest: seq {signed}; written behind keyledger's back?); refusing to use "
                "it: run `keyledger audit verify`"
            )
        return latest

    def _signed(self, checkpoint: CheckpointRow, signer: Signer) -> bool:
        """Whether ``checkpoint`` carries ``signer``'s valid signature. One read checks
        the tip several times (the secret, the keyring, the read-auditing setting): the
        signature is checked once per distinct checkpoint row, every field compared."""
        if self._signed_tip is not None and self._signed_tip == (signer, checkpoint):
            return True
        if not signer.holds(checkpoint.seq, checkpoint.head_hash, checkpoint.signed_at,
                            checkpoint.signature, checkpoint.heads_root, checkpoint.tally):
            return False
        self._signed_tip = (signer, checkpoint)
        return True

    def _verified_root(self, signer: Signer | None) -> str | None:
        """The heads root the next append must prove against (None: unsigned append)."""
        return self._verified_base(signer).root

    def _verified_base(self, signer: Signer | None) -> _Base:
        """The heads root and tally the latest checkpoint signs, which the next append
        proves against and moves on from (neither: an unsigned append; no tally: a
        format-4 ledger until :meth:`upgrade`)."""
        if signer is None:
            return _Base(None, None)
        if not self.head()[0]:
            return _Base(heads.EMPTY_ROOT, Tally())
        tip = self.verified_tip(signer)
        if self.format_version < HEADS_FORMAT:
            return _Base(None, None)
        if tip.heads_root is None:
            raise _heads_error()
        if self.format_version < FORMAT_VERSION:
            return _Base(tip.heads_root, None)
        return _Base(tip.heads_root, _signed_tally(tip))

    def verified_tally(self, signer: Signer) -> Tally:
        """The tally the latest checkpoint signs (:mod:`ledger.tally`), once that checkpoint
        is shown to cover the last event. Constant time.

        :raises IntegrityError: the checkpoint does not hold, or signs no tally.
        """
        tip = self.verified_tip(signer)
        if self.format_version < FORMAT_VERSION:
            raise _tally_error()
        return _signed_tally(tip)

    def verified_stream(self, stream: str, signer: Signer, *, whole: bool = False
                        ) -> list[StoredEvent]:
        """The head event of ``stream`` (``whole``: every event of it, in order), each
        shown to be the ledger's: the latest checkpoint holds (:meth:`verified_tip`), the
        stream's leaf proves against the heads root it signs, and the events' own fields
        produce the hashes the leaf commits to. An empty list: the proof shows the stream
        has no event. O(log n) in the ledger's size (``whole``: plus the stream's length).

        :raises IntegrityError: any of that does not hold; nothing is returned.
        """
        with self._reading():
            tip = self.verified_tip(signer)
            if tip.heads_root is None:
                raise _heads_error()
            leaves, _, _ = self._proven_leaves({stream: heads.bucket_of(stream)}, tip.heads_root)
            leaf = leaves[heads.bucket_of(stream)].get(stream)
            if leaf is None:
                return []
            _, revision, head_seq, head_hash, digest = leaf
            rows = (self.read_stream(stream) if whole
                    else [e for e in [self.event_at(head_seq)] if e is not None])
        if not rows or rows[-1].seq != head_seq or rows[-1].stream_rev != revision:
            raise _heads_error(stream)
        if whole:
            running = heads.STREAM_START
            for rev, row in enumerate(rows, 1):
                if row.stream != stream or row.stream_rev != rev or content_hash(row) != row.hash:
                    raise _heads_error(stream)
                running = heads.next_stream_digest(running, row.hash)
            if running != digest:
                raise _heads_error(stream)
        if rows[-1].stream != stream or content_hash(rows[-1]) != head_hash:
            raise _heads_error(stream)
        return rows

    def fold_verified_heads(self, signer: Signer, prefix: str,
                            fold: Callable[[StoredEvent], None]) -> None:
        """Call ``fold`` with the head event of every stream named ``prefix...``, then show
        that the whole heads map, every streams row and every head event is the one the
        latest checkpoint signs. Whatever ``fold`` gathered may be acted on only once this
        returns: it raises after the last call if anything did not hold. O(n) in the
        number of streams: for decisions about all of them (destroy, retire, migrate).

        :raises IntegrityError: a streams row, a tree node or a head event is not the
            signed one, or a stream is missing or added.
        """
        with self._reading():
            tip = self.verified_tip(signer)
            if tip.heads_root is None:
                raise _heads_error()
            upper = _prefix_upper_bound(prefix)
            cursor = self.conn.execute(
                f"""SELECT s.bucket, s.stream, s.revision, s.head_seq, s.head_hash, s.digest,
                    {", ".join("e." + c.strip() for c in _EVENT_COLUMNS.split(","))}
                    FROM streams s LEFT JOIN events e ON e.seq = s.head_seq
                    ORDER BY s.bucket, s.stream"""
            )
            digests: dict[int, bytes] = {}
            bucket, members = -1, list[heads.Leaf]()
            while batch := cursor.fetchmany(5000):
                for row in batch:
                    if row[0] != bucket:
                        if members:
                            try:
                                digests[bucket] = heads.bucket_digest(members)
                            except ValueError:
                                raise _heads_error() from None
                        bucket, members = row[0], []
                    stream, revision, head_seq, head_hash = row[1], row[2], row[3], row[4]
                    event = None if row[6] is None else StoredEvent(*row[6:])
                    if (event is None or heads.bucket_of(stream) != bucket
                            or event.stream != stream or event.stream_rev != revision
                            or content_hash(event) != head_hash):
                        raise _heads_error(stream)
                    members.append((stream, revision, head_seq, head_hash, row[5]))
                    if isinstance(stream, str) and prefix <= stream < upper:
                        fold(event)
            try:
                if members:
                    digests[bucket] = heads.bucket_digest(members)
            except ValueError:
                raise _heads_error() from None
            self._check_tree(digests, tip.heads_root)

    def verified_head(self, stream: str, signer: Signer) -> StoredEvent | None:
        """:meth:`verified_stream`'s head, or None for a stream without events."""
        rows = self.verified_stream(stream, signer)
        return rows[-1] if rows else None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One snapshot for several reads, unless the caller already holds a transaction."""
        if self.conn.in_transaction:
            yield
        else:
            with self.snapshot():
                yield

    def heads_map_matches(self, signer: Signer, prefix: str = "") -> int:
        """Every streams row and tree node against the root the latest checkpoint signs,
        and the number of those rows naming ``prefix...``: for ``audit verify``, once its
        walk of the chain has shown the events to be the signed ones, and for a
        ``migrate`` about to page through every secret (whose batches prove each head
        event they act on). Rows that produce the signed root are the ones keyledger
        wrote for those events, so, unlike :meth:`fold_verified_heads`, no head event is
        read. O(n) in the number of streams.

        :raises IntegrityError: a streams row or a tree node is not the signed one.
        """
        with self._reading():
            tip = self.verified_tip(signer)
            if tip.heads_root is None:
                raise _heads_error()
            digests, named = self._bucket_digests_of_rows(prefix)
            self._check_tree(digests, tip.heads_root)
            return named

    def _bucket_digests_of_rows(self, prefix: str = "") -> tuple[dict[int, bytes], int]:
        """Each non-empty bucket's digest, from the streams rows alone, and how many of
        the rows name ``prefix...`` (0 without one).

        :raises IntegrityError: a row sits in another bucket than its name's, or a leaf
            is malformed.
        """
        cursor = self.conn.execute(
            "SELECT bucket, stream, revision, head_seq, head_hash, digest FROM streams "
            "ORDER BY bucket, stream")
        digests: dict[int, bytes] = {}
        bucket, members = -1, list[heads.Leaf]()
        bucket_of, bucket_digest = heads.bucket_of, heads.bucket_digest
        upper = _prefix_upper_bound(prefix) if prefix else None
        named = 0
        try:
            while batch := cursor.fetchmany(5000):
                for row in batch:
                    if row[0] != bucket:
                        if members:
                            digests[bucket] = bucket_digest(members)
                        bucket, members = row[0], []
                    if bucket_of(row[1]) != bucket:
                        raise _heads_error(row[1] if isinstance(row[1], str) else None)
                    members.append(row[1:])
                    if upper is not None and prefix <= row[1] < upper:
                        named += 1
            if members:
                digests[bucket] = bucket_digest(members)
        except (ValueError, TypeError):
            raise _heads_error() from None
        return digests, named

    def _tree_given(self, digests: Mapping[int, bytes], root: str
                    ) -> tuple[dict[int, bytes], int | None]:
        """The tree the bucket ``digests`` give, once it produces the signed ``root``, and
        the first stored node that differs from it (None: the stored tree is that tree).

        :raises IntegrityError: the streams rows do not produce ``root``.
        """
        signed, computed = heads.recompute(digests, {})
        if signed != root:
            raise _heads_error()
        return computed, _first_node_not_given(computed, self.conn.execute(
            "SELECT node, digest FROM heads_tree"))

    def _check_tree(self, digests: Mapping[int, bytes], root: str) -> None:
        """The tree the bucket ``digests`` give must produce the signed ``root`` and be,
        node for node, the stored one: reads prove against stored nodes, so one edited
        (or added) node would make them refuse while the streams rows still hold.

        :raises IntegrityError: the streams rows do not produce ``root``, or a stored
            node differs from the one they give.
        """
        bad = self._tree_given(digests, root)[1]
        if bad is not None:
            raise IntegrityError(
                f"heads tree node {bad} does not hold what the signed streams give (the "
                "tree was changed behind keyledger's back); reads refuse until "
                "`keyledger rebuild-projections` rewrites it from the streams"
            )

    def rewrite_heads_tree(self, signer: Signer) -> bool:
        """Rewrite the heads tree from the streams rows once they are shown to produce the
        root the latest checkpoint signs; whether a stored node had to change. The tree is
        an index over those rows, so nothing is trusted that was not proven.

        :raises IntegrityError: the streams rows themselves are not the signed ones; the
            tree is left as it was.
        """
        with self.write_transaction():
            tip = self.verified_tip(signer)
            if tip.heads_root is None:
                raise _heads_error()
            computed, bad = self._tree_given(self._bucket_digests_of_rows()[0], tip.heads_root)
            if bad is None:
                return False
            self.conn.execute("DELETE FROM heads_tree")
            self.conn.executemany("INSERT INTO heads_tree (node, digest) VALUES (?, ?)",
                                  sorted(computed.items()))
            return True

    def verify_whole_chain(self, signer: Signer) -> None:
        """Walk the whole hash chain and check the signed tail: after this every event row
        is the ledger's (O(n); for a ledger with no heads map yet).

        :raises IntegrityError: a link is broken or the tail is not signed.
        """
        with self._reading():
            self.verified_tip(signer)
            bad = self.first_broken_link()
        if bad is not None:
            raise IntegrityError(
                f"the hash chain breaks at seq {bad}; refusing to use this ledger: "
                "run `keyledger audit verify`"
            )

    def upgrade(self, event: NewEvent, *, actor: str, occurred_at: str, origin: str,
                signer: Signer) -> bool:
        """Make a format-3 ledger current: check its whole chain and signed tail, build
        the heads map from the verified events, and append ``event`` with the first
        checkpoint that signs a heads root, in one transaction. Whether anything changed.

        :raises IntegrityError: the chain or its tail does not verify; nothing changes.
        """
        with self.write_transaction():
            self.format_version = self._stored_format_version()
            if not self.needs_upgrade:
                return False
            self.verify_whole_chain(signer)
            if self.format_version < HEADS_FORMAT:
                root = self._build_heads_map()
            else:
                signed_root = self.verified_tip(signer).heads_root
                if signed_root is None:
                    raise _heads_error()
                self.heads_map_matches(signer)
                root = signed_root
            for statement in _TALLY_SCHEMA:
                self.conn.execute(statement)
            tally = self._tally_of_verified_events()
            self._store_format_version(FORMAT_VERSION)
            self.conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'",
                              (str(FORMAT_VERSION),))
            self.format_version = FORMAT_VERSION
            self._check_revisions([event], {})
            self._append_locked([event], actor, occurred_at, origin, None, None, None, signer,
                                _Base(root, tally))
            return True

    def _build_heads_map(self) -> str:
        """Build the heads map (format 4) from the events, once the whole chain verified;
        its root."""
        for statement in _HEADS_SCHEMA:
            self.conn.execute(statement)
        leaves: dict[str, heads.Leaf] = {}
        for seq, stream, rev, digest in self.conn.execute(
                "SELECT seq, stream, stream_rev, hash FROM events ORDER BY seq"):
            previous = leaves.get(stream)
            if (previous[1] if previous else 0) + 1 != rev:
                raise _heads_error(stream)
            leaves[stream] = (stream, rev, seq, digest, heads.next_stream_digest(
                previous[4] if previous else heads.STREAM_START, digest))
        self.conn.executemany(
            "UPDATE streams SET revision = ?, head_seq = ?, head_hash = ?, digest = ?, "
            "bucket = ? WHERE stream = ?",
            [(*leaf[1:5], heads.bucket_of(stream), stream) for stream, leaf in leaves.items()],
        )
        by_bucket: dict[int, list[heads.Leaf]] = {}
        for stream, leaf in leaves.items():
            by_bucket.setdefault(heads.bucket_of(stream), []).append(leaf)
        root, nodes = heads.recompute(
            {b: heads.bucket_digest(members) for b, members in by_bucket.items()}, {}
        )
        self.conn.executemany("INSERT INTO heads_tree (node, digest) VALUES (?, ?)",
                              list(nodes.items()))
        return root

    def _tally_of_verified_events(self) -> Tally:
        """The tally (format 5) folded from every secret event, once the whole chain and
        the heads map verified: each secret's last event gives its tag."""
        upper = _prefix_upper_bound(ev.SECRET_STREAM_PREFIX)
        cursor = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream >= ? AND stream < ? ORDER BY seq",
            (ev.SECRET_STREAM_PREFIX, upper))

        def secret_events() -> Iterator[tuple[str, ev.DomainEvent]]:
            while batch := cursor.fetchmany(5000):
                for row in batch:
                    yield row[1], StoredEvent(*row).decode()

        return tally_rules.fold(secret_events())

    def _check_revisions(self, events: Sequence[NewEvent], expect: Mapping[str, int]) -> None:
        expected = dict(expect)
        for new in events:
            expected.setdefault(new.stream, new.stream_rev - 1)
        stored: dict[str, int] = dict(self._rows_in(
            "SELECT stream, revision FROM streams WHERE stream IN (?)", expected))
        conflicts = [s for s, revision in expected.items() if stored.get(s, 0) != revision]
        if conflicts:
            raise ConcurrencyError(conflicts)

    def erase_pending(self) -> str | None:
        """What a destroy or rekey could not yet erase from the file (see :meth:`shred`),
        or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?",
                                (ERASE_PENDING,)).fetchone()
        return None if row is None else str(row[0])

    def set_erase_pending(self, what: str | None) -> None:
        """Record (or, with None, clear) what is still to be erased by :meth:`shred`."""
        with self.write_transaction():
            if what is None:
                self.conn.execute("DELETE FROM meta WHERE key = ?", (ERASE_PENDING,))
            else:
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (ERASE_PENDING, what),
                )

    def first_broken_link(self, after_seq: int = 0, last_seq: int | None = None,
                          prev_hash: str = GENESIS_HASH) -> int | None:
        """The seq of the first row past ``after_seq`` (up to ``last_seq``) whose link,
        position or hash is wrong, ``prev_hash`` being the hash at ``after_seq``; None if
        every one holds (:func:`ledger.chain.first_broken_link`)."""
        return first_broken_link(chain_rows(self.conn, after_seq, last_seq), prev_hash,
                                 after_seq + 1)

    # -- copying a whole ledger ------------------------------------------------------------

    def copy_rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        """Every row of one of :data:`COPY_TABLES`, its columns in that order, streamed."""
        cursor = self._stream(f"SELECT {COPY_TABLES[table]} FROM {table} "
                              f"ORDER BY {COPY_TABLES[table].split(',')[0]}")
        while batch := cursor.fetchmany(5000):
            yield from batch

    def load_copy(self, source: SQLRecorder) -> int:
        """Fill this empty ledger with ``source``'s rows as they are, read in one snapshot
        and written in one transaction: the same events, hashes, checkpoints, signatures,
        wrapped keys and heads map; the read models then built from the events. The
        number of events copied.

        :raises LedgerFormatError: this ledger is not empty, or ``source`` is of an earlier
            format (opening it with the master password upgrades it).
        """
        if self.is_initialized():
            raise LedgerFormatError(f"{self.location} already holds a ledger; a copy needs an "
                                    "empty or absent destination")
        if source.needs_upgrade:
            raise LedgerFormatError(
                f"{source.location} has ledger format {source.format_version}; open it once "
                "with the master password (which upgrades it) before copying it")
        with source._reading(), self._creating_tables():
            self._create_schema()
            return self._fill_from(source)

    def _fill_from(self, source: SQLRecorder) -> int:
        """Inside a write transaction on empty tables: ``source``'s rows of every one of
        :data:`COPY_TABLES`, then the read models built from the events; the events'
        number."""
        for table, columns in COPY_TABLES.items():
            marks = ", ".join("?" * len(columns.split(",")))
            rows = source.copy_rows(table)
            while batch := list(itertools.islice(rows, 5000)):
                self.conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", batch)
        self._store_format_version(FORMAT_VERSION)
        self.format_version = FORMAT_VERSION
        if self.projector is not None:
            self.projector.setup(cast(Recorder, self))
            self.projector.catch_up(cast(Recorder, self))
        return self.event_count()

    @contextlib.contextmanager
    def _creating_tables(self) -> Iterator[None]:
        """A write transaction that creates the ledger's tables (``_creating`` tells the
        backend that what a writer locks first does not exist yet)."""
        self._creating = True
        try:
            with self.write_transaction():
                yield
        finally:
            self._creating = False

    def ready_to_erase(self) -> bool:
        """Whether a change that must leave no old copy behind (a rekey) can be erased
        once made: SQLite first checkpoints its WAL (:meth:`shred`), which another
        process's older snapshot can keep from finishing."""
        return self.shred()

    # -- what a backend provides ----------------------------------------------------------

    _creating = False  # inside initialize or load_copy: the tables are being made

    def is_initialized(self) -> bool:
        raise NotImplementedError

    def shred(self, *, wait: bool = True) -> bool:
        raise NotImplementedError

    def _stream(self, sql: str, parameters: Sequence[object] = ()) -> Cursor:
        """``sql``'s rows, to be fetched in batches (a server may hold them server-side)."""
        return cast(Cursor, self.conn.execute(sql, parameters))

    @property
    def location(self) -> str:
        raise NotImplementedError

    @property
    def in_transaction(self) -> bool:
        raise NotImplementedError

    def write_transaction(self) -> contextlib.AbstractContextManager[object]:
        raise NotImplementedError

    def snapshot(self) -> contextlib.AbstractContextManager[object]:
        raise NotImplementedError

    def _create_schema(self) -> None:
        """Create the ledger's tables and append-only guards (inside ``initialize``)."""
        raise NotImplementedError

    def _stored_format_version(self) -> int:
        raise NotImplementedError

    def _store_format_version(self, version: int) -> None:
        raise NotImplementedError

    def _naming_clause(self, name: str) -> tuple[str, list[object]]:
        """A WHERE clause (and its values) true for a row whose payload has a ``name``
        member (at any depth) equal to ``name``, false for one whose payload is not JSON."""
        raise NotImplementedError



CHAIN_ROWS_SELECT = (
    "SELECT seq, prev_hash, stream, stream_rev, type, schema_version, occurred_at, actor, "
    "origin, payload, hash FROM events"
)


#: Rows a paged read asks for at a time (:func:`paged_by_seq`).
PAGE_ROWS = 5000


def paged_by_seq(conn: Connection, select: str, after_seq: int | None, where: str = "1 = 1",
                 params: Sequence[object] = (), *, seq_column: str = "seq"
                 ) -> Iterator[tuple[Any, ...]]:
    """The rows of ``select WHERE where`` past ``after_seq`` (None: from the lowest, however
    low) in ``seq_column`` order (the first column selected), asked :data:`PAGE_ROWS` at a
    time by key: a client that fetches a whole result at once (psycopg's, outside a
    server-side cursor) holds one page, not a million-event ledger, and the rows are
    append-only, so pages neither skip nor repeat one."""
    last = after_seq
    while True:
        bound, args = ("1 = 1", params) if last is None else (f"{seq_column} > ?", (last, *params))
        page = conn.execute(
            f"{select} WHERE {bound} AND ({where}) ORDER BY {seq_column} LIMIT {PAGE_ROWS}",
            args).fetchall()
        yield from page
        if len(page) < PAGE_ROWS:
            return
        last = page[-1][0]


def chain_rows(conn: Connection, after_seq: int = 0,
               last_seq: int | None = None) -> Iterator[ChainRow]:
    """Rows ``after_seq + 1 .. last_seq`` as :data:`ChainRow` tuples, streamed."""
    yield from paged_by_seq(conn, CHAIN_ROWS_SELECT, after_seq, "seq <= ?",
                            (last_seq if last_seq is not None else 2**62,))


def _heads(conn: Connection, prefix: str, after: str, limit: int) -> list[StoredEvent]:
    """The head events of up to ``limit`` streams named ``prefix...`` past ``after``, in name
    order, each shown to be its streams row's (:func:`checked_heads`)."""
    columns = ", ".join("e." + c.strip() for c in _EVENT_COLUMNS.split(","))
    return checked_heads(conn.execute(
        f"""SELECT s.stream, s.revision, {columns} FROM streams s JOIN events e ON e.seq = s.head_seq
            WHERE s.stream > ? AND s.stream < ? ORDER BY s.stream LIMIT ?""",
        (max(prefix, after), _prefix_upper_bound(prefix), limit),
    ))


def head_row_pages(conn: Connection, prefix: str, size: int) -> Iterator[list[HeadRow]]:
    """The heads of the streams named ``prefix...`` as a forked worker reads them over a
    connection of its own (:meth:`Recorder.worker_heads`): ``size`` at a time, in name
    order, each with the hash a decision on it names."""
    after = ""
    while events := _heads(conn, prefix, after, size):
        after = events[-1].stream
        yield [(e.stream, e.stream_rev, e.type, e.schema_version, e.payload, decision_hash(e))
               for e in events]


def _kdf_rows(kdf: KdfRecord) -> list[tuple[str, str]]:
    return [
        ("kdf_algorithm", kdf.algorithm),
        ("kdf_iterations", str(kdf.iterations)),
        ("kdf_salt", base64.b64encode(kdf.salt).decode("ascii")),
        ("kek_check", kdf.kek_check),
    ]


def _prefix_upper_bound(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


