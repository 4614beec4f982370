"""Secrets hygiene: values and the master password never reach output, errors or tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cli_support import invoke
from typer.main import get_command

from cli.app import app
from ledger.testing import create_test_ledger

VALUE = "hygiene-VALUE-5f0c2e"
PASSWORD = "hygiene-PASSWORD-b71d9a"
ROOT = Path(__file__).resolve().parent.parent


def test_no_command_output_or_error_carries_a_value_or_the_password(tmp_path: Path) -> None:
    """Across successes and failures of every kind, only `secrets get` prints the value."""
    db = tmp_path / "k.db"
    create_test_ledger(db, PASSWORD).close()
    bad_env = tmp_path / "bad.env"
    bad_env.write_text(f"GOOD=1\nthis line is broken {VALUE}\n")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"x": "' + VALUE + '", oops}')
    too_big = tmp_path / "big.json"
    too_big.write_text(json.dumps({"big": VALUE * 5000}))
    env = {"ENCRYPTION_MASTER_PASSWORD": PASSWORD}
    runs = [
        invoke(db, "secrets", "set", "db", stdin=VALUE, password=PASSWORD, env=env),
        invoke(db, "secrets", "set", "bad\tname", stdin=VALUE, password=PASSWORD, env=env),
        invoke(db, "secrets", "import", str(bad_env), password=PASSWORD, env=env),
        invoke(db, "secrets", "import", str(bad_json), password=PASSWORD, env=env),
        invoke(db, "secrets", "import", str(too_big), password=PASSWORD, env=env),
        invoke(db, "secrets", "get", "db", password=VALUE, env={"ENCRYPTION_MASTER_PASSWORD": VALUE}),
        invoke(db, "rotate", "--yes", "--json", password=PASSWORD, env=env),
        invoke(db, "migrate", "--yes", "--json", password=PASSWORD, env=env),
        invoke(db, "health-check", "--json", password=PASSWORD, env=env),
        invoke(db, "secrets", "list", "--json", password=PASSWORD, env=env),
        invoke(db, "info", "--json", password=PASSWORD, env=env),
        invoke(db, "rekey-master", "--yes", password=PASSWORD,
               env={**env, "ENCRYPTION_NEW_MASTER_PASSWORD": PASSWORD + "-new"}),
    ]
    assert runs[0].exit_code == 0 and [r.exit_code for r in runs[1:6]] == [2, 2, 2, 2, 1]
    for result in runs:
        text = result.stdout + result.stderr
        assert VALUE not in text and PASSWORD not in text
    got = invoke(db, "secrets", "get", "db", password=PASSWORD + "-new",
                 env={"ENCRYPTION_MASTER_PASSWORD": PASSWORD + "-new"})
    assert got.stdout == VALUE + "\n" and PASSWORD not in got.stderr


def test_an_unexpected_crash_prints_no_locals(tmp_path: Path) -> None:
    """A bug that escapes every handler still shows a traceback without local variables."""
    db = tmp_path / "k.db"
    with create_test_ledger(db, PASSWORD) as ledger:
        ledger.set("db", VALUE)
    program = (
        "import ledger.service as s\n"
        "original = s.Ledger.get\n"
        "def broken(self, name):\n"
        "    secret = original(self, name)\n"
        "    plaintext = secret.value\n"
        "    raise RuntimeError('simulated bug')\n"
        "s.Ledger.get = broken\n"
        "from cli.launch import main\n"  # the executable's entry point
        "main()\n"
    )
    env = {**os.environ, "KEYLEDGER_DB": str(db), "ENCRYPTION_MASTER_PASSWORD": PASSWORD,
           "NO_COLOR": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-c", program, "secrets", "get", "db"], env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "simulated bug" in result.stderr  # the crash is visible ...
    assert VALUE not in result.stdout + result.stderr  # ... its locals are not
    assert PASSWORD not in result.stdout + result.stderr


def _help_texts() -> dict[str, str]:
    texts = {}
    root = get_command(app)
    stack: list[tuple[list[str], object]] = [([], root)]
    while stack:
        path, command = stack.pop()
        result = invoke(None, *path, "--help")
        texts[" ".join(path) or "keyledger"] = result.stdout
        for name, sub in getattr(command, "commands", {}).items():
            stack.append(([*path, name], sub))
    return texts


def test_help_and_docs_never_show_a_value_on_the_command_line() -> None:
    """Every example in --help and in docs/ passes values on stdin or from a file, never as an argument."""
    on_command_line = re.compile(r"keyledger[^\n]*secrets set [^\n]*--value")
    for where, text in _help_texts().items():
        assert not on_command_line.search(text), where
    for page in (ROOT / "docs").glob("*.md"):
        for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", page.read_text(), re.S):
            assert not on_command_line.search(block), page.name
