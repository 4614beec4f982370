"""The faults a new user found, each pinned: names shown literally, invisible characters
refused, a value read from stdin only up to its limit, special files refused as --db,
--value's help naming the process list, audit verify and verify-backup on a read-only copy,
import files read only up to their limits, a full disk called so."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from bad_input_support import (
    TIMEOUT,
    ReadOnlyCopy,
    child_env,
    damage_payload,
    exe_refusal,
    read_only_copy,
    run_exe,
)
from cli_support import OTHER_VALUE, PASSWORD, VALUE, error_line, invoke

from ledger import InvalidInputError, Ledger
from ledger.domain import MAX_VALUE_BYTES, validate_name
from ledger.import_formats import MAX_ENTRY_CHARS, MAX_PIPED_BYTES
from ledger.locations import is_server
from ledger.testing import create_test_ledger, keyledger_command, ledger_files

# Address space for a child keyledger that must not read an endless input into memory:
# several times what it needs, far below what reading /dev/zero to the end would take.
CHILD_MEMORY = 512 * 1024 * 1024


def bounded_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def run_on_zeros(db: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The real keyledger with ``args``, /dev/zero on its stdin and its memory bounded."""
    with open("/dev/zero", "rb") as zeros:
        return subprocess.run([*keyledger_command(), *args], env=child_env(db), stdin=zeros,
                              capture_output=True, timeout=TIMEOUT, preexec_fn=bounded_memory)


def test_names_that_look_like_markup_are_listed_literally(db: Path) -> None:
    """`[/]` no longer crashes `secrets list`, and `[bold]db_password[/bold]` is listed as
    written, not as a second `db_password`."""
    for name in ("[/]", "[bold]db_password[/bold]"):
        assert invoke(db, "secrets", "set", name, "--value", "v").exit_code == 0
    result = invoke(db, "secrets", "list")
    assert result.exit_code == 0, result.stderr
    assert "[/]" in result.stdout and "[bold]db_password[/bold]" in result.stdout


@pytest.mark.parametrize("name", ["db\u200bpassword", "\u202eterces", "key\ufeff", "a\u2066b"])
def test_names_with_invisible_formatting_characters_are_refused(name: str) -> None:
    """Zero-width and bidirectional control characters would let two names look alike."""
    with pytest.raises(InvalidInputError, match="invisible formatting"):
        validate_name(name)


def test_a_value_on_stdin_is_read_only_up_to_the_limit(db: Path) -> None:
    """An endless stdin is refused at the limit with one line (no memory filled), and a
    value of exactly the limit, with its newline, is stored."""
    result = invoke(db, "secrets", "set", "big", stdin=b"x" * (MAX_VALUE_BYTES + 10))
    assert result.exit_code != 0 and "at most" in error_line(result)
    result = invoke(db, "secrets", "set", "big", stdin=b"x" * MAX_VALUE_BYTES + b"\n")
    assert result.exit_code == 0, result.stderr


def test_an_endless_stdin_is_refused_at_the_value_limit(db: Path) -> None:
    """`secrets set NAME < /dev/zero` in the real executable, its memory bounded: one line
    naming the limit, not a MemoryError after trying to read all of it."""
    line = exe_refusal(run_on_zeros(db, "secrets", "set", "big"))
    assert f"at most {MAX_VALUE_BYTES} bytes" in line, line


def test_the_value_options_help_names_shell_history_and_the_process_list() -> None:
    """--value's help warns of both places a value on the command line shows up."""
    text = " ".join(invoke(None, "secrets", "set", "--help").stdout.replace("│", " ").split())
    value_help = text[text.index("--value"):text.index("--json")]
    assert "shell history" in value_help and "process list" in value_help, value_help


def test_init_on_a_device_or_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """`--db /dev/null init` leaves /dev/null's mode alone; a symlink is not followed by init."""
    before = os.stat("/dev/null").st_mode
    result = invoke(Path("/dev/null"), "init")
    assert result.exit_code != 0 and "not a regular file" in error_line(result)
    assert os.stat("/dev/null").st_mode == before
    target = tmp_path / "target.db"
    link = tmp_path / "link.db"
    link.symlink_to(target)
    result = invoke(link, "init")
    assert result.exit_code != 0 and "symbolic link" in error_line(result)
    assert not target.exists()


def test_a_fifo_or_a_directory_as_db_is_one_clear_line(tmp_path: Path) -> None:
    """A FIFO no longer hangs `secrets get`, and a directory is called a directory."""
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    result = invoke(fifo, "secrets", "get", "x")
    assert result.exit_code != 0 and "not a regular file" in error_line(result)
    result = invoke(tmp_path, "info")
    assert result.exit_code != 0 and "is a directory" in error_line(result)


def test_the_launchers_head_start_skips_a_fifo(tmp_path: Path) -> None:
    """The executable reads the KDF record before the CLI starts: a FIFO is passed over
    (an open of it would block until someone writes), not read."""
    from ledger.store_header import kdf_inputs

    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    assert kdf_inputs(fifo) is None


def test_an_absurd_key_version_in_a_payload_is_one_clear_line(db: Path) -> None:
    """A payload edited to key_version 10**30 was an OverflowError traceback from list,
    info, report, health-check and set; now it is a damaged event (or the tampering that
    it is), one line, for each."""
    from tamper_support import rewrite_rows

    assert invoke(db, "secrets", "set", "a", "--value", "x").exit_code == 0
    rewrite_rows(db, "UPDATE events SET payload = replace(payload, '\"key_version\":1', "
                     "'\"key_version\":1000000000000000000000000000000') WHERE stream = 'secret:a'")
    # On SQLite, dropping the trigger moves the schema cookie, so even the metadata
    # commands compare every row with its event; PostgreSQL's superuser edit leaves no such
    # trace, and those two serve their (unproven) rows as the documented quick checks allow.
    metadata_checked = not is_server(str(db))
    for args in (("info",), ("report",), ("secrets", "list"), ("health-check",),
                 ("secrets", "set", "b", "--value", "y")):
        result = invoke(db, *args)
        if args in (("info",), ("secrets", "list")) and not metadata_checked:
            continue
        assert result.exit_code != 0, args
        if args[0] != "health-check":
            assert error_line(result), args


# -- audit verify and verify-backup on an auditor's read-only copy ---------------------------


@pytest.fixture
def at_rest(tmp_path: Path) -> Path:
    """A ledger of two secrets, closed: no -wal or -shm beside it."""
    db = tmp_path / "keyledger.db"
    with create_test_ledger(db, PASSWORD) as ledger:
        ledger.set("db_password", VALUE)
        ledger.set("api_token", OTHER_VALUE)
    assert [f.name for f in ledger_files(db)] == [db.name]
    return db


def folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``folder``: its bytes and modification time."""
    return {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted(folder.iterdir())}


def verify_as_reader(copy: ReadOnlyCopy, command: str, *, password: bool = True
                     ) -> subprocess.CompletedProcess[bytes]:
    db, prefix, preexec = copy
    args = ["audit", "verify", "--json"] if command == "audit verify" else [
        "verify-backup", str(db), "--json"]
    env = child_env(db)
    if not password:
        del env["ENCRYPTION_MASTER_PASSWORD"]
    return run_exe(list(args), env, prefix=prefix, preexec_fn=preexec)


@pytest.mark.parametrize("command", ["audit verify", "verify-backup"])
def test_a_read_only_copy_verifies_and_is_left_as_it_was(at_rest: Path, command: str) -> None:
    """Run by a user who may not write the file or its folder (a read-only medium), both
    checks pass, decrypt every secret, and leave no -wal or -shm and every byte and mtime
    as they were."""
    with read_only_copy(at_rest) as copy:
        before = folder_state(copy[0].parent)
        result = verify_as_reader(copy, command)
        assert result.returncode == 0, result.stderr.decode()
        report = json.loads(result.stdout)
        assert report["ok"] is True and report["events"] > 0
        if command == "verify-backup":
            assert report["decrypted"] == report["secrets"] == 2
        assert folder_state(copy[0].parent) == before


@pytest.mark.parametrize("command", ["audit verify", "verify-backup"])
def test_a_tampered_read_only_copy_still_fails(at_rest: Path, command: str) -> None:
    """A ciphertext edited in the file is caught by the chain on a read-only copy as on a
    writable one (verify-backup without the password: the check that needs none)."""
    with Ledger.open(at_rest, PASSWORD) as ledger:
        edited = ledger.recorder.stream_head("secret:api_token")
    assert edited is not None
    damage_payload(at_rest, "api_token", b"AAAA")
    with read_only_copy(at_rest) as copy:
        result = verify_as_reader(copy, command, password=False)
        assert result.returncode == 1, result.stderr.decode()
        report = json.loads(result.stdout)
        assert report["ok"] is False and report["first_bad_seq"] == edited.seq, report


def test_a_read_only_copy_with_its_wal_is_read_whole(at_rest: Path, tmp_path: Path) -> None:
    """A copy taken while a writer had events only in the -wal: with its -shm, every event
    is verified (not just those in the main file); without the -shm, which SQLite cannot
    then create, one line says what to do."""
    staged = tmp_path / "staged" / at_rest.name
    staged.parent.mkdir()
    with Ledger.open(at_rest, PASSWORD) as ledger:
        ledger.set("only_in_the_wal", VALUE)
        events = ledger.recorder.head()[0]
        for source in ledger_files(at_rest):
            shutil.copy(source, staged.parent / source.name)
    assert {f.name for f in staged.parent.iterdir()} >= {f"{staged.name}-wal", f"{staged.name}-shm"}
    with read_only_copy(staged) as copy:
        before = folder_state(copy[0].parent)
        result = verify_as_reader(copy, "audit verify")
        assert result.returncode == 0, result.stderr.decode()
        assert json.loads(result.stdout)["events"] == events
        assert folder_state(copy[0].parent) == before
    Path(f"{staged}-shm").unlink()
    with read_only_copy(staged) as copy:
        line = exe_refusal(verify_as_reader(copy, "audit verify"))
        assert "-wal" in line and "writable place" in line, line


# -- an import file is read only up to the limits ----------------------------------------------


def test_an_endless_pipe_given_to_import_is_refused_at_its_limit(db: Path) -> None:
    """`secrets import /dev/stdin < /dev/zero`, memory bounded: one line naming the pipe
    limit, not a MemoryError."""
    line = exe_refusal(run_on_zeros(db, "secrets", "import", "/dev/stdin"))
    assert f"more than {MAX_PIPED_BYTES >> 20} MiB" in line, line


@pytest.mark.parametrize(("name", "expected"), [
    ("huge.env", "line 1 is longer than"), ("huge.json", "is not valid JSON (line 1, column 1)"),
])
def test_a_huge_import_file_is_refused_without_reading_it_into_memory(
    db: Path, tmp_path: Path, name: str, expected: str,
) -> None:
    """A 1 GiB file of one endless line (sparse: NUL bytes), memory bounded to half that:
    one line, from the first megabyte or so."""
    huge = tmp_path / name
    with huge.open("wb") as file:
        file.truncate(1 << 30)
    result = run_exe(["secrets", "import", str(huge)], child_env(db), preexec_fn=bounded_memory)
    assert expected in exe_refusal(result)


def test_an_endless_json_token_is_refused_where_it_starts(db: Path, tmp_path: Path) -> None:
    """A JSON string longer than any entry is named by where it starts, as too long, and
    the file is not read on to its end (whose fault would otherwise be found first)."""
    source = tmp_path / "long.json"
    source.write_text('{"a": "' + "x" * (MAX_ENTRY_CHARS + 10) + '"}\n{"not json')
    result = invoke(db, "secrets", "import", str(source))
    assert result.exit_code == 2
    assert "the token at line 1, column 7 is longer than" in error_line(result)


# -- a full or failing disk is called that, and says what it left done -------------------------


def file_size_limit(limit: int) -> Callable[[], None]:
    """A child's preexec_fn: no file it writes may grow past ``limit`` bytes, as on a full
    disk (with SIGXFSZ ignored, the write fails with EFBIG and SQLite reports an I/O error)."""
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limited


@pytest.mark.parametrize("args", [["info"], ["audit", "verify"], ["secrets", "set", "x", "--value", "v"]])
def test_a_disk_too_full_to_open_the_ledger_is_not_called_a_foreign_file(
    at_rest: Path, args: list[str]
) -> None:
    """No room for SQLite's -shm file: one line about the disk, not "not a keyledger ledger"."""
    before = at_rest.read_bytes()
    line = exe_refusal(run_exe(list(args), child_env(at_rest), preexec_fn=file_size_limit(8192)))
    assert "disk I/O error on" in line and "nothing was changed" in line, line
    assert "not a keyledger ledger" not in line, line
    assert at_rest.read_bytes() == before


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (needs the right to mount; skipped without it), unmounted after."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                             capture_output=True, timeout=TIMEOUT)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here; the file-size limit tests stand in")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=TIMEOUT)


def test_a_really_full_disk_is_called_full(at_rest: Path, small_disk: Path) -> None:
    """On a disk with no room left at all, opening the ledger says the disk is full."""
    db = small_disk / at_rest.name
    shutil.copy(at_rest, db)
    with (small_disk / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:  # until the disk is full (ENOSPC)
            filler.write(b"\0" * 4096)
    line = exe_refusal(run_exe(["info"], child_env(db)))
    assert f"the disk holding {db} is full; nothing was changed" in line, line


def migrated_so_far(db: Path) -> int:
    """How many secrets are on the current key version, as `report` counts them."""
    report = json.loads(invoke(db, "report", "--json").stdout)
    return int(report["distribution"].get(str(report["current_version"]), 0))


@pytest.mark.parametrize("command", ["migrate", "full-rotation"])
def test_a_migration_the_disk_stops_says_how_far_it_got(tmp_path: Path, command: str) -> None:
    """A migration whose third batch or so finds the disk full names the secrets it did
    commit (not "nothing was changed"), and running migrate again finishes the work."""
    db = tmp_path / "keyledger.db"
    with create_test_ledger(db, PASSWORD) as ledger:
        for i in range(60):
            ledger.set(f"secret_{i:02}", "v" * 2000)
    if command == "migrate":
        assert invoke(db, "rotate", "--yes").exit_code == 0
    assert not Path(f"{db}-wal").exists()
    # Room in the WAL for about two batches of ten (each some 120 KiB of pages).
    args = ["migrate", "--yes"] if command == "migrate" else ["full-rotation", "--yes"]
    result = run_exe([*args, "--batch-size", "10"], child_env(db),
                     preexec_fn=file_size_limit(256 * 1024))
    line = exe_refusal(result)
    done = migrated_so_far(db)
    assert 0 < done < 60, line
    assert f"{done} secret(s) were migrated (committed) before that" in line, line
    assert "then `keyledger migrate` finishes the rest" in line, line
    if command == "full-rotation":
        assert "rotated to key version 2, then" in line, line
    assert invoke(db, "migrate", "--yes").exit_code == 0
    assert migrated_so_far(db) == 60
    assert invoke(db, "audit", "verify").exit_code == 0


@pytest.mark.parametrize("iterations", ["0", "-5", "99999999999999999999", "1e6"])
@pytest.mark.parametrize("command", [("secrets", "get", "a"), ("health-check",),
                                     ("audit", "seen")])
def test_a_damaged_kdf_iteration_count_is_one_clear_line(
        tmp_path: Path, iterations: str, command: tuple[str, ...]) -> None:
    """An edited meta.kdf_iterations reached PBKDF2 as a ValueError or OverflowError."""
    db = tmp_path / "k.db"
    with create_test_ledger(db, PASSWORD) as ledger:
        ledger.set("a", "1")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'kdf_iterations'", (iterations,))
        conn.commit()
    refused = invoke(db, *command)
    assert refused.exit_code == 1
    # health-check reports it among its checks; every other command in one line
    shown = refused.stdout if command == ("health-check",) else error_line(refused)
    assert "metadata is incomplete or damaged" in shown


# -- found in review of the storage seam (issue 13) --------------------------------------


def test_the_compliance_report_of_a_long_ledger_checks_its_chain_in_its_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report verifies inside a snapshot: the chain check may not fork a worker there
    (it asserted, a traceback for `audit export` past 50,000 events); it walks the chain
    itself, and an edited row is still found."""
    from ledger import integrity
    from projections.reports.compliance import build_compliance_report

    monkeypatch.setattr(integrity, "PARALLEL_MIN_EVENTS", 4)
    path = tmp_path / "l.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        for i in range(12):
            ledger.set(f"s{i}", "v")
        report = build_compliance_report(ledger.recorder)
    assert report.integrity.ok


def test_every_store_read_raises_keyledgers_error_not_sqlites(tmp_path: Path) -> None:
    """``chain_rows`` returned SQLite's generator, whose errors escaped the translation:
    `secrets get` on a damaged ledger printed a traceback."""
    from ledger.errors import LedgerDatabaseError
    from ledger.store_sqlite import SQLiteRecorder

    path = tmp_path / "l.db"
    create_test_ledger(path, PASSWORD).close()
    recorder = SQLiteRecorder(path)
    recorder.conn.close()
    for read in (recorder.head, lambda: list(recorder.chain_rows()),
                 lambda: list(recorder.read_events()), lambda: list(recorder.checkpoints())):
        with pytest.raises(LedgerDatabaseError):
            read()


def test_a_full_disk_in_a_read_model_write_is_called_a_full_disk(tmp_path: Path) -> None:
    """A statement translated inside a transaction's body still lets the transaction
    name a full disk (it said "ledger file error" instead)."""
    from ledger.errors import LedgerStorageError
    from ledger.store_sqlite import SQLiteRecorder
    from projections import projector

    path = tmp_path / "l.db"
    with create_test_ledger(path, PASSWORD) as ledger:  # no read models kept: they lag
        for i in range(200):
            ledger.set(f"secret-{i:04}", "x" * 200)
    with SQLiteRecorder(path) as recorder:
        pages = recorder.conn.execute("PRAGMA page_count").fetchone()[0]
        recorder.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(LedgerStorageError, match=r"disk holding .* is full"):
            projector().refresh(recorder)


def test_a_salt_stored_with_a_trailing_newline_still_opens(tmp_path: Path) -> None:
    """The KDF record is read as it always was (the header reader's stricter decoding
    refused such a salt, and with it the ledger)."""
    path = tmp_path / "l.db"
    create_test_ledger(path, PASSWORD).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value = value || char(10) WHERE key = 'kdf_salt'")
    with Ledger.open(path, PASSWORD) as ledger:
        assert ledger.keyring().current == 1


def test_a_database_error_is_never_one_secrets_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """migrate records a secret it cannot re-encrypt as a failure and goes on; a fault of
    the file itself stops the run instead of being written into the signed record."""
    from ledger import migration
    from ledger.errors import LedgerDatabaseError
    from ledger.session import Session

    monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 10**9)
    path = tmp_path / "l.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("a", "1")
        ledger.rotate()
        head = ledger.recorder.head()

        def broken(self: Session, state: object) -> bytes:
            raise LedgerDatabaseError("ledger file error: the ledger file is damaged")

        monkeypatch.setattr(Session, "decrypt", broken)
        with pytest.raises(LedgerDatabaseError):
            ledger.migrate()
        assert ledger.recorder.head() == head
