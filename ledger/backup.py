"""Backups: a consistent copy while writers run, its verification, and restoring one.

The copy is SQLite's online backup of the whole file in one step (a consistent snapshot
even while other processes write), made private (0600) and verified (hash chain and
SQLite's integrity check) before the live ledger records a ``BackupTaken`` event.
Restoring refuses to replace a ledger whose history is not a prefix of the backup's,
so a stale backup cannot silently roll back newer events, unless forced.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ledger import events as ev
from ledger.errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidInputError,
    KeyledgerError,
    LedgerDatabaseError,
    LedgerFormatError,
    WrongPasswordError,
)
from ledger.integrity import VerifyReport, verify_ledger
from ledger.locations import is_server, open_recorder
from ledger.seen import Seen, SeenCheckpoints, memory_key
from ledger.session import refuse_if_triggers_altered
from ledger.signing import recorded_public_key
from ledger.store import Projector, Recorder
from ledger.store_sqlite import SQLiteRecorder

if TYPE_CHECKING:
    from ledger.session import Session


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: str
    events: int
    head: str
    sha256: str
    bytes: int


@dataclass(slots=True)
class BackupReport:
    """What a backup holds and whether it checks out."""

    path: str
    chain: VerifyReport  # the hash chain, the signed checkpoints, SQLite's integrity check
    secrets: int = 0
    versions: list[int] = field(default_factory=list)
    decrypted: int | None = None  # None: no password given, values not checked
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.failures


def take_backup(session: Session, out: Path) -> BackupResult:
    """Copy the ledger to ``out`` (which must not exist), verify the copy, record it.

    :raises IntegrityError: the copy does not verify (it is removed).
    """
    if out.exists():
        raise InvalidInputError(f"{out} exists; a backup never overwrites a file")
    session.recorder.backup_to(out)
    with SQLiteRecorder(out) as copy:
        report = verify_ledger(copy)
    if not report.ok:
        out.unlink(missing_ok=True)
        raise IntegrityError(f"the backup did not verify ({'; '.join(report.problems)}); removed")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    result = BackupResult(str(out), report.events, report.head, digest, out.stat().st_size)
    session.append_to_stream(ev.BACKUP_STREAM, ev.BackupTaken(
        file_name=out.name, events=report.events, head_hash=report.head, sha256=digest,
    ))
    return result


def verify_backup(path: Path, password: str | None) -> BackupReport:
    """Check a backup's chain and signed checkpoints and, given the master password, that
    every secret decrypts."""
    from ledger.service import Ledger

    if not path.exists():
        raise InvalidInputError(f"no backup at {path}")
    # Read-only: a backup is checked where it lies, on an auditor's read-only medium too.
    with SQLiteRecorder(path, read_only=True) as recorder:
        report = BackupReport(str(path), verify_ledger(recorder))
    if password is None:
        return report
    with Ledger.unlock(SQLiteRecorder(path, read_only=True), password, upgrade=False,
                       seen=None) as backup:
        report.versions = sorted(backup.keyring().versions)
        report.decrypted = 0
        # The streams listed below are first proven against the signed root: a row
        # deleted or moved would otherwise leave its secret out of the count unseen.
        backup.verify_heads()
        for info in backup.secrets():
            report.secrets += 1
            try:
                # Verifying is not a read for anyone, and must leave the backup's bytes as
                # they were: no SecretRead even when the copy has read auditing on.
                backup.check_decrypts(info.name)
                report.decrypted += 1
            except LedgerDatabaseError:
                raise  # the file, not this secret
            except KeyledgerError as exc:
                report.failures.append(f"{info.name!r}: {exc}")
    return report


def _history_is_kept(live: Recorder, backup: SQLiteRecorder, backup_events: int) -> bool:
    """Whether restoring ``backup`` over ``live`` loses nothing but the record of backups.

    True when the live history is a prefix of the backup's, or when the backup's history
    is a prefix of the live one and every live event past it is a ``BackupTaken`` (the
    copy cannot contain the event that records it).
    """
    live_seq, live_hash = live.head()
    if live_seq <= backup_events:
        at = next(backup.read_events(live_seq - 1), None) if live_seq else None
        return live_seq == 0 or (at is not None and at.hash == live_hash)
    backup_head = backup.head()[1]
    at = next(live.read_events(backup_events - 1), None) if backup_events else None
    if backup_events and (at is None or at.hash != backup_head):
        return False
    return all(row.type == "BackupTaken" for row in live.read_events(backup_events))


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` did."""

    events_before: int  # in the ledger it replaced (0 for none, or one that did not read)
    events_restored: int  # in the backup
    kept_aside: Path | None = None  # where a ledger that did not read was moved to


def restore(
    backup_path: Path, target: Path | str, password: str, *, force: bool = False,
    actor: str | None = None, origin: str | None = None, projector: Projector | None = None,
) -> Restored:
    """Replace the ledger at ``target`` (a file, or a PostgreSQL ledger's URL) with the
    backup and record ``LedgerRestored`` in it, as one step.

    The backup is verified, copied to a private staging file (beside ``target``, or in a
    private temporary folder for a server), opened there with ``password`` and given its
    ``LedgerRestored`` event; only then does one transaction replace ``target``'s content
    with the staging file's. A crash leaves the old ledger, or the new one with its record,
    never the new one without. On a server the read models are built by ``projector``.

    :raises IntegrityError: the backup does not verify, or claims this ledger's id under
        another signing key (even with ``force``).
    :raises WrongPasswordError: ``password`` does not open the backup.
    :raises LedgerFormatError: the target is another ledger (id or signing key), or its
        history is not a prefix of the backup's (it has events the backup lacks), unless
        ``force``.
    """
    source = SQLiteRecorder(backup_path)
    try:
        chain = verify_ledger(source)
        if not chain.ok:
            raise IntegrityError(f"the backup does not verify: {'; '.join(chain.problems)}")
        if is_server(target):
            return _restore_onto_server(source, chain, backup_path, str(target), password,
                                        force, actor, origin, projector)
        return _restore_file(source, chain, backup_path, Path(target), password, force,
                             actor, origin)
    finally:
        source.close()


def _restore_file(source: SQLiteRecorder, chain: VerifyReport, backup_path: Path, target: Path,
                  password: str, force: bool, actor: str | None, origin: str | None) -> Restored:
    before, replacing = 0, None
    _refuse_special_target(target)
    present = target.exists() and target.stat().st_size > 0
    # A file that does not read as a ledger has no history to compare: with --force
    # a copy of it is kept beside the restored one.
    damage = _damage_of(target, password, force) if present else None
    if damage is not None and damage.head is not None:
        replacing = damage.head  # SQLite still opens it: replaced in place, under its lock
        before = replacing[0]
    if present and damage is None:
        with SQLiteRecorder(target) as live:
            replacing = _replaceable_head(live, source, chain, force)
        before = replacing[0]
    _remove_stale_staging(target)
    staging = target.with_name(f".{target.name}.restoring-{os.getpid()}")
    _remove_database(staging)
    try:
        ledger_id, tip = _staged(source, chain, staging, backup_path, password, before, force,
                                 actor, origin)
        key = memory_key(ledger_id, os.path.abspath(target))  # as SQLiteRecorder.location
        kept = None if damage is None else _keep_aside(target)
        if damage is not None and damage.head is None:
            _move_in(staging, target)
        else:
            _swap_in(staging, target, replacing, before)
    finally:
        _remove_database(staging)
    _remember(key, tip)
    return Restored(before, chain.events, kept)


def _restore_onto_server(source: SQLiteRecorder, chain: VerifyReport, backup_path: Path,
                         target: str, password: str, force: bool, actor: str | None,
                         origin: str | None, projector: Projector | None) -> Restored:
    """A restore onto a PostgreSQL ledger: the same checks as for a file; the staged copy
    then replaces the schema's rows in one transaction (:meth:`PostgresRecorder.replace_with`),
    or fills an empty schema. A ledger there that does not open is replaced only with
    ``force``; nothing is kept aside (the server's own backups hold what it was)."""
    from ledger.store_postgres import PostgresRecorder

    with open_recorder(target, create=True, projector=projector) as live:
        assert isinstance(live, PostgresRecorder)
        replacing = None
        if live.is_initialized():
            # A trigger keyledger did not make would run inside the replacement (and one
            # switched off would be switched on with ours): refused, as destroy does.
            refuse_if_triggers_altered(live, "restore")
            _opens_unless_forced(target, password, force)
            # Forced or not, a backup claiming this ledger's id under another key is refused.
            replacing = _replaceable_head(live, source, chain, force)
        before = 0 if replacing is None else replacing[0]
        _remove_stale_server_staging()
        private = Path(tempfile.gettempdir()) / f"{SERVER_STAGING}{os.getuid()}-{os.getpid()}"
        shutil.rmtree(private, ignore_errors=True)
        os.mkdir(private, 0o700)
        try:
            staging = private / "staging.db"
            ledger_id, tip = _staged(source, chain, staging, backup_path, password, before,
                                     force, actor, origin)
            with SQLiteRecorder(staging) as staged:
                if replacing is None:
                    live.load_copy(staged)
                else:
                    try:
                        live.replace_with(staged, replacing)
                    except ConcurrencyError:
                        raise _written_meanwhile(live.location, before) from None
        finally:
            shutil.rmtree(private, ignore_errors=True)
        key = memory_key(ledger_id, live.location)
    _remember(key, tip)
    return Restored(before, chain.events)


#: A server restore's private staging folder in the temporary directory, then the user's
#: id and the process's: a folder a killed restore left is removed by the next one.
SERVER_STAGING = "keyledger-restore-"


def _remove_stale_server_staging() -> None:
    """Remove the staging folders of this user's restores that were killed: each holds a
    whole ledger (wrapped keys included), which a later destroy or rekey would not reach."""
    for leftover in Path(tempfile.gettempdir()).glob(f"{SERVER_STAGING}{os.getuid()}-*"):
        found = re.search(r"-(\d+)$", leftover.name)
        if found and not _alive(int(found.group(1))) and leftover.stat().st_uid == os.getuid():
            shutil.rmtree(leftover, ignore_errors=True)


def _replaceable_head(live: Recorder, source: SQLiteRecorder, chain: VerifyReport,
                      force: bool) -> tuple[int, str]:
    """The head of the ledger a restore replaces, once it is known that replacing it loses
    nothing (same ledger, history a prefix of the backup's) or ``force`` says so.

    :raises IntegrityError: the backup claims this ledger's id under another signing key.
    :raises LedgerFormatError: another ledger, or history lost, without ``force``.
    """
    replacing = live.head()
    is_prefix = _history_is_kept(live, source, chain.events)
    live_id, live_key = live.read_meta().ledger_id, recorded_public_key(live)
    same_ledger = live_id == source.read_meta().ledger_id and live_key == chain.public_key
    if not same_ledger and live_id == source.read_meta().ledger_id and live_key is not None:
        # One ledger id, two signing keys: a ledger has one key for life, so the
        # copy is a forgery, whatever --force says.
        raise IntegrityError(
            "the backup claims this ledger's id but is signed with another key: a "
            "forgery, refused even with --force"
        )
    if not same_ledger and not force:
        raise LedgerFormatError(
            "the backup is of another ledger (its id or signing key differs from "
            "this one's); --force to replace it anyway"
        )
    if not is_prefix and not force:
        raise LedgerFormatError(
            f"the ledger's history (to seq {replacing[0]}) is not a prefix of the backup's "
            f"(to seq {chain.events}); restoring would lose or rewrite events. "
            "--force to replace it anyway"
        )
    return replacing


def _staged(source: SQLiteRecorder, chain: VerifyReport, staging: Path, backup_path: Path,
            password: str, before: int, force: bool, actor: str | None,
            origin: str | None) -> tuple[str, Seen]:
    """The backup copied to ``staging`` and its ``LedgerRestored`` appended there; the
    ledger's id and the staged copy's signed tip."""
    from ledger.service import Ledger

    source.backup_to(staging)
    with SQLiteRecorder(staging) as copied:
        # The backup's file may have been changed since it was verified: the copy is what
        # gets restored, so the copy is what must verify as the backup did.
        again = verify_ledger(copied)
    if not again.ok or (again.events, again.head, again.public_key) != (
            chain.events, chain.head, chain.public_key):
        raise IntegrityError(f"{backup_path} changed while it was being restored; nothing "
                             "was restored")
    with Ledger.open(staging, password, actor=actor, origin=origin, seen=None) as new:
        new.session.append_to_stream(ev.BACKUP_STREAM, ev.LedgerRestored(
            file_name=backup_path.name, events_before=before,
            events_restored=chain.events, forced=force,
        ))
        return new.ledger_id, new.signed_tip()


def _remember(key: str, tip: Seen) -> None:
    memory = SeenCheckpoints.from_environment()
    if memory is not None:
        # A restore goes back on purpose: what this host saw before is replaced.
        memory.record(key, tip, replace=True)


def _written_meanwhile(where: object, before: int) -> LedgerFormatError:
    return LedgerFormatError(
        f"{where} was written to while restoring (it no longer ends at seq "
        f"{before}); nothing was restored: check it, then restore again")


def _swap_in(staging: Path, target: Path, replacing: tuple[int, str] | None, before: int) -> None:
    """Replace ``target``'s content with ``staging``'s in one SQLite transaction, only if
    it still ends at ``replacing``, checked under its write lock: a write committed
    meanwhile is kept, and nothing is restored. Processes that have ``target`` open see
    the new content at their next transaction."""
    with SQLiteRecorder(staging) as staged:
        try:
            staged.backup_to(target, overwrite=target.exists(), replacing=replacing)
        except ConcurrencyError:
            raise _written_meanwhile(target, before) from None


@dataclass(frozen=True)
class _Damage:
    """A target that does not read as a ledger: why, and its head where SQLite still
    opens it (a process may then be writing to it, so it is replaced in place)."""

    why: str
    head: tuple[int, str] | None


def _refuse_special_target(target: Path) -> None:
    """Restore replaces a ledger file, never what a path leads to: a symlink (whose
    target would stay as it was while the link is replaced), a directory or a device
    is refused, even with ``force``."""
    if target.is_symlink():
        raise LedgerFormatError(
            f"{target} is a symbolic link; restore to the ledger's real path instead")
    if target.exists() and not target.is_file():
        raise LedgerFormatError(f"{target} is not a regular file; restore replaces a ledger file")


def _damage_of(target: Path, password: str, force: bool) -> _Damage | None:
    """None when the ledger a restore replaces reads as one; it must then open with
    ``password``, else an old password could roll back a ``rekey-master``. Otherwise
    what is wrong with it, which only ``force`` may replace.

    :raises WrongPasswordError: it opens, and not with ``password`` (even with ``force``).
    :raises LedgerBusyError: another process holds it locked: it may be well.
    :raises KeyledgerError: it does not read, and not ``force``: why not.
    """

    why = SQLiteRecorder.unreadable(target)
    if why is not None:
        if not force:
            raise LedgerFormatError(
                f"{target} does not read as a ledger ({why}); --force replaces it, and "
                "keeps a copy beside the restored one")
        return _Damage(why, SQLiteRecorder.damaged_head(target))
    _opens_unless_forced(target, password, force)
    return None


def _opens_unless_forced(target: Path | str, password: str, force: bool) -> None:
    """The ledger a restore replaces must open with ``password`` (else an old password
    could roll back a ``rekey-master``), ``force`` or not; ``force`` lets one through that
    opens but does not verify (tampered, rolled back, another version's).

    :raises WrongPasswordError, LedgerDatabaseError: whatever ``force`` says.
    """
    from ledger.service import Ledger

    try:
        Ledger.open(target, password).close()
    except (WrongPasswordError, LedgerDatabaseError):
        raise
    except KeyledgerError:
        if not force:
            raise


def _keep_aside(target: Path) -> Path:
    """Copy a damaged ``target`` (with its WAL) to ``NAME.unreadable-TIME`` beside it: the
    record of what happened in between, which the restore is about to replace."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = target.with_name(f"{target.name}.unreadable-{stamp}")
    for suffix in ("", "-wal"):
        found = Path(f"{target}{suffix}")
        if found.exists():
            shutil.copyfile(found, f"{kept}{suffix}")
            os.chmod(f"{kept}{suffix}", 0o600)
    return kept


def _move_in(staging: Path, target: Path) -> None:
    """Put ``staging`` in place of a ``target`` SQLite cannot open at all (so no process
    can be writing to it), with one rename, once its old WAL is gone."""
    with SQLiteRecorder(staging) as staged:
        if not staged.shred():
            raise LedgerFormatError(f"{staging} is still in use; nothing was restored")
    for suffix in ("-wal", "-shm"):
        Path(f"{staging}{suffix}").unlink(missing_ok=True)
        Path(f"{target}{suffix}").unlink(missing_ok=True)  # kept aside; must not meet the new file
    os.replace(staging, target)


def _remove_stale_staging(target: Path) -> None:
    """Remove what a restore killed before its swap left beside ``target``: a full copy
    of a ledger, which nothing else would ever remove (the process that made it is gone)."""
    for leftover in target.parent.glob(f".{target.name}.restoring-*"):
        found = re.search(r"\.restoring-(\d+)(-wal|-shm|-journal)?$", leftover.name)
        if found and not _alive(int(found.group(1))):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


