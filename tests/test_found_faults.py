"""The faults a new user found, each pinned: names shown literally, invisible characters
refused, a value read from stdin only up to its limit, special files refused as --db,
--value's help naming the process list."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
from pathlib import Path

import pytest
from bad_input_support import TIMEOUT, child_env, exe_refusal
from cli_support import error_line, invoke

from ledger import InvalidInputError
from ledger.domain import MAX_VALUE_BYTES, validate_name
from ledger.testing import keyledger_command

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
    from cli.launch import _kdf_inputs

    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    assert _kdf_inputs(fifo, "PBKDF2-HMAC-SHA256") is None


def test_an_absurd_key_version_in_a_payload_is_one_clear_line(db: Path) -> None:
    """A payload edited to key_version 10**30 was an OverflowError traceback from list,
    info, report, health-check and set; now it is a damaged event (or the tampering that
    it is), one line, for each."""
    import sqlite3
    from contextlib import closing

    assert invoke(db, "secrets", "set", "a", "--value", "x").exit_code == 0
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET payload = replace(payload, '\"key_version\":1', "
                     "'\"key_version\":1000000000000000000000000000000') WHERE stream = 'secret:a'")
        conn.commit()
    for args in (("info",), ("report",), ("secrets", "list"), ("health-check",),
                 ("secrets", "set", "b", "--value", "y")):
        result = invoke(db, *args)
        assert result.exit_code != 0, args
        if args[0] != "health-check":
            assert error_line(result), args
