"""The event store in one SQLite file: :class:`SQLiteRecorder`.

The rules of the store (:class:`ledger.store.SQLRecorder`) are the same on every
backend; this module holds what is SQLite's own: opening a file safely (private mode, no
special files, read-only media), WAL and ``BEGIN IMMEDIATE``, the append-only triggers
and the file header (``application_id``, ``user_version``), the online backup, erasure by
checkpointing the WAL, and a faster chain walk with SQLite building the hash material.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import sqlite3
import stat
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from ledger import events as ev
from ledger.chain import GENESIS_HASH, first_broken_link
from ledger.errors import (
    ConcurrencyError,
    KeyledgerError,
    LedgerBusyError,
    LedgerDatabaseError,
    LedgerFormatError,
    LedgerNotFoundError,
    LedgerReadOnlyError,
    LedgerStorageError,
    printable_ascii,
)
from ledger.events import StoredEvent
from ledger.store import (
    _EVENT_COLUMNS,
    _HEADS_SCHEMA,
    _LEDGER_SCHEMA,
    _TALLY_SCHEMA,
    FORMAT_VERSION,
    LEDGER_TABLES,
    LOCK_RETRY_SECONDS,
    UPGRADABLE_FORMAT,
    CheckpointRow,
    HeadRow,
    Projector,
    Signer,
    SQLRecorder,
    TriggerFault,
    chain_rows,
    checked_heads,
    driver_errors,
    head_row_pages,
    translates_database_errors,
)

APPLICATION_ID = 0x4B4C4447  # "KLDG"
BUSY_TIMEOUT_MS = 2_000
#: An SQL function that exists only on keyledger's own connections. Triggers that must
#: refuse every other writer (the read models' guards) test it: on a foreign connection
#: the statement fails with "no such function" before it changes anything.
WRITER_FUNCTION = "keyledger_writer"


def _append_only(table: str, action: str) -> tuple[str, str]:
    return table, f"""CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}
        BEGIN SELECT RAISE(ABORT, 'keyledger {table} are append-only'); END"""


#: The triggers that make ``events`` and ``checkpoints`` append-only: name to the table
#: it guards and the SQL keyledger creates it with.
APPEND_ONLY_TRIGGERS = {
    f"{table}_no_{action.lower()}": _append_only(table, action)
    for table in ("events", "checkpoints")
    for action in ("UPDATE", "DELETE")
}


def database_reason(exc: sqlite3.Error) -> str:
    """SQLite's complaint in our words; its own text may quote a damaged row, so it is
    shown only after dropping everything but printable ASCII."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return "the ledger file is read-only; nothing was changed"
    if "full" in text:
        return "the disk is full; nothing was changed"
    if "locked" in text or "busy" in text:
        return "the ledger is locked by another process; try again"
    if "Could not decode" in text:
        return "the ledger file is damaged: a stored row is not valid text"
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return "the ledger file is damaged (SQLite: database disk image is malformed)"
    return printable_ascii(text)


def _database_error(exc: sqlite3.Error) -> LedgerDatabaseError:
    error = LedgerDatabaseError(f"ledger file error: {database_reason(exc)}")
    # Kept so that a transaction this error leaves can still tell a full or failing disk.
    error.sqlite_errorcode = getattr(exc, "sqlite_errorcode", None)  # type: ignore[attr-defined]
    return error


driver_errors(sqlite3.Error, _database_error)

Durability = Literal["full", "normal"]


@translates_database_errors
class SQLiteRecorder(SQLRecorder):
    """The event store in one SQLite file (WAL, ``BEGIN IMMEDIATE``).

    ``durability="full"`` (``synchronous=FULL``, the default) makes every commit survive
    power loss; ``"normal"`` may lose the last commits on power loss (never on a process
    crash) in exchange for fewer fsyncs. ``lock_timeout`` bounds how long a writer waits
    for another one before :class:`LedgerBusyError`.

    ``read_only=True`` is for a reader that must change nothing (``audit verify``, a
    backup being checked): every statement is refused a write, and a file this process
    may not write (a read-only medium, another user's ledger) is opened read-only, as
    :func:`_read_only_uri` says, rather than refused.
    """

    conn: sqlite3.Connection

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = False,
        projector: Projector | None = None, durability: Durability = "full",
        lock_timeout: float = LOCK_RETRY_SECONDS, read_only: bool = False,
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.path = Path(path)
        # Where it is, whatever the working directory later: for the processes and
        # connections that open it again (the migrate worker, audit verify's checks).
        self.file = self.path.absolute()
        self.projector = projector
        self.lock_timeout = lock_timeout
        self.format_version = FORMAT_VERSION
        self._signed_tip: tuple[Signer, CheckpointRow] | None = None
        _refuse_special_file(self.path, create=create)
        if create:
            _create_private_file(self.path)
        elif not self.path.exists():
            raise LedgerNotFoundError(f"no ledger at {self.path} (run 'keyledger init' first)")
        uri = _read_only_uri(self.file) if read_only and not _writable(self.file) else None
        # How a connection of its own reads this file (a check on a thread, a worker).
        self._reader_uri = uri or f"file://{quote(os.fsencode(self.file))}?mode=ro"
        try:
            if uri is not None:
                self.conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                            check_same_thread=False)
            else:
                self.conn = sqlite3.connect(self.path, isolation_level=None,
                                            check_same_thread=False)
            self.conn.create_function(WRITER_FUNCTION, 0, _is_keyledger, deterministic=True)
            self._wait_inside_sqlite()
            # An exclusive lock held elsewhere is waited out, as for a write.
            self._retry_locked(lambda: self._check_format(allow_empty=create))
            if read_only:
                self.conn.execute("PRAGMA query_only = ON")
            else:
                self._retry_locked(lambda: self.conn.execute("PRAGMA journal_mode = WAL"))
            self.conn.execute(f"PRAGMA synchronous = {durability.upper()}")
            # Freed content is overwritten with zeros, so an erased key leaves no copy behind.
            self.conn.execute("PRAGMA secure_delete = ON")
        except UnicodeDecodeError:
            # SQLite quoted bytes of a damaged schema that are not even UTF-8.
            with contextlib.suppress(Exception):
                self.conn.close()
            raise LedgerFormatError(
                f"{self.path} is not a keyledger ledger (malformed database schema)"
            ) from None
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self.conn.close()
            storage = _storage_error(self.path, exc, "nothing was changed")
            if storage is not None:
                raise storage from None
            if uri is not None and "immutable" not in uri and "unable to open" in str(exc):
                raise LedgerReadOnlyError(
                    f"{self.path} has a -wal file of changes not yet in the ledger file, and "
                    "no -shm file beside it that this user may create; copy the ledger with "
                    "its -wal to a writable place to read it"
                ) from None
            if _is_lock_error(exc):
                raise _locked(self.path) from None
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
        self.format_version = version
        if version < UPGRADABLE_FORMAT:
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

    @property
    def location(self) -> str:
        # ``..`` and ``.`` collapsed, symlinks not followed: one file reached by two
        # spellings of one path is one place, a symlink swapped in is not the file.
        return os.path.abspath(self.path)

    @classmethod
    def unreadable(cls, path: Path) -> str | None:
        """Why the file at ``path`` cannot be read as a ledger (not a database, no ledger
        tables, a damaged page anywhere: SQLite's ``quick_check``, O(n)), or None when it
        can. Opens it read-only and changes nothing."""
        try:
            with cls(path, read_only=True) as recorder:
                recorder.head()
                recorder.read_meta()
                problem = recorder.conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                if problem != "ok":
                    return "SQLite: " + " ".join(problem.replace("***", "").split())
        except (LedgerFormatError, LedgerStorageError) as exc:
            return " ".join(str(exc).split())
        except sqlite3.DatabaseError as exc:
            if _is_lock_error(exc):  # held by another process: says nothing of damage
                raise _locked(path) from None
            return f"SQLite: {' '.join(str(exc).split())}"
        return None

    @classmethod
    def damaged_head(cls, path: Path) -> tuple[int, str] | None:
        """The last event's ``(seq, hash)`` of a damaged ledger, where SQLite still opens
        it and reads that far; None where it does not."""
        try:
            with cls(path) as recorder:
                return recorder.head()
        except (LedgerFormatError, LedgerStorageError):
            return None
        except sqlite3.DatabaseError as exc:
            if _is_lock_error(exc):
                raise _locked(path) from None
            return None

    def trigger_faults(self) -> list[TriggerFault]:
        """How the triggers on the ledger's tables differ from keyledger's: the append-only
        ones missing or altered, and any other trigger on them. Reads the schema only."""
        return trigger_faults(self.conn, APPEND_ONLY_TRIGGERS, LEDGER_TABLES)

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

    def stream_heads_of(self, streams: Collection[str]) -> dict[str, StoredEvent]:
        """The head row of each of ``streams`` that has one, by stream, in one query."""
        rows = self.conn.execute(
            f"""SELECT s.stream, s.revision,
                {", ".join("e." + c.strip() for c in _EVENT_COLUMNS.split(","))}
                FROM json_each(?) AS wanted CROSS JOIN streams s ON s.stream = wanted.value
                JOIN events e ON e.seq = s.head_seq""",
            (json.dumps(list(streams)),),
        )
        return {head.stream: head for head in checked_heads(rows)}

    def worker_heads(self, prefix: str, size: int) -> Callable[[], Iterator[list[HeadRow]]] | None:
        """What a forked worker calls to page through the heads of the streams named
        ``prefix...``, ``size`` at a time in name order, over a read-only connection of its
        own: one must not be used across ``fork``."""
        # The fork must not copy an open transaction or statement (the worker's own
        # connection shares this process's SQLite locks), and a snapshot's reader must
        # read that snapshot: inside a transaction, no worker.
        if self.conn.in_transaction:
            return None
        return functools.partial(_head_pages, self._reader_uri, prefix, size)

    def first_broken_link(self, after_seq: int = 0, last_seq: int | None = None,
                          prev_hash: str = GENESIS_HASH) -> int | None:
        """The seq of the first row past ``after_seq`` (up to ``last_seq``) whose link,
        position or hash is wrong, ``prev_hash`` being the hash at ``after_seq``; None if
        every one holds (:func:`first_broken_link_in`)."""
        return first_broken_link_in(self.conn, after_seq, last_seq, prev_hash)

    def worker_first_broken_link(self, after_seq: int, prev_hash: str
                                 ) -> Callable[[], int | None] | None:
        """:meth:`first_broken_link` from ``after_seq`` to the end, as a forked worker
        runs it: over a read-only connection of its own (None inside a transaction)."""
        if self.conn.in_transaction:  # see worker_heads
            return None
        return functools.partial(_first_broken_link_of_file, self._reader_uri, after_seq, prev_hash)

    def storage_check(self, *, quick: bool = False) -> str:
        """SQLite's own check of the file (``integrity_check``, or the cheaper
        ``quick_check``), over a connection of its own so that it can run on another
        thread beside this one's work: "ok", or what it found."""
        pragma = "quick_check" if quick else "integrity_check"
        with _reader(self._reader_uri) as conn:
            return str(conn.execute(f"PRAGMA {pragma}").fetchone()[0])

    @property
    def in_transaction(self) -> bool:
        """Whether this connection is inside a transaction (a snapshot, or a write)."""
        return self.conn.in_transaction

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, waiting out other writers within a bound.

        :raises LedgerStorageError: the disk is full or failing; nothing was written.
        """
        try:
            self._retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, LedgerDatabaseError) as exc:  # translated in the body, or not
            storage = _storage_error(self.path, exc, "this change was not written")
            if storage is None:
                raise
            raise storage from None

    def backup_to(self, path: Path, *, overwrite: bool = False,
                  replacing: tuple[int, str] | None = None) -> None:
        """Copy this database to ``path`` in one step: a consistent snapshot even while
        other processes write. A new file is created 0600; ``overwrite`` replaces an
        existing database's content in one transaction.

        ``replacing`` is the ``(seq, hash)`` the ledger at ``path`` must still end in: it
        is checked once the copy holds ``path``'s write lock, before anything commits, so
        no write can land between the check and the replacement.

        :raises ConcurrencyError: ``path``'s ledger moved on from ``replacing``; nothing
            was replaced.
        """
        if not overwrite:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        # The destination waits for its write lock in short steps, so that the check
        # below runs only once a step holds it and the wait keeps our own budget.
        dest = sqlite3.connect(path, timeout=0.05)
        checked = False
        deadline = time.monotonic() + self.lock_timeout

        def check_under_lock(status: int, remaining: int, total: int) -> None:
            nonlocal checked
            if replacing is None or checked:
                return
            if status != sqlite3.SQLITE_OK:
                # SQLITE_BUSY/LOCKED: this step copied nothing and holds no lock; a check
                # now could pass before a writer holding the lock commits.
                if time.monotonic() >= deadline:
                    raise LedgerBusyError(
                        f"{path} stayed locked by another writer for "
                        f"{self.lock_timeout:g}s; nothing was replaced: try again")
                return
            checked = True
            with contextlib.closing(sqlite3.connect(path)) as reader:
                row = reader.execute(
                    "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            if tuple(row or (0, GENESIS_HASH)) != replacing:
                raise ConcurrencyError(["the ledger being replaced"])

        try:
            # A page a step when checking: the check runs after the first step that holds
            # the lock and has committed nothing (a larger step could be the last one,
            # which commits). Copying so costs about 1.6x, a second per 0.6 GB.
            self._retry_locked(lambda: self.conn.backup(
                dest, pages=1 if replacing is not None else -1,
                progress=check_under_lock if replacing is not None else None))
            dest.execute("PRAGMA journal_mode = WAL")
        finally:
            dest.close()

    def shred(self, *, wait: bool = True) -> bool:
        """Copy the WAL into the database file and truncate it, so content overwritten or
        erased (a destroyed data key, the wraps under an old master password) survives
        in neither file; whether it did.

        Another connection still reading a snapshot from before the change keeps the
        checkpoint from finishing (the database file must keep what it reads). With
        ``wait`` it is tried again until the lock timeout; without, once and at once.

        :raises LedgerBusyError: with ``wait``, another writer held the lock throughout.
        """
        if wait:
            # Another writer is waited out as for any write (LedgerBusyError past the
            # timeout), so that what remains to wait for is readers.
            self._retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
            self.conn.execute("ROLLBACK")
        deadline = time.monotonic() + (self.lock_timeout if wait else 0.0)
        delay = 0.01
        if not wait:
            self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    busy, log, moved = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                except sqlite3.OperationalError as exc:
                    if not _is_lock_error(exc):
                        raise
                    busy, log, moved = 1, 0, 0
                if not busy and log == moved:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
        finally:
            if not wait:
                self._wait_inside_sqlite()

    def _wait_inside_sqlite(self) -> None:
        """SQLite's own wait for a lock, capped by the caller's budget (``_retry_locked``
        does the rest)."""
        busy_ms = int(min(BUSY_TIMEOUT_MS, self.lock_timeout * 1000))
        self.conn.execute(f"PRAGMA busy_timeout = {busy_ms}")

    def finish_pending_erasure(self) -> bool:
        """One quick try (no waiting) at an erasure an earlier command left pending; whether
        nothing is pending any more. Best effort: a read-only copy keeps it pending."""
        if self.erase_pending() is None:
            return True
        try:
            if self.shred(wait=False):
                self.set_erase_pending(None)
                return True
        except (sqlite3.Error, KeyledgerError):
            pass
        return False

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads (WAL readers never block the writer)."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def _create_schema(self) -> None:
        for statement in (*_LEDGER_SCHEMA, *_HEADS_SCHEMA, *_TALLY_SCHEMA):
            self.conn.execute(statement)
        for _, trigger in APPEND_ONLY_TRIGGERS.values():
            self.conn.execute(trigger)
        self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _stored_format_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _store_format_version(self, version: int) -> None:
        self.conn.execute(f"PRAGMA user_version = {int(version)}")

    def _naming_clause(self, name: str) -> tuple[str, list[object]]:
        # instr() on the name as the mapper encodes it skips most rows cheaply; CASE
        # keeps json_tree() off a payload that is not JSON (`audit verify` reports it).
        return ("CASE WHEN instr(payload, ?) > 0 AND json_valid(payload) THEN EXISTS "
                "(SELECT 1 FROM json_tree(payload) WHERE key = 'name' AND type = 'text' "
                "AND atom = ?) ELSE 0 END", [ev.canonical_json(name), name])

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
                if not _is_lock_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise LedgerBusyError(
                        f"{self.path} stayed locked by another writer for "
                        f"{self.lock_timeout:g}s; try again"
                    ) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)


# -- walking the chain ---------------------------------------------------------------


MATERIAL_SQL = (
    "SELECT seq, prev_hash, hash, json_array(seq, prev_hash, stream, stream_rev, type, "
    "schema_version, occurred_at, actor, origin, payload) "
    "FROM events WHERE seq > ? AND seq <= ? ORDER BY seq"
)


def first_broken_link_in(conn: sqlite3.Connection, after_seq: int = 0,
                         last_seq: int | None = None, prev_hash: str = GENESIS_HASH) -> int | None:
    """:func:`first_broken_link` over rows ``after_seq + 1 .. last_seq`` of ``conn``, with
    SQLite building each row's hash material (about a third faster). A row whose
    material does not hash to its stored hash is checked again, with the rows after it,
    by :func:`hash_material` before it is called broken."""
    end = last_seq if last_seq is not None else 2**62
    try:
        cursor = conn.execute(MATERIAL_SQL, (after_seq, end))
    except sqlite3.OperationalError:  # an SQLite built without its JSON functions
        return first_broken_link(chain_rows(conn, after_seq, last_seq), prev_hash, after_seq + 1)
    sha256, expected = hashlib.sha256, after_seq + 1
    while batch := cursor.fetchmany(5000):
        for seq, row_prev, stored, material in batch:
            if seq != expected:
                return expected
            if row_prev != prev_hash:
                return expected
            if sha256(material.encode("utf-8")).hexdigest() != stored:
                return first_broken_link(chain_rows(conn, seq - 1, last_seq), prev_hash, expected)
            prev_hash, expected = stored, expected + 1
    return None


def _first_broken_link_of_file(uri: str, after_seq: int, prev_hash: str) -> int | None:
    with _reader(uri) as conn:
        return first_broken_link_in(conn, after_seq, prev_hash=prev_hash)


@contextlib.contextmanager
def _reader(uri: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection of its own to the ledger at ``uri``, closed on leaving:
    another connection of this program holds the file open, and a forked worker must not
    use the connection it inherited, nor a check on another thread this one's."""
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        yield conn


def _is_keyledger() -> int:
    return 1


def _head_pages(uri: str, prefix: str, size: int) -> Iterator[list[HeadRow]]:
    with _reader(uri) as conn:
        yield from head_row_pages(conn, prefix, size)


def _storage_error(path: Path, exc: sqlite3.Error | LedgerDatabaseError,
                   consequence: str) -> LedgerStorageError | None:
    """SQLite's full disk or I/O error, in keyledger's words (None: any other fault). An
    I/O error where the disk has almost no room left is called a full disk: SQLite
    reports one so when it cannot even create its -shm file."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return None
    if code & 0xFF == sqlite3.SQLITE_FULL or _almost_full(path):
        return LedgerStorageError(f"the disk holding {path} is full", consequence)
    return LedgerStorageError(f"disk I/O error on {path} (is the disk full or failing?)",
                              consequence)


def _almost_full(path: Path) -> bool:
    try:
        disk = os.statvfs(path.absolute().parent)
    except OSError:
        return False
    return disk.f_bavail * disk.f_frsize < 1 << 20


def _writable(file: Path) -> bool:
    """Whether this process may write the ledger file and create its -wal and -shm."""
    return os.access(file, os.W_OK) and os.access(file.parent, os.W_OK)


def _read_only_uri(file: Path) -> str:
    """How SQLite reads a ledger it may not write (``file`` absolute): ``mode=ro``, which
    reads a WAL left beside the file through its -shm, or, when no WAL holds anything,
    also ``immutable=1``: SQLite could not create the -shm it otherwise needs, and reads
    the file as it is without locking it. Nothing is written either way. (A writer with
    more rights at work meanwhile could be misread: such a read is for a copy at rest.)"""
    wal = Path(f"{file}-wal")
    held = wal.exists() and wal.stat().st_size > 0
    return f"file://{quote(os.fsencode(file))}?mode=ro" + ("" if held else "&immutable=1")


def trigger_faults(
    conn: sqlite3.Connection, expected: Mapping[str, tuple[str, str]], tables: Collection[str],
) -> list[TriggerFault]:
    """How the triggers on ``tables`` differ from ``expected`` (name to the table it guards
    and the SQL keyledger creates it with), in name order: each expected one missing or
    with other SQL (runs of whitespace aside, so one put back by hand from
    ``docs/formats.md`` counts), and every other trigger on those tables."""
    wanted = sorted({t.lower() for t in tables})
    rows = conn.execute(
        f"""SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'
            AND lower(tbl_name) IN ({", ".join("?" * len(wanted))})""",
        wanted,
    ).fetchall()
    found = {name: (table, sql) for name, table, sql in rows}
    faults = [
        TriggerFault(name, table, "missing" if name not in found else "altered")
        for name, (table, sql) in expected.items()
        if name not in found or _normal_sql(found[name][1]) != _normal_sql(sql)
    ]
    faults += [TriggerFault(name, table, "foreign")
               for name, (table, _) in found.items() if name not in expected]
    return sorted(faults, key=lambda f: f.name)


def _normal_sql(sql: object) -> str:
    return " ".join(sql.split()) if isinstance(sql, str) else ""



def _is_lock_error(exc: sqlite3.DatabaseError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _locked(path: Path) -> LedgerBusyError:
    return LedgerBusyError(f"{path} is locked by another process; try again")


def _refuse_special_file(path: Path, *, create: bool) -> None:
    """A ledger is a regular file, or a path where none exists yet: a device (``/dev/null``,
    which ``init`` would make private for the whole machine), a FIFO (which would hang the
    first read) or a directory is refused before anything opens or changes it. ``init``
    also refuses a symlink, whose target it would otherwise rewrite."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LedgerFormatError(f"cannot use {path}: {exc.strerror or exc}") from None
    if create and stat.S_ISLNK(info.st_mode):
        raise LedgerFormatError(f"{path} is a symbolic link; init the ledger at its target's "
                                "real path instead")
    try:
        info = path.stat()
    except OSError as exc:
        raise LedgerFormatError(f"cannot use {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise LedgerFormatError(f"{path} is a directory, not a ledger file")
    if not stat.S_ISREG(info.st_mode):
        raise LedgerFormatError(f"{path} is not a regular file (a device or a pipe); a "
                                "ledger must be a regular file")


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

