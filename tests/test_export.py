"""``keyledger secrets export`` and ``keyledger run``: values handed to other programs,
read back as written by ``secrets import``, python-dotenv, ``sh`` and JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from cli_support import PASSWORD, VALUE, document, error_line, head, invoke
from conftest import Backend
from dotenv import dotenv_values
from hypothesis import given
from hypothesis import strategies as st
from tamper_support import plain_rows

from ledger import Ledger
from ledger.exporting import render, variable_names
from ledger.import_formats import parse_dotenv_untrusted
from ledger.testing import child_environment, create_test_ledger, keyledger_command

TRICKY = {
    "PEM": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    "QUOTES": "it's \"quoted\" and 'single'",
    "DOLLAR": "$HOME ${HOME} $(id) `id` \\$x",
    "HASH": "value # not a comment #",
    "BACKSLASH": "C:\\path\\to\\ \\\\ \\' \\n end\\",
    "SPACES": "  leading and trailing  ",
    "EMPTY": "",
    "UNICODE": "clé 🔑 日本 \u2028 sep",
    "CRLF": "a\r\nb\rc",
    "EQUALS": "a=b==c",
    "TABS": "\ttab\t",
}


def read_back(text: str, fmt: str, tmp_path: Path) -> dict[str, str]:
    """``text`` as each reader of ``fmt`` reads it; asserts they all agree."""
    path = tmp_path / f"out.{fmt}"
    path.write_bytes(text.encode("utf-8"))
    if fmt == "json":
        return dict(json.loads(text))
    if fmt == "shell":
        shown = subprocess.run(["sh", "-c", '. "$1" && env -0', "sh", str(path)],
                               capture_output=True, env={"PATH": os.environ["PATH"]},
                               check=True).stdout.decode("utf-8")
        found = dict(entry.split("=", 1) for entry in shown.split("\0") if "=" in entry)
        return {k: v for k, v in found.items() if k.startswith("V_") or k in TRICKY}
    ours = parse_dotenv_untrusted(path, text)
    theirs = dotenv_values(path, interpolate=False)
    assert ours == theirs
    return ours


@pytest.mark.parametrize("fmt", ["dotenv", "shell", "json"])
def test_tricky_values_read_back_as_written(fmt: str, tmp_path: Path) -> None:
    expected = dict(TRICKY)
    got = read_back(render(TRICKY, fmt), fmt, tmp_path)  # type: ignore[arg-type]
    assert got == expected


VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                 max_size=40)


@given(st.lists(VALUES, min_size=1, max_size=6))
def test_any_values_read_back_as_written(tmp_path: Path, values: list[str]) -> None:
    """Every format, every reader, any text but NUL (which no environment holds): a
    carriage return included, which a text-mode reader would turn into a line break."""
    named = {f"V_{i}": value for i, value in enumerate(values)}
    for fmt in ("dotenv", "shell", "json"):
        assert read_back(render(named, fmt), fmt, tmp_path) == named, fmt  # type: ignore[arg-type]


def test_the_naming_rule() -> None:
    assert variable_names(["db_password", "API_KEY"]) == {"db_password": "db_password",
                                                         "API_KEY": "API_KEY"}
    assert variable_names(["web/db-password", "web/2fa"], prefix="web/", rename=True) == {
        "web/db-password": "DB_PASSWORD", "web/2fa": "_2FA"}
    with pytest.raises(Exception, match="not environment variable names: a b, web/x"):
        variable_names(["ok", "a b", "web/x"])
    with pytest.raises(Exception, match=r"one variable: A_B <- a-b, a\.b"):
        variable_names(["a-b", "a.b"], rename=True)


# -- the command ------------------------------------------------------------------------


@pytest.fixture
def several(backend: Backend) -> Path | str:
    target = backend.db_path if backend.name == "sqlite" else backend.target
    with create_test_ledger(target, PASSWORD) as ledger:
        for name, value in TRICKY.items():
            ledger.set(name, value)
        ledger.set("web/api-key", VALUE)
    return target


def reads(db: Path | str) -> int:
    return int(plain_rows(db, "SELECT count(*) FROM events WHERE type = 'SecretRead'")[0][0])


def test_export_writes_a_private_file_that_imports_back(several: Path | str, tmp_path: Path,
                                                       backend: Backend) -> None:
    out = tmp_path / "app.env"
    done = invoke(several, "secrets", "export", "--only", "PEM", "--only", "QUOTES",
                  "--out", str(out), "--json")
    assert done.exit_code == 0, done.stderr
    assert document(done) == {"exported": 2, "format": "dotenv", "out": str(out)}
    assert (out.stat().st_mode & 0o777) == 0o600
    assert VALUE not in done.output and TRICKY["PEM"] not in done.output
    other = backend.fresh("other.db")
    create_test_ledger(other, PASSWORD).close()
    assert invoke(other, "secrets", "import", str(out)).exit_code == 0
    with Ledger.open(other, PASSWORD) as ledger:
        assert {n: ledger.get(n).value for n in ("PEM", "QUOTES")} == {
            n: TRICKY[n] for n in ("PEM", "QUOTES")}


def test_export_never_overwrites_without_force(several: Path | str, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "app.env"
    out.write_text("KEEP=me\n")
    refused = invoke(several, "secrets", "export", "--only", "PEM", "--out", str(out))
    assert refused.exit_code == 2 and "--force" in error_line(refused)
    assert out.read_text() == "KEEP=me\n"
    assert invoke(several, "secrets", "export", "--only", "PEM", "--out", str(out),
                  "--force").exit_code == 0
    assert "PEM='-----BEGIN" in out.read_text() and (out.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["app.env"]  # no temporary left


def test_export_to_stdout_in_each_format(several: Path | str) -> None:
    shell = invoke(several, "secrets", "export", "--format", "shell", "--prefix", "web/",
                   "--rename")
    assert shell.exit_code == 0 and shell.stdout == f"export API_KEY='{VALUE}'\n"
    as_json = invoke(several, "secrets", "export", "--format", "json", "--only", "HASH")
    assert json.loads(as_json.stdout) == {"HASH": TRICKY["HASH"]}
    bad = invoke(several, "secrets", "export", "--format", "yaml")
    assert bad.exit_code == 2 and "--format" in error_line(bad)


def test_export_records_each_read_and_a_refusal_records_none(several: Path | str) -> None:
    assert invoke(several, "audit", "reads", "on", "--reason", "pci").exit_code == 0
    before = reads(several)
    refused = invoke(several, "secrets", "export")  # web/api-key is no environment name
    assert refused.exit_code == 2 and "web/api-key" in error_line(refused)
    assert reads(several) == before
    missing = invoke(several, "secrets", "export", "--only", "PEM", "--only", "nope")
    assert missing.exit_code == 1 and reads(several) == before
    done = invoke(several, "secrets", "export", "--rename")
    assert done.exit_code == 0
    assert reads(several) == before + len(TRICKY) + 1


# -- run: the real executable, replaced by the program ------------------------------------


def run(db: Path | str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = child_environment(**{"KEYLEDGER_DB": str(db),
                                       "ENCRYPTION_MASTER_PASSWORD": PASSWORD, **env})
    return subprocess.run([*keyledger_command(), "run", *args], env=environment,
                          capture_output=True, text=True, timeout=60)


def test_run_hands_the_secrets_over_and_the_password_not(several: Path | str) -> None:
    shown = run(several, "--prefix", "web/", "--rename", "--", "sh", "-c",
                'printf "%s|%s|%s" "$API_KEY" "${ENCRYPTION_MASTER_PASSWORD-unset}" "$1"',
                "sh", "an argument")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"{VALUE}|unset|an argument"
    assert shown.stderr == ""
    pem = run(several, "--only", "PEM", "--", "sh", "-c", 'printf "%s" "$PEM"')
    assert pem.stdout == TRICKY["PEM"]


def test_run_passes_exit_codes_and_signals_through(several: Path | str) -> None:
    assert run(several, "--only", "PEM", "--", "sh", "-c", "exit 7").returncode == 7
    killed = run(several, "--only", "PEM", "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == -signal.SIGTERM
    assert run(several, "--only", "PEM", "--", "no-such-program-x").returncode == 127


def test_run_is_the_program_itself_no_keyledger_left_behind(several: Path | str) -> None:
    """exec: the program has keyledger's process id, so no keyledger process holds the
    values (or waits) while it runs."""
    environment = child_environment(KEYLEDGER_DB=str(several),
                                    ENCRYPTION_MASTER_PASSWORD=PASSWORD)
    child = subprocess.Popen([*keyledger_command(), "run", "--only", "PEM", "--", "sh", "-c",
                              "echo $$"], env=environment, stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=60)
    assert int(out) == child.pid


def test_run_refuses_a_clash_unless_override(several: Path | str) -> None:
    before = reads(several)
    clash = run(several, "--only", "PEM", "--", "sh", "-c", 'printf "%s" "$PEM"', PEM="mine")
    assert clash.returncode == 2 and "PEM" in clash.stderr and "--override" in clash.stderr
    assert clash.stdout == ""
    kept = run(several, "--only", "PEM", "--override", "--", "sh", "-c", 'printf "%s" "$PEM"',
               PEM="mine")
    assert kept.stdout == TRICKY["PEM"]
    assert reads(several) == before  # read auditing is off here


def test_run_records_every_injected_read_before_the_program_starts(
    several: Path | str
) -> None:
    """With read auditing on, the program can already see its own reads in the ledger."""
    assert invoke(several, "audit", "reads", "on", "--reason", "pci").exit_code == 0
    before = reads(several)
    seen = run(several, "--prefix", "web/", "--rename", "--", *keyledger_command(), "audit",
               "log", "--type", "SecretRead", "--json")
    assert seen.returncode == 0, seen.stderr
    logged = json.loads(seen.stdout)
    assert len(logged) == before + 1 and VALUE not in seen.stdout
    assert reads(several) == before + 1


def test_run_and_export_leave_no_value_on_stderr_when_they_fail(several: Path | str,
                                                               tmp_path: Path) -> None:
    for result in (run(several, "--", "sh", "-c", "true"),  # web/api-key: no env name
                   run(several, "--only", "nope", "--", "true")):
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
        assert all(v not in result.stderr for v in (*TRICKY.values(), VALUE) if len(v) > 3)
    wrong = run(several, "--only", "PEM", "--", "true", ENCRYPTION_MASTER_PASSWORD="wrong pw")
    assert wrong.returncode == 1 and "wrong pw" not in wrong.stderr
    assert head(several)[0] > 0


def test_run_json_failure_is_one_document(several: Path | str) -> None:
    missing = run(several, "--only", "PEM", "--json", "--", "no-such-program-x")
    assert missing.returncode == 127
    assert json.loads(missing.stdout)["ok"] is False
    assert "command not found" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_run_and_export_leave_no_value_or_password_in_the_ledgers_bytes(tmp_path: Path) -> None:
    """With read auditing on, every hand-over is an event: the ledger file and its WAL
    then hold the reads, and still neither a value nor the master password."""
    from ledger.testing import ledger_files

    db = tmp_path / "k.db"
    probe = "handover-VALUE-7d1f0c"
    with create_test_ledger(db, PASSWORD) as ledger:
        ledger.set("PROBE", probe)
        ledger.set_read_auditing(True, reason="scan")
    out = tmp_path / "out.env"
    shown = run(db, "--only", "PROBE", "--", "sh", "-c", 'test "$PROBE" = "$1"', "sh", probe)
    exported = invoke(db, "secrets", "export", "--only", "PROBE", "--out", str(out))
    assert shown.returncode == 0 and exported.exit_code == 0
    assert probe not in shown.stdout + shown.stderr + exported.stdout + exported.stderr
    assert reads(db) == 2
    for path in ledger_files(db):
        data = path.read_bytes()
        for needle in (probe, PASSWORD):
            assert needle.encode() not in data and needle.encode("utf-16-le") not in data, path
    assert probe in out.read_text()


def test_export_through_the_real_executable(several: Path | str, tmp_path: Path) -> None:
    """The installed command, as a deploy script runs it: stdout, then a private file."""
    environment = child_environment(KEYLEDGER_DB=str(several), ENCRYPTION_MASTER_PASSWORD=PASSWORD)
    printed = subprocess.run([*keyledger_command(), "secrets", "export", "--format", "json",
                              "--only", "PEM", "--only", "QUOTES"], env=environment,
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and printed.stderr == ""
    assert json.loads(printed.stdout) == {"PEM": TRICKY["PEM"], "QUOTES": TRICKY["QUOTES"]}
    out = tmp_path / "deploy.env"
    written = subprocess.run([*keyledger_command(), "secrets", "export", "--prefix", "web/",
                              "--rename", "--out", str(out)], env=environment,
                             capture_output=True, text=True, timeout=60)
    assert written.returncode == 0 and VALUE not in written.stdout + written.stderr
    assert dotenv_values(out) == {"API_KEY": VALUE}
    assert (out.stat().st_mode & 0o777) == 0o600


# -- from the attack on hand-over ------------------------------------------------------------


def test_a_refused_hand_over_records_no_read(several: Path | str, tmp_path: Path) -> None:
    """Every refusal that can be known before decrypting comes before it: a clash, a
    program that is not there, a folder that is not there; a NUL in a value after
    decrypting, but before recording (attack pass, finding 8)."""
    with Ledger.open(several, PASSWORD) as ledger:
        ledger.set("NULV", "a\0b")
    assert invoke(several, "audit", "reads", "on", "--reason", "pci").exit_code == 0
    before = reads(several)
    refusals = [
        run(several, "--only", "PEM", "--", "true", PEM="set already"),
        run(several, "--only", "PEM", "--", "no-such-program-x"),
        run(several, "--only", "NULV", "--", "true"),
    ]
    assert [r.returncode for r in refusals] == [2, 127, 2]
    assert "NUL" in refusals[2].stderr
    assert invoke(several, "secrets", "export", "--only", "PEM", "--out",
                  str(tmp_path / "no" / "such" / "x.env")).exit_code == 2
    assert reads(several) == before


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "BASH_ENV", "PYTHONPATH"])
def test_a_secret_that_steers_the_program_needs_override(backend: Backend, name: str) -> None:
    """A variable that changes what the program loads or runs is refused unless
    --override, set already or not (attack pass, finding 12)."""
    with create_test_ledger(backend.target, PASSWORD) as ledger:
        ledger.set(name, "/tmp/evil")
    refused = run(backend.target, "--only", name, "--", "true")
    assert refused.returncode == 2 and name in refused.stderr and "--override" in refused.stderr
    allowed = run(backend.target, "--only", name, "--override", "--", "/bin/sh", "-c",
                  f'printf "%s" "${name}"')
    assert allowed.returncode == 0 and allowed.stdout == "/tmp/evil"


def test_a_secret_named_like_the_master_password_is_never_handed_over(backend: Backend) -> None:
    with create_test_ledger(backend.target, PASSWORD) as ledger:
        ledger.set("ENCRYPTION_MASTER_PASSWORD", "planted")
    for extra in ((), ("--override",)):
        refused = run(backend.target, "--only", "ENCRYPTION_MASTER_PASSWORD", *extra, "--", "true")
        assert refused.returncode == 2 and "never handed to a program" in refused.stderr


def test_an_export_is_whole_or_absent_and_never_touches_what_is_there(
    several: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file goes to a temporary first, then into place in one step (a link that fails
    if a file appeared meanwhile); a failure half way leaves neither a part at --out nor
    the temporary (attack pass, finding 9)."""
    from ledger import private_files

    out = tmp_path / "out" / "app.env"
    out.parent.mkdir()
    real_write = os.write

    def fail_half_way(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(private_files.os, "write", fail_half_way)
    assert invoke(several, "secrets", "export", "--only", "PEM", "--out", str(out)).exit_code == 1
    monkeypatch.undo()
    assert os.listdir(out.parent) == []
    # A file that appears between the check and the link is left as it is.
    checked = private_files.check_writable

    def then_someone_writes(path: Path, **kw: bool) -> None:
        checked(path, **kw)
        if not path.exists():
            path.write_text("theirs\n")

    monkeypatch.setattr(private_files, "check_writable", then_someone_writes)
    with pytest.raises(Exception, match="exists"):
        private_files.write_private(out, "mine\n")
    assert out.read_text() == "theirs\n" and sorted(os.listdir(out.parent)) == ["app.env"]
