"""Editing a ledger's read models the way someone bypassing keyledger would.

The read-model tables refuse writes from any connection but keyledger's own (guard
triggers), so a plain ``sqlite3`` (or ``psql``) edit fails. :func:`edit_read_models` first
drops the guards, as a person set on the edit would; that moves the schema cookie (SQLite's,
or on PostgreSQL the digest of the catalog), which keyledger checks on open.
``cover_tracks`` leaves no such trace (SQLite: the guards put back and the cookie made to
agree; PostgreSQL: the guards left alone and the write marked as keyledger's): a forgery
that only ``health-check --deep`` (every row against its event) can see.

A target is a ledger file, or the ``postgresql://`` URL of a ledger's schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from ledger.locations import is_server


@contextmanager
def server_connection(url: str) -> Iterator[Any]:
    """A plain psycopg connection (not keyledger's) to the schema of the ledger at ``url``,
    as the role the URL names, in one transaction committed on leaving."""
    import psycopg

    from ledger.store_postgres import split_target

    conninfo, schema = split_target(url)
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
        yield conn


def refused_edit(target: Path | str, sql: str) -> str:
    """Try ``sql`` on a plain connection with the guards in place; the error it gets."""
    if is_server(str(target)):
        import psycopg

        try:
            with server_connection(str(target)) as conn:
                conn.execute(sql)
        except psycopg.Error as exc:
            return str(exc)
        raise AssertionError(f"the guards let {sql!r} through")
    with closing(sqlite3.connect(target)) as conn:
        try:
            conn.execute(sql)
        except sqlite3.DatabaseError as exc:
            return str(exc)
        conn.commit()
    raise AssertionError(f"the guards let {sql!r} through")


def edit_read_models(target: Path | str, *statements: str, cover_tracks: bool = False) -> None:
    if is_server(str(target)):
        _edit_on_server(str(target), statements, cover_tracks)
        return
    with closing(sqlite3.connect(target)) as conn:
        guards = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'proj%guard%'"
        ).fetchall()
        for name, _ in guards:
            conn.execute(f"DROP TRIGGER {name}")
        for sql in statements:
            conn.execute(sql)
        if cover_tracks:
            # Each CREATE TRIGGER bumps the cookie by one: store the value it will end at.
            cookie = conn.execute("PRAGMA schema_version").fetchone()[0] + len(guards)
            conn.execute("UPDATE proj_checkpoint SET schema_cookie = ?", (cookie,))
            for _, sql in guards:
                conn.execute(sql)
        conn.commit()


def _edit_on_server(url: str, statements: tuple[str, ...], cover_tracks: bool) -> None:
    with server_connection(url) as conn:
        if cover_tracks:
            conn.execute("SELECT set_config('keyledger.writer', 'on', true)")
        else:
            for name, table in conn.execute(
                    """SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c
                       ON c.oid = t.tgrelid WHERE c.relnamespace = current_schema()::regnamespace
                       AND t.tgname LIKE 'proj%%guard%%'""").fetchall():
                conn.execute(f"DROP TRIGGER {name} ON {table}")
        for sql in statements:
            conn.execute(sql)


def plain_sql(target: Path | str, *statements: str) -> None:
    """Run ``statements`` on a plain connection (not keyledger's) and commit them."""
    if is_server(str(target)):
        with server_connection(str(target)) as conn:
            for sql in statements:
                conn.execute(sql)
        return
    with closing(sqlite3.connect(target)) as conn:
        for sql in statements:
            conn.execute(sql)
        conn.commit()


def plain_rows(target: Path | str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows ``sql`` gives on a plain connection (``?`` placeholders on both backends)."""
    if is_server(str(target)):
        with server_connection(str(target)) as conn:
            return list(conn.execute(sql.replace("?", "%s"), params).fetchall())
    with closing(sqlite3.connect(target)) as conn:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
        return rows


def ledger_exists(target: Path | str) -> bool:
    """Whether anything was made at ``target``: the file, or the schema."""
    if not is_server(str(target)):
        return Path(target).exists()
    conninfo, schema = _split(str(target))
    import psycopg

    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            (schema,)).fetchone() is not None


def contents(target: Path | str) -> object:
    """What a ledger holds, to compare before and after a refused change: the file's bytes,
    or every row of every table in the schema."""
    if not is_server(str(target)):
        return Path(target).read_bytes()
    with server_connection(str(target)) as conn:
        _, schema = _split(str(target))
        tables = [name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
            (schema,)).fetchall()]
        return {table: sorted(map(repr, conn.execute(f"SELECT * FROM {table}").fetchall()))
                for table in tables}


def _split(url: str) -> tuple[str, str]:
    from ledger.store_postgres import split_target

    return split_target(url)


def rewrite_rows(target: Path | str, *statements: str) -> None:
    """Run ``statements`` past the append-only triggers, as someone with write access to
    the file (or the server's superuser, whose ``session_replication_role`` skips them)
    would: SQLite's triggers are dropped, PostgreSQL's left in place but not fired."""
    if is_server(str(target)):
        with server_connection(str(target)) as conn:
            conn.execute("SET LOCAL session_replication_role = replica")
            for sql in statements:
                conn.execute(sql)
        return
    with closing(sqlite3.connect(target)) as conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                    "AND name LIKE '%\\_no\\_%' ESCAPE '\\'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        for sql in statements:
            conn.execute(sql)
        conn.commit()


@contextmanager
def holding_write_lock(target: Path | str) -> Iterator[None]:
    """Hold the ledger's write lock from another connection, as a long write elsewhere
    would: SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's lock on ``append_lock``."""
    if is_server(str(target)):
        with server_connection(str(target)) as conn:
            conn.execute("LOCK TABLE append_lock IN EXCLUSIVE MODE")
            yield
            conn.rollback()
        return
    holder = sqlite3.connect(target, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()
