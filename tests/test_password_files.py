"""The master password from a file: ``ENCRYPTION_MASTER_PASSWORD_FILE`` (and the new
password's ``_FILE``), as Docker and Kubernetes hand secrets over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_support import NEW_PASSWORD, VALUE, error_line, head, invoke
from cli_support import PASSWORD as CLI_PASSWORD

from cli import launch
from ledger import Ledger, WrongPasswordError
from ledger.environment import MAX_FILE_BYTES, from_environment
from ledger.testing import create_test_ledger

ENV = "ENCRYPTION_MASTER_PASSWORD"


def password_file(tmp_path: Path, content: bytes, mode: int = 0o600, name: str = "pw") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("content", [CLI_PASSWORD.encode(), CLI_PASSWORD.encode() + b"\n",
                                     CLI_PASSWORD.encode() + b"\r\n"])
def test_the_cli_unlocks_with_the_password_in_a_file(filled: Path, tmp_path: Path,
                                                     content: bytes) -> None:
    """One trailing newline (as echo or an editor leaves it) is not part of the password."""
    path = password_file(tmp_path, content)
    got = invoke(filled, "secrets", "get", "db_password", password=None,
                 env={f"{ENV}_FILE": str(path)})
    assert got.exit_code == 0, error_line(got)
    assert got.stdout == VALUE + "\n"
    assert got.stderr == ""


def test_only_one_newline_is_taken_off(tmp_path: Path) -> None:
    """Two newlines: the password ends in one, so it is not the one without."""
    path = password_file(tmp_path, b"pw with a newline\n\n")
    assert from_environment(ENV, {f"{ENV}_FILE": str(path)}) == "pw with a newline\n"
    spaced = password_file(tmp_path, b"  spaces count  \n", name="spaced")
    assert from_environment(ENV, {f"{ENV}_FILE": str(spaced)}) == "  spaces count  "


def test_the_variable_and_the_file_together_are_refused(filled: Path, tmp_path: Path) -> None:
    """Set twice is configured twice: neither is guessed at, nothing is written."""
    path = password_file(tmp_path, CLI_PASSWORD.encode())
    before = head(filled)
    result = invoke(filled, "secrets", "set", "x", "--value", "1",
                    env={f"{ENV}_FILE": str(path)})  # the variable is set too
    assert result.exit_code == 1
    assert f"both {ENV} and {ENV}_FILE are set" in error_line(result)
    assert head(filled) == before


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "newline only",
                                  "not utf-8", "too large", "empty name"])
def test_a_bad_password_file_is_one_line_and_changes_nothing(
    filled: Path, tmp_path: Path, case: str
) -> None:
    secretish = b"hunter2-in-a-bad-file"
    paths = {
        "missing": str(tmp_path / "absent"),
        "directory": str(tmp_path),
        "empty": str(password_file(tmp_path, b"")),
        "newline only": str(password_file(tmp_path, b"\n")),
        "not utf-8": str(password_file(tmp_path, secretish + b"\xff\xfe")),
        "too large": str(password_file(tmp_path, secretish * (MAX_FILE_BYTES // 10))),
        "empty name": "",
    }
    before = head(filled)
    result = invoke(filled, "secrets", "set", "x", "--value", "1", password=None,
                    env={f"{ENV}_FILE": paths[case]})
    assert result.exit_code == 1
    line = error_line(result)
    assert f"{ENV}_FILE" in line and "Traceback" not in result.output
    assert secretish.decode() not in result.output
    assert head(filled) == before


def test_a_file_others_can_read_works_with_a_warning(filled: Path, tmp_path: Path) -> None:
    path = password_file(tmp_path, CLI_PASSWORD.encode(), mode=0o644)
    got = invoke(filled, "secrets", "get", "db_password", password=None,
                 env={f"{ENV}_FILE": str(path)})
    assert got.exit_code == 0 and got.stdout == VALUE + "\n"
    assert "readable by group or others" in got.stderr and "chmod 600" in got.stderr
    assert CLI_PASSWORD not in got.stderr


def test_a_wrong_password_in_a_file_changes_nothing(filled: Path, tmp_path: Path) -> None:
    path = password_file(tmp_path, b"not the password\n")
    before = head(filled)
    result = invoke(filled, "secrets", "set", "x", "--value", "1", password=None,
                    env={f"{ENV}_FILE": str(path)})
    assert result.exit_code == 1 and "password" in error_line(result)
    assert "not the password" not in result.output
    assert head(filled) == before


def test_rekey_master_takes_the_new_password_from_a_file(filled: Path, tmp_path: Path) -> None:
    old = password_file(tmp_path, CLI_PASSWORD.encode() + b"\n", name="old")
    new = password_file(tmp_path, NEW_PASSWORD.encode() + b"\n", name="new")
    rekeyed = invoke(filled, "rekey-master", "--yes", password=None,
                     env={f"{ENV}_FILE": str(old), f"ENCRYPTION_NEW_{ENV[11:]}_FILE": str(new)})
    assert rekeyed.exit_code == 0, error_line(rekeyed)
    with Ledger.open(filled, NEW_PASSWORD) as ledger:
        assert ledger.get("db_password").value == VALUE
    with pytest.raises(WrongPasswordError):
        Ledger.open(filled, CLI_PASSWORD)


def test_the_early_key_derivation_reads_the_file_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher's head start works from a password file (the unlock then takes its
    key), and from a bad one, or with both set, it starts nothing (the command then says
    what is wrong)."""
    from ledger import early

    monkeypatch.setattr(early, "_AHEAD", {})
    filled = tmp_path / "k.db"  # a file: on a server the KDF record is read once connected
    with create_test_ledger(filled, CLI_PASSWORD) as made:
        made.set("db_password", VALUE)
    path = password_file(tmp_path, CLI_PASSWORD.encode() + b"\n")
    environ = {f"{ENV}_FILE": str(path), launch.DB_ENV: str(filled)}
    assert not launch.derive_ahead(["secrets", "get", "db_password"],
                                   {**environ, ENV: CLI_PASSWORD})
    assert not launch.derive_ahead(["secrets", "get", "db_password"],
                                   {f"{ENV}_FILE": str(tmp_path / "absent"),
                                    launch.DB_ENV: str(filled)})
    assert early._AHEAD == {}
    assert launch.derive_ahead(["secrets", "get", "db_password"], environ)
    assert [key[0] for key in early._AHEAD] == [CLI_PASSWORD]
    with Ledger.open(filled, CLI_PASSWORD) as ledger:
        assert ledger.get("db_password").value == VALUE
    assert early._AHEAD == {}


# -- from the attack on hand-over: a pipe is read once, by the command -----------------------


def test_a_password_from_a_pipe_or_stdin_unlocks(filled: Path, tmp_path: Path) -> None:
    """The launcher's head start never reads a password file that is not a regular file:
    a pipe can be read only once, and that read is the command's (attack pass, finding 1)."""
    import subprocess

    from ledger.testing import child_environment, keyledger_command

    env = child_environment(KEYLEDGER_DB=str(filled))
    argv = " ".join(f"'{a}'" for a in keyledger_command())
    process_substitution = subprocess.run(
        ["bash", "-c", f"ENCRYPTION_MASTER_PASSWORD_FILE=<(printf '%s' \"$PW\") {argv} "
                       "secrets get db_password"],
        env={**env, "PW": CLI_PASSWORD}, capture_output=True, text=True, timeout=60)
    assert process_substitution.returncode == 0, process_substitution.stderr
    assert process_substitution.stdout == VALUE + "\n"
    piped = subprocess.run([*keyledger_command(), "secrets", "get", "db_password"],
                           env={**env, f"{ENV}_FILE": "/dev/stdin"}, input=CLI_PASSWORD,
                           capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout == VALUE + "\n", piped.stderr


def test_a_fifo_nobody_writes_never_holds_up_a_command_that_needs_no_password(
    filled: Path, tmp_path: Path
) -> None:
    import subprocess

    from ledger.testing import child_environment, keyledger_command

    fifo = tmp_path / "pw.fifo"
    os.mkfifo(fifo)
    listed = subprocess.run([*keyledger_command(), "secrets", "list", "--json"],
                            env=child_environment(KEYLEDGER_DB=str(filled),
                                                  **{f"{ENV}_FILE": str(fifo)}),
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "db_password" in listed.stdout


def test_verify_backup_reads_the_password_file_too(filled: Path, tmp_path: Path) -> None:
    """verify-backup had its own reading of the variable (attack pass, finding 4)."""
    backup = tmp_path / "b.db"
    assert invoke(filled, "backup", "--out", str(backup)).exit_code == 0
    path = password_file(tmp_path, CLI_PASSWORD.encode() + b"\n")
    checked = invoke(filled, "verify-backup", str(backup), "--json", password=None,
                     env={f"{ENV}_FILE": str(path)})
    assert checked.exit_code == 0 and '"decrypted": 2' in checked.stdout
    both = invoke(filled, "verify-backup", str(backup), env={f"{ENV}_FILE": str(path)})
    assert both.exit_code == 1 and "both" in error_line(both)


def test_get_many_refuses_one_string(filled: Path) -> None:
    with Ledger.open(filled, CLI_PASSWORD) as ledger, pytest.raises(TypeError, match=r"get\(\)"):
        ledger.get_many("db_password")
