"""The part of the store a process reads before anything else: a ledger file's KDF record.

:func:`kdf_inputs` reads it without importing the rest of the store (nor pydantic), so
that the master key can be derived while the rest of keyledger is imported
(:mod:`ledger.early`). :meth:`ledger.store.SQLRecorder.read_meta` reads the same
record through :func:`parse_kdf`, so both hold a ledger to the same limits.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

#: A KDF iteration count above this is a damaged or hostile file, not a ledger to derive for.
MAX_KEK_ITERATIONS = 100_000_000


def parse_kdf(rows: Mapping[str, str]) -> tuple[str, bytes, int]:
    """``(algorithm, salt, iterations)`` from the ledger's meta rows.

    :raises KeyError, ValueError: the record is incomplete or out of range.
    """
    iterations = int(rows["kdf_iterations"])
    if not 1 <= iterations <= MAX_KEK_ITERATIONS:
        raise ValueError("KDF iteration count out of range")
    return rows["kdf_algorithm"], base64.b64decode(rows["kdf_salt"]), iterations


def kdf_inputs(path: Path) -> tuple[str, bytes, int] | None:
    """The KDF record of the ledger at ``path``, read without writing or creating anything;
    None for anything but a readable ledger.

    A ledger nobody has open has no ``-wal`` file, and is read as an immutable file: a
    read-only connection in WAL mode would leave ``-wal`` and ``-shm`` files behind. With
    a ``-wal`` file there, it is read through it, so a changed password counts."""
    try:
        where = path.absolute()
        if not where.is_file():  # a FIFO would block the open; a device is no ledger
            return None
        mode = "ro" if Path(f"{where}-wal").exists() else "ro&immutable=1"
        conn = sqlite3.connect(f"file://{quote(os.fsencode(where))}?mode={mode}", uri=True)
        try:
            rows = dict(conn.execute(
                "SELECT key, value FROM meta "
                "WHERE key IN ('kdf_algorithm', 'kdf_salt', 'kdf_iterations')"
            ).fetchall())
        finally:
            conn.close()
        return parse_kdf(rows)
    except (sqlite3.Error, OSError, KeyError, ValueError):  # binascii.Error is a ValueError
        return None
