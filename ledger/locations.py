"""Where a ledger lives: a file path (SQLite) or a PostgreSQL server.

One function, :func:`open_recorder`, turns what a user names (``--db``, ``KEYLEDGER_DB``,
``Ledger.open``'s argument) into the recorder for it. A ``postgresql://`` URL or a libpq
keyword string picks :class:`ledger.store_postgres.PostgresRecorder`, imported only then,
so that a SQLite user never loads psycopg; anything else is a path.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from ledger.errors import LedgerFormatError

if TYPE_CHECKING:
    from ledger.store import Projector, Recorder
    from ledger.store_sqlite import Durability

#: How long a writer waits for another by default (seconds): the store's
#: ``LOCK_RETRY_SECONDS``, named here so that this module imports no store at load.
DEFAULT_LOCK_TIMEOUT = 30.0

Target = str | os.PathLike[str]


def is_server(target: Target) -> bool:
    """Whether ``target`` names a PostgreSQL ledger rather than a file: a
    ``postgresql://`` (or ``postgres://``) URL, or a libpq keyword string."""
    if not isinstance(target, str):
        return False
    text = target.strip()
    # Any libpq keyword string: "word=..." (a file whose name looks so is ./word=...).
    return text.lower().startswith(("postgresql://", "postgres://")) or re.match(
        r"[a-z_]+\s*=", text) is not None


def open_recorder(
    target: Target, *, create: bool = False, projector: Projector | None = None,
    read_only: bool = False, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    durability: Durability = "full",
) -> Recorder:
    """The recorder for the ledger at ``target`` (see :func:`is_server`), each commit as
    durable as ``durability`` says (SQLite's ``synchronous``, PostgreSQL's
    ``synchronous_commit``).

    :raises LedgerFormatError: a server is named but psycopg is not installed.
    """
    if is_server(target):
        try:
            from ledger.store_postgres import PostgresRecorder
        except ImportError as exc:
            if exc.name not in ("psycopg", "psycopg_binary", "psycopg_c"):
                raise
            raise LedgerFormatError(
                "a PostgreSQL ledger needs psycopg: pip install 'keyledger[postgres]'"
            ) from None
        return PostgresRecorder(str(target), create=create, projector=projector,
                                read_only=read_only, lock_timeout=lock_timeout,
                                durability=durability)
    from ledger.store_sqlite import SQLiteRecorder

    return SQLiteRecorder(target, create=create, projector=projector, read_only=read_only,
                          lock_timeout=lock_timeout, durability=durability)
