"""The event store in a PostgreSQL schema: :class:`PostgresRecorder`.

The store's rules are :class:`ledger.store.SQLRecorder`'s, the same statements as on
SQLite (through :class:`_Adapter`, which speaks psycopg with SQLite's ``?`` placeholders).
What is PostgreSQL's own lives here:

- a ledger is one schema (``keyledger`` by default) of a database, so one database holds
  several; the tables are those of SQLite's format with PostgreSQL's types, every text
  column in the ``"C"`` collation so that names sort by code point as SQLite sorts them;
- writers are serialised by an EXCLUSIVE lock on ``append_lock`` taken first in every
  write transaction (``lock_timeout`` bounds the wait), so ``seq`` is gapless in commit
  order without a sequence; reads take REPEATABLE READ snapshots and never block;
- ``events`` and ``checkpoints`` are append-only by trigger (UPDATE, DELETE, TRUNCATE) and
  by the grants of :mod:`ledger.store_postgres_roles`;
- payloads are stored as ``text``, never ``jsonb``: the hash covers their exact bytes.

Imported only when a ledger is named by a ``postgresql://`` URL or a libpq keyword string
(:func:`ledger.locations.open_recorder`): a SQLite user never loads psycopg.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from ledger.chain import first_broken_link
from ledger.errors import (
    ConcurrencyError,
    IntegrityError,
    LedgerBusyError,
    LedgerDatabaseError,
    LedgerFormatError,
    LedgerNotFoundError,
    LedgerStorageError,
    printable_ascii,
)
from ledger.events import StoredEvent
from ledger.store import (
    _EVENT_COLUMNS,
    _HEADS_SCHEMA,
    _LEDGER_SCHEMA,
    _TALLY_SCHEMA,
    COPY_TABLES,
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
from ledger.store_read_models import (
    GUARDED_ACTIONS,
    ReadModelTables,
    guard_name,
    register_tables,
)

DEFAULT_SCHEMA = "keyledger"
#: A schema name keyledger accepts: plain lower-case identifiers, never quoted, so that
#: the name in a URL, in SQL and in ``psql`` is the same.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: The table every writer locks first (EXCLUSIVE): one writer at a time, across hosts.
LOCK_TABLE = "append_lock"
APPEND_ONLY_FUNCTION = "keyledger_append_only"
#: ``text`` to ``jsonb``, or NULL where the text is not JSON: lets a query look into a
#: payload without a damaged one aborting the transaction.
JSON_FUNCTION = "keyledger_json"
#: What the read models' guards test: set (transaction-local) by keyledger's own writes
#: only, so that a plain ``psql`` edit of a read model fails, as SQLite's guards make it.
WRITER_SETTING = "keyledger.writer"
GUARD_FUNCTION = "keyledger_read_model_guard"
_GUARDED = ("events", "checkpoints")
#: A stored read-model cookie no catalog digest equals (digests are 56-bit, not negative).
MOVED = -1
#: How long an erasure's VACUUM FULL waits for its lock before the erasure stays pending.
SHRED_WAIT = 2.0
_GUARD_ACTIONS = ("UPDATE", "DELETE", "TRUNCATE")


def split_target(target: str) -> tuple[str, str]:
    """``(conninfo for libpq, schema)`` of a target :func:`ledger.locations.is_server` accepts: the
    ``schema`` parameter is keyledger's own (libpq would refuse it), default
    :data:`DEFAULT_SCHEMA`.

    :raises LedgerFormatError: the schema name is not a plain lower-case identifier.
    """
    text = target.strip()
    schema = DEFAULT_SCHEMA
    if text.lower().startswith(("postgresql://", "postgres://")):
        try:
            parts = urlsplit(text)
        except ValueError:
            raise LedgerFormatError("the postgresql:// URL is malformed (urllib cannot "
                                    "split it); nothing was opened") from None
        query = parse_qsl(parts.query, keep_blank_values=True)
        kept = [(k, v) for k, v in query if k != "schema"]
        schema = next((v for k, v in query if k == "schema"), schema)
        conninfo = urlunsplit(parts._replace(scheme=parts.scheme.lower(), query=urlencode(kept)))
    else:
        found = re.search(r"(?:^|\s)schema\s*=\s*(\S*)", text)
        if found is not None:
            schema = found.group(1).strip("'\"")
            text = (text[:found.start()] + " " + text[found.end():]).strip()
        conninfo = text
    if SCHEMA_NAME.fullmatch(schema) is None:
        raise LedgerFormatError(
            f"schema {printable_ascii(schema, 80)!r} is not a plain lower-case name "
            "(letters, digits and _, starting with a letter or _)")
    return conninfo, schema


def public_location(conninfo: str, schema: str) -> str:
    """The ledger's place as a URL without its password: ``postgresql://user@host:port/
    dbname?schema=...`` as libpq resolves it (defaults and ``PG*`` variables filled in)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:
        info = {}
    host = str(info.get("host") or info.get("hostaddr") or "")
    user = str(info.get("user") or "")
    port = str(info.get("port") or "")
    dbname = str(info.get("dbname") or "")
    where = (host if host and not host.startswith("/") else "") + (f":{port}" if port else "")
    query = {"schema": schema}
    if host.startswith("/"):
        query = {"host": host, **query}
    return urlunsplit(("postgresql", (f"{user}@" if user else "") + where, f"/{dbname}",
                       urlencode(query, safe="/"), ""))


def _ddl(statement: str) -> str:
    """One of the store's table statements (written for SQLite) in PostgreSQL's types:
    64-bit integers, ``bytea``, ``double precision``, and text compared by code point."""
    statement = statement.replace(" WITHOUT ROWID", "")
    statement = re.sub(r"\bINTEGER\b", "BIGINT", statement)
    statement = re.sub(r"\bBLOB\b", "BYTEA", statement)
    statement = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)
    return re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', statement)


def _guard_sql(table: str, action: str) -> str:
    each = "STATEMENT" if action == "TRUNCATE" else "ROW"
    return (f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
            f"FOR EACH {each} EXECUTE FUNCTION {APPEND_ONLY_FUNCTION}()")


#: The append-only triggers: name to the table it guards and what PostgreSQL says of it
#: (``pg_get_triggerdef``, schema names taken out).
APPEND_ONLY_TRIGGERS = {
    f"{table}_no_{action.lower()}": (table, _guard_sql(table, action))
    for table in _GUARDED for action in _GUARD_ACTIONS
}
_APPEND_ONLY_BODY = (
    " BEGIN RAISE EXCEPTION 'keyledger % are append-only', TG_TABLE_NAME "
    "USING ERRCODE = 'insufficient_privilege'; END ")
_GUARD_BODY = (
    f" BEGIN IF current_setting('{WRITER_SETTING}', true) IS DISTINCT FROM 'on' THEN "
    "RAISE EXCEPTION 'keyledger read models are written by keyledger only' "
    "USING ERRCODE = 'insufficient_privilege'; END IF; RETURN NULL; END ")
_JSON_BODY = " BEGIN RETURN payload::jsonb; EXCEPTION WHEN others THEN RETURN NULL; END "
_FUNCTIONS = [
    f"""CREATE FUNCTION {APPEND_ONLY_FUNCTION}() RETURNS trigger LANGUAGE plpgsql
        AS $body${_APPEND_ONLY_BODY}$body$""",
    f"""CREATE FUNCTION {GUARD_FUNCTION}() RETURNS trigger LANGUAGE plpgsql
        AS $body${_GUARD_BODY}$body$""",
    f"""CREATE FUNCTION {JSON_FUNCTION}(payload text) RETURNS jsonb LANGUAGE plpgsql
        IMMUTABLE STRICT AS $body${_JSON_BODY}$body$""",
]


# -- errors ---------------------------------------------------------------------------

_LOST = ("the connection to the PostgreSQL server was lost (restarted, or the network?); "
         "the transaction in progress was not committed: run the command again")


def database_reason(exc: psycopg.Error) -> str:
    """The server's (or libpq's) complaint in keyledger's words. Only the primary message
    is ever shown, printable ASCII only: the detail may quote a row."""
    state = exc.sqlstate or ""
    diag = getattr(exc, "diag", None)
    primary = printable_ascii((diag.message_primary if diag else None) or str(exc).split("\n")[0],
                              300)
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return f"permission denied for this database role ({primary})"
    if state in ("28P01", "28000"):
        return f"the server refused the login ({primary}; check PGPASSWORD or ~/.pgpass)"
    if state == "3D000":
        return f"no such database ({primary})"
    if state == "55P03":
        return "another writer holds the ledger's lock; try again"
    if state in ("40001", "40P01"):
        return "the transaction collided with another one; nothing was changed: try again"
    if state == "53100":
        return "the server's disk is full; nothing was changed"
    if state.startswith("57P") or state.startswith("08") or (
            isinstance(exc, psycopg.OperationalError) and not state):
        # libpq's own text: the server's FATAL line, if it answered, is the last part.
        said = primary.rsplit("FATAL:", 1)[-1].strip()
        if "password authentication failed" in said or "no password supplied" in said:
            return f"the server refused the login ({said}; check PGPASSWORD or ~/.pgpass)"
        if "does not exist" in said:
            return said
        if "closed the connection" in primary or "terminating connection" in primary or (
                "consuming input failed" in primary) or "sending query failed" in primary:
            return _LOST
        if "connection to server" in primary or "could not" in primary or state == "08001":
            return f"cannot reach the PostgreSQL server ({primary})"
        return _LOST
    return f"{primary} (SQLSTATE {state})" if state else primary


def _database_error(exc: psycopg.Error) -> LedgerDatabaseError:
    return LedgerDatabaseError(f"PostgreSQL: {database_reason(exc)}")


driver_errors(psycopg.Error, _database_error)
# psycopg logs what it could not clean up after a lost connection ("error ignored
# terminating Pipeline"); with no handler of the application's own, Python would print
# that beside keyledger's one line. An application that configures logging still gets it.
logging.getLogger("psycopg").addHandler(logging.NullHandler())


# -- the connection ----------------------------------------------------------------------


#: Fewer rows than this go row by row (pipelined): the bulk form's arrays cost more.
_BULK_ROWS = 16
_INSERT = re.compile(r"\s*INSERT INTO (\w+) \(([\w, ]+)\) VALUES \(([?, ]+)\)(.*)", re.S)
_UPDATE = re.compile(r"\s*UPDATE (\w+) SET (.+) WHERE (\w+) = \?\s*", re.S)


@dataclass(frozen=True, slots=True)
class _Bulk:
    """A statement rewritten to take one array per placeholder; ``key``: the positions of
    the row values that must not repeat within one batch."""

    text: str
    key: tuple[int, ...]


def _bulk_form(sql: str, types_of: Callable[[str], dict[str, str]]) -> _Bulk | None:
    """``sql`` taking one array per column through ``unnest``, for the two shapes the store
    writes in bulk; None for any other statement."""
    found = _INSERT.fullmatch(sql)
    if found is not None:
        table, columns, marks, rest = found.groups()
        names = [c.strip() for c in columns.split(",")]
        types = types_of(table)
        if marks.count("?") != len(names) or any(n not in types for n in names):
            return None
        conflict = re.match(r"\s*ON CONFLICT \(([\w, ]+)\)", rest)
        key_names = [c.strip() for c in conflict.group(1).split(",")] if conflict else names
        if rest.strip() and conflict is None:
            return None
        arrays = ", ".join(f"%b::{types[n]}[]" for n in names)
        return _Bulk(f"INSERT INTO {table} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
                     + rest.replace("%", "%%"),
                     tuple(names.index(k) for k in key_names if k in names))
    found = _UPDATE.fullmatch(sql)
    if found is None:
        return None
    table, assignments, key = found.groups()
    types = types_of(table)
    targets = re.findall(r"(\w+) = (?:\w+ \+ )?\?", assignments)
    if assignments.count("?") != len(targets) or any(t not in types for t in (*targets, key)):
        return None
    count = iter(range(1, len(targets) + 1))
    rewritten = re.sub(r"\?", lambda _: f"v.c{next(count)}", assignments)
    placeholders = [*targets, key]
    arrays = ", ".join(f"%b::{types[n]}[]" for n in placeholders)
    aliases = ", ".join(f"c{i}" for i in range(1, len(placeholders) + 1))
    return _Bulk(f"UPDATE {table} SET {rewritten} FROM unnest({arrays}) AS v({aliases}) "
                 f"WHERE {table}.{key} = v.c{len(placeholders)}", (len(placeholders) - 1,))


class _Adapter:
    """A psycopg connection (autocommit; transactions begun by the recorder) with the
    part of ``sqlite3.Connection``'s interface the shared code uses: ``?`` placeholders
    become ``%s`` (and a literal ``%`` is doubled) once per statement text."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        self._texts: dict[str, str] = {}
        self._bulks: dict[str, _Bulk | None] = {}
        self._types: dict[str, dict[str, str]] = {}

    def _text(self, sql: str) -> str:
        text = self._texts.get(sql)
        if text is None:
            text = self._texts[sql] = sql.replace("%", "%%").replace("?", "%s")
        return text

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(self._text(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> None:
        """Many rows in one statement where the statement has the shape of the store's
        bulk writes (an INSERT of values, an upsert, an UPDATE by key): the rows go as one
        array per column through ``unnest``. Any other statement, a handful of rows, or a
        batch that names one key twice (one statement would apply them in no set order)
        goes row by row, pipelined."""
        rows = [tuple(row) for row in parameters]
        if not rows:
            return
        if len(rows) >= _BULK_ROWS:
            bulk = self._bulk(sql)
            if bulk is not None and len({tuple(r[i] for i in bulk.key) for r in rows}) == len(rows):
                columns = list(zip(*rows, strict=True))
                self.raw.execute(bulk.text, [list(c) for c in columns])
                return
        with self.raw.cursor() as cursor:
            cursor.executemany(self._text(sql), rows)

    def _bulk(self, sql: str) -> _Bulk | None:
        if sql not in self._bulks:
            self._bulks[sql] = _bulk_form(sql, self._column_types)
        return self._bulks[sql]

    def _column_types(self, table: str) -> dict[str, str]:
        if table not in self._types:
            self._types[table] = dict(self.raw.execute(
                """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                   WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped""",
                (table,)).fetchall())
        return self._types[table]

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


@translates_database_errors
class PostgresRecorder(SQLRecorder):
    """The event store in one schema of a PostgreSQL database.

    ``target`` is a ``postgresql://`` URL or a libpq keyword string, with keyledger's own
    ``schema`` parameter (default :data:`DEFAULT_SCHEMA`); the password comes as libpq
    users expect (``PGPASSWORD``, ``~/.pgpass``, ``PGPASSFILE``), never from keyledger.
    ``create=True`` allows a schema that does not exist yet or holds nothing, for
    :meth:`initialize`. ``durability`` as on SQLite: ``"full"`` (the default) makes each
    commit wait for the server's WAL flush (``synchronous_commit = on`` for this session,
    whatever the server's setting), ``"normal"`` does not. ``read_only=True`` makes the
    session read-only (the server refuses every write). ``lock_timeout`` bounds how long a
    writer waits for another.
    """

    conn: _Adapter

    def __init__(
        self, target: str, *, create: bool = False, projector: Projector | None = None,
        lock_timeout: float = LOCK_RETRY_SECONDS, read_only: bool = False,
        durability: str = "full",
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.conninfo, self.schema = split_target(target)
        self.projector = projector
        self.lock_timeout = lock_timeout
        self.format_version = FORMAT_VERSION
        self._signed_tip: tuple[Signer, CheckpointRow] | None = None
        self._creating = False
        self._cursors = 0
        self._location = public_location(self.conninfo, self.schema)
        try:
            raw = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10,
                                  application_name="keyledger", client_encoding="UTF8")
        except psycopg.ProgrammingError:
            # libpq's complaint about the string quotes the string, password and all.
            raise LedgerFormatError(
                f"{self._location}: libpq cannot parse this connection string") from None
        except psycopg.Error as exc:
            reason = database_reason(exc)
            if reason == _LOST:
                reason = f"cannot connect to the PostgreSQL server at {self._location}"
            raise LedgerDatabaseError(f"PostgreSQL: {reason}") from None
        self.conn = _Adapter(raw)
        try:
            encoding = _set_up_session(raw, self.schema, durability=durability,
                                       read_only=read_only)
            if encoding != "UTF8":
                raise LedgerFormatError(
                    f"{self._location}: the database's encoding is {encoding}, "
                    "not UTF8; keyledger needs a UTF8 database")
            self._check_format(allow_empty=create)
        except BaseException:
            with contextlib.suppress(Exception):
                raw.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------

    def _check_format(self, *, allow_empty: bool) -> None:
        if not self._has_table("meta"):
            if allow_empty and not self._schema_tables():
                self._refuse_a_schema_of_another_role()
                return
            if not self._schema_exists():
                raise LedgerNotFoundError(
                    f"no ledger at {self._location}: the schema {self.schema!r} does not "
                    "exist (run 'keyledger init' first)")
            raise LedgerFormatError(
                f"{self._location} is not a keyledger ledger (the schema {self.schema!r} "
                "holds other tables)" if self._schema_tables() else
                f"{self._location} holds no keyledger ledger (run 'keyledger init' first)")
        altered = self.conn.raw.execute(
            """SELECT c.relname || '.' || a.attname, coalesce(k.collname, 'the default')
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_collation k ON k.oid = a.attcollation
               WHERE n.nspname = %s AND c.relname = ANY(%s) AND a.attnum > 0
               AND NOT a.attisdropped AND a.atttypid = 'text'::regtype
               AND k.collname IS DISTINCT FROM 'C' LIMIT 1""",
            (self.schema, list(LEDGER_TABLES))).fetchone()
        if altered is not None:
            # Every paging query and the heads map order names by code point: under another
            # collation a range of names can come back empty (migrate would skip them all).
            raise IntegrityError(
                f"{self._location}: column {printable_ascii(altered[0], 80)} has collation "
                f"{printable_ascii(altered[1], 40)}, not \"C\" (altered behind keyledger's "
                "back?); refusing to use this ledger")
        rows = dict(self.conn.execute(
            "SELECT key, value FROM meta WHERE key IN ('format_version', 'ledger_id')").fetchall())
        if "ledger_id" not in rows:
            raise LedgerFormatError(f"{self._location} is not a keyledger ledger")
        try:
            version = int(rows.get("format_version", ""))
        except ValueError:
            raise LedgerFormatError(
                f"{self._location}: ledger metadata is incomplete or damaged") from None
        if version < UPGRADABLE_FORMAT or version > FORMAT_VERSION:
            raise LedgerFormatError(
                f"{self._location} has ledger format {version}; this keyledger reads "
                f"{FORMAT_VERSION}" + (": upgrade keyledger" if version > FORMAT_VERSION else ""))
        self.format_version = version

    def _refuse_a_schema_of_another_role(self) -> None:
        """A schema's owner may drop anything in it: a ledger is made only in a schema
        this role owns (or one ``init`` creates), never in one someone else prepared."""
        # A superuser "has" every role, so membership alone is not enough: the owner must be
        # this role, a superuser, or (for an ordinary role) a role it belongs to.
        row = self.conn.raw.execute(
            """SELECT o.rolname, o.oid = me.oid OR o.rolsuper
                      OR (NOT me.rolsuper AND pg_has_role(me.oid, o.oid, 'USAGE'))
               FROM pg_namespace n JOIN pg_roles o ON o.oid = n.nspowner
               JOIN pg_roles me ON me.rolname = current_user WHERE n.nspname = %s""",
            (self.schema,)).fetchone()
        if row is not None and not row[1]:
            raise LedgerFormatError(
                f"the schema {self.schema!r} belongs to the role {printable_ascii(row[0], 60)!r}, "
                "which could drop the ledger's tables; create the ledger in a schema this role "
                "owns (or let `keyledger init` create it)")

    def _has_table(self, table: str) -> bool:
        return _table_exists(self.conn, self.schema, table)

    def _schema_exists(self) -> bool:
        return self.conn.raw.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                     (self.schema,)).fetchone() is not None

    def _schema_tables(self) -> list[str]:
        return [name for (name,) in self.conn.raw.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm')", (self.schema,))]

    def is_initialized(self) -> bool:
        return self._has_table("meta")

    def _hides_key_material(self) -> bool:
        """Whether row-level security applies to this role on ``meta`` (the auditor's)."""
        row = self.conn.raw.execute("SELECT row_security_active('meta')").fetchone()
        return bool(row and row[0])

    @property
    def location(self) -> str:
        return self._location

    def _stream(self, sql: str, parameters: Sequence[object] = ()) -> Any:
        """Inside a transaction, a server-side cursor: the rows come 5,000 a fetch, not all
        at once into this process's memory."""
        if not self.conn.in_transaction:
            return self.conn.execute(sql, parameters)
        self._cursors += 1
        cursor = self.conn.raw.cursor(name=f"keyledger_{self._cursors}")
        cursor.itersize = 5000
        return cursor.execute(self.conn._text(sql), tuple(parameters))

    def _insert_events(self, stored: Sequence[StoredEvent]) -> None:
        """COPY, not a statement per row: one stream of rows to the server."""
        if not stored:
            return
        with self.conn.raw.cursor() as cursor, cursor.copy(
                f"COPY events ({_EVENT_COLUMNS}) FROM STDIN") as copy:
            for s in stored:
                copy.write_row((s.seq, s.stream, s.stream_rev, s.type, s.schema_version,
                                s.payload, s.occurred_at, s.actor, s.origin, s.prev_hash, s.hash))

    def _rows_in(self, select: str, keys: Iterable[object]) -> Iterator[tuple[Any, ...]]:
        """One statement with an array (``= ANY``), not 500-value IN lists, whose long
        texts would each be parsed and planned afresh."""
        pending = list(keys)
        if pending:
            yield from self.conn.execute(select.replace(" IN (?)", " = ANY(?)"), (pending,))

    def _create_schema(self) -> None:
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {self.schema}",
            *(_ddl(s) for s in (*_LEDGER_SCHEMA, *_HEADS_SCHEMA, *_TALLY_SCHEMA)),
            f"CREATE TABLE {LOCK_TABLE} (id BIGINT PRIMARY KEY)",
            *_FUNCTIONS,
            *(trigger for _, trigger in APPEND_ONLY_TRIGGERS.values()),
        ]
        # One round trip (the simple query protocol runs them in order, in this transaction).
        self.conn.raw.execute(";\n".join(statements))
        self._take_write_lock()

    def _stored_format_version(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        return int(row[0]) if row else 0

    def _store_format_version(self, version: int) -> None:
        """The format is the ``format_version`` meta row itself: nothing more to store."""

    def _naming_clause(self, name: str) -> tuple[str, list[object]]:
        # strpos() on the name as the mapper encodes it skips most rows cheaply; the path
        # is a parameter, so that its '?' is not taken for a placeholder.
        from ledger import events as ev

        return (f"(strpos(payload, ?) > 0 AND jsonb_path_exists({JSON_FUNCTION}(payload), "
                "?::jsonpath, jsonb_build_object('n', ?::text)))",
                [ev.canonical_json(name), "strict $.**.name ? (@ == $n)", name])

    # -- reads of its own ------------------------------------------------------------------

    def trigger_faults(self) -> list[TriggerFault]:
        """How the triggers on the ledger's tables differ from keyledger's: an append-only
        one missing, disabled or altered (its function too), or any other trigger."""
        faults = trigger_faults(self.conn, self.schema, APPEND_ONLY_TRIGGERS, LEDGER_TABLES,
                                APPEND_ONLY_FUNCTION, _APPEND_ONLY_BODY)
        # The payload reader the history and log queries call: one that hides rows would
        # hide recorded reads from them.
        if _function_bodies(self.conn, self.schema, JSON_FUNCTION) != [_JSON_BODY]:
            faults.append(TriggerFault(JSON_FUNCTION, "events", "altered"))
        return sorted(faults, key=lambda f: f.name)

    def read_stream_naming(self, stream: str, name: str) -> list[StoredEvent]:
        """The events of ``stream`` whose payload's ``name`` field is ``name``, in order."""
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream = ? "
            f"AND {JSON_FUNCTION}(payload) ->> 'name' = ? ORDER BY stream_rev",
            (stream, name))
        return [StoredEvent(*row) for row in rows]

    def stream_heads_of(self, streams: Collection[str]) -> dict[str, StoredEvent]:
        rows = self.conn.execute(
            f"""SELECT s.stream, s.revision,
                {", ".join("e." + c.strip() for c in _EVENT_COLUMNS.split(","))}
                FROM streams s JOIN events e ON e.seq = s.head_seq
                WHERE s.stream = ANY(?)""", (list(streams),))
        return {head.stream: head for head in checked_heads(rows)}

    def worker_heads(self, prefix: str, size: int) -> Callable[[], Iterator[list[HeadRow]]] | None:
        """What a forked worker calls to page through the heads of the streams named
        ``prefix...``, ``size`` at a time in name order, over a connection of its own (one
        must not be used across ``fork``); None inside a transaction, whose snapshot a
        worker could not share."""
        if self.conn.in_transaction:
            return None
        return functools.partial(_head_pages, self.conninfo, self.schema, prefix, size)

    def worker_first_broken_link(self, after_seq: int, prev_hash: str
                                 ) -> Callable[[], int | None] | None:
        """:meth:`first_broken_link` from ``after_seq`` on, as a forked worker runs it: over
        a connection of its own, in one snapshot (None inside a transaction)."""
        if self.conn.in_transaction:
            return None
        return functools.partial(_first_broken_link_of, self.conninfo, self.schema, after_seq,
                                 prev_hash)

    def storage_check(self, *, quick: bool = False) -> str:
        """"ok": the server checks its own pages (data checksums, where the cluster has
        them on); keyledger's checks are the chain's and the signatures'."""
        return "ok"

    # -- transactions ----------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[_Adapter]:
        """BEGIN, the writers' lock (waited for up to ``lock_timeout``), ..., COMMIT.

        :raises LedgerBusyError: another writer held the lock throughout.
        :raises LedgerStorageError: the server's disk is full; nothing was written.
        """
        raw = self.conn.raw
        try:
            try:
                if self._creating:
                    raw.execute(f"BEGIN; SELECT set_config('{WRITER_SETTING}', 'on', true)")
                else:
                    self._take_write_lock(begin=True)
                yield self.conn
            except BaseException:
                self._rollback()
                raise
            try:
                raw.execute("COMMIT")
            except psycopg.OperationalError:
                raise LedgerDatabaseError(
                    "PostgreSQL: the connection was lost while committing; the change may "
                    "or may not have been written: check with `keyledger audit log` before "
                    "running it again") from None
        except pg_errors.DiskFull:
            raise LedgerStorageError("the PostgreSQL server's disk is full",
                                     "this change was not written") from None

    def _take_write_lock(self, *, begin: bool = False) -> None:
        """The writers' lock, waited for up to ``lock_timeout``, and the mark the read
        models' guards look for; with ``begin``, the transaction's BEGIN too: one round
        trip (the simple query protocol runs the statements in order, and stops at the
        first that fails)."""
        wait_ms = max(1, int(self.lock_timeout * 1000))
        try:
            self.conn.raw.execute(
                ("BEGIN; " if begin else "")
                + f"SET LOCAL lock_timeout = {wait_ms}; "
                f"LOCK TABLE {LOCK_TABLE} IN EXCLUSIVE MODE; SET LOCAL lock_timeout = 0; "
                f"SELECT set_config('{WRITER_SETTING}', 'on', true)")
        except pg_errors.LockNotAvailable:
            raise LedgerBusyError(
                f"{self._location} stayed locked by another writer for "
                f"{self.lock_timeout:g}s; try again") from None

    def _rollback(self) -> None:
        if not self.conn.raw.closed and self.conn.in_transaction:
            with contextlib.suppress(psycopg.Error):
                self.conn.raw.execute("ROLLBACK")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[_Adapter]:
        """One REPEATABLE READ, read-only snapshot for several reads; writers go on."""
        self.conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield self.conn
        finally:
            self._rollback()

    # -- roles -----------------------------------------------------------------------------

    def create_roles(self, prefix: str) -> list[str]:
        """Create the app, operator and auditor group roles (where missing) and grant them
        their rights on this ledger's schema, in one transaction; the role names. Needs a
        role that may create roles and owns the schema's tables (the one that ran init)."""
        from ledger.store_postgres_roles import role_names, roles_sql

        with self.write_transaction():
            for statement in roles_sql(self.schema, prefix):
                self.conn.raw.execute(statement)
        return list(role_names(prefix).values())

    # -- erasure ---------------------------------------------------------------------------

    def shred(self, *, wait: bool = True) -> bool:
        """Rewrite ``keys`` and ``meta`` (VACUUM FULL) so that the rows a destroy or rekey
        replaced leave the tables' files; whether it ran. Needs the tables' owner: another
        role leaves the erasure pending for the owner's next command. What the server keeps
        elsewhere (WAL, replicas, base backups) is in ``docs/security.md``."""
        if self.conn.in_transaction or not self._owns("keys", "meta"):
            # VACUUM by another role only warns that it skipped the table: nothing erased.
            return False
        try:
            # VACUUM FULL queues for an exclusive lock, and every new reader of keys and
            # meta queues behind it: a short wait, then pending, rather than a stall.
            self.conn.raw.execute(
                "SELECT set_config('lock_timeout', %s, false)",
                (f"{max(1, int(min(self.lock_timeout, SHRED_WAIT) * 1000)) if wait else 1}ms",))
            self.conn.raw.execute("VACUUM (FULL) keys, meta")
        except (pg_errors.InsufficientPrivilege, pg_errors.LockNotAvailable):
            return False
        finally:
            self.conn.raw.execute("SELECT set_config('lock_timeout', '0', false)")
        return True

    def _owns(self, *tables: str) -> bool:
        """Whether this role may VACUUM ``tables`` (it owns them, or is a superuser)."""
        row = self.conn.raw.execute(
            """SELECT bool_and(pg_has_role(current_user, c.relowner, 'USAGE')
                               OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname = ANY(%s)""", (self.schema, list(tables))
        ).fetchone()
        return bool(row and row[0])

    def ready_to_erase(self) -> bool:
        """Always: the VACUUM FULL after the change erases it, or leaves it pending for the
        tables' owner (a reader's snapshot never keeps old rows in the tables' files)."""
        return True

    def finish_pending_erasure(self) -> bool:
        if self.erase_pending() is None:
            return True
        try:
            if self.shred(wait=False):
                self.set_erase_pending(None)
                return True
        except (psycopg.Error, LedgerBusyError, LedgerDatabaseError):
            pass
        return False

    def backup_to(self, path: Path, *, overwrite: bool = False,
                  replacing: tuple[int, str] | None = None) -> None:
        """Copy this ledger into a new SQLite file at ``path`` (0600), from one snapshot:
        the portable format ``verify-backup`` and ``restore`` read. Never over a file."""
        from ledger.store_sqlite import SQLiteRecorder

        if overwrite or replacing is not None:
            raise LedgerFormatError("a PostgreSQL ledger's backup is always a new file")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        try:
            with SQLiteRecorder(path, create=True) as copy:
                copy.load_copy(self)
        except BaseException:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}{suffix}")
            raise

    def replace_with(self, source: SQLRecorder, replacing: tuple[int, str]) -> int:
        """Replace this ledger's content with ``source``'s (a restore's staged copy, its
        ``LedgerRestored`` already appended) in one transaction under the writers' lock,
        only if it still ends at ``replacing``: a write committed meanwhile is kept and
        nothing is replaced. The tables, their triggers and grants stay as they are; the
        append-only triggers are switched off for this transaction alone (no other session
        ever sees them off), which needs the tables' owner. The events' number.

        :raises ConcurrencyError: the ledger moved on from ``replacing``.
        :raises LedgerDatabaseError: this role does not own the ledger's tables.
        """
        if not self._owns(*LEDGER_TABLES):
            raise LedgerDatabaseError(
                f"restoring {self._location} needs the role that owns its tables (the one "
                "that ran init); nothing was restored")
        with source._reading(), self.write_transaction():
            if self.head() != replacing:
                raise ConcurrencyError(["the ledger being replaced"])
            raw = self.conn.raw
            # keyledger's own triggers, by name: one someone else added (and switched off)
            # is never switched on here. The caller refused the ledger if there was one.
            ours = [(table, name) for name, (table, _) in APPEND_ONLY_TRIGGERS.items()
                    if not name.endswith("_no_truncate")]
            for table, name in ours:
                raw.execute(f"ALTER TABLE {table} DISABLE TRIGGER {name}")
            for table in (*COPY_TABLES, *_read_model_tables(self.conn, self.schema)):
                raw.execute(f"DELETE FROM {table}")
            for table, name in ours:
                raw.execute(f"ALTER TABLE {table} ENABLE TRIGGER {name}")
            count = self._fill_from(source)
            if self.head() != source.head():
                raise IntegrityError(f"{self._location} does not end where the restored copy "
                                     "does; nothing was restored")
            return count


def _read_model_tables(conn: _Adapter, schema: str) -> list[str]:
    return [name for (name,) in conn.raw.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE 'proj\\_%%' "
        "ORDER BY tablename", (schema,))]


@contextlib.contextmanager
def _own_connection(conninfo: str, schema: str) -> Iterator[_Adapter]:
    """A connection of its own to the ledger's schema (a forked worker's), read-only."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10,
                         application_name="keyledger-worker", client_encoding="UTF8") as raw:
        _set_up_session(raw, schema, durability="full", read_only=True)
        yield _Adapter(raw)


def _set_up_session(raw: psycopg.Connection[Any], schema: str, *, durability: str,
                    read_only: bool) -> str:
    """Set a new connection's session, in one round trip: the ledger's schema before
    pg_catalog on the search path, ``"full"`` durability as a commit reported once the
    server flushed it (whatever the server's default; ``"normal"`` may lose the last
    commits if the server crashes), and, for a reader, no writes at all. The server's
    encoding."""
    row = raw.execute(
        "SELECT current_setting('server_encoding'), "
        "set_config('search_path', %s || ', pg_catalog', false), "
        "set_config('synchronous_commit', %s, false), "
        "set_config('default_transaction_read_only', %s, false)",
        (schema, "on" if durability == "full" else "off", "on" if read_only else "off"),
    ).fetchone()
    return str(row[0]) if row else ""


def _head_pages(conninfo: str, schema: str, prefix: str, size: int) -> Iterator[list[HeadRow]]:
    with _own_connection(conninfo, schema) as conn:
        yield from head_row_pages(conn, prefix, size)


def _first_broken_link_of(conninfo: str, schema: str, after_seq: int, prev_hash: str
                          ) -> int | None:
    with _own_connection(conninfo, schema) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return first_broken_link(chain_rows(conn, after_seq), prev_hash, after_seq + 1)


def trigger_faults(conn: _Adapter, schema: str, expected: Mapping[str, tuple[str, str]],
                   tables: Collection[str], function: str, body: str) -> list[TriggerFault]:
    """How the triggers on ``tables`` of ``schema`` differ from ``expected`` (name to the
    table and the definition): missing, disabled, with another definition (or the body of
    ``function``, which they call, no longer ``body``), and every other trigger there."""
    function_intact = _function_bodies(conn, schema, function) == [body]
    found = {name: (table, _unqualified(definition, schema), enabled)
             for name, table, definition, enabled in _triggers_on(conn, schema, tables)}
    faults = []
    for name, (table, definition) in expected.items():
        if name not in found:
            faults.append(TriggerFault(name, table, "missing"))
        elif (found[name][1] != definition or found[name][2] != "O" or not function_intact):
            faults.append(TriggerFault(name, table, "altered"))
    faults += [TriggerFault(name, table, "foreign")
               for name, (table, _, _) in found.items() if name not in expected]
    return sorted(faults, key=lambda f: f.name)


def _table_exists(conn: _Adapter, schema: str, table: str) -> bool:
    row = conn.raw.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
        (schema, table)).fetchone()
    return bool(row and row[0])


def _triggers_on(conn: _Adapter, schema: str, tables: Collection[str]
                 ) -> list[tuple[str, str, str, str]]:
    """``(name, table, definition, enabled)`` of every trigger not PostgreSQL's own on
    ``tables`` of ``schema``."""
    return list(conn.raw.execute(
        """SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid), t.tgenabled
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND NOT t.tgisinternal AND c.relname = ANY(%s)""",
        (schema, list(tables))).fetchall())


def _function_bodies(conn: _Adapter, schema: str, function: str) -> list[str]:
    """The source of each function of that name in ``schema`` (one, as keyledger makes it)."""
    return [body for (body,) in conn.raw.execute(
        """SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = %s AND p.proname = %s""", (schema, function))]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _unqualified(definition: str, schema: str) -> str:
    return " ".join(definition.replace(f"{schema}.", "").split())


# -- the read models' tables ------------------------------------------------------------


@translates_database_errors
class PostgresReadModelTables(ReadModelTables):
    """The read models' tables in the ledger's schema. Statement triggers refuse a write
    from any transaction keyledger did not mark as its own (:data:`WRITER_SETTING`), and
    the grants keep the application and auditor roles out; the schema "cookie" is a digest
    of the tables' definitions in the catalog."""

    def __init__(self, conn: _Adapter, schema: str) -> None:
        super().__init__(conn)  # type: ignore[arg-type]
        self._pg = conn
        self._schema = schema

    def _ddl(self, statement: str) -> str:
        return _ddl(statement)

    def _create_table(self, statement: str) -> None:
        """Only where the table is missing: PostgreSQL checks the right to create in the
        schema (the owner's) before it looks whether the table exists, and the operator
        role has no such right."""
        found = re.match(r"\s*CREATE TABLE IF NOT EXISTS (\w+)", statement)
        if found is None or not self._exists(found.group(1)):
            self._pg.execute(_ddl(statement))

    def _exists(self, table: str) -> bool:
        return _table_exists(self._pg, self._schema, table)

    def create_guards(self, table: str) -> None:
        """Create the missing guards of ``table``. The catalog's digest would be as before
        once they are back, so a guard put back also marks the stored cookie as moved:
        that it had been gone stays for :meth:`cookies` to show (SQLite's cookie only
        ever counts up, which does the same)."""
        present = {name for name, _, _, _ in _triggers_on(self._pg, self._schema, [table])}
        missing = [self.expected_guard(table, action, "") for action in self.guard_actions()
                   if guard_name(table, action) not in present]
        if missing:
            self._pg.raw.execute(";\n".join(missing))
            if self._exists("proj_checkpoint"):
                self._pg.execute(f"UPDATE proj_checkpoint SET schema_cookie = {MOVED}")

    def guard_actions(self) -> tuple[str, ...]:
        return (*GUARDED_ACTIONS, "TRUNCATE")

    def expected_guard(self, table: str, action: str, sqlite_sql: str) -> str:
        return (f"CREATE TRIGGER {guard_name(table, action)} BEFORE {action} ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {GUARD_FUNCTION}()")

    def schema(self) -> dict[str, str]:
        """Name to definition of every ``proj_*`` table (its columns), index and trigger."""
        raw = self._pg.raw
        found: dict[str, str] = {}
        for table, columns in raw.execute(
                """SELECT c.relname, string_agg(a.attname || ' ' || format_type(a.atttypid,
                          a.atttypmod) || coalesce(' COLLATE ' || quote_ident(k.collname), '')
                          || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                          || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''),
                          ', ' ORDER BY a.attnum)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                        AND NOT a.attisdropped
                   LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
                   LEFT JOIN pg_collation k ON k.oid = a.attcollation
                   WHERE n.nspname = %s AND c.relname LIKE 'proj\\_%%' AND c.relkind IN
                         ('r', 'v', 'm', 'p')
                   GROUP BY c.relname""", (self._schema,)):
            found[table] = f"TABLE {table} ({columns})"
        for name, definition in raw.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                "AND (tablename LIKE 'proj\\_%%' OR indexname LIKE 'proj\\_%%')",
                (self._schema,)):
            found[name] = _unqualified(definition, self._schema)
        for name, definition in raw.execute(
                """SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
                   JOIN pg_class c ON c.oid = t.tgrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND NOT t.tgisinternal
                   AND (c.relname LIKE 'proj\\_%%' OR t.tgname LIKE 'proj\\_%%')""",
                (self._schema,)):
            found[name] = _unqualified(definition, self._schema)
        for name, definition in raw.execute(
                """SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
                   JOIN pg_class r ON r.oid = c.conrelid
                   JOIN pg_namespace n ON n.oid = r.relnamespace
                   WHERE n.nspname = %s AND r.relname LIKE 'proj\\_%%'""", (self._schema,)):
            found[f"constraint {name}"] = definition
        return found

    def expected_layout(self, sqlite_schema: Mapping[str, str]) -> str | None:
        return POSTGRES_LAYOUT

    def trigger_faults(self, expected: Mapping[str, tuple[str, str]],
                       tables: Collection[str]) -> list[TriggerFault]:
        return trigger_faults(self._pg, self._schema, expected, tables, GUARD_FUNCTION,
                              _GUARD_BODY)

    def _digest(self) -> int:
        text = json.dumps(sorted(self.schema().items()))
        return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:7], "big")

    def cookies(self) -> tuple[int, int] | None:
        if not self._exists("proj_checkpoint"):
            return None
        row = self._pg.execute("SELECT schema_cookie FROM proj_checkpoint WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), self._digest())

    def store_cookie(self) -> None:
        found = self.cookies()
        if found is not None and found[0] != found[1]:
            self._pg.execute("UPDATE proj_checkpoint SET schema_cookie = ? WHERE id = 1",
                             (found[1],))

    def drop_all(self, tables: Iterable[str]) -> None:
        """Empty the checkpoint and ``tables`` (the operator role may not drop what the
        owner created), and drop any trigger on them that is not one of keyledger's guards
        (the owner's work: another role is refused, in one clear line)."""
        known = ["proj_checkpoint", *tables]
        ours = {guard_name(t, a) for t in known for a in self.guard_actions()}
        for table in known:
            if self._exists(table):
                self._pg.execute(f"DELETE FROM {table}")
        for name, table, _, _ in _triggers_on(self._pg, self._schema, known):
            if name not in ours:
                self._pg.raw.execute(f"DROP TRIGGER IF EXISTS {_quoted(name)} ON {table}")
        for (name,) in self._pg.raw.execute(
                """SELECT i.indexname FROM pg_indexes i WHERE i.schemaname = %s
                   AND (i.tablename LIKE 'proj\\_%%' OR i.indexname LIKE 'proj\\_%%')
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                   JOIN pg_namespace n ON n.oid = c.connamespace
                                   WHERE n.nspname = i.schemaname AND c.conname = i.indexname)""",
                (self._schema,)).fetchall():
            self._pg.raw.execute(f"DROP INDEX IF EXISTS {_quoted(name)}")

    def position(self) -> tuple[int, str]:
        if not self._exists("proj_checkpoint"):
            return 0, ""
        return super().position()

    def unreported_repair(self) -> object:
        if not self._exists("proj_checkpoint"):
            return None
        return super().unreported_repair()

    def has_key_rows(self) -> bool:
        return self._exists("proj_key_versions") and super().has_key_rows()

    def secrets_disagreeing(self, names: Collection[str] | None = None) -> list[str]:
        where, params = ("", ()) if names is None else ("WHERE p.name = ANY(?)", (sorted(names),))
        rows = self._pg.execute(
            f"""SELECT p.name, p.key_version, p.revision, p.scheme, p.updated_at, p.updated_seq,
                       p.deleted, s.head_seq, s.revision, e.seq, e.stream, e.stream_rev,
                       e.occurred_at, e.type, e.payload
                FROM proj_secrets p
                LEFT JOIN streams s ON s.stream = 'secret:' || p.name
                LEFT JOIN events e ON e.seq = p.updated_seq {where}""", params)
        bad: list[str] = []
        for (name, version, revision, scheme, updated_at, updated_seq, deleted, head_seq,
             stream_rev, seq, stream, event_rev, occurred_at, kind, payload) in rows:
            if not _row_agrees(name, version, revision, scheme, updated_at, updated_seq,
                               deleted, head_seq, stream_rev, seq, stream, event_rev,
                               occurred_at, kind, payload):
                bad.append(name)
                if len(bad) == 3:
                    break
        return bad


def _row_agrees(name: str, version: object, revision: object, scheme: object,
                updated_at: object, updated_seq: object, deleted: object, head_seq: object,
                stream_rev: object, seq: object, stream: object, event_rev: object,
                occurred_at: object, kind: object, payload: object) -> bool:
    """The same comparison as SQLite's query in ``ReadModelTables.secrets_disagreeing``."""
    if (head_seq != updated_seq or stream_rev != revision or seq is None
            or stream != f"secret:{name}" or event_rev != revision or occurred_at != updated_at
            or bool(deleted) != (kind == "SecretDeleted")):
        return False
    if deleted:
        return True
    try:
        body = json.loads(payload) if isinstance(payload, str) else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return False
    held = body.get("to_version", body.get("key_version"))
    return body.get("scheme") == scheme and held == version


#: The fingerprint of the read models' tables, indexes and constraints as a new
#: PostgreSQL ledger has them (:meth:`PostgresReadModelTables.schema`); a test holds it.
POSTGRES_LAYOUT = "c63f7851d4e46a5d724ae3a0f36ef41816ec230fe9c012532e7291b6a4becf58"


register_tables(PostgresRecorder, lambda recorder: PostgresReadModelTables(
    recorder.conn, recorder.schema))
