"""Fixtures shared by the suite: throwaway ledgers on real SQLite files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import OTHER_VALUE, VALUE
from cli_support import PASSWORD as CLI_PASSWORD
from hypothesis import HealthCheck, settings

from ledger import Ledger
from ledger.seen import STATE_DIR_ENV
from ledger.store import Projector
from ledger.testing import create_test_ledger
from projections import ReadModels, projector

settings.register_profile(
    "default", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("default")

PASSWORD = "correct horse battery staple"


def vector_copy(name: str, to: Path) -> Path:
    """A copy at ``to`` of the ledger ``tests/vectors/NAME``, written by an earlier
    keyledger (its password is :data:`PASSWORD`), for a test to open or change."""
    shutil.copyfile(Path(__file__).parent / "vectors" / name, to)
    return to


def pytest_configure(config: pytest.Config) -> None:
    """Session fixtures build ledgers before any test's own memory exists: give the
    whole run one of its own, never the developer's ``~/.local/state/keyledger``."""
    os.environ[STATE_DIR_ENV] = tempfile.mkdtemp(prefix="keyledger-host-state-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.pop(STATE_DIR_ENV, ""), ignore_errors=True)


@pytest.fixture(autouse=True)
def host_memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test gets its own memory of verified checkpoints (ledger.seen), outside the
    folder it works in, so no test sees another's ledgers or the developer's own. Set
    without monkeypatch, so a test's ``monkeypatch.undo()`` keeps it."""
    state = tmp_path_factory.mktemp("host-state")
    before = os.environ.get(STATE_DIR_ENV)
    os.environ[STATE_DIR_ENV] = str(state)
    yield state
    if before is None:
        os.environ.pop(STATE_DIR_ENV, None)
    else:
        os.environ[STATE_DIR_ENV] = before


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keyledger.db"


#: The storage backends the recorder contract and the read-model tests run on: a second
#: recorder adds its name here and a branch in :meth:`Backend.create`.
BACKENDS = ["sqlite"]


@dataclass(frozen=True)
class Backend:
    """Where a test's ledgers live: ``name`` picks the recorder, ``db_path`` its place."""

    name: str
    db_path: Path

    def create(self, password: str = PASSWORD, *, projector: Projector | None = None) -> Ledger:
        """A new ledger (weak, fast KDF) on this backend."""
        if self.name == "sqlite":
            return create_test_ledger(self.db_path, password, projector=projector)
        raise AssertionError(f"no backend {self.name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, db_path: Path) -> Backend:
    return Backend(request.param, db_path)


@pytest.fixture
def ledger(backend: Backend) -> Iterator[Ledger]:
    """A new ledger (weak, fast KDF) whose read models are kept inside each append."""
    with backend.create(projector=projector()) as opened:
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
