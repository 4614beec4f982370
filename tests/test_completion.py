"""Shell completion (bash, zsh, fish) through the real executable: commands, options,
secret names and key versions, read without a password and without writing anything."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_support import PASSWORD
from conftest import Backend
from tamper_support import contents, ledger_exists

from ledger.testing import child_environment, create_test_ledger, keyledger_command


def complete(db: Path | str, shell: str, words: str) -> list[str]:
    """What the shell would offer after ``words`` (the cursor at their end)."""
    env = child_environment(KEYLEDGER_DB=str(db), _KEYLEDGER_COMPLETE=f"complete_{shell}")
    if shell == "bash":
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1))
    else:
        env.update(_TYPER_COMPLETE_ARGS=words)
        if shell == "fish":
            env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    done = subprocess.run(keyledger_command(), env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    if shell == "zsh":  # _arguments '*: :(("a" "b"))', or one line per candidate
        return [w.strip('"') for w in done.stdout.replace("(", " ").replace(")", " ").split()
                if w.startswith('"')]
    return [line.split("\t")[0] for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture
def named(backend: Backend) -> Path | str:
    target = backend.db_path if backend.name == "sqlite" else backend.target
    with create_test_ledger(target, PASSWORD) as ledger:
        for name in ("db_password", "db_replica", "stripe_key"):
            ledger.set(name, "v")
        ledger.rotate()
    return target


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_secret_names_and_key_versions_complete_without_a_password(
    named: Path | str, shell: str
) -> None:
    before = contents(named)
    assert complete(named, shell, "keyledger secrets get db_") == ["db_password", "db_replica"]
    assert complete(named, shell, "keyledger keys retire ") == ["1", "2"]
    assert "stripe_key" in complete(named, shell, "keyledger run --only ")
    assert contents(named) == before  # nothing written, no read recorded


def test_commands_and_options_complete(named: Path | str) -> None:
    assert "secrets" in complete(named, "bash", "keyledger sec")
    assert "--format" in complete(named, "bash", "keyledger secrets export --fo")


def test_completing_where_no_ledger_is_offers_nothing_and_creates_nothing(
    backend: Backend
) -> None:
    assert complete(backend.target, "bash", "keyledger secrets get ") == []
    assert not ledger_exists(backend.target)


def test_the_completion_scripts_are_typers() -> None:
    for shell in ("bash", "zsh", "fish"):
        shown = subprocess.run([*keyledger_command(), "--show-completion", shell],
                               env=child_environment(), capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "_KEYLEDGER_COMPLETE" in shown.stdout, shell


def test_a_locked_ledger_completes_nothing_at_once(tmp_path: Path) -> None:
    """A long write holding the ledger (here an exclusive lock) must not make TAB wait out
    the lock timeout (attack pass, finding 10): nothing is offered, within a second or
    two, not thirty."""
    import sqlite3
    import time

    db = tmp_path / "k.db"
    with create_test_ledger(db, PASSWORD) as ledger:
        ledger.set("db_password", "v")
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        assert complete(db, "bash", "keyledger secrets get ") == []
        assert time.monotonic() - started < 15
    finally:
        holder.close()
