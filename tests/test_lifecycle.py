"""Retiring, reinstating and destroying key versions (crypto-shredding)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import PASSWORD

from ledger import IntegrityError, InvalidInputError, Ledger, VersionError
from ledger.domain import parse_duration
from ledger.testing import StepClock, create_test_ledger, ledger_files, read_all
from projections import ReadModels, projector


@pytest.fixture
def moved(db_path: Path) -> Ledger:
    """Secrets written under version 1, then rotated and migrated to version 2."""
    ledger = create_test_ledger(db_path, PASSWORD, projector=projector(), clock=StepClock())
    for name in ("a", "b"):
        ledger.set(name, name.upper())
    ledger.rotate()
    ledger.migrate()
    return ledger


def test_retire_is_refused_while_live_secrets_are_on_the_version(ledger: Ledger) -> None:
    """A version still holding live secrets is not retired unless forced."""
    ledger.set("a", "1")
    ledger.rotate()
    with pytest.raises(VersionError, match="1 live secret"):
        ledger.retire(1)


def test_forced_retirement_makes_secrets_unreadable_until_reinstated(ledger: Ledger) -> None:
    """A retired version decrypts nothing; reinstating it brings the secrets back."""
    ledger.set("a", "1")
    ledger.rotate()
    result = ledger.retire(1, force=True, reason="drill")
    assert (result.status, result.live_secrets) == ("retired", 1)
    with pytest.raises(VersionError, match="retired"):
        ledger.get("a")
    migrated = ledger.migrate()
    assert migrated.failed == 1 and "retired" in migrated.failures[0].error
    ledger.reinstate(1)
    assert ledger.get("a").value == "1"


def test_the_current_version_cannot_be_retired(ledger: Ledger) -> None:
    """Retiring the version that encrypts new values is refused: rotate first."""
    with pytest.raises(VersionError, match="rotate first"):
        ledger.retire(1)


def test_another_process_sees_a_retirement_at_once(moved: Ledger, db_path: Path) -> None:
    """A long-lived reader stops decrypting under a version retired by another process."""
    first = next(e for e in moved.recorder.read_stream("secret:a")).decode()
    assert moved.open_ciphertext("a", first.ciphertext) == "A"  # type: ignore[attr-defined]
    with Ledger.open(db_path, PASSWORD) as other:
        other.retire(1)
    with pytest.raises(VersionError):
        moved.open_ciphertext("a", first.ciphertext)  # type: ignore[attr-defined]


def test_destroy_needs_a_retired_version(moved: Ledger) -> None:
    """Only a retired version can be destroyed."""
    with pytest.raises(VersionError, match="retire it"):
        moved.destroy(1)


def test_destroyed_version_cannot_decrypt_its_history(moved: Ledger, db_path: Path) -> None:
    """After destroy, every ciphertext ever written under the version is unreadable; others are fine."""
    history = [e.decode() for e in moved.recorder.read_events() if e.type == "SecretWritten"]
    with closing(sqlite3.connect(db_path)) as conn:
        wrapped = conn.execute("SELECT wrapped FROM keys WHERE version = 1").fetchone()[0]
    moved.retire(1)
    result = moved.destroy(1, reason="end of cryptoperiod")
    assert result.status == "destroyed"
    for event in history:
        with pytest.raises(VersionError, match="destroyed"):
            moved.open_ciphertext(event.name, event.ciphertext)  # type: ignore[attr-defined]
    assert read_all(moved) == {"a": "A", "b": "B"}  # the migrated values live on under v2
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT wrapped FROM keys WHERE version = 1").fetchone()[0] is None
    for path in ledger_files(db_path):
        assert wrapped not in path.read_bytes(), path.name  # shredded, not just unlinked
    with pytest.raises(VersionError, match="never reused"):
        moved.rotate(1)
    moved.close()
    with Ledger.open(db_path, PASSWORD) as reopened, pytest.raises((VersionError, IntegrityError)):
        reopened.open_ciphertext(history[0].name, history[0].ciphertext)  # type: ignore[attr-defined]


def test_destroy_is_refused_while_live_secrets_remain(ledger: Ledger) -> None:
    """Even retired by force, a version holding live secrets is not destroyed."""
    ledger.set("a", "1")
    ledger.rotate()
    ledger.retire(1, force=True)
    with pytest.raises(VersionError, match="live secret"):
        ledger.destroy(1)
    ledger.delete("a")
    assert ledger.destroy(1).status == "destroyed"


def test_scheduled_destruction_waits_and_can_be_cancelled(db_path: Path) -> None:
    """destroy --after waits out its period, refuses early, and cancel-destroy keeps the key."""
    clock = StepClock(datetime(2026, 1, 1, tzinfo=UTC), timedelta(seconds=1))
    with create_test_ledger(db_path, PASSWORD, clock=clock) as ledger:
        ledger.rotate()
        ledger.retire(1)
        scheduled = ledger.destroy(1, after=timedelta(days=7))
        assert scheduled.status == "scheduled-for-destruction"
        assert scheduled.destroy_after is not None and scheduled.destroy_after.startswith("2026-01-08")
        with pytest.raises(VersionError, match="not before"):
            ledger.destroy(1)
        with pytest.raises(VersionError, match="cancel-destroy"):
            ledger.reinstate(1)
        assert ledger.cancel_destroy(1).status == "retired"
        ledger.destroy(1, after=timedelta(days=7))
        clock.now += timedelta(days=8)
        assert ledger.destroy(1).status == "destroyed"


def test_read_models_show_every_status(moved: Ledger) -> None:
    """info's statuses follow retire, schedule and destroy, and equal a rebuild."""
    moved.rotate()
    moved.retire(1)
    moved.destroy(1, after=timedelta(days=1))
    views = ReadModels(moved.recorder)
    statuses = {v.version: v.status for v in views.keyring().versions}
    assert statuses == {1: "scheduled-for-destruction", 2: "decrypt-only", 3: "active"}
    assert views.keyring().available_versions == [2, 3]
    before = views.keyring()
    views.rebuild()
    assert views.keyring() == before and views.problems(deep=True) == []


def test_rekey_master_after_a_destruction(moved: Ledger, db_path: Path) -> None:
    """Changing the master password skips a destroyed key and keeps everything else readable."""
    moved.retire(1)
    moved.destroy(1)
    assert moved.rekey_master("new password", kdf_iterations=1000, _allow_weak_kdf=True) == 1
    moved.close()
    with Ledger.open(db_path, "new password") as reopened:
        assert read_all(reopened) == {"a": "A", "b": "B"}


@pytest.mark.parametrize(("text", "expected"), [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)),
                                                ("30m", timedelta(minutes=30)), ("2w", timedelta(weeks=2))])
def test_durations_parse(text: str, expected: timedelta) -> None:
    """Waiting periods are written like 7d, 12h, 30m or 2w."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "0d", "-1d", "7y", "1.5d", "²d", "99999999999d", "999999w"])
def test_bad_durations_are_refused(text: str) -> None:
    """Anything else is a clear input error."""
    with pytest.raises(InvalidInputError):
        parse_duration(text)


def test_cli_lifecycle_round_trip(tmp_path: Path) -> None:
    """keys retire, destroy --after, cancel-destroy and destroy through the CLI, with JSON results."""
    from cli_support import document, error_line, invoke

    db = tmp_path / "k.db"
    with create_test_ledger(db, "cli-suite master password 7c1e") as ledger:
        ledger.set("a", "1")
        ledger.rotate()
    refused = invoke(db, "keys", "retire", "1")
    assert refused.exit_code == 1 and "live secret" in error_line(refused)
    assert invoke(db, "migrate", "--yes").exit_code == 0
    assert document(invoke(db, "keys", "retire", "1", "--json"))["status"] == "retired"
    mismatch = invoke(db, "keys", "destroy", "1", "--confirm-version", "2", "--yes")
    assert mismatch.exit_code == 2
    no_tty = invoke(db, "keys", "destroy", "1", "--confirm-version", "1")
    assert no_tty.exit_code == 2 and "--yes" in error_line(no_tty)
    scheduled = document(
        invoke(db, "keys", "destroy", "1", "--confirm-version", "1", "--after", "7d", "--json")
    )
    assert scheduled["status"] == "scheduled-for-destruction" and scheduled["destroy_after"]
    assert invoke(db, "keys", "destroy", "1", "--confirm-version", "1", "--yes").exit_code == 1
    assert document(invoke(db, "keys", "cancel-destroy", "1", "--json"))["status"] == "retired"
    done = invoke(db, "keys", "destroy", "1", "--confirm-version", "1", "--yes", "--json")
    assert document(done)["status"] == "destroyed"
    info = document(invoke(db, "info", "--json"))
    assert info["key_metadata"]["1"]["status"] == "destroyed" and info["available_versions"] == [2]


def test_seed_import_never_stores_under_a_destroyed_version(moved: Ledger) -> None:
    """A seed ciphertext of a destroyed (or retired) version is re-encrypted under the current key."""
    from ledger.testing import seed_encrypt

    moved.import_seed({"s1": seed_encrypt(PASSWORD, 5, "one")}, PASSWORD)
    moved.delete("s1")
    moved.retire(5)
    result = moved.import_seed({"s2": seed_encrypt(PASSWORD, 5, "two")}, PASSWORD)
    assert (result.reencrypted, result.stored_as_is) == (1, 0)
    assert moved.get("s2").value == "two" and moved.get("s2").version == 2
    moved.destroy(5)
    again = moved.import_seed({"s3": seed_encrypt(PASSWORD, 5, "three")}, PASSWORD)
    assert again.reencrypted == 1 and moved.get("s3").value == "three"
