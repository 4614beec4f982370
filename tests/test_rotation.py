"""Rotation, migration and master-password changes through the library API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, Backend
from tamper_support import plain_rows

from ledger import InvalidInputError, Ledger, VersionError, WrongPasswordError, migration
from ledger.testing import create_test_ledger, read_all
from projections import ReadModels


@pytest.fixture(params=["in-process", "worker"])
def migration_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A test using it runs twice: migrate preparing its batches in process, and in a
    forked worker (the path large ledgers take)."""
    if request.param == "worker":
        monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)
    return str(request.param)


def event_types(ledger: Ledger) -> list[str]:
    return [e.type for e in ledger.recorder.read_events()]


def test_rotate_picks_the_next_regular_version(ledger: Ledger) -> None:
    """Without a version, rotation goes to the next regular version and makes it current."""
    result = ledger.rotate(reason="quarterly")
    assert (result.from_version, result.to_version) == (1, 2)
    keyring = ledger.keyring()
    assert keyring.current == 2
    assert keyring.versions[1].rotated_at is not None and keyring.versions[2].rotated_at is None


def test_rotate_to_emergency_then_back_to_regular(ledger: Ledger) -> None:
    """After an emergency rotation to 99, the next default rotation is regular again."""
    ledger.rotate(99)
    assert ledger.rotate().to_version == 2


def test_versions_are_never_reused_and_refusals_are_recorded(ledger: Ledger) -> None:
    """Rotating to a version ever used is refused, leaves the keyring alone, and is recorded."""
    ledger.rotate(5)
    ledger.rotate()
    with pytest.raises(VersionError, match="never reused"):
        ledger.rotate(5)
    assert ledger.keyring().current == 6
    assert event_types(ledger)[-1] == "KeyRotationRejected"


@pytest.mark.parametrize("version", [0, 256, -1])
def test_out_of_range_versions_are_refused(ledger: Ledger, version: int) -> None:
    """Only versions 1-255 fit the format's version byte; a bad number is input, not recorded."""
    head = ledger.recorder.head()
    with pytest.raises(InvalidInputError, match="1-255"):
        ledger.rotate(version)
    assert ledger.recorder.head() == head


def test_regular_versions_run_out_with_a_clear_error(ledger: Ledger) -> None:
    """Once version 20 is used, a default rotation asks for an explicit version."""
    ledger.rotate(20)
    with pytest.raises(VersionError, match="--new-version"):
        ledger.rotate()


@pytest.mark.parametrize(("version", "warns"), [(2, False), (21, True), (80, True), (85, False),
                                                (99, False), (150, True)])
def test_rotating_outside_the_assigned_ranges_warns(ledger: Ledger, version: int, warns: bool) -> None:
    """Reserved (21-80) and unassigned (100-255) versions come with a warning."""
    assert (ledger.rotate(version).warning is not None) == warns


@pytest.mark.usefixtures("migration_mode")
def test_dry_runs_append_nothing(ledger: Ledger) -> None:
    """A dry-run rotation or migration leaves the ledger exactly as it was."""
    ledger.set("a", "1")
    head = ledger.recorder.head()
    assert ledger.rotate(dry_run=True).to_version == 2
    ledger.rotate()
    head = ledger.recorder.head()
    result = ledger.migrate(dry_run=True)
    assert result.migrated == 1 and result.run_id is None
    assert ledger.recorder.head() == head


def test_rotation_can_be_cancelled_by_the_confirm_callback(ledger: Ledger) -> None:
    """A confirm callback that raises stops the rotation before anything is appended."""
    head = ledger.recorder.head()

    def refuse(version: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ledger.rotate(confirm=refuse)
    assert ledger.recorder.head() == head


def test_old_secrets_stay_readable_after_rotation(ledger: Ledger) -> None:
    """Rotation re-encrypts nothing; values under older versions still read back."""
    ledger.set("a", "one")
    ledger.rotate()
    ledger.set("b", "two")
    ledger.rotate()
    assert read_all(ledger) == {"a": "one", "b": "two"}
    assert [ledger.get(n).version for n in ("a", "b")] == [1, 2]


@pytest.mark.usefixtures("migration_mode")
def test_migrate_moves_everything_to_the_current_version(ledger: Ledger, views: ReadModels) -> None:
    """After migrate every secret is on the current version and reads back unchanged."""
    for i in range(7):
        ledger.set(f"s{i}", f"value {i}")
    ledger.rotate()
    ledger.set("fresh", "new")
    result = ledger.migrate(batch_size=3)
    assert (result.migrated, result.already_current, result.failed, result.total) == (7, 1, 0, 8)
    assert views.report().needing_migration == 0
    assert read_all(ledger) == {**{f"s{i}": f"value {i}" for i in range(7)}, "fresh": "new"}
    assert event_types(ledger)[-1] == "MigrationCompleted"


@pytest.mark.usefixtures("migration_mode")
def test_migrate_only_targets_the_current_version(ledger: Ledger) -> None:
    """Migrating to a version that is not current is refused (rotate first)."""
    ledger.rotate()
    with pytest.raises(VersionError, match="not the current"):
        ledger.migrate(1)


@pytest.mark.usefixtures("migration_mode")
def test_a_killed_migration_resumes_where_it_stopped(ledger: Ledger, views: ReadModels) -> None:
    """A run interrupted after its first batch leaves that batch done; a re-run finishes."""
    for i in range(10):
        ledger.set(f"s{i:02}", str(i))
    ledger.rotate()

    def die_after_first_batch(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ledger.migrate(batch_size=4, progress=die_after_first_batch)
    assert views.report().needing_migration == 6
    second = ledger.migrate(batch_size=4)
    assert (second.migrated, second.already_current) == (6, 4)
    runs = views.migration_runs()
    assert second.resumed == runs[0].run_id
    assert [r.status for r in runs] == ["resumed", "success"]
    assert read_all(ledger) == {f"s{i:02}": str(i) for i in range(10)}


@pytest.mark.usefixtures("migration_mode")
def test_a_write_during_migration_wins(ledger: Ledger, backend: Backend) -> None:
    """A value set by another process mid-batch is kept; the migration never writes it back."""
    for i in range(6):
        ledger.set(f"s{i}", "old")
    ledger.rotate()
    other = Ledger.open(backend.target, PASSWORD)
    original: Callable[..., object] = ledger.session.append
    interfered = []

    def interfere_then_append(*args: Any, **kwargs: Any) -> object:
        # The batch's heads are read by now (here or in the worker); its append is next.
        if not interfered:
            other.set("s2", "written during migration")
            interfered.append(True)
        return original(*args, **kwargs)

    ledger.session.append = interfere_then_append  # type: ignore[method-assign]
    result = ledger.migrate(batch_size=10)
    other.close()
    assert interfered
    assert ledger.get("s2").value == "written during migration"
    assert (result.migrated, result.already_current, result.failed) == (5, 1, 0)
    stream = [e.type for e in ledger.recorder.read_stream("secret:s2")]
    assert stream == ["SecretWritten", "SecretWritten"]


def test_rekey_master_changes_the_password_not_the_secrets(ledger: Ledger, backend: Backend) -> None:
    """After rekey-master only the new password opens the ledger, and every value is intact."""
    ledger.set("a", "1")
    ledger.rotate()
    ledger.set("b", "2")
    before = [e.payload for e in ledger.recorder.read_events() if e.type.startswith("Secret")]
    assert ledger.rekey_master("brand new password") == 2
    ledger.close()
    with pytest.raises(WrongPasswordError):
        Ledger.open(backend.target, PASSWORD)
    with Ledger.open(backend.target, "brand new password") as reopened:
        assert read_all(reopened) == {"a": "1", "b": "2"}
        after = [e.payload for e in reopened.recorder.read_events() if e.type.startswith("Secret")]
        assert after == before  # no secret was re-encrypted
        assert reopened.recorder.read_events().__next__().type == "LedgerInitialized"


@pytest.mark.usefixtures("migration_mode")
def test_emergency_workflow_rekey_rotate_99_migrate(tmp_path: Path) -> None:
    """The guide's emergency workflow works: new password, rotate to 99, migrate, all readable."""
    path = tmp_path / "l.db"
    with create_test_ledger(path, "old") as ledger:
        for name in ("db", "api", "smtp"):
            ledger.set(name, name.upper())
        ledger.rotate()
        ledger.rekey_master("emergency")
    with Ledger.open(path, "emergency") as ledger:
        ledger.rotate(99, reason="suspected compromise")
        result = ledger.migrate(99)
        assert result.failed == 0 and result.migrated == 3
        assert {n: ledger.get(n).version for n in ("db", "api", "smtp")} == dict.fromkeys(
            ("db", "api", "smtp"), 99
        )
        assert read_all(ledger) == {"db": "DB", "api": "API", "smtp": "SMTP"}


def test_a_substituted_key_is_detected(ledger: Ledger, backend: Backend) -> None:
    """A data key swapped in the key table no longer matches its recorded fingerprint."""
    from ledger import IntegrityError

    ledger.set("a", "1")
    ledger.rotate()
    v2 = plain_rows(backend.target, "SELECT wrapped FROM keys WHERE version = 2")[0][0]
    plain_rows(backend.target, "UPDATE keys SET wrapped = ? WHERE version = 1 RETURNING version",
               (v2,))
    with Ledger.open(backend.target, PASSWORD) as reopened, pytest.raises(IntegrityError):
        reopened.get("a")


def test_keys_are_re_read_when_another_process_rotates(ledger: Ledger, backend: Backend) -> None:
    """A long-lived Ledger sees a rotation made by another process and writes under it."""
    with Ledger.open(backend.target, PASSWORD) as other:
        other.rotate()
    assert ledger.set("a", "1").key_version == 2
    assert ledger.get("a").value == "1"


def test_rekey_by_another_process_is_noticed(ledger: Ledger, backend: Backend) -> None:
    """A Ledger opened with the old password refuses to write after another process rekeys."""
    with Ledger.open(backend.target, PASSWORD) as other:
        other.rekey_master("new")
    with pytest.raises(WrongPasswordError, match="changed"):
        ledger.rotate()


@pytest.mark.usefixtures("migration_mode")
def test_a_taken_over_run_is_not_resumed_twice(ledger: Ledger) -> None:
    """Once a later run has resumed a killed one, the next run resumes nothing."""
    for i in range(4):
        ledger.set(f"s{i}", str(i))
    ledger.rotate()

    def die(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ledger.migrate(batch_size=2, progress=die)
    assert ledger.migrate().resumed is not None
    ledger.rotate()
    assert ledger.migrate().resumed is None


@pytest.mark.usefixtures("migration_mode")
def test_migration_started_records_how_many_secrets_it_examines(ledger: Ledger) -> None:
    """MigrationStarted counts the secrets the run will look at, with or without a progress bar."""
    for i in range(3):
        ledger.set(f"s{i}", str(i))
    ledger.delete("s0")
    ledger.rotate()
    ledger.migrate()
    started = [e.decode() for e in ledger.recorder.read_events() if e.type == "MigrationStarted"]
    assert [s.candidates for s in started] == [3]  # type: ignore[attr-defined]


@pytest.mark.usefixtures("migration_mode")
def test_a_migrate_with_nothing_to_do_appends_nothing(ledger: Ledger) -> None:
    """When every secret is already current, migrate records no run (cron-friendly)."""
    ledger.set("a", "1")
    head = ledger.recorder.head()
    result = ledger.migrate()
    assert (result.already_current, result.migrated, result.run_id) == (1, 0, None)
    assert ledger.recorder.head() == head


@pytest.mark.usefixtures("migration_mode")
def test_a_run_is_recorded_with_its_first_batch(ledger: Ledger) -> None:
    """MigrationStarted lands in the same transaction as the first re-encrypted batch."""
    for i in range(3):
        ledger.set(f"s{i}", str(i))
    ledger.rotate()
    before = ledger.recorder.head()[0]
    result = ledger.migrate(batch_size=2)
    rows = [r for r in ledger.recorder.read_events() if r.seq > before]
    assert [r.type for r in rows] == [
        "MigrationStarted", "SecretMigrated", "SecretMigrated", "SecretMigrated", "MigrationCompleted",
    ]
    assert rows[0].hash == rows[1].prev_hash and rows[0].occurred_at == rows[1].occurred_at
    assert result.run_id == rows[0].stream.removeprefix("migration:")


def test_a_refused_rotation_does_not_disturb_a_migration(ledger: Ledger, backend: Backend) -> None:
    """Recording KeyRotationRejected leaves the keyring revision alone, so writers carry on."""
    ledger.set("a", "1")
    revision = ledger.keyring().revision
    with Ledger.open(backend.target, PASSWORD) as other, pytest.raises(VersionError):
        other.rotate(1)
    assert ledger.keyring().revision == revision
    assert ledger.recorder.stream_head("rejections") is not None


@pytest.mark.usefixtures("migration_mode")
def test_a_run_killed_after_its_last_batch_is_closed_by_the_next(ledger: Ledger, views: ReadModels) -> None:
    """A run that migrated everything but died before completing is marked resumed, not left running."""
    for i in range(3):
        ledger.set(f"s{i}", str(i))
    ledger.rotate()

    def die_at_the_end(done: int, total: int) -> None:
        if done == total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ledger.migrate(batch_size=10, progress=die_at_the_end)
    assert [r.status for r in views.migration_runs()] == ["running"]
    again = ledger.migrate()
    assert (again.migrated, again.already_current) == (0, 3) and again.resumed is not None
    assert [r.status for r in views.migration_runs()] == ["resumed", "success"]
    assert ledger.migrate().run_id is None  # and after that, a no-op is quiet again
