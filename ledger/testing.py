"""Helpers for tests, ours and our users': fast throwaway ledgers and the old format.

Nothing here is for production: :func:`create_test_ledger` uses a deliberately weak KDF
so that a test suite can create hundreds of ledgers in seconds.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger import crypto
from ledger.seen import STATE_DIR_ENV
from ledger.service import Ledger
from ledger.session import Clock
from ledger.store import Projector

TEST_KDF_ITERATIONS = 1_000


def create_test_ledger(
    path: str | os.PathLike[str], password: str, *, actor: str = "tester@example",
    clock: Clock | None = None, projector: Projector | None = None,
) -> Ledger:
    """A new ledger whose KDF is fast and weak. Never use one for real secrets."""
    return Ledger.create(
        path, password, actor=actor, clock=clock or StepClock(), projector=projector,
        kdf_iterations=TEST_KDF_ITERATIONS, _allow_weak_kdf=True,
    )


class StepClock:
    """A clock that starts at ``start`` and moves ``step`` forward on every reading."""

    def __init__(
        self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
        step: timedelta = timedelta(seconds=1),
    ) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        current = self.now
        self.now += self.step
        return current


def seed_encrypt(
    password: str, version: int | None, plaintext: str, *,
    salt_template: str = crypto.SEED_SALT_TEMPLATE, legacy_key_version: int = 1,
    nonce: bytes | None = None,
) -> str:
    """A ciphertext exactly as the old key-rotation system wrote it.

    ``version=None`` gives its legacy, un-versioned layout (under ``legacy_key_version``'s
    key). No associated data, as the old system used none.
    """
    key_version = legacy_key_version if version is None else version
    key = _seed_key(password, key_version, salt_template)
    nonce = os.urandom(crypto.NONCE_BYTES) if nonce is None else nonce
    body = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), None)
    header = b"" if version is None else bytes([version])
    return base64.b64encode(header + nonce + body).decode("ascii")


@functools.lru_cache(maxsize=64)
def _seed_key(password: str, version: int, salt_template: str) -> bytes:
    return crypto.derive_seed_key(password, version, salt_template)


def keyledger_command() -> list[str]:
    """The argv prefix that runs the ``keyledger`` CLI installed beside this interpreter
    (or, if the script is missing, the same entry point through ``python -c``)."""
    found = shutil.which("keyledger", path=str(Path(sys.executable).parent))
    if found:
        return [found]
    return [sys.executable, "-c", "from cli.launch import main; main()"]


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a ``keyledger`` child process in a test: this process's, less
    the password and keyledger's own settings (so the test says which it means) and the
    colour switches, but keeping where the host memory of checkpoints lives
    (:mod:`ledger.seen`), so a test's ledgers never reach the user's own memory."""
    env = {k: v for k, v in os.environ.items()
           if (k == STATE_DIR_ENV or not k.startswith(("ENCRYPTION_", "KEYLEDGER_")))
           and k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(extra)
    return env


def read_all(ledger: Ledger) -> dict[str, str]:
    """Every live secret's plaintext, by name."""
    return {info.name: ledger.get(info.name).value for info in ledger.secrets()}


def ledger_files(path: str | os.PathLike[str]) -> Iterator[Path]:
    """The ledger file and its WAL and shared-memory files, where they exist."""
    base = Path(path)
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = base.with_name(base.name + suffix)
        if candidate.exists():
            yield candidate
