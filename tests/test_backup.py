"""Backups: a consistent copy while writers run, verified, restorable, and shred-proof."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest
from cli_support import PASSWORD as CLI_PASSWORD
from cli_support import document, error_line, invoke
from conftest import PASSWORD, Backend
from tamper_support import contents, plain_rows

from ledger import Ledger, LedgerFormatError, VersionError
from ledger import events as ev
from ledger.backup import restore, take_backup, verify_backup
from ledger.integrity import verify_ledger
from ledger.testing import create_test_ledger, read_all
from projections import ReadModels, projector


def test_backup_is_private_verified_and_recorded(ledger: Ledger, tmp_path: Path) -> None:
    """The copy is 0600, its chain verifies, every secret decrypts, and the live ledger records it."""
    ledger.set("a", "1")
    out = tmp_path / "b.db"
    result = take_backup(ledger.session, out)
    assert out.stat().st_mode & 0o777 == 0o600
    report = verify_backup(out, PASSWORD)
    assert report.ok and (report.secrets, report.decrypted) == (1, 1)
    assert report.chain.events == result.events == ledger.recorder.head()[0] - 1
    assert ledger.recorder.stream_head("backups").type == "BackupTaken"  # type: ignore[union-attr]
    with pytest.raises(Exception, match="never overwrites"):
        take_backup(ledger.session, out)


def test_a_backup_taken_during_a_migration_restores_and_reads_everything(tmp_path: Path) -> None:
    """A copy made while another thread migrates is consistent: it verifies and every value reads back."""
    path = tmp_path / "live.db"
    with create_test_ledger(path, PASSWORD, projector=projector()) as ledger:
        values = {f"s{i:04}": f"value {i}" for i in range(400)}
        ledger.import_values(values, source="json")
        ledger.rotate()
    backups: list[Path] = []

    def back_up_during() -> None:
        with Ledger.open(path, PASSWORD) as other:
            for n in range(3):
                target = tmp_path / f"during-{n}.db"
                take_backup(other.session, target)
                backups.append(target)

    with Ledger.open(path, PASSWORD, projector=projector()) as migrating:
        thread = threading.Thread(target=back_up_during)
        thread.start()
        migrating.migrate(batch_size=5)
        thread.join()
    for copy in backups:
        assert verify_backup(copy, PASSWORD).ok
        restored = tmp_path / f"restored-{copy.name}"
        restore(copy, restored, PASSWORD)
        with Ledger.open(restored, PASSWORD, projector=projector()) as back:
            assert read_all(back) == values
            assert ReadModels(back.recorder).problems(deep=True) == []
            back.migrate()  # finishing the interrupted migration works on the restored copy
            assert back.report().needing_migration == 0


def test_restore_refuses_to_lose_events_unless_forced(ledger: Ledger, backend: Backend,
                                                     tmp_path: Path) -> None:
    """Restoring an older backup over a ledger that moved on is refused; --force does it."""
    ledger.set("a", "old")
    out = tmp_path / "b.db"
    take_backup(ledger.session, out)
    ledger.set("a", "new")
    ledger.close()
    with pytest.raises(LedgerFormatError, match="not a prefix"):
        restore(out, backend.target, PASSWORD, projector=projector())
    with Ledger.open(backend.target, PASSWORD) as still:
        assert still.get("a").value == "new"
    restore(out, backend.target, PASSWORD, force=True, projector=projector())
    with Ledger.open(backend.target, PASSWORD, projector=projector()) as back:
        assert back.get("a").value == "old"
        assert back.recorder.stream_head(ev.BACKUP_STREAM).type == "LedgerRestored"  # type: ignore[union-attr]
        assert ReadModels(back.recorder).problems(deep=True) == []
        assert verify_ledger(back.recorder).ok


def test_a_later_backup_cannot_decrypt_a_destroyed_version(
    ledger: Ledger, backend: Backend, tmp_path: Path
) -> None:
    """After destroy, a backup holds no key for the version: its old ciphertexts stay unreadable."""
    ledger.set("a", "1")
    first = ledger.secret("a").ciphertext
    wrapped = plain_rows(backend.target, "SELECT wrapped FROM keys WHERE version = 1")[0][0]
    ledger.rotate()
    ledger.migrate()
    ledger.retire(1)
    ledger.destroy(1)
    out = tmp_path / "after.db"
    take_backup(ledger.session, out)
    assert wrapped not in out.read_bytes()
    with Ledger.open(out, PASSWORD) as backup:
        assert backup.get("a").value == "1"
        assert first is not None
        with pytest.raises(VersionError, match="destroyed"):
            backup.open_ciphertext("a", first)


def test_backup_verify_and_restore_through_the_cli(tmp_path: Path) -> None:
    """backup, verify-backup and restore work from the command line, with JSON results."""
    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        ledger.set("a", "1")
    out = tmp_path / "copy.db"
    taken = document(invoke(db, "backup", "--out", str(out), "--json"))
    assert taken["events"] >= 4 and len(taken["sha256"]) == 64
    checked = invoke(db, "verify-backup", str(out), "--json")
    assert checked.exit_code == 0 and document(checked)["decrypted"] == 1
    chain_only = invoke(db, "verify-backup", str(out), "--json", password=None)
    assert chain_only.exit_code == 0 and document(chain_only)["decrypted"] is None
    assert invoke(db, "secrets", "set", "a", "--value", "2").exit_code == 0
    refused = invoke(db, "restore", str(out), "--yes")
    assert refused.exit_code == 1 and "not a prefix" in error_line(refused)
    # (the copy cannot hold its own BackupTaken event; that alone never blocks a restore)
    wrong = invoke(db, "restore", str(out), "--yes", "--force", password="wrong password")
    assert wrong.exit_code == 1
    assert invoke(db, "secrets", "get", "a").stdout == "2\n"  # a wrong password changed nothing
    done = invoke(db, "restore", str(out), "--yes", "--force", "--json")
    assert done.exit_code == 0, done.stderr
    assert invoke(db, "secrets", "get", "a").stdout == "1\n"
    with closing(sqlite3.connect(db)) as conn:
        last = conn.execute("SELECT type FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
    assert last == "LedgerRestored"


def test_a_secret_restored_from_a_backup_is_a_new_revision(ledger: Ledger, tmp_path: Path) -> None:
    """secrets restore brings one value back under the current key; the history stays intact."""
    ledger.set("a", "good")
    out = tmp_path / "b.db"
    take_backup(ledger.session, out)
    ledger.set("a", "broken")
    ledger.rotate()
    with Ledger.open(out, PASSWORD) as backup:
        state = ledger.restore_from_backup("a", backup, backup_file=out.name)
    assert (ledger.get("a").value, state.key_version, state.revision) == ("good", 2, 3)
    types = [e.type for e in ledger.recorder.read_stream("secret:a")]
    assert types == ["SecretWritten", "SecretWritten", "SecretRestored"]
    restored = ledger.recorder.read_stream("secret:a")[-1].decode()
    assert (restored.backup_file, restored.backup_revision) == ("b.db", 1)  # type: ignore[attr-defined]


def test_reset_repairs_a_secret_and_says_so(ledger: Ledger) -> None:
    """secrets reset writes a SecretReset event with its reason; unknown names are refused."""
    from ledger import UnknownSecretError

    ledger.set("a", "old")
    ledger.reset("a", "new", reason="ciphertext corrupted")
    assert ledger.get("a").value == "new"
    event = ledger.recorder.read_stream("secret:a")[-1].decode()
    assert type(event).__name__ == "SecretReset" and event.reason == "ciphertext corrupted"  # type: ignore[attr-defined]
    with pytest.raises(UnknownSecretError):
        ledger.reset("never-written", "x")
    views = ReadModels(ledger.recorder)  # read models treat resets and restores as writes
    assert views.problems(deep=True) == [] and views.report().total_secrets == 1


def test_secrets_reset_and_restore_through_the_cli(tmp_path: Path) -> None:
    """secrets reset (value on stdin) and secrets restore --from-backup work from the command line."""
    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        ledger.set("a", "1")
    out = tmp_path / "copy.db"
    assert invoke(db, "backup", "--out", str(out)).exit_code == 0
    reset = invoke(db, "secrets", "reset", "a", "--reason", "drill", "--json", stdin="2\n")
    assert reset.exit_code == 0 and document(reset)["revision"] == 2
    assert invoke(db, "secrets", "get", "a").stdout == "2\n"
    restored = invoke(db, "secrets", "restore", "a", "--from-backup", str(out), "--json")
    assert restored.exit_code == 0 and document(restored)["revision"] == 3
    assert invoke(db, "secrets", "get", "a").stdout == "1\n"
    missing = invoke(db, "secrets", "restore", "zzz", "--from-backup", str(out))
    assert missing.exit_code == 1 and "zzz" in error_line(missing)


def test_a_fresh_backup_restores_without_force(ledger: Ledger, backend: Backend,
                                              tmp_path: Path) -> None:
    """Only BackupTaken events past the copy: restoring loses nothing and is allowed."""
    ledger.set("a", "1")
    out = tmp_path / "b.db"
    take_backup(ledger.session, out)
    take_backup(ledger.session, tmp_path / "b2.db")
    ledger.close()
    done = restore(out, backend.target, PASSWORD, projector=projector())
    assert (done.events_before, done.events_restored, done.kept_aside) == (7, 5, None)


def test_an_old_password_cannot_roll_back_a_rekeyed_ledger(tmp_path: Path) -> None:
    """restore checks the password against the ledger it replaces, not only the backup."""
    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        ledger.set("a", "1")
    out = tmp_path / "b.db"
    assert invoke(db, "backup", "--out", str(out)).exit_code == 0
    rekey = invoke(db, "rekey-master", "--yes", env={"ENCRYPTION_NEW_MASTER_PASSWORD": "brand new one"})
    assert rekey.exit_code == 0
    before = (db.read_bytes(), invoke(db, "secrets", "get", "a", password="brand new one").stdout)
    refused = invoke(db, "restore", str(out), "--yes", "--force")  # the old password
    assert refused.exit_code == 1 and "wrong master password" in error_line(refused)
    assert invoke(db, "secrets", "get", "a", password="brand new one").stdout == before[1]


def test_an_old_password_cannot_roll_back_a_rekeyed_ledger_through_the_library(
        tmp_path: Path) -> None:
    """The same guard in ledger.backup.restore itself, not only in the CLI: the library's
    restore refuses, even forced, and the file is unchanged."""
    from ledger import WrongPasswordError

    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        ledger.set("a", "1")
        take_backup(ledger.session, tmp_path / "b.db")
        ledger.rekey_master("brand new one")
    before = db.read_bytes()
    with pytest.raises(WrongPasswordError):
        restore(tmp_path / "b.db", db, CLI_PASSWORD, force=True)
    assert db.read_bytes() == before


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 40)


def _damaged_page(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(2 * 4096)
        f.write(b"\xff" * 4096)


@pytest.mark.parametrize("damage", [_garbage, _damaged_page], ids=["not-a-database", "damaged-page"])
def test_restore_force_replaces_a_ledger_that_does_not_read_and_keeps_it_beside(
        tmp_path: Path, damage: object) -> None:
    """cli.md promises that a ledger too damaged to open can be replaced with --force
    (attack pass 3, F5): without --force, one line and nothing changes; with it, the
    backup is restored and the damaged file kept, byte for byte, beside it."""
    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        ledger.set("a", "1")
    out = tmp_path / "b.db"
    assert invoke(db, "backup", "--out", str(out)).exit_code == 0
    assert invoke(db, "secrets", "set", "a", "--value", "2").exit_code == 0
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage(db)  # type: ignore[operator]
    damaged = db.read_bytes()
    refused = invoke(db, "restore", str(out), "--yes")
    assert refused.exit_code == 1 and "does not read as a ledger" in error_line(refused)
    assert "\n" not in error_line(refused).strip() and "Traceback" not in refused.output
    assert db.read_bytes() == damaged
    done = invoke(db, "restore", str(out), "--yes", "--force", "--json")
    assert done.exit_code == 0, error_line(done)
    kept = Path(document(done)["kept_aside"])
    assert kept.parent == tmp_path and kept.read_bytes() == damaged
    assert invoke(db, "secrets", "get", "a").stdout == "1\n"
    assert invoke(db, "health-check").exit_code == 0
    assert [p.name for p in tmp_path.iterdir() if "restoring" in p.name] == []


def _damage_an_index_page(path: Path) -> None:
    """Damage that quick_check finds and a writer does not trip over: the root page of an
    index keyledger never reads while writing secrets."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master "
                            "WHERE name = 'sqlite_autoindex_proj_migration_runs_1'").fetchone()[0]
    with path.open("r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xff" * 64)


def test_restore_force_over_a_damaged_ledger_a_writer_has_open_replaces_it_in_place(
        tmp_path: Path) -> None:
    """A damaged ledger SQLite still opens may be open in an application. Renaming it
    aside left the application writing to the orphan, its acknowledged writes gone from
    the ledger (attack pass 4, F2a). It is now replaced in place, under its lock: the
    application's next call refuses the restored file instead of writing elsewhere."""
    from ledger import RollbackError

    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        ledger.set("a", "1")
        take_backup(ledger.session, tmp_path / "b.db")
        ledger.set("a", "2")
    assert invoke(db, "report").exit_code == 0  # the read models, whose index is damaged
    with Ledger.open(db, CLI_PASSWORD) as app:
        assert app.get("a").value == "2"
        _damage_an_index_page(db)
        done = restore(tmp_path / "b.db", db, CLI_PASSWORD, force=True)
        assert done.kept_aside is not None and done.kept_aside.exists()
        assert done.events_before > 0  # the damaged ledger's head, not 0
        with pytest.raises(RollbackError):
            app.set("late", "acknowledged?")
    with Ledger.open(db, CLI_PASSWORD) as restored:
        assert restored.get("a").value == "1"
        assert "late" not in {info.name for info in restored.secrets()}
    assert invoke(db, "health-check").exit_code == 0


def test_a_ledger_only_locked_by_another_process_is_not_called_damaged(tmp_path: Path) -> None:
    """A lock held on a healthy ledger made restore call it unreadable, and --force then
    replaced it whole (attack pass 4, F2b). Restore waits for the lock, and then judges
    the ledger itself: here, that its history is not a prefix of the backup's."""
    import threading

    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        ledger.set("a", "1")
        take_backup(ledger.session, tmp_path / "b.db")
        ledger.set("a", "2")
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with closing(sqlite3.connect(db, isolation_level=None)) as conn:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(2.5)  # past SQLite's own busy wait (BUSY_TIMEOUT_MS)
            conn.execute("ROLLBACK")

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert locked.wait(5)
    try:
        with pytest.raises(LedgerFormatError, match="not a prefix"):
            restore(tmp_path / "b.db", db, CLI_PASSWORD)
    finally:
        release.set()
        holder.join()
    with Ledger.open(db, CLI_PASSWORD) as ledger:
        assert ledger.get("a").value == "2"


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_restore_refuses_a_target_that_is_not_a_ledger_file_even_forced(
        tmp_path: Path, kind: str) -> None:
    """--force replaced a directory (renamed with its contents) or a symlink (the link
    moved aside, the file it names left as it was): both are refused, and nothing moves."""
    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:
        take_backup(ledger.session, tmp_path / "b.db")
    target = tmp_path / "target"
    if kind == "symlink":
        target.symlink_to(db)
    else:
        target.mkdir()
        (target / "app.conf").write_text("kept")
    with pytest.raises(LedgerFormatError, match=r"symbolic link|not a regular file"):
        restore(tmp_path / "b.db", target, CLI_PASSWORD, force=True)
    assert target.is_symlink() if kind == "symlink" else (target / "app.conf").exists()
    assert [p.name for p in tmp_path.iterdir() if "unreadable" in p.name] == []


# -- a backup is verified before anything is taken from it ---------------------------------


def _backup_with_old_value(ledger: Ledger, tmp_path: Path) -> Path:
    ledger.set("db_password", "old-value")
    ledger.set("db_password", "new-value")
    out = tmp_path / "b.db"
    take_backup(ledger.session, out)
    return out


def test_secrets_restore_refuses_a_backup_whose_chain_does_not_verify(
        ledger: Ledger, tmp_path: Path) -> None:
    """An old genuine SecretWritten copied into the backup as the newest event (chain
    rehashed): the restore walks the backup first and takes nothing from it."""
    from forgery_support import forge_everything

    from ledger import IntegrityError

    out = _backup_with_old_value(ledger, tmp_path)
    with closing(sqlite3.connect(out)) as conn:
        first = conn.execute("SELECT seq FROM events WHERE stream = 'secret:db_password' "
                             "ORDER BY stream_rev LIMIT 1").fetchone()[0]
        second = conn.execute("SELECT seq FROM events WHERE stream = 'secret:db_password' "
                              "ORDER BY stream_rev DESC LIMIT 1").fetchone()[0]
        for trigger in ("events_no_update", "events_no_delete"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("UPDATE events SET payload = (SELECT payload FROM events WHERE seq = ?) "
                     "WHERE seq = ?", (first, second))
        conn.commit()
    forge_everything(out, second)
    before = ledger.recorder.head()
    with pytest.raises(IntegrityError), Ledger.open(out, PASSWORD, upgrade=False) as backup:
        ledger.restore_from_backup("db_password", backup, backup_file=out.name)
    assert ledger.recorder.head() == before
    assert ledger.get("db_password").value == "new-value"


def test_secrets_restore_refuses_another_ledgers_backup(ledger: Ledger, tmp_path: Path) -> None:
    """A backup of another ledger, even one under the same password, gives no value here."""
    from ledger import IntegrityError

    other = tmp_path / "other.db"
    with create_test_ledger(other, PASSWORD) as foreign:
        foreign.set("db_password", "planted")
    ledger.set("db_password", "mine")
    with Ledger.open(other, PASSWORD, upgrade=False) as backup, \
            pytest.raises(IntegrityError, match="another ledger"):
        ledger.restore_from_backup("db_password", backup, backup_file=other.name)
    assert ledger.get("db_password").value == "mine"


def test_a_backup_claiming_this_ledgers_id_under_another_key_is_refused_even_forced(
        ledger: Ledger, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger keeps one signing key for life: a copy built from scratch under this
    ledger's id, with its own key and a password the forger chose, is a forgery, which
    --force does not let through, and the live file is untouched."""
    import uuid

    from ledger import IntegrityError

    ledger.set("a", "1")
    ledger_id = ledger.recorder.read_meta().ledger_id
    forged = tmp_path / "forged.db"
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(hex=ledger_id))
    with create_test_ledger(forged, "the forger's password") as other:
        other.set("a", "planted")
    monkeypatch.undo()
    assert verify_backup(forged, None).chain.ok  # a well-formed ledger in every other way
    if backend.name == "sqlite":
        ledger.recorder.shred()
    before = contents(backend.target)
    with pytest.raises(IntegrityError, match="forgery"):
        restore(forged, backend.target, PASSWORD, force=True, projector=projector())
    assert contents(backend.target) == before


def test_a_backup_whose_signing_key_is_not_its_recorded_one_does_not_open(
        ledger: Ledger, tmp_path: Path) -> None:
    """The wrapped private key of another ledger under the same password, put in a copy:
    its public half is not the recorded one, so neither verify-backup nor a restore use it."""
    from ledger import IntegrityError

    out = _backup_with_old_value(ledger, tmp_path)
    other = tmp_path / "other.db"
    with create_test_ledger(other, PASSWORD):
        pass
    with closing(sqlite3.connect(other)) as conn:
        wrapped = conn.execute("SELECT value FROM meta WHERE key = 'signing_key'").fetchone()[0]
    with closing(sqlite3.connect(out)) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'signing_key'", (wrapped,))
        conn.commit()
    with pytest.raises(IntegrityError):
        verify_backup(out, PASSWORD)
    with pytest.raises(IntegrityError):
        Ledger.open(out, PASSWORD, upgrade=False)


def test_a_backup_changed_after_it_was_verified_restores_nothing(
        ledger: Ledger, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is checked, then copied: an older backup written over it in between would
    roll the ledger back without --force. The copy must verify as the file did (attack on
    restore, finding 2; both backends)."""
    from ledger import IntegrityError
    from ledger import backup as backups

    ledger.set("a", "old")
    older = tmp_path / "older.db"
    take_backup(ledger.session, older)
    ledger.set("a", "new")
    newer = tmp_path / "newer.db"
    take_backup(ledger.session, newer)
    ledger.close()
    checked = backups._replaceable_head

    def then_swapped(*args: object, **kwargs: object) -> object:
        found = checked(*args, **kwargs)  # type: ignore[arg-type]
        with closing(sqlite3.connect(newer)) as into, closing(sqlite3.connect(older)) as old:
            old.backup(into)  # the attacker's swap, in place, after the checks
        return found

    monkeypatch.setattr(backups, "_replaceable_head", then_swapped)
    with pytest.raises(IntegrityError, match="changed while it was being restored"):
        restore(newer, backend.target, PASSWORD, projector=projector())
    monkeypatch.undo()
    with Ledger.open(backend.target, PASSWORD) as after:
        assert after.get("a").value == "new"
