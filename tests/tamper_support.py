"""Editing a ledger's read models the way someone bypassing keyledger would.

The read-model tables refuse writes from any connection but keyledger's own (guard
triggers), so a plain ``sqlite3`` edit fails. :func:`edit_read_models` first drops the
guards, as a person set on the edit would; that changes SQLite's schema cookie, which
keyledger checks on open. ``cover_tracks`` also puts the guards back and makes the cookie
agree again: a forgery that only ``health-check --deep`` (every row against its event)
can see.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path


def refused_edit(path: Path, sql: str) -> str:
    """Try ``sql`` on a plain connection with the guards in place; the error it gets."""
    with closing(sqlite3.connect(path)) as conn:
        try:
            conn.execute(sql)
        except sqlite3.OperationalError as exc:
            return str(exc)
        conn.commit()
    raise AssertionError(f"the guards let {sql!r} through")


def edit_read_models(path: Path, *statements: str, cover_tracks: bool = False) -> None:
    with closing(sqlite3.connect(path)) as conn:
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
