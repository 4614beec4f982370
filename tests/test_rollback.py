"""Rollback of the whole file, narrowed by this host's memory of verified checkpoints
(ledger.seen), and restore as one atomic step.

Someone who can write the ledger file but lacks the master password cannot forge a
checkpoint; they can put back an older genuine copy. These tests do that, and fork the
ledger, and check that every command that unlocks refuses in one line, while the ways an
operator goes back on purpose (restore, audit seen --forget) keep working. The first
tests run on both backends: on PostgreSQL the older copy is put back into the schema by
its owner (an old dump restored, say); the rest are about files.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_support import PASSWORD as CLI_PASSWORD
from cli_support import document, error_line, invoke
from conftest import Backend, vector_copy
from forgery_support import Target, forge_everything, rows, run_sql
from tamper_support import contents

from ledger import IntegrityError, Ledger, LedgerFormatError, RollbackError
from ledger import events as ev
from ledger.backup import restore, take_backup
from ledger.locations import is_server, open_recorder
from ledger.seen import STATE_DIR_ENV
from ledger.store_sqlite import SQLiteRecorder
from ledger.testing import child_environment, create_test_ledger, keyledger_command, read_all


def copy_file(source: Path, target: Path) -> None:
    """What an attacker with write access does: the file and its WAL, over the target's."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def put_back(copy: Path, live: Target, *, in_place: bool = False) -> None:
    """An older copy (a file) put in place of the live ledger: over the file (``in_place``:
    into it, as a process that has it open then sees), or into the schema's tables by their
    owner, the read models rebuilt from its events."""
    if not is_server(str(live)):
        if in_place:
            with SQLiteRecorder(copy) as older:
                older.backup_to(Path(live), overwrite=True)
        else:
            copy_file(copy, Path(live))
        return
    from ledger.store_postgres import PostgresRecorder
    from projections import projector

    with PostgresRecorder(str(live), projector=projector()) as recorder, \
            SQLiteRecorder(copy) as older:
        recorder.replace_with(older, recorder.head())


@pytest.fixture
def live(backend: Backend) -> Target:
    db = backend.db_path if backend.name == "sqlite" else backend.target
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        ledger.set("db_password", "old")
    return db


def snapshot(db: Target, tmp_path: Path, name: str) -> Path:
    saved = tmp_path / name
    with open_recorder(db) as recorder:
        recorder.backup_to(saved)
    return saved


def test_an_older_copy_put_back_is_refused_by_every_command_that_unlocks(
        live: Target, tmp_path: Path) -> None:
    """The value rotated away comes back with the old file: get, set, migrate refuse."""
    old = snapshot(live, tmp_path, "old.db")
    assert invoke(live, "secrets", "set", "db_password", "--value", "new").exit_code == 0
    assert invoke(live, "secrets", "get", "db_password").stdout.strip() == "new"
    put_back(old, live)
    for args in (("secrets", "get", "db_password"), ("secrets", "set", "x", "--value", "1"),
                 ("migrate", "--yes"), ("rotate", "--yes")):
        refused = invoke(live, *args)
        assert refused.exit_code == 1 and refused.stdout == ""
        assert "rolled back to an older copy" in error_line(refused)
    with pytest.raises(RollbackError, match="rolled back"):
        Ledger.open(live, CLI_PASSWORD)
    # Nothing was written on top of the old copy.
    with Ledger.open(live, CLI_PASSWORD, seen=None) as back:
        assert back.get("db_password").value == "old"


def test_a_fork_at_the_same_seq_is_refused(live: Target, tmp_path: Path) -> None:
    """Two copies that each took one different write: the one not seen here is refused."""
    fork = snapshot(live, tmp_path, "fork.db")
    assert invoke(live, "secrets", "set", "db_password", "--value", "mine").exit_code == 0
    with Ledger.open(fork, CLI_PASSWORD, seen=None) as other:
        other.set("db_password", "theirs")
    put_back(fork, live)
    refused = invoke(live, "secrets", "get", "db_password")
    assert refused.exit_code == 1 and "history was replaced" in error_line(refused)


def test_a_longer_fork_is_refused(live: Target, tmp_path: Path) -> None:
    """A copy that went on from an older point, past what this host saw, is refused too."""
    fork = snapshot(live, tmp_path, "fork.db")
    assert invoke(live, "secrets", "set", "db_password", "--value", "mine").exit_code == 0
    with Ledger.open(fork, CLI_PASSWORD, seen=None) as other:
        for n in range(5):
            other.set("db_password", f"theirs {n}")
    put_back(fork, live)
    refused = invoke(live, "secrets", "get", "db_password")
    assert refused.exit_code == 1 and "history was replaced" in error_line(refused)


def test_audit_seen_shows_the_rollback_and_forget_accepts_it(live: Target, tmp_path: Path) -> None:
    old = snapshot(live, tmp_path, "old.db")
    assert invoke(live, "secrets", "set", "db_password", "--value", "new").exit_code == 0
    seen = document(invoke(live, "audit", "seen", "--json"))
    assert seen["verdict"] == "current" and seen["remembered"] == seen["current"]
    put_back(old, live)
    shown = document(invoke(live, "audit", "seen", "--json"))
    assert shown["verdict"] == "behind" and shown["forgotten"] is False
    assert shown["current"]["seq"] < shown["remembered"]["seq"]
    assert invoke(live, "secrets", "get", "db_password").exit_code == 1  # still refused
    forgot = invoke(live, "audit", "seen", "--forget")
    assert forgot.exit_code == 0 and "now remembers" in forgot.stdout
    assert invoke(live, "secrets", "get", "db_password").stdout.strip() == "old"


def test_keyledger_restore_goes_back_without_a_refusal(live: Target, tmp_path: Path) -> None:
    backup = tmp_path / "b.db"
    assert invoke(live, "backup", "--out", str(backup)).exit_code == 0
    assert invoke(live, "secrets", "set", "db_password", "--value", "new").exit_code == 0
    assert invoke(live, "restore", str(backup), "--force", "--yes").exit_code == 0
    assert invoke(live, "secrets", "get", "db_password").stdout.strip() == "old"
    assert document(invoke(live, "audit", "seen", "--json"))["verdict"] == "current"


def test_a_restore_signed_elsewhere_is_accepted_here(live: Target, tmp_path: Path) -> None:
    """Another host restored the shared file: its signed LedgerRestored, newer than what
    this host saw, explains the shorter history."""
    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, backup)
        ledger.set("db_password", "new")
    elsewhere = tmp_path / "other-host"
    os.environ[STATE_DIR_ENV] = str(elsewhere)  # the conftest fixture puts it back
    restore(backup, live, CLI_PASSWORD, force=True)
    os.environ[STATE_DIR_ENV] = str(tmp_path / "this-host-is-not-used")
    with Ledger.open(live, CLI_PASSWORD) as back:
        assert back.get("db_password").value == "old"


def test_the_old_copy_of_a_restored_ledger_is_still_refused(live: Target, tmp_path: Path) -> None:
    """A restore's record covers the restored file, not any older copy put back after it."""
    older = snapshot(live, tmp_path, "older.db")
    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        ledger.set("db_password", "v2")
        take_backup(ledger.session, backup)
        ledger.set("db_password", "v3")
    restore(backup, live, CLI_PASSWORD, force=True)
    put_back(older, live)
    with pytest.raises(RollbackError):
        Ledger.open(live, CLI_PASSWORD)


def test_a_backup_elsewhere_opens_although_it_is_older(live: Target, tmp_path: Path) -> None:
    """The memory is of the ledger at its place: a backup file is an older copy by design."""
    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, backup)
        ledger.set("db_password", "new")
    with Ledger.open(backup, CLI_PASSWORD) as copy:
        assert copy.get("db_password").value == "old"


def test_memory_off_lets_the_copy_through_as_documented(live: Target, tmp_path: Path) -> None:
    old = snapshot(live, tmp_path, "old.db")
    assert invoke(live, "secrets", "set", "db_password", "--value", "new").exit_code == 0
    put_back(old, live)
    got = invoke(live, "secrets", "get", "db_password", env={STATE_DIR_ENV: "off"})
    assert got.exit_code == 0 and got.stdout.strip() == "old"
    assert document(invoke(live, "audit", "seen", "--json",
                           env={STATE_DIR_ENV: "off"}))["verdict"] == "off"


def test_an_unusable_memory_is_a_warning_not_a_failure(
        live: Target, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A state dir that cannot be made (its parent is a file) or a damaged memory file
    never stops a command: the memory narrows rollback, it does not guard values."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    os.environ[STATE_DIR_ENV] = str(blocker / "state")
    with caplog.at_level(logging.WARNING, logger="keyledger"), \
            Ledger.open(live, CLI_PASSWORD) as ledger:
        ledger.set("db_password", "new")
        assert ledger.get("db_password").value == "new"
    assert any("rollback of the file goes unnoticed" in r.getMessage() for r in caplog.records)
    caplog.clear()
    state = tmp_path / "damaged"
    state.mkdir()
    (state / "seen.json").write_text("{not json")
    os.environ[STATE_DIR_ENV] = str(state)
    with caplog.at_level(logging.WARNING, logger="keyledger"), \
            Ledger.open(live, CLI_PASSWORD) as ledger:
        assert ledger.get("db_password").value == "new"
    assert any("cannot use this host's memory" in r.getMessage() for r in caplog.records)
    # The next command wrote a good memory again, which now guards the ledger.
    assert json.loads((state / "seen.json").read_text())


def test_the_memory_holds_no_secret(live: Target) -> None:
    assert invoke(live, "secrets", "set", "api_key", "--value", "sk-memory-probe").exit_code == 0
    state = Path(os.environ[STATE_DIR_ENV])
    body = (state / "seen.json").read_text()
    assert "sk-memory-probe" not in body and CLI_PASSWORD not in body
    assert (state / "seen.json").stat().st_mode & 0o077 == 0


# -- restore as one step ----------------------------------------------------------------------


def _events(db: Target) -> list[tuple[int, str]]:
    with open_recorder(db) as recorder:
        return [(e.seq, e.hash) for e in recorder.read_events()]


@pytest.mark.sqlite_only  # how a file is replaced
def test_a_restore_that_fails_before_the_swap_leaves_the_ledger_exactly_as_it_was(
        live: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, backup)
        ledger.set("db_password", "new")
    before = _events(live)
    calls = {"n": 0}
    original = SQLiteRecorder.backup_to

    def fail_at_the_swap(self: SQLiteRecorder, target: Path, **options: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first copies the backup to staging; the second swaps
            raise OSError("simulated failure at the swap")
        original(self, target, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(SQLiteRecorder, "backup_to", fail_at_the_swap)
    with pytest.raises(OSError, match="simulated"):
        restore(backup, live, CLI_PASSWORD, force=True)
    monkeypatch.undo()
    assert _events(live) == before
    assert sorted(p.name for p in tmp_path.iterdir() if "restoring" in p.name) == []
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        assert ledger.get("db_password").value == "new"


def test_a_wrong_password_restores_nothing(live: Target, tmp_path: Path) -> None:
    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, backup)
        ledger.set("db_password", "new")
    before = contents(live)
    refused = invoke(live, "restore", str(backup), "--force", "--yes", password="wrong")
    assert refused.exit_code == 1 and "password" in error_line(refused)
    assert contents(live) == before


@pytest.mark.sqlite_only  # how a file is replaced
def test_restore_killed_at_any_moment_leaves_the_old_ledger_or_the_new_one_with_its_record(
        live: Path, tmp_path: Path) -> None:
    """SIGKILL a real `keyledger restore --force` at moments spread over a clean run."""
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        ledger.import_values({f"s{i:03}": f"value {i}" for i in range(300)}, source="json")
        backup = tmp_path / "b.db"
        take_backup(ledger.session, backup)
        ledger.set("db_password", "after the backup")
        before_values = read_all(ledger)
    with Ledger.open(backup, CLI_PASSWORD, seen=None) as copy:
        backup_values = read_all(copy)
    template = tmp_path / "template.db"
    with SQLiteRecorder(live) as recorder:
        recorder.backup_to(template)
    old_events = _events(template)
    argv = [*keyledger_command(), "restore", str(backup), "--force", "--yes"]

    def run(kill_after: float | None, round_dir: Path) -> None:
        round_dir.mkdir()
        target = round_dir / "keyledger.db"
        shutil.copyfile(template, target)
        env = child_environment(KEYLEDGER_DB=str(target), ENCRYPTION_MASTER_PASSWORD=CLI_PASSWORD,
                                KEYLEDGER_STATE_DIR=str(round_dir / "state"), NO_COLOR="1")
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kill_after is None:
            assert child.wait(60) == 0
        else:
            time.sleep(kill_after)
            child.send_signal(signal.SIGKILL)
            child.wait(60)
        with Ledger.open(target, CLI_PASSWORD, seen=None) as after:
            events = [(e.seq, e.hash) for e in after.recorder.read_events()]
            if events == old_events:
                assert read_all(after) == before_values
            else:
                last = after.recorder.stream_head(ev.BACKUP_STREAM)
                assert last is not None and last.type == "LedgerRestored"
                assert read_all(after) == backup_values

    started = time.monotonic()
    run(None, tmp_path / "clean")
    clean = time.monotonic() - started
    moments = random.Random(12).sample(range(1, 100), 6)
    for n, percent in enumerate(sorted(moments)):
        run(clean * percent / 100, tmp_path / f"round-{n}")


def test_a_forged_restore_record_cannot_explain_a_rollback(live: Target, tmp_path: Path) -> None:
    """LedgerRestored counts only when proven: one inserted without the key is tampering."""
    old = snapshot(live, tmp_path, "old.db")
    assert invoke(live, "secrets", "set", "db_password", "--value", "new").exit_code == 0
    put_back(old, live)
    top = rows(live, "SELECT max(seq) FROM events")[0][0]
    rev = rows(live, "SELECT count(*) FROM events WHERE stream = ?", (ev.BACKUP_STREAM,))[0][0]
    payload = ev.canonical_json({"file_name": "x.db", "events_before": 1, "events_restored": 1,
                                 "forced": True})
    run_sql(live, ("INSERT INTO events (seq, stream, stream_rev, type, schema_version, "
                   "occurred_at, actor, origin, payload, prev_hash, hash) "
                   "VALUES (?, ?, ?, 'LedgerRestored', 1, '2099-01-01T00:00:00.000000Z', "
                   "'x', 'cli', ?, '', '')", (top + 1, ev.BACKUP_STREAM, rev + 1, payload)))
    forge_everything(live, top + 1)
    with pytest.raises(IntegrityError):
        Ledger.open(live, CLI_PASSWORD)


def test_a_fork_dressed_with_the_remembered_hash_is_still_refused(
        live: Target, tmp_path: Path) -> None:
    """The forker copies the hash this host remembers into their fork's row at that seq:
    the walk from the remembered head to the signed tip breaks at the next link."""
    fork = snapshot(live, tmp_path, "fork.db")
    assert invoke(live, "secrets", "set", "db_password", "--value", "mine").exit_code == 0
    seen = document(invoke(live, "audit", "seen", "--json"))["remembered"]
    with Ledger.open(fork, CLI_PASSWORD, seen=None) as other:
        for n in range(3):
            other.set("db_password", f"theirs {n}")
    run_sql(fork, ("UPDATE events SET hash = ? WHERE seq = ?", (seen["head_hash"], seen["seq"])))
    put_back(fork, live)
    refused = invoke(live, "secrets", "get", "db_password")
    assert refused.exit_code == 1 and "history was replaced" in error_line(refused)


def test_a_refused_rollback_of_a_format_3_copy_is_not_upgraded(tmp_path: Path) -> None:
    """The upgrade on unlock wrote a LedgerUpgraded and a checkpoint on top of the old copy
    before the memory refused it (attack pass, finding 4): refused before any write."""
    db = vector_copy("ledger-format3.db", tmp_path / "f3.db")
    password = "correct horse battery staple"
    with Ledger.open(db, password) as ledger:  # upgraded here, once, and remembered
        ledger.set("db_password", "newest")
    vector_copy("ledger-format3.db", db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    before = db.read_bytes()
    with pytest.raises(RollbackError):
        Ledger.open(db, password)
    assert db.read_bytes() == before


@pytest.mark.sqlite_only  # how a file is replaced
def test_a_write_committed_while_restoring_is_kept_and_nothing_is_restored(
        live: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process wrote after restore checked the history and before the swap: the
    swap checks again under the ledger's lock, and refuses (attack pass 2, F1)."""
    import ledger.backup as backup_module

    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, backup)
    checked = backup_module._history_is_kept

    def then_someone_writes(*args: object) -> bool:
        kept = checked(*args)  # type: ignore[arg-type]
        with Ledger.open(live, CLI_PASSWORD) as other:
            other.set("db_password", "rotated by cron meanwhile")
        return kept

    monkeypatch.setattr(backup_module, "_history_is_kept", then_someone_writes)
    with pytest.raises(LedgerFormatError, match="written to while restoring"):
        restore(backup, live, CLI_PASSWORD)
    monkeypatch.undo()
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        assert ledger.get("db_password").value == "rotated by cron meanwhile"
    assert [p.name for p in tmp_path.iterdir() if "restoring" in p.name] == []


@pytest.mark.sqlite_only  # how a file is replaced
def test_a_writer_holding_the_lock_while_restoring_keeps_its_write(
        live: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long write (a large import) holds the ledger's lock when restore swaps. The swap's
    check waits for the lock rather than passing while the writer still holds it, so the
    write, committed afterwards, is kept and nothing is restored (attack pass 3, F1)."""
    import threading

    import ledger.backup as backup_module

    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, backup)
    holding = threading.Event()
    checked = backup_module._history_is_kept
    check_revisions = SQLiteRecorder._check_revisions

    def slowly(self: SQLiteRecorder, *args: object) -> None:
        if threading.current_thread().name == "long-import":
            holding.set()
            time.sleep(1.0)  # holds the write lock for 20 of the swap's busy waits
        check_revisions(self, *args)  # type: ignore[arg-type]

    def write(label: str) -> None:
        with Ledger.open(live, CLI_PASSWORD) as other:
            other.set("db_password", label)

    writer = threading.Thread(target=write, args=("written by a long import",),
                              name="long-import")

    def then_a_long_write_starts(*args: object) -> bool:
        kept = checked(*args)  # type: ignore[arg-type]
        writer.start()
        assert holding.wait(10)
        return kept

    monkeypatch.setattr(SQLiteRecorder, "_check_revisions", slowly)
    monkeypatch.setattr(backup_module, "_history_is_kept", then_a_long_write_starts)
    with pytest.raises(LedgerFormatError, match="written to while restoring"):
        restore(backup, live, CLI_PASSWORD)
    writer.join()
    monkeypatch.undo()
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        assert ledger.get("db_password").value == "written by a long import"


@pytest.mark.sqlite_only  # how a file is replaced
def test_a_killed_restores_staging_copy_is_removed_by_the_next_restore(
        live: Path, tmp_path: Path) -> None:
    """A restore killed before its swap leaves a full copy of a ledger beside it; the next
    restore removes what a dead process left (attack pass 2, F4)."""
    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, backup)
    dead = subprocess.Popen(["true"])
    dead.wait()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f".{live.name}.restoring-{dead.pid}{suffix}").write_bytes(b"a ledger copy")
    restore(backup, live, CLI_PASSWORD)
    assert [p.name for p in tmp_path.iterdir() if "restoring" in p.name] == []



def test_a_long_lived_ledger_refuses_a_file_put_back_under_it(live: Target, tmp_path: Path) -> None:
    """An API server holds the ledger open; the file is rolled back under it. It neither
    serves the old value nor appends on top of the old copy (attack pass 2, F2)."""
    old = snapshot(live, tmp_path, "old.db")
    with Ledger.open(live, CLI_PASSWORD) as server:
        server.set("db_password", "v2")
        server.set("db_password", "v3")
        put_back(old, live, in_place=True)  # write access is enough to do this
        top = _events(live)[-1]
        with pytest.raises(RollbackError, match="rolled back or restored under it"):
            server.get("db_password")
        with pytest.raises(RollbackError):
            server.set("db_password", "v4")
        assert _events(live)[-1] == top


@pytest.mark.parametrize("call", ["secret", "secrets", "report", "keyring", "open_ciphertext",
                                  "head_of", "verify_heads"])
def test_every_read_of_a_long_lived_ledger_refuses_a_file_put_back_under_it(
        live: Target, tmp_path: Path, call: str) -> None:
    """Not only get and the writes: every read refuses once the file is an older copy,
    so a destroyed key's old ciphertext does not open through a put-back keyring either
    (attack pass 3, F4)."""
    with Ledger.open(live, CLI_PASSWORD) as server:
        server.set("db_password", "under v1")
        under_v1 = server.secret("db_password").ciphertext
        assert under_v1 is not None
        old = snapshot(live, tmp_path, "old.db")
        server.rotate()
        server.migrate()
        server.retire(1)
        server.destroy(1)
        put_back(old, live, in_place=True)
        calls = {
            "secret": lambda: server.secret("db_password"),
            "secrets": server.secrets,
            "report": server.report,
            "keyring": server.keyring,
            "open_ciphertext": lambda: server.open_ciphertext("db_password", under_v1),
            "head_of": lambda: server.head_of(ev.KEYRING_STREAM),
            "verify_heads": server.verify_heads,
        }
        with pytest.raises(RollbackError, match="rolled back or restored under it"):
            calls[call]()


def test_a_restore_explains_a_rollback_only_if_it_replaced_what_this_host_saw(
        live: Target, tmp_path: Path) -> None:
    """A restore's record accepts a shorter ledger only when the ledger it replaced went
    at least as far as this host's memory, whatever the clocks say (attack pass 2, F4)."""
    backup = tmp_path / "b.db"
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, backup)
        ledger.set("db_password", "after the backup")
    restore(backup, live, CLI_PASSWORD, force=True)
    restored_copy = snapshot(live, tmp_path, "restored.db")
    with Ledger.open(live, CLI_PASSWORD) as ledger:
        for n in range(3):
            ledger.set("db_password", f"newer {n}")
    # This host's clock was behind the one that signed the restore.
    state = Path(os.environ[STATE_DIR_ENV]) / "seen.json"
    memory = json.loads(state.read_text())
    for entry in memory.values():
        entry["signed_at"] = "2000-01-01T00:00:00.000000Z"
    state.write_text(json.dumps(memory))
    put_back(restored_copy, live)
    with pytest.raises(RollbackError):
        Ledger.open(live, CLI_PASSWORD)


@pytest.mark.sqlite_only  # how a file is replaced
def test_another_spelling_of_the_same_path_is_the_same_place(
        live: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--db ../keyledger.db` from a subfolder is the ledger this host remembers
    (attack pass 2, F5); a symlinked folder is documented as a place of its own."""
    old = snapshot(live, tmp_path, "old.db")
    assert invoke(live, "secrets", "set", "db_password", "--value", "new").exit_code == 0
    copy_file(old, live)
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    refused = invoke(Path("..") / live.name, "secrets", "get", "db_password")
    assert refused.exit_code == 1 and "rolled back" in error_line(refused)
