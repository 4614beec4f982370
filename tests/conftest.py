"""Fixtures shared by the suite: throwaway ledgers on real SQLite files and in a real
PostgreSQL cluster (:mod:`pg_support`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pg_support
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


#: The storage backends the recorder contract and the read-model tests run on.
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg_support.Cluster]:
    """One throwaway PostgreSQL cluster for the whole run (a fresh schema per ledger).
    Without a server: a skip with the reason, or a failure where the run must have one
    (CI, or KEYLEDGER_REQUIRE_POSTGRES=1)."""
    why = pg_support.why_unavailable()
    if why is not None:
        if os.environ.get("CI") == "true" or os.environ.get(pg_support.REQUIRE_ENV) == "1":
            pytest.fail(f"PostgreSQL is required here: {why}")
        pytest.skip(why)
    with pg_support.running_cluster() as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _drop_test_schemas(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the cluster, its schemas are dropped (see
    :meth:`pg_support.Cluster.drop_handed_out`)."""
    yield
    if "pg_cluster" in request.fixturenames:
        request.getfixturevalue("pg_cluster").drop_handed_out()


@dataclass(frozen=True)
class Backend:
    """Where a test's ledgers live: ``name`` picks the recorder; ``target`` is the file
    (SQLite) or the URL of a fresh schema (PostgreSQL)."""

    name: str
    target: str
    cluster: pg_support.Cluster | None = None

    @property
    def db_path(self) -> Path:
        assert self.name == "sqlite", "a file only on SQLite"
        return Path(self.target)

    def fresh(self, name: str) -> str:
        """Another place for a ledger on this backend: ``name`` beside the test's file, or
        a fresh schema."""
        if self.cluster is not None:
            return self.cluster.url()
        return str(Path(self.target).with_name(name))

    def create(self, password: str = PASSWORD, *, projector: Projector | None = None) -> Ledger:
        """A new ledger (weak, fast KDF) on this backend."""
        return create_test_ledger(self.target, password, projector=projector)

    def open(self, password: str = PASSWORD, *, projector: Projector | None = None) -> Ledger:
        return Ledger.open(self.target, password, projector=projector)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``sqlite_only`` (about the file itself: its mode, WAL, SQLite's own
    errors) runs on SQLite alone: its PostgreSQL case is deselected, not skipped."""
    kept, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        on_server = params is not None and "postgresql" in params.params.values()
        (dropped if on_server and item.get_closest_marker("sqlite_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, db_path: Path) -> Backend:
    if request.param == "postgresql":
        cluster: pg_support.Cluster = request.getfixturevalue("pg_cluster")
        return Backend("postgresql", cluster.url(), cluster)
    return Backend(request.param, str(db_path))


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
def db(backend: Backend) -> Path | str:
    """An empty ledger (key version 1 current): the file ``tmp_path/keyledger.db``, or a
    fresh schema's URL, for ``--db``."""
    create_test_ledger(backend.target, CLI_PASSWORD).close()
    return backend.db_path if backend.name == "sqlite" else backend.target


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
