"""Fixtures shared by the suite: throwaway ledgers on real SQLite files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import OTHER_VALUE, VALUE
from cli_support import PASSWORD as CLI_PASSWORD
from hypothesis import HealthCheck, settings

from ledger import Ledger
from ledger.testing import create_test_ledger
from projections import ReadModels, projector

settings.register_profile(
    "default", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("default")

PASSWORD = "correct horse battery staple"


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keyledger.db"


@pytest.fixture
def ledger(db_path: Path) -> Iterator[Ledger]:
    """A new ledger (weak, fast KDF) whose read models are kept inside each append."""
    with create_test_ledger(db_path, PASSWORD, projector=projector()) as opened:
        yield opened


@pytest.fixture
def views(ledger: Ledger) -> ReadModels:
    runner = ledger.recorder.projector
    return ReadModels(ledger.recorder, runner)  # type: ignore[arg-type]


# -- the in-process CLI suite (tests/test_cli_*.py; helpers in cli_support.py) -----------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """An empty ledger (key version 1 current) at ``tmp_path/keyledger.db``."""
    path = tmp_path / "keyledger.db"
    create_test_ledger(path, CLI_PASSWORD).close()
    return path


@pytest.fixture
def filled(db: Path) -> Path:
    """The ledger with two secrets on key version 1."""
    with Ledger.open(db, CLI_PASSWORD, actor="setup@test") as ledger:
        ledger.set("db_password", VALUE)
        ledger.set("api_token", OTHER_VALUE)
    return db


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the CLI believe stdin is a terminal, so it prompts instead of refusing."""
    monkeypatch.setattr("cli.context.stdin_is_tty", lambda: True)
    yield
