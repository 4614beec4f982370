"""The ``keyledger`` executable derives the master key while the CLI is imported
(``cli.launch``, ``ledger.early``)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import typer
from conftest import PASSWORD
from typer.core import TyperGroup

import ledger
from cli import launch
from cli.app import app
from ledger import Ledger, SQLiteRecorder, WrongPasswordError, crypto, early
from ledger.testing import create_test_ledger

ENV = {launch.PASSWORD_ENV: PASSWORD}


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every PBKDF2 derivation made for the KEK."""
    made: list[str] = []
    real = crypto._pbkdf2

    def counted(password: str, salt: bytes, iterations: int) -> bytes:
        made.append(threading.current_thread().name)
        return real(password, salt, iterations)

    monkeypatch.setattr(crypto, "_pbkdf2", counted)
    monkeypatch.setattr(early, "_AHEAD", {})
    return made


@pytest.fixture
def made(db_path: Path) -> Path:
    create_test_ledger(db_path, PASSWORD).close()
    return db_path


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_an_unlocking_command_gets_the_key_derived_ahead(made: Path, derivations: list[str]) -> None:
    """One derivation, on the launcher's thread, and the unlock takes its result. Reading
    the salt leaves the ledger's directory as it was (no -wal or -shm files)."""
    before = files(made.parent)
    assert launch.derive_ahead(["--db", str(made), "secrets", "get", "x"], ENV)
    assert files(made.parent) == before
    with Ledger.open(made, PASSWORD) as opened:
        assert opened.keyring().current == 1
    assert derivations == ["keyledger-kdf"]
    assert early._AHEAD == {}


def test_a_wrong_password_derived_ahead_still_opens_nothing(made: Path, derivations: list[str]) -> None:
    """The stored check still decides. The first unlock forgets whatever else was started
    ahead, so the right password, tried next, derives in place."""
    with SQLiteRecorder(made) as recorder:
        head = recorder.head()
    assert launch.derive_ahead(["secrets", "get", "x"],
                               {launch.PASSWORD_ENV: "not it", launch.DB_ENV: str(made)})
    assert launch.derive_ahead(["secrets", "get", "x"], {**ENV, launch.DB_ENV: str(made)})
    with pytest.raises(WrongPasswordError):
        Ledger.open(made, "not it")
    assert early._AHEAD == {}
    with Ledger.open(made, PASSWORD) as opened:
        assert opened.recorder.head() == head
    assert sorted(derivations) == ["MainThread", "keyledger-kdf", "keyledger-kdf"]


def test_a_derivation_for_other_inputs_is_not_used(made: Path, derivations: list[str]) -> None:
    """Another salt (the ledger re-keyed since, say): the unlock derives its own key, and
    forgets the one started ahead."""
    other = made.parent / "other.db"
    create_test_ledger(other, PASSWORD).close()  # same password, its own salt
    derivations.clear()
    assert early.start(other, PASSWORD)
    for started in early._AHEAD.values():
        started.join()
    with Ledger.open(made, PASSWORD):
        pass
    assert derivations == ["keyledger-kdf", "MainThread"]
    assert early._AHEAD == {}


def test_a_ledger_in_use_is_read_through_its_wal(made: Path, derivations: list[str]) -> None:
    """With the ledger open elsewhere, its latest KDF record (in the WAL) is the one read:
    after a password change, the new salt."""
    with Ledger.open(made, PASSWORD) as opened:
        opened.recorder.conn.execute("PRAGMA wal_autocheckpoint = 0")
        opened.rekey_master("a new password", kdf_iterations=1000, _allow_weak_kdf=True)
        assert launch.derive_ahead(["secrets", "get", "x"],
                                   {launch.PASSWORD_ENV: "a new password",
                                    launch.DB_ENV: str(made)})
        with Ledger.open(made, "a new password"):
            pass
    # The first open and the rekey derive in place; the second open takes the new salt's.
    assert derivations == ["MainThread", "MainThread", "keyledger-kdf"]


@pytest.mark.parametrize("args", [
    ["info"], ["report", "--json"], ["init"], ["verify-backup", "b.db"], ["secrets", "list"],
    ["--help"], ["--db"], [], ["policy", "show"], ["secrets", "get", "x", "--help"],
])
def test_commands_that_do_not_unlock_derive_nothing(args: list[str], made: Path,
                                                    derivations: list[str]) -> None:
    assert not launch.derive_ahead(args, {**ENV, launch.DB_ENV: str(made)})
    assert derivations == [] and early._AHEAD == {}


def test_nothing_is_derived_without_what_it_needs(made: Path, tmp_path: Path,
                                                  derivations: list[str]) -> None:
    """No password in the environment (a prompt comes later), no ledger, not a ledger:
    the command does as it always did. Nothing is created on the way."""
    args = ["secrets", "get", "x"]
    assert not launch.derive_ahead(args, {launch.DB_ENV: str(made)})
    assert not launch.derive_ahead(args, {launch.PASSWORD_ENV: "", launch.DB_ENV: str(made)})
    missing = tmp_path / "none" / "keyledger.db"
    assert not launch.derive_ahead(["--db", str(missing), *args], ENV)
    assert not missing.exists()
    other = tmp_path / "notes.txt"
    other.write_text("not a database")
    before = files(tmp_path)
    assert not launch.derive_ahead([f"--db={other}", *args], ENV)
    assert files(tmp_path) == before
    assert derivations == []


@pytest.mark.parametrize(("args", "words", "db"), [
    (["secrets", "get", "a"], ("secrets", "get"), None),
    (["--db", "x.db", "--actor", "me", "migrate", "--yes"], ("migrate", "--yes"), "x.db"),
    (["--db=y.db", "--lock-timeout", "3", "health-check"], ("health-check", ""), "y.db"),
    (["--durability", "normal", "--help"], None, None),
    (["migrate", "--help"], None, None),
])
def test_the_command_is_read_past_the_root_options(
    args: list[str], words: tuple[str, ...] | None, db: str | None
) -> None:
    assert launch._command(args) == (words, db)


def test_the_root_options_that_take_a_value_are_the_apps() -> None:
    root = typer.main.get_command(app)
    assert {opt for p in root.params if not getattr(p, "is_flag", False)
            for opt in p.opts} == set(launch.VALUE_OPTIONS)


def test_every_unlocking_command_exists() -> None:
    """A renamed command would otherwise lose its head start without a word."""
    root = typer.main.get_command(app)
    for words in launch.UNLOCKING:
        command = root
        for word in words:
            assert isinstance(command, TyperGroup), words
            command = command.commands[word]


def test_the_package_imports_its_names_on_first_use() -> None:
    """``import ledger.crypto`` alone must not import pydantic (the launcher's head start),
    and every name ``ledger`` exports still resolves."""
    code = "import sys, ledger.crypto; print('pydantic' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
    assert sorted(ledger._HOMES) == sorted(ledger.__all__)
    for name in ledger.__all__:
        assert getattr(ledger, name) is not None
    with pytest.raises(AttributeError):
        _ = ledger.NoSuchName  # type: ignore[attr-defined]
