"""The real ``keyledger`` executable in a child process: stdin closed, piped or a pty, on
both backends (what is about the file itself, its modes and bytes, on SQLite)."""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import BACKENDS, Backend
from tamper_support import ledger_exists, plain_rows

from ledger.testing import child_environment, create_test_ledger, keyledger_command, ledger_files

PASSWORD = "subprocess master password e41d"
VALUE = "tour-plaintext-value-0c7a93"
TIMEOUT = 60


keyledger = keyledger_command


def environment(db: Path | str, **extra: str) -> dict[str, str]:
    return child_environment(KEYLEDGER_DB=str(db), ENCRYPTION_MASTER_PASSWORD=PASSWORD, **extra)


def run(
    db: Path | str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run keyledger to completion with a private umask of 0, so only its own modes protect files."""
    result = subprocess.run(
        [*keyledger(), *args], input=stdin if stdin is not None else None,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, env=env or environment(db), timeout=TIMEOUT, umask=0,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def events_head(db: Path | str) -> tuple[int, str]:
    seq, digest = plain_rows(db, "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")[0]
    return seq, digest


@dataclass
class Tour:
    db: Path | str
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    bytes_while_open: dict[str, bytes] = field(default_factory=dict)
    bytes_after: dict[str, bytes] = field(default_factory=dict)


@pytest.fixture(scope="module", params=BACKENDS)
def tour(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    """init -> set (stdin) -> rotate --yes -> migrate --yes -> get, through the real executable.

    A reader connection is held open after init so the WAL survives the writers' exits
    and can be inspected.
    """
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_cluster").url()
        done = Tour(url)
        done.results["init"] = run(url, "init")
        done.results["set"] = run(url, "secrets", "set", "db_password", stdin=VALUE + "\n")
        done.results["rotate"] = run(url, "rotate", "--yes")
        done.results["migrate"] = run(url, "migrate", "--yes", "--json")
        done.results["get"] = run(url, "secrets", "get", "db_password", "--json")
        yield done
        return
    db = tmp_path_factory.mktemp("tour") / "keyledger.db"
    done = Tour(db)
    done.results["init"] = run(db, "init")
    holder = sqlite3.connect(db)
    try:
        holder.execute("SELECT count(*) FROM events").fetchone()
        done.results["set"] = run(db, "secrets", "set", "db_password", stdin=VALUE + "\n")
        done.results["rotate"] = run(db, "rotate", "--yes")
        done.results["migrate"] = run(db, "migrate", "--yes", "--json")
        done.results["get"] = run(db, "secrets", "get", "db_password", "--json")
        for path in ledger_files(db):
            done.modes[path.name] = mode(path)
            done.bytes_while_open[path.name] = path.read_bytes()
    finally:
        holder.close()
    for path in ledger_files(db):
        done.bytes_after[path.name] = path.read_bytes()
    yield done


def test_tour_init_set_rotate_migrate_get(tour: Tour) -> None:
    """The whole operator tour succeeds and the value read back is the one piped in."""
    for step, result in tour.results.items():
        assert result.returncode == 0, (step, result.stderr)
    migrated = json.loads(tour.results["migrate"].stdout)
    assert (migrated["migrated"], migrated["failed"], migrated["target_version"]) == (1, 0, 2)
    assert json.loads(tour.results["get"].stdout) == {
        "name": "db_password", "value": VALUE, "version": 2,
    }
    for step in ("init", "set", "rotate", "migrate"):
        shown = tour.results[step].stdout + tour.results[step].stderr
        assert VALUE not in shown and PASSWORD not in shown


@pytest.mark.sqlite_only
def test_tour_ledger_file_and_wal_are_private(tour: Tour) -> None:
    """Even under umask 0 the ledger file and its -wal (and -shm) are mode 0600."""
    assert isinstance(tour.db, Path)
    name = tour.db.name
    assert {name, name + "-wal"} <= set(tour.modes)
    assert all(m == 0o600 for m in tour.modes.values()), {k: oct(v) for k, v in tour.modes.items()}


@pytest.mark.sqlite_only  # the server's files: test_postgres.py
def test_tour_leaves_no_plaintext_or_password_in_ledger_bytes(tour: Tour) -> None:
    """Neither the secret value nor the master password appears in the ledger file or its WAL."""
    assert isinstance(tour.db, Path)
    # The scan can see data: the secret's name (not secret) is there in clear.
    assert b"db_password" in tour.bytes_while_open[tour.db.name + "-wal"]
    assert b"db_password" in tour.bytes_after[tour.db.name]
    for snapshot in (tour.bytes_while_open, tour.bytes_after):
        for name, data in snapshot.items():
            for needle in (VALUE, PASSWORD):
                assert needle.encode("utf-8") not in data, (name, needle)
                assert needle.encode("utf-16-le") not in data, (name, needle)


def test_wal_made_by_keyledger_is_private_and_tty_confirmation_cancels(tmp_path: Path) -> None:
    """On a pty, rotate waits at its prompt with a 0600 -wal open; answering no changes nothing."""
    db = tmp_path / "keyledger.db"
    create_test_ledger(db, PASSWORD).close()
    before = events_head(db)
    master, slave = pty.openpty()
    try:
        child = subprocess.Popen(
            [*keyledger(), "rotate"], stdin=slave, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=environment(db), umask=0,
        )
        os.close(slave)
        assert child.stdout is not None
        shown = b""
        deadline = time.monotonic() + TIMEOUT
        while b"yes/no" not in shown and time.monotonic() < deadline and child.poll() is None:
            ready, _, _ = select.select([child.stdout], [], [], 0.2)
            if ready:
                shown += os.read(child.stdout.fileno(), 4096)
        assert b"yes/no" in shown, shown
        modes = {path.name: mode(path) for path in ledger_files(db)}
        os.write(master, b"no\n")
        _, err = child.communicate(timeout=TIMEOUT)
    finally:
        os.close(master)
    assert db.name + "-wal" in modes
    assert all(m == 0o600 for m in modes.values()), {k: oct(v) for k, v in modes.items()}
    assert child.returncode == 2
    assert "cancelled" in one_line(err.decode())
    assert events_head(db) == before


def test_missing_password_without_tty_fails_fast(backend: Backend) -> None:
    """No ENCRYPTION_MASTER_PASSWORD and stdin not a terminal: one line, exit 1, no hang."""
    db = backend.target
    create_test_ledger(db, PASSWORD).close()
    env = environment(db)
    del env["ENCRYPTION_MASTER_PASSWORD"]
    result = run(db, "secrets", "get", "anything", env=env)
    assert result.returncode == 1
    assert "ENCRYPTION_MASTER_PASSWORD" in one_line(result.stderr)
    assert result.stdout == ""


def test_init_without_password_creates_nothing(backend: Backend) -> None:
    """keyledger init with no password and no terminal fails with one line and creates no
    file (or schema)."""
    db = backend.target
    env = environment(db)
    del env["ENCRYPTION_MASTER_PASSWORD"]
    result = run(db, "init", env=env)
    assert result.returncode == 1
    assert "ENCRYPTION_MASTER_PASSWORD" in one_line(result.stderr)
    assert not ledger_exists(db)


def test_confirmation_refused_with_stdin_left_open(backend: Backend) -> None:
    """rotate without --yes refuses at once even when stdin is a pipe nobody closes."""
    db = backend.target
    create_test_ledger(db, PASSWORD).close()
    before = events_head(db)
    child = subprocess.Popen(
        [*keyledger(), "rotate"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=environment(db), text=True,
    )
    assert child.stdin is not None
    try:
        out, err = _wait_without_closing(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
    assert child.returncode == 2
    assert "--yes" in one_line(err)
    assert out == ""
    assert events_head(db) == before


def _wait_without_closing(child: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for ``child`` to exit while its stdin pipe stays open; fail on a hang."""
    try:
        child.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("keyledger hung waiting for a confirmation on a pipe")
    assert child.stdout is not None and child.stderr is not None
    return child.stdout.read(), child.stderr.read()


def test_set_with_stdin_closed_is_a_clear_error(backend: Backend) -> None:
    """secrets set without --value and with stdin closed fails with one line, not a traceback."""
    db = backend.target
    create_test_ledger(db, PASSWORD).close()
    before = events_head(db)
    result = subprocess.run(
        [*keyledger(), "secrets", "set", "k"], capture_output=True, text=True,
        env=environment(db), timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.close(0),
    )
    assert "Traceback" not in result.stderr
    assert result.returncode in (1, 2)
    one_line(result.stderr)
    assert events_head(db) == before


def test_no_color_is_respected(backend: Backend) -> None:
    """With FORCE_COLOR styling is on, and NO_COLOR then removes every colour code."""
    db = backend.target
    create_test_ledger(db, PASSWORD).close()
    styled = run(db, "info", env=environment(db, FORCE_COLOR="1"))
    assert styled.returncode == 0 and "\x1b[" in styled.stdout
    plain = run(db, "health-check", env=environment(db, FORCE_COLOR="1", NO_COLOR="1"))
    info = run(db, "info", env=environment(db, FORCE_COLOR="1", NO_COLOR="1"))
    for result in (plain, info):
        assert not _colour_codes(result.stdout + result.stderr), result.stdout
    assert "🏥" in plain.stdout and "📊" in info.stdout


def _colour_codes(text: str) -> list[str]:
    """SGR parameters in ``text`` that set a foreground or background colour."""
    found = []
    for chunk in text.split("\x1b[")[1:]:
        params, _, _ = chunk.partition("m")
        for param in params.split(";"):
            if param.isdigit() and (30 <= int(param) <= 49 or 90 <= int(param) <= 107):
                found.append(param)
    return found


@pytest.mark.parametrize(
    "args",
    [("migrate", "--batch-size", "0"), ("rotate", "--new-version", "abc"), ("no-such-command",),
     ("secrets", "get")],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A command line that does not parse gets one line on stderr and exit 2, no help box."""
    result = run(tmp_path / "keyledger.db", *args)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("❌ Error:")
    assert result.stdout == ""


def test_usage_error_under_json_prints_one_error_document(tmp_path: Path) -> None:
    """With --json, even an option that does not parse yields exactly one JSON document."""
    result = run(tmp_path / "keyledger.db", "rotate", "--new-version", "abc", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["ok"] is False


def test_stray_arguments_are_not_echoed(tmp_path: Path) -> None:
    """A value typed without --value is refused without printing it to stderr."""
    result = run(tmp_path / "keyledger.db", "secrets", "set", "db_password", "hunter2-SECRET")
    assert result.returncode == 2
    assert "hunter2-SECRET" not in result.stderr + result.stdout
    assert "not shown" in one_line(result.stderr)
