"""Fixtures shared by the suite: throwaway ledgers on real SQLite files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
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
