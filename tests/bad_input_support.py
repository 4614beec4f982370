"""Helpers for ``tests/test_bad_input.py``: what a clean refusal looks like, and what "unchanged" means.

A refusal is one printable line on stderr, a non-zero exit and no traceback; "unchanged"
is the events head, the key table, the metadata and the plaintext of every secret, and
(where the file was never legitimately written) the very bytes of the ledger file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import PASSWORD
from click.testing import Result

from ledger import Ledger
from ledger.testing import child_environment, keyledger_command, ledger_files, read_all

TIMEOUT = 60
MAX_LINE = 300


def assert_clear(line: str) -> None:
    """A line a person can read: printable, no replacement characters, not a data dump."""
    assert line.isprintable(), repr(line)
    assert "\ufffd" not in line, repr(line)
    assert len(line) <= MAX_LINE, f"{len(line)} characters: {line[:120]!r}..."


def refusal(result: Result, code: int | None = None) -> str:
    """The single clear error line of a command that failed (exit ``code`` if given)."""
    shown = result.stdout + result.stderr
    assert "Traceback" not in shown, shown[-2000:]
    assert result.exit_code != 0, (result.stdout, result.stderr)
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("❌ Error: "), lines[0]
    assert_clear(lines[0])
    return lines[0]


def digest(path: Path) -> str | None:
    """SHA-256 of the file's bytes, or None when it does not exist."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@dataclass(frozen=True)
class LedgerState:
    """Everything an operation could change, read straight from SQLite."""

    head: tuple[int, str | None]
    keys: frozenset[tuple[int, bytes | None]]
    meta: frozenset[tuple[str, str]]


def ledger_state(db: Path) -> LedgerState:
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        keys = frozenset(conn.execute("SELECT version, wrapped FROM keys"))
        meta = frozenset(conn.execute("SELECT key, value FROM meta"))
    return LedgerState((0, None) if row is None else (row[0], row[1]), keys, meta)


def plaintexts(db: Path, password: str = PASSWORD) -> dict[str, str]:
    with Ledger.open(db, password) as ledger:
        return read_all(ledger)


# -- damaging a ledger file -------------------------------------------------------------


def truncate(db: Path, size: int | None) -> None:
    """Cut the (checkpointed, WAL-less) ledger file to ``size`` bytes; None cuts it in half."""
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2 if size is None else size])


def scribble(db: Path, seed: int, *, runs: int = 4, run: int = 32) -> None:
    """Overwrite ``runs`` runs of ``run`` random bytes in every page but the first two and the last."""
    rng = random.Random(seed)
    data = bytearray(db.read_bytes())
    page = 4096
    for start in range(2 * page, len(data) - page, page):
        for _ in range(runs):
            offset = start + rng.randrange(100, page - run)
            data[offset : offset + run] = rng.randbytes(run)
    db.write_bytes(bytes(data))


def damage_payload(db: Path, name: str, replacement: bytes, seed: int = 0) -> None:
    """Overwrite bytes inside the stored payload of ``name``'s first event, in the file itself.

    The replacement lands inside the base64 ciphertext (at a seeded offset), where it is
    invisible to SQLite's own checks: only the hash chain and the decoders can notice.
    """
    data = bytearray(db.read_bytes())
    marker = data.find(b'{"ciphertext":"')
    while marker != -1 and f'"name":"{name}"'.encode() not in data[marker : marker + 400]:
        marker = data.find(b'{"ciphertext":"', marker + 1)
    assert marker != -1, f"no payload of {name} in {db}"
    offset = marker + 20 + random.Random(seed).randrange(0, 20)
    data[offset : offset + len(replacement)] = replacement
    db.write_bytes(bytes(data))


def foreign_sqlite(path: Path, *, with_meta: bool = False) -> None:
    """Another application's SQLite database (optionally with its own ``meta`` table)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("INSERT INTO users (email) VALUES ('someone@example.org')")
        if with_meta:
            conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.commit()


# -- the real executable -----------------------------------------------------------------


keyledger = keyledger_command


def child_env(db: Path, **extra: str) -> dict[str, str]:
    return child_environment(KEYLEDGER_DB=str(db), ENCRYPTION_MASTER_PASSWORD=PASSWORD,
                             NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1", COLUMNS="200", **extra)


def run_exe(
    args: list[str | bytes], env: dict[str, str] | dict[bytes, bytes], *,
    prefix: list[str] | None = None, preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run keyledger (after ``prefix``, e.g. setpriv) to completion; bytes in, bytes out."""
    return subprocess.run(
        [*(prefix or []), *keyledger(), *args], env=env, capture_output=True,
        stdin=subprocess.DEVNULL, timeout=TIMEOUT, preexec_fn=preexec_fn,
    )


def exe_refusal(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single clear error line of a child keyledger that failed."""
    out = result.stdout.decode("utf-8", "replace")
    err = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out + err, err[-3000:]
    assert result.returncode != 0, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("❌ Error: "), lines[0]
    assert_clear(lines[0])
    return lines[0]


ReadOnlyCopy = tuple[Path, list[str], Callable[[], None] | None]


@contextlib.contextmanager
def read_only_copy(template: Path) -> Iterator[ReadOnlyCopy]:
    """A copy of the ledger (with its -wal and -shm, where they exist) that keyledger may
    read but not write, and how to run keyledger so: ``(path, argv prefix, preexec_fn)``.

    As root, chmod stops nothing, so the child runs as ``nobody`` against a world-readable
    copy in a world-readable (not writable) directory outside pytest's private tmp tree.
    """
    folder = Path(tempfile.mkdtemp(prefix="keyledger-ro-"))
    try:
        db = folder / template.name
        for source in ledger_files(template):
            shutil.copy(source, folder / source.name)
        prefix: list[str] = []
        preexec: Callable[[], None] | None = None
        if os.geteuid() == 0:
            for copied in folder.iterdir():
                os.chmod(copied, 0o644)
            os.chmod(folder, 0o755)
            if shutil.which("setpriv"):
                prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            else:
                def drop() -> None:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                preexec = drop
        else:
            for copied in folder.iterdir():
                os.chmod(copied, 0o444)
            os.chmod(folder, 0o555)
            try:
                with open(db, "r+b"):
                    pytest.skip("chmod 0444 does not stop this user writing; cannot make a read-only ledger")
            except PermissionError:
                pass
        if prefix or preexec:
            probe = subprocess.run(
                [*prefix, *keyledger(), "--help"], capture_output=True,
                stdin=subprocess.DEVNULL, timeout=TIMEOUT, preexec_fn=preexec,
            )
            if probe.returncode != 0:
                pytest.skip("an unprivileged user cannot run keyledger from this checkout "
                            "(a private directory); test_read_only_connection covers the mapping")
        yield db, prefix, preexec
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder, ignore_errors=True)
