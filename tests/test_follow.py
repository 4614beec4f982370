"""``keyledger audit log --follow``: new events from any process, as JSON lines, for a SIEM."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_support import PASSWORD, VALUE
from conftest import Backend

from ledger import Ledger
from ledger.testing import child_environment, create_test_ledger, keyledger_command

TIMEOUT = 30


def follower(db: Path | str, *args: str) -> subprocess.Popen[str]:
    """``audit log --follow --json`` in a child, with no master password at all; a thread
    hands its lines to :func:`lines`."""
    child = subprocess.Popen([*keyledger_command(), "audit", "log", "--follow", "--json", *args],
                             env=child_environment(KEYLEDGER_DB=str(db)), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    received: queue.Queue[str] = queue.Queue()
    assert child.stdout is not None
    stdout = child.stdout

    def pump() -> None:
        for line in stdout:
            received.put(line)

    threading.Thread(target=pump, daemon=True).start()
    FOLLOWED[child.pid] = received
    return child


FOLLOWED: dict[int, queue.Queue[str]] = {}


@contextmanager
def following(db: Path | str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """:func:`follower`, killed on leaving if it has not ended by then."""
    child = follower(db, *args)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=TIMEOUT)


def lines(child: subprocess.Popen[str], count: int) -> list[dict[str, object]]:
    """The next ``count`` JSON lines the child prints (fails after TIMEOUT)."""
    received = FOLLOWED[child.pid]
    deadline = time.monotonic() + TIMEOUT
    found = []
    while len(found) < count:
        try:
            found.append(json.loads(received.get(timeout=max(0.0, deadline - time.monotonic()))))
        except queue.Empty:
            raise AssertionError(f"only {len(found)} of {count} lines came") from None
    return found


def ended(child: subprocess.Popen[str]) -> tuple[str, str]:
    """What the child printed after the lines taken, and its stderr, once it exits."""
    assert child.stderr is not None
    child.wait(timeout=TIMEOUT)
    err = child.stderr.read()
    time.sleep(0.1)
    received = FOLLOWED.pop(child.pid)
    rest = []
    while not received.empty():
        rest.append(received.get())
    return "".join(rest), err


@pytest.fixture
def made(backend: Backend) -> str:
    with create_test_ledger(backend.target, PASSWORD) as ledger:
        ledger.set("db_password", VALUE)
    return backend.target


def test_follow_prints_what_other_processes_append_and_ends_cleanly(made: str) -> None:
    with Ledger.open(made, PASSWORD) as ledger:
        top = ledger.recorder.head()[0]
    with following(made) as child:
        old = lines(child, top)
        assert [e["seq"] for e in old] == list(range(1, top + 1))
        with Ledger.open(made, PASSWORD, actor="writer@elsewhere") as ledger:
            ledger.set("api_key", "sk-follow-value-1b2c")
            ledger.rotate()
        new = lines(child, 3)
        assert [(e["seq"], e["type"], e["actor"]) for e in new] == [
            (top + 1, "SecretWritten", "writer@elsewhere"),
            (top + 2, "KeyVersionCreated", "writer@elsewhere"),
            (top + 3, "KeyRotated", "writer@elsewhere")]
        child.send_signal(signal.SIGINT)
        rest, err = ended(child)
    assert child.returncode == 0 and err == ""
    shown = json.dumps(old + new) + rest
    assert VALUE not in shown and "sk-follow-value-1b2c" not in shown
    assert "ciphertext" not in shown


def test_follow_resumes_after_a_seq_with_the_filters_and_stops_on_sigterm(made: str) -> None:
    with Ledger.open(made, PASSWORD) as ledger:
        ledger.set("a", "1")
        top = ledger.recorder.head()[0]
    with following(made, "--after-seq", str(top), "--type", "SecretWritten") as child:
        with Ledger.open(made, PASSWORD) as ledger:
            ledger.rotate()  # not a SecretWritten: not printed
            ledger.set("b", "2")
        (only,) = lines(child, 1)
        assert (only["seq"], only["type"], only["name"]) == (top + 3, "SecretWritten", "b")
        child.send_signal(signal.SIGTERM)
        rest, _ = ended(child)
    assert child.returncode == 0 and rest == ""


def test_a_writer_never_waits_for_a_follower(made: str) -> None:
    """The follower holds no transaction between looks: many writes land at once."""
    child = follower(made)
    try:
        lines(child, 1)
        with Ledger.open(made, PASSWORD) as ledger:
            for n in range(20):
                ledger.set(f"s{n}", "v")
            top = ledger.recorder.head()[0]
        assert lines(child, top - 1)[-1]["seq"] == top
    finally:
        child.kill()
        ended(child)


def test_bad_filters_are_refused_before_following(made: str) -> None:
    child = follower(made, "--type", "NoSuchEvent")
    _, err = ended(child)
    assert child.returncode == 2 and "unknown event type" in err and len(err.splitlines()) == 1


def test_a_ledger_restored_under_the_follower_stops_it_in_one_line(
    made: str, tmp_path: Path
) -> None:
    """The history went back and then on again past what was printed: the follower must
    not go on as if the new events were the ones after its last line (attack pass)."""
    from ledger.backup import restore, take_backup
    from projections import projector

    backup = tmp_path / "b.db"
    with Ledger.open(made, PASSWORD) as ledger:
        take_backup(ledger.session, backup)
        for n in range(3):
            ledger.set(f"later{n}", "v")
        top = ledger.recorder.head()[0]
    with following(made) as child:
        lines(child, top)
        restore(backup, made, PASSWORD, force=True, projector=projector())
        with Ledger.open(made, PASSWORD) as ledger:
            for n in range(6):  # past where the follower was
                ledger.set(f"new{n}", "v")
        _, err = ended(child)
    assert child.returncode == 1
    assert "history changed under --follow" in err and len(err.strip().splitlines()) == 1


def test_after_seq_past_the_head_is_refused(made: str) -> None:
    child = follower(made, "--after-seq", "999")
    _, err = ended(child)
    assert child.returncode == 2 and "past the ledger's head" in err
