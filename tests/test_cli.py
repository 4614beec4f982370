"""The ``keyledger`` command line, driven in-process through typer's CliRunner.

Most ledgers here come from :func:`ledger.testing.create_test_ledger` (weak, fast KDF);
the real ``keyledger init`` (600,000 PBKDF2 iterations) runs in only a few tests.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from cli.app import app
from ledger import Ledger
from ledger import events as ev
from ledger.crypto import KEK_ITERATIONS, SCHEME_BOUND
from ledger.store import NewEvent
from ledger.testing import create_test_ledger, read_all, seed_encrypt

PASSWORD = "cli-suite master password 7c1e"
NEW_PASSWORD = "cli-suite new master password 3b8a"
VALUE = "s3cr3t-value-never-shown-9d2f"
OTHER_VALUE = "another-hidden-value-51ea"

runner = CliRunner()

def invoke(
    db: Path | None, *args: str, stdin: str | bytes | None = None,
    password: str | None = PASSWORD, env: Mapping[str, str | None] | None = None,
) -> Result:
    """Run the CLI with a clean environment; never lets a traceback or a crash through."""
    environment: dict[str, str | None] = {
        "KEYLEDGER_DB": None if db is None else str(db),
        "ENCRYPTION_MASTER_PASSWORD": password,
        "ENCRYPTION_NEW_MASTER_PASSWORD": None,
        "KEYLEDGER_ACTOR": None,
        "NO_COLOR": "1",
    }
    environment.update(env or {})
    result = runner.invoke(app, list(args), input=stdin, env=environment)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.stdout
    assert "Traceback" not in result.stderr
    return result


def document(result: Result) -> Any:
    """The one JSON document that makes up the whole of stdout."""
    return json.loads(result.stdout)


def error_line(result: Result) -> str:
    """The single line a failed command wrote on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def head(db: Path) -> tuple[int, int, str | None]:
    """(row count, last seq, last hash) of the events table, read straight from SQLite."""
    with closing(sqlite3.connect(db)) as conn:
        count, top = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM events").fetchone()
        row = conn.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return count, top, None if row is None else row[0]


def last_event(db: Path) -> tuple[str, str, str]:
    """(type, actor, payload) of the newest event."""
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT type, actor, payload FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    return row[0], row[1], row[2]


def values(db: Path, password: str = PASSWORD) -> dict[str, str]:
    with Ledger.open(db, password) as ledger:
        return read_all(ledger)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """An empty ledger (key version 1 current) at ``tmp_path/keyledger.db``."""
    path = tmp_path / "keyledger.db"
    create_test_ledger(path, PASSWORD).close()
    return path


@pytest.fixture
def filled(db: Path) -> Path:
    """The ledger with two secrets on key version 1."""
    with Ledger.open(db, PASSWORD, actor="setup@test") as ledger:
        ledger.set("db_password", VALUE)
        ledger.set("api_token", OTHER_VALUE)
    return db


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the CLI believe stdin is a terminal, so it prompts instead of refusing."""
    monkeypatch.setattr("cli.context.stdin_is_tty", lambda: True)
    yield


def plant_undecryptable(db: Path, name: str = "broken") -> None:
    """Record a secret whose ciphertext belongs to another name (so it never decrypts)."""
    with Ledger.open(db, PASSWORD) as ledger:
        donor = ledger.secret("db_password").ciphertext
        assert donor is not None
        ledger.recorder.append(
            [NewEvent(ev.secret_stream(name), 1, ev.SecretWritten(
                name=name, key_version=1, ciphertext=donor, scheme=SCHEME_BOUND,
            ))],
            actor="attacker@test", occurred_at="2026-01-01T00:00:00.000000Z",
        )


# -- global options ------------------------------------------------------------------


def test_db_option_overrides_env(filled: Path, tmp_path: Path) -> None:
    """--db names the ledger even when KEYLEDGER_DB points at another one."""
    other = tmp_path / "other.db"
    create_test_ledger(other, PASSWORD).close()
    from_env = document(invoke(filled, "report", "--json"))
    from_option = document(invoke(filled, "--db", str(other), "report", "--json"))
    assert from_env["total_secrets"] == 2
    assert from_option["total_secrets"] == 0


def test_default_db_is_keyledger_db_in_working_directory(
    filled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db or KEYLEDGER_DB the ledger is ./keyledger.db."""
    monkeypatch.chdir(filled.parent)
    result = invoke(None, "report", "--json")
    assert result.exit_code == 0, result.stderr
    assert document(result)["total_secrets"] == 2


def test_actor_option_and_env_are_recorded(db: Path) -> None:
    """--actor (or KEYLEDGER_ACTOR) is the actor of the events a command appends; the option wins."""
    assert invoke(db, "--actor", "alice@ops", "secrets", "set", "a", "--value", "1").exit_code == 0
    assert last_event(db)[1] == "alice@ops"
    assert invoke(db, "secrets", "set", "b", "--value", "2",
                  env={"KEYLEDGER_ACTOR": "bob@ci"}).exit_code == 0
    assert last_event(db)[1] == "bob@ci"
    assert invoke(db, "--actor", "carol@ops", "secrets", "set", "c", "--value", "3",
                  env={"KEYLEDGER_ACTOR": "bob@ci"}).exit_code == 0
    assert last_event(db)[1] == "carol@ops"


def test_default_actor_is_user_at_host(db: Path) -> None:
    """Without --actor the events are signed user@host."""
    assert invoke(db, "secrets", "set", "a", "--value", "1").exit_code == 0
    actor = last_event(db)[1]
    assert "@" in actor and not actor.startswith("@")


def test_missing_password_without_tty_is_one_clear_line(filled: Path) -> None:
    """No ENCRYPTION_MASTER_PASSWORD and no terminal: exit 1 naming the variable, nothing printed."""
    before = head(filled)
    result = invoke(filled, "secrets", "get", "db_password", password=None)
    assert result.exit_code == 1
    assert "ENCRYPTION_MASTER_PASSWORD" in error_line(result)
    assert result.stdout == ""
    assert head(filled) == before


def test_empty_password_is_refused(filled: Path) -> None:
    """An empty ENCRYPTION_MASTER_PASSWORD is refused with one line, not tried."""
    result = invoke(filled, "secrets", "get", "db_password", password="")
    assert result.exit_code == 1
    assert "empty" in error_line(result)


def test_password_is_prompted_hidden_on_a_tty(
    filled: Path, tty: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal without the env var the password is asked through getpass (no echo)."""
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    result = invoke(filled, "secrets", "get", "db_password", password=None)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == VALUE + "\n"
    assert len(prompts) == 1 and "password" in prompts[0].lower()


def test_unknown_command_is_usage_error(db: Path) -> None:
    """An unknown command exits 2."""
    assert invoke(db, "frobnicate").exit_code == 2


@pytest.mark.parametrize("command", [
    ["init"], ["info"], ["report"], ["rotate"], ["migrate"], ["full-rotation"],
    ["health-check"], ["rekey-master"], ["rebuild-projections"], ["secrets", "set"],
    ["secrets", "get"], ["secrets", "list"], ["secrets", "delete"], ["secrets", "import"],
    ["secrets", "import-seed"],
])
def test_every_command_has_help_with_json_option_and_example(db: Path, command: list[str]) -> None:
    """Every command's --help exits 0, offers --json and shows an example."""
    result = invoke(db, *command, "--help")
    assert result.exit_code == 0
    assert "--json" in result.stdout
    assert "Example" in result.stdout


# -- every --json is exactly one document ----------------------------------------------


@pytest.mark.parametrize("args", [
    ["info"], ["report"], ["rotate", "--dry-run"], ["rotate", "--yes"],
    ["migrate", "--dry-run"], ["migrate", "--yes"], ["full-rotation", "--dry-run"],
    ["full-rotation", "--yes"], ["health-check"], ["rebuild-projections"],
    ["secrets", "set", "x", "--value", "v"], ["secrets", "get", "db_password"],
    ["secrets", "list"], ["secrets", "delete", "api_token"], ["init"],
    # failures print one error document too
    ["rotate"], ["migrate"], ["rotate", "--new-version", "1", "--yes"],
    ["secrets", "get", "nope"], ["secrets", "delete", "nope"],
    ["migrate", "--yes", "--target-version", "9"],
])
def test_json_output_is_exactly_one_document(filled: Path, args: list[str]) -> None:
    """With --json, stdout parses as one JSON document whatever the outcome."""
    result = invoke(filled, *args, "--json")
    parsed = document(result)
    assert isinstance(parsed, dict | list)
    if result.exit_code != 0:
        assert parsed["ok"] is False and parsed["error"]
        assert parsed["error"] in error_line(result)


# -- init ------------------------------------------------------------------------------


def test_init_creates_private_ledger_with_key_version_1(tmp_path: Path) -> None:
    """init (real KDF) creates a 0600 ledger whose current and only key version is 1."""
    path = tmp_path / "new" / "keyledger.db"
    result = invoke(path, "init", "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["created"] is True and doc["current_version"] == 1
    assert doc["kdf_iterations"] >= KEK_ITERATIONS
    assert mode(path) == 0o600
    info = document(invoke(path, "info", "--json"))
    assert info["current_version"] == 1 and info["available_versions"] == [1]


def test_init_again_changes_nothing(db: Path) -> None:
    """init on an existing ledger checks the password, appends nothing and says so."""
    before = head(db)
    result = invoke(db, "init")
    assert result.exit_code == 0, result.stderr
    assert "nothing changed" in result.stdout
    as_json = invoke(db, "init", "--json")
    assert document(as_json)["created"] is False
    assert head(db) == before


def test_init_again_with_wrong_password_fails(db: Path) -> None:
    """init on an existing ledger with the wrong password fails rather than claiming success."""
    before = head(db)
    result = invoke(db, "init", password="not the password")
    assert result.exit_code == 1
    error_line(result)
    assert head(db) == before


def test_init_into_existing_empty_file_makes_it_private(tmp_path: Path) -> None:
    """init into a pre-existing empty file (say from touch) still leaves a 0600 ledger."""
    path = tmp_path / "keyledger.db"
    path.touch()
    path.chmod(0o644)
    result = invoke(path, "init")
    assert result.exit_code == 0, result.stderr
    assert mode(path) == 0o600


def test_init_refuses_a_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    """init on some other file exits 1 with one line and leaves the file untouched."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"just some notes, not SQLite\n" * 10)
    result = invoke(path, "init")
    assert result.exit_code == 1
    assert "not a keyledger ledger" in error_line(result)
    assert path.read_bytes() == b"just some notes, not SQLite\n" * 10


def test_init_without_password_creates_nothing(tmp_path: Path) -> None:
    """init without a password and without a terminal fails and creates no file."""
    path = tmp_path / "keyledger.db"
    result = invoke(path, "init", password=None)
    assert result.exit_code == 1
    assert "ENCRYPTION_MASTER_PASSWORD" in error_line(result)
    assert not path.exists()


def test_init_prompt_mismatch_creates_nothing(
    tmp_path: Path, tty: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, two different answers to the password prompt create nothing."""
    answers = iter(["first password 123", "second password 456"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    path = tmp_path / "keyledger.db"
    result = invoke(path, "init", password=None)
    assert result.exit_code == 1
    assert "differ" in error_line(result)
    assert not path.exists()


# -- info and report -------------------------------------------------------------------


def test_info_json_shape(filled: Path) -> None:
    """info --json gives current and available versions and per-version metadata keyed by str."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    doc = document(invoke(filled, "info", "--json"))
    assert doc["current_version"] == 2
    assert doc["available_versions"] == [1, 2]
    assert set(doc["key_metadata"]) == {"1", "2"}
    old, new = doc["key_metadata"]["1"], doc["key_metadata"]["2"]
    for meta in (old, new):
        assert {"created_at", "rotated_at", "status"} <= set(meta)
        assert isinstance(meta["created_at"], str)
    assert old["rotated_at"] is not None and old["status"] != "active"
    assert new["rotated_at"] is None and new["status"] == "active"


def test_info_needs_no_password(filled: Path) -> None:
    """info reads metadata only, so it works without the master password."""
    result = invoke(filled, "info", password=None)
    assert result.exit_code == 0, result.stderr
    assert "📊" in result.stdout and "🔑" in result.stdout
    assert "\x1b[" not in result.stdout


def test_info_on_missing_ledger_points_at_init(tmp_path: Path) -> None:
    """info on a path with no ledger exits 1 with one line suggesting init, creating nothing."""
    path = tmp_path / "absent.db"
    result = invoke(path, "info")
    assert result.exit_code == 1
    assert "init" in error_line(result)
    assert not path.exists()


def test_report_json_shape(filled: Path) -> None:
    """report --json counts secrets per version and those not on the current version."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    doc = document(invoke(filled, "report", "--json", password=None))
    assert doc["total_secrets"] == 2
    assert doc["current_version"] == 2
    assert doc["needing_migration"] == 2
    assert doc["distribution"] == {"1": 2}


def test_report_human_output(filled: Path) -> None:
    """report prints totals and the distribution with the guide's emoji, no ANSI codes."""
    result = invoke(filled, "report")
    assert result.exit_code == 0
    assert "📈" in result.stdout and "Total Secrets: 2" in result.stdout
    assert "Version 1: 2 secrets" in result.stdout
    assert "\x1b[" not in result.stdout


# -- rotate ----------------------------------------------------------------------------


def test_rotate_picks_next_regular_version(filled: Path) -> None:
    """rotate --yes without --new-version goes to the next unused regular version."""
    result = invoke(filled, "rotate", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    assert document(result) == {"from_version": 1, "to_version": 2, "dry_run": False,
                                "warning": None}
    assert document(invoke(filled, "info", "--json"))["current_version"] == 2


def test_rotate_next_version_skips_versions_used_explicitly(db: Path) -> None:
    """After --new-version 5, a plain rotate picks 6, never a version already used."""
    assert invoke(db, "rotate", "--new-version", "5", "--yes").exit_code == 0
    result = invoke(db, "rotate", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert document(result)["to_version"] == 6


@pytest.mark.parametrize("version", ["1", "2"])
def test_rotate_refuses_a_version_ever_used(db: Path, version: str) -> None:
    """Rotating to a past or the current version exits 1 with one line; the key stays put."""
    assert invoke(db, "rotate", "--new-version", "2", "--yes").exit_code == 0
    result = invoke(db, "rotate", "--new-version", version, "--yes")
    assert result.exit_code == 1
    assert "already used" in error_line(result)
    assert result.stdout == ""
    assert document(invoke(db, "info", "--json"))["current_version"] == 2


@pytest.mark.parametrize("version", ["0", "256", "-3"])
def test_rotate_refuses_versions_out_of_range(db: Path, version: str) -> None:
    """A version outside 1-255 is refused with one line and the current key is unchanged."""
    result = invoke(db, "rotate", "--new-version", version, "--yes")
    assert result.exit_code in (1, 2)
    error_line(result)
    assert document(invoke(db, "info", "--json"))["available_versions"] == [1]


def test_rotate_non_integer_version_is_usage_error(db: Path) -> None:
    """--new-version must be an integer: exit 2 and nothing appended."""
    before = head(db)
    result = invoke(db, "rotate", "--new-version", "three", "--yes")
    assert result.exit_code == 2
    assert head(db) == before


def test_rotate_reserved_version_warns_on_stderr(db: Path) -> None:
    """Rotating into 21-80 succeeds but warns on stderr about the reserved range."""
    result = invoke(db, "rotate", "--new-version", "30", "--yes")
    assert result.exit_code == 0
    assert "reserved" in result.stderr
    assert "⚠️" in result.stderr
    assert "reserved" not in result.stdout


def test_rotate_reserved_version_warns_on_stderr_under_json(db: Path) -> None:
    """Under --json the reserved-range warning still reaches stderr (stdout stays pure JSON)."""
    result = invoke(db, "rotate", "--new-version", "42", "--yes", "--json")
    assert result.exit_code == 0
    assert "reserved" in (document(result)["warning"] or "")
    assert "reserved" in result.stderr


@pytest.mark.parametrize("version", ["85", "99"])
def test_rotate_testing_and_emergency_versions_do_not_warn(db: Path, version: str) -> None:
    """Versions 81-98 (testing) and 99 (emergency) rotate without a warning."""
    result = invoke(db, "rotate", "--new-version", version, "--yes")
    assert result.exit_code == 0
    assert result.stderr == ""


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_rotate_without_yes_refuses_and_appends_nothing(filled: Path, json_flag: list[str]) -> None:
    """Without a terminal and without --yes, rotate exits 2 mentioning --yes; nothing appended."""
    before = head(filled)
    result = invoke(filled, "rotate", *json_flag)
    assert result.exit_code == 2
    assert "--yes" in error_line(result)
    assert head(filled) == before


def test_rotate_dry_run_appends_nothing(filled: Path) -> None:
    """rotate --dry-run reports the version it would choose and appends nothing."""
    before = head(filled)
    result = invoke(filled, "rotate", "--dry-run", "--json")
    assert result.exit_code == 0
    assert document(result) == {"from_version": 1, "to_version": 2, "dry_run": True,
                                "warning": None}
    human = invoke(filled, "rotate", "--dry-run", "--new-version", "7")
    assert human.exit_code == 0 and "Dry run" in human.stdout and "7" in human.stdout
    assert head(filled) == before


def test_rotate_dry_run_to_used_version_fails_and_appends_nothing(db: Path) -> None:
    """A dry run to a used version is refused (exit 1) and records nothing, not even a rejection."""
    before = head(db)
    result = invoke(db, "rotate", "--new-version", "1", "--dry-run")
    assert result.exit_code == 1
    error_line(result)
    assert head(db) == before


def test_rotate_records_reason(db: Path) -> None:
    """--reason is kept in the KeyRotated event for the audit trail."""
    result = invoke(db, "rotate", "--yes", "--reason", "suspected exposure")
    assert result.exit_code == 0
    kind, _, payload = last_event(db)
    assert kind == "KeyRotated"
    assert json.loads(payload)["reason"] == "suspected exposure"


def test_rotate_human_output(db: Path) -> None:
    """rotate prints the guide's success line and the hint to migrate."""
    result = invoke(db, "rotate", "-y")
    assert result.exit_code == 0
    assert "✅ Successfully rotated to version 2" in result.stdout
    assert "migrate --target-version 2" in result.stdout


@pytest.mark.parametrize(("answer", "code"), [("yes\n", 0), ("no\n", 2), ("\n", 2)])
def test_rotate_confirmation_on_a_tty(db: Path, tty: None, answer: str, code: int) -> None:
    """On a terminal rotate asks; only yes rotates, anything else cancels and appends nothing."""
    before = head(db)
    result = invoke(db, "rotate", stdin=answer)
    assert result.exit_code == code
    assert "yes/no" in result.stdout
    if code:
        assert "cancelled" in error_line(result)
        assert head(db) == before
    else:
        assert document(invoke(db, "info", "--json"))["current_version"] == 2


# -- migrate ---------------------------------------------------------------------------


def test_migrate_json_shape_and_effect(filled: Path) -> None:
    """migrate --yes re-encrypts every old secret, reports counts and keeps values intact."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "migrate", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert {k: doc[k] for k in ("migrated", "already_current", "failed", "total", "failures")} == {
        "migrated": 2, "already_current": 0, "failed": 0, "total": 2, "failures": [],
    }
    assert isinstance(doc["duration_seconds"], float | int) and doc["duration_seconds"] >= 0
    report = document(invoke(filled, "report", "--json"))
    assert report["needing_migration"] == 0 and report["distribution"] == {"2": 2}
    assert values(filled) == {"db_password": VALUE, "api_token": OTHER_VALUE}
    again = document(invoke(filled, "migrate", "--yes", "--json"))
    assert (again["migrated"], again["already_current"]) == (0, 2)


def test_migrate_target_version_must_be_current(filled: Path) -> None:
    """--target-version other than the current one is refused and appends nothing."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    before = head(filled)
    result = invoke(filled, "migrate", "--target-version", "1", "--yes")
    assert result.exit_code in (1, 2)
    assert "current" in error_line(result)
    assert head(filled) == before
    ok = invoke(filled, "migrate", "--target-version", "2", "--force", "--json")
    assert ok.exit_code == 0 and document(ok)["migrated"] == 2


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_migrate_without_yes_refuses_and_appends_nothing(filled: Path, json_flag: list[str]) -> None:
    """migrate without --yes and without a terminal exits 2 and changes nothing."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    before = head(filled)
    result = invoke(filled, "migrate", *json_flag)
    assert result.exit_code == 2
    assert "--yes" in error_line(result)
    assert head(filled) == before


def test_migrate_dry_run_appends_nothing(filled: Path) -> None:
    """migrate --dry-run counts what it would re-encrypt and appends nothing."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    before = head(filled)
    result = invoke(filled, "migrate", "--dry-run", "--json")
    assert result.exit_code == 0
    doc = document(result)
    assert (doc["migrated"], doc["failed"], doc["total"]) == (2, 0, 2)
    human = invoke(filled, "migrate", "--dry-run")
    assert human.exit_code == 0 and "dry run" in human.stdout.lower()
    assert head(filled) == before
    assert document(invoke(filled, "report", "--json"))["needing_migration"] == 2


def test_migrate_in_small_batches(db: Path) -> None:
    """--batch-size K migrates every secret even when there are more than K."""
    with Ledger.open(db, PASSWORD) as ledger:
        for i in range(7):
            ledger.set(f"s{i}", f"v{i}")
    assert invoke(db, "rotate", "--yes").exit_code == 0
    result = invoke(db, "migrate", "--yes", "--batch-size", "2", "--json")
    assert result.exit_code == 0
    assert document(result)["migrated"] == 7
    assert values(db) == {f"s{i}": f"v{i}" for i in range(7)}


@pytest.mark.parametrize("size", ["0", "-1", "many"])
def test_migrate_invalid_batch_size_is_usage_error(filled: Path, size: str) -> None:
    """A batch size that is not a positive integer exits 2 and appends nothing."""
    before = head(filled)
    result = invoke(filled, "migrate", "--yes", "--batch-size", size)
    assert result.exit_code == 2
    assert head(filled) == before


def test_migrate_reports_failures_and_exits_1(filled: Path) -> None:
    """A secret that will not decrypt is named in failures, the others migrate, exit is 1."""
    plant_undecryptable(filled)
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "migrate", "--yes", "--json")
    assert result.exit_code == 1
    doc = document(result)
    assert (doc["migrated"], doc["failed"], doc["total"]) == (2, 1, 3)
    assert [f["name"] for f in doc["failures"]] == ["broken"]
    assert doc["failures"][0]["error"]
    human = invoke(filled, "migrate", "--yes")
    assert human.exit_code == 1
    assert "broken" in human.stdout


def test_migrate_human_output(filled: Path) -> None:
    """migrate prints the guide's results block with emoji."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "migrate", "--yes")
    assert result.exit_code == 0
    assert "📊 Migration Results" in result.stdout
    assert "✅ Migration completed successfully" in result.stdout


# -- full-rotation ---------------------------------------------------------------------


def test_full_rotation_rotates_and_migrates(filled: Path) -> None:
    """full-rotation --yes makes a new version current and moves every secret onto it."""
    result = invoke(filled, "full-rotation", "--yes", "--reason", "quarterly",
                    "--batch-size", "1", "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["rotation"]["from_version"] == 1 and doc["rotation"]["to_version"] == 2
    assert doc["migration"]["migrated"] == 2 and doc["migration"]["failed"] == 0
    report = document(invoke(filled, "report", "--json"))
    assert (report["current_version"], report["needing_migration"]) == (2, 0)
    assert report["distribution"] == {"2": 2}
    assert values(filled) == {"db_password": VALUE, "api_token": OTHER_VALUE}


def test_full_rotation_to_explicit_version(filled: Path) -> None:
    """full-rotation --new-version N rotates to N."""
    result = invoke(filled, "full-rotation", "--new-version", "9", "--force")
    assert result.exit_code == 0, result.stderr
    assert document(invoke(filled, "info", "--json"))["current_version"] == 9


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_full_rotation_without_yes_refuses(filled: Path, json_flag: list[str]) -> None:
    """full-rotation without --yes and without a terminal exits 2 and appends nothing."""
    before = head(filled)
    result = invoke(filled, "full-rotation", *json_flag)
    assert result.exit_code == 2
    assert "--yes" in error_line(result)
    assert head(filled) == before


def test_full_rotation_dry_run_appends_nothing(filled: Path) -> None:
    """full-rotation --dry-run says what it would do and appends nothing."""
    before = head(filled)
    result = invoke(filled, "full-rotation", "--dry-run", "--json")
    assert result.exit_code == 0
    doc = document(result)
    assert doc["rotation"]["to_version"] == 2 and doc["rotation"]["dry_run"] is True
    assert doc["migration"]["dry_run"] is True
    assert invoke(filled, "full-rotation", "--dry-run").exit_code == 0
    assert head(filled) == before


def test_full_rotation_with_failures_exits_1(filled: Path) -> None:
    """full-rotation exits 1 when a secret fails to migrate, naming it."""
    plant_undecryptable(filled)
    result = invoke(filled, "full-rotation", "--yes", "--json")
    assert result.exit_code == 1
    assert [f["name"] for f in document(result)["migration"]["failures"]] == ["broken"]


# -- health-check ----------------------------------------------------------------------


def test_health_check_healthy(filled: Path) -> None:
    """A sound ledger with the right password is healthy: exit 0 and no failing check."""
    result = invoke(filled, "health-check", "--json")
    assert result.exit_code == 0, result.stdout
    doc = document(result)
    assert doc["healthy"] is True
    assert doc["checks"] and all(set(c) == {"name", "status", "detail"} for c in doc["checks"])
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert statuses["master_password"] == "ok"
    assert statuses["secrets"] == "ok"
    assert "fail" not in statuses.values()
    human = invoke(filled, "health-check")
    assert human.exit_code == 0
    assert "🏥" in human.stdout and "✅ Healthy" in human.stdout


def test_health_check_pending_migration_only_warns(filled: Path) -> None:
    """Secrets on an old version make the secrets check warn, yet the exit is still 0."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "health-check", "--json")
    assert result.exit_code == 0
    statuses = {c["name"]: c["status"] for c in document(result)["checks"]}
    assert statuses["secrets"] == "warn"
    assert document(result)["healthy"] is True


@pytest.mark.parametrize("password", ["wrong password entirely", None])
def test_health_check_wrong_or_missing_password_is_unhealthy(
    filled: Path, password: str | None
) -> None:
    """A wrong or missing master password is 'not healthy': exit 1, master_password failing."""
    before = head(filled)
    result = invoke(filled, "health-check", "--json", password=password)
    assert result.exit_code == 1
    doc = document(result)
    assert doc["healthy"] is False
    assert {"name": "master_password", "status": "fail"}.items() <= doc["checks"][0].items()
    human = invoke(filled, "health-check", password=password)
    assert human.exit_code == 1 and "❌ Not healthy" in human.stdout
    assert head(filled) == before


def test_health_check_undecryptable_secret_is_unhealthy(filled: Path) -> None:
    """A stored secret that no longer decrypts fails the round-trip check: exit 1."""
    plant_undecryptable(filled)
    result = invoke(filled, "health-check", "--json")
    assert result.exit_code == 1
    statuses = {c["name"]: c["status"] for c in document(result)["checks"]}
    assert statuses["round_trip"] == "fail"


def test_health_check_missing_ledger_is_unhealthy(tmp_path: Path) -> None:
    """health-check on a path with no ledger is unhealthy (exit 1) and creates no file."""
    path = tmp_path / "absent.db"
    result = invoke(path, "health-check", "--json")
    assert result.exit_code == 1
    assert document(result)["healthy"] is False
    assert not path.exists()


def test_health_check_kdf_advice_is_actionable(db: Path) -> None:
    """The weak-KDF warning says to run rekey-master; after rekey-master it is gone."""
    first = document(invoke(db, "health-check", "--json"))
    kdf = [c for c in first["checks"] if c["name"] == "kdf"]
    assert kdf and kdf[0]["status"] == "warn" and "rekey-master" in kdf[0]["detail"]
    rekey = invoke(db, "rekey-master", "--yes", env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert rekey.exit_code == 0, rekey.stderr
    after = document(invoke(db, "health-check", "--json", password=NEW_PASSWORD))
    assert [c for c in after["checks"] if c["name"] == "kdf"] == []


# -- rekey-master ----------------------------------------------------------------------


def test_rekey_master_old_password_fails_new_works(filled: Path) -> None:
    """After rekey-master only the new password opens the ledger, and every value survives."""
    assert invoke(filled, "rotate", "--yes").exit_code == 0
    result = invoke(filled, "rekey-master", "--yes", "--json",
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["rewrapped_keys"] == 2
    old = invoke(filled, "secrets", "get", "db_password")
    assert old.exit_code == 1
    assert "password" in error_line(old)
    new = invoke(filled, "secrets", "get", "db_password", password=NEW_PASSWORD)
    assert new.exit_code == 0 and new.stdout == VALUE + "\n"
    assert values(filled, NEW_PASSWORD) == {"db_password": VALUE, "api_token": OTHER_VALUE}


def test_rekey_master_human_output(db: Path) -> None:
    """rekey-master tells the operator to update the password everywhere."""
    result = invoke(db, "rekey-master", "--force",
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert result.exit_code == 0
    assert "✅" in result.stdout and "ENCRYPTION_MASTER_PASSWORD" in result.stdout
    assert NEW_PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_rekey_master_without_yes_refuses(filled: Path, json_flag: list[str]) -> None:
    """rekey-master without --yes and without a terminal exits 2; the old password still works."""
    before = head(filled)
    result = invoke(filled, "rekey-master", *json_flag,
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert result.exit_code == 2
    assert "--yes" in error_line(result)
    assert head(filled) == before
    assert invoke(filled, "secrets", "get", "db_password").exit_code == 0


@pytest.mark.parametrize("new_password", [None, ""])
def test_rekey_master_without_new_password_changes_nothing(
    filled: Path, new_password: str | None
) -> None:
    """No (or an empty) ENCRYPTION_NEW_MASTER_PASSWORD: one line naming it, exit 1, nothing changed."""
    before = head(filled)
    result = invoke(filled, "rekey-master", "--yes",
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": new_password})
    assert result.exit_code == 1
    assert "ENCRYPTION_NEW_MASTER_PASSWORD" in error_line(result)
    assert head(filled) == before


# -- rebuild-projections ---------------------------------------------------------------


def test_rebuild_projections_repairs_damaged_read_models(filled: Path) -> None:
    """After the read models lose rows, health-check fails; rebuild-projections restores them."""
    assert document(invoke(filled, "report", "--json"))["total_secrets"] == 2
    with closing(sqlite3.connect(filled)) as conn:
        conn.execute("DELETE FROM proj_secrets")
        conn.commit()
    before = head(filled)
    assert document(invoke(filled, "report", "--json"))["total_secrets"] == 0
    assert invoke(filled, "health-check").exit_code == 1
    result = invoke(filled, "rebuild-projections", "--json", password=None)
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["events_replayed"] == before[0]
    assert (doc["seq"], doc["head_hash"]) == (before[1], before[2])
    assert document(invoke(filled, "report", "--json"))["total_secrets"] == 2
    assert invoke(filled, "health-check").exit_code == 0
    assert head(filled) == before


def test_rebuild_projections_human_output(filled: Path) -> None:
    """rebuild-projections reports the number of events replayed."""
    result = invoke(filled, "rebuild-projections")
    assert result.exit_code == 0
    assert f"✅ Rebuilt the read models from {head(filled)[0]} events" in result.stdout


# -- secrets set / get / list / delete -------------------------------------------------


def test_set_with_value_then_get_json(db: Path) -> None:
    """secrets set --value stores it (the value is not echoed); get --json returns name, value, version."""
    result = invoke(db, "secrets", "set", "db_password", "--value", VALUE, "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["name"] == "db_password" and doc["version"] == 1
    assert VALUE not in result.stdout + result.stderr
    got = invoke(db, "secrets", "get", "db_password", "--json")
    assert got.exit_code == 0
    assert document(got) == {"name": "db_password", "value": VALUE, "version": 1}


@pytest.mark.parametrize(("stdin", "stored"), [
    ("plain", "plain"),
    ("with newline\n", "with newline"),
    ("two newlines\n\n", "two newlines\n"),
    ("multi\nline\n", "multi\nline"),
    ("  spaced  \n", "  spaced  "),
])
def test_set_from_stdin_strips_one_trailing_newline(db: Path, stdin: str, stored: str) -> None:
    """Without --value the value is stdin with exactly one trailing newline removed."""
    result = invoke(db, "secrets", "set", "k", stdin=stdin)
    assert result.exit_code == 0, result.stderr
    assert values(db) == {"k": stored}


def test_set_human_output_and_overwrite(db: Path) -> None:
    """set prints a success line with the key version; setting again bumps the revision."""
    first = invoke(db, "secrets", "set", "k", stdin=VALUE)
    assert first.exit_code == 0 and "✅" in first.stdout and "revision 1" in first.stdout
    second = invoke(db, "secrets", "set", "k", "--value", OTHER_VALUE, "--json")
    assert document(second)["revision"] == 2
    assert values(db) == {"k": OTHER_VALUE}
    assert VALUE not in first.stdout + first.stderr


def test_set_rejects_invalid_utf8_on_stdin(db: Path) -> None:
    """Bytes on stdin that are not UTF-8 are refused: exit 2, one line, nothing written."""
    before = head(db)
    result = invoke(db, "secrets", "set", "k", stdin=b"\xff\xfe bad")
    assert result.exit_code == 2
    assert "UTF-8" in error_line(result)
    assert head(db) == before


@pytest.mark.parametrize("name", [" padded", "tab\there", "x" * 257])
def test_set_rejects_invalid_names(db: Path, name: str) -> None:
    """An invalid secret name exits 2 with one line that never shows the value; nothing written."""
    before = head(db)
    result = invoke(db, "secrets", "set", name, "--value", VALUE)
    assert result.exit_code == 2
    assert VALUE not in error_line(result)
    assert result.stdout == ""
    assert head(db) == before


def test_set_rejects_oversized_value_without_echoing_it(db: Path) -> None:
    """A value over 64 KiB exits 2; the error line does not contain the value."""
    before = head(db)
    big = "Z" * (64 * 1024 + 1)
    result = invoke(db, "secrets", "set", "big", stdin=big)
    assert result.exit_code == 2
    line = error_line(result)
    assert "Z" * 32 not in line
    assert head(db) == before


def test_get_prints_value_and_newline(filled: Path) -> None:
    """secrets get (no --json) prints exactly the value and a newline on stdout."""
    result = invoke(filled, "secrets", "get", "api_token")
    assert result.exit_code == 0
    assert result.stdout == OTHER_VALUE + "\n"
    assert result.stderr == ""


def test_get_unknown_secret_fails(filled: Path) -> None:
    """secrets get of an unknown name exits 1 with one line and nothing on stdout."""
    result = invoke(filled, "secrets", "get", "nope")
    assert result.exit_code == 1
    assert "nope" in error_line(result)
    assert result.stdout == ""


def test_list_shows_names_and_versions_not_values(filled: Path) -> None:
    """secrets list (human and JSON) names each secret with its version and never a value."""
    result = invoke(filled, "secrets", "list", "--json", password=None)
    assert result.exit_code == 0
    rows = document(result)
    assert sorted(r["name"] for r in rows) == ["api_token", "db_password"]
    assert all(r["version"] == 1 for r in rows)
    human = invoke(filled, "secrets", "list", password=None)
    assert human.exit_code == 0
    assert "db_password" in human.stdout and "🔐" in human.stdout
    for output in (result, human):
        assert VALUE not in output.stdout + output.stderr
        assert OTHER_VALUE not in output.stdout + output.stderr


def test_list_empty_ledger(db: Path) -> None:
    """secrets list --json on an empty ledger is an empty JSON list."""
    result = invoke(db, "secrets", "list", "--json")
    assert result.exit_code == 0
    assert document(result) == []


def test_delete_removes_secret(filled: Path) -> None:
    """secrets delete hides the secret from get and list; deleting it again fails."""
    result = invoke(filled, "secrets", "delete", "api_token", "--json")
    assert result.exit_code == 0
    assert document(result) == {"name": "api_token", "deleted": True}
    assert invoke(filled, "secrets", "get", "api_token").exit_code == 1
    names = [r["name"] for r in document(invoke(filled, "secrets", "list", "--json"))]
    assert names == ["db_password"]
    before = head(filled)
    again = invoke(filled, "secrets", "delete", "api_token")
    assert again.exit_code == 1
    error_line(again)
    assert head(filled) == before
    human = invoke(filled, "secrets", "delete", "db_password")
    assert human.exit_code == 0 and "Deleted db_password" in human.stdout


# -- secrets import ---------------------------------------------------------------------


def test_import_json_object(db: Path, tmp_path: Path) -> None:
    """secrets import of a JSON object stores every name -> value; the values are not echoed."""
    source = tmp_path / "secrets.json"
    source.write_text(json.dumps({"db_password": VALUE, "api_token": OTHER_VALUE, "ünï": "ok"}))
    result = invoke(db, "secrets", "import", str(source), "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["imported"] == 3 and doc["failed"] == 0 and doc["failures"] == []
    assert values(db) == {"db_password": VALUE, "api_token": OTHER_VALUE, "ünï": "ok"}
    assert VALUE not in result.stdout + result.stderr


def test_import_dotenv_file(db: Path, tmp_path: Path) -> None:
    """A .env file is read with comments, blank lines, export, quotes and inline comments."""
    source = tmp_path / "production.env"
    source.write_text(
        "# a comment\n"
        "\n"
        "PLAIN=plain-value\n"
        "export EXPORTED=exported-value\n"
        "SINGLE='single # not a comment'\n"
        'DOUBLE="line1\\nline2 \\"quoted\\""\n'
        "INLINE=inline-value # trailing comment\n"
        "SPACED = spaced-value\n"
        "EMPTY=\n"
        "   # indented comment\n"
    )
    result = invoke(db, "secrets", "import", str(source))
    assert result.exit_code == 0, result.stderr
    assert "Imported 7" in result.stdout
    assert values(db) == {
        "PLAIN": "plain-value", "EXPORTED": "exported-value",
        "SINGLE": "single # not a comment", "DOUBLE": 'line1\nline2 "quoted"',
        "INLINE": "inline-value", "SPACED": "spaced-value", "EMPTY": "",
    }
    assert "plain-value" not in result.stdout + result.stderr


@pytest.mark.parametrize(("filename", "content"), [
    ("bad.json", '{"a": "x", '),
    ("list.json", '["a", "b"]'),
    ("number.json", '{"a": "fine", "b": 42}'),
    ("badname.json", json.dumps({"ok": "fine", " padded": VALUE})),
    ("bad.env", f"GOOD=fine\nthis line holds {VALUE} but no equals sign\n"),
    ("quote.env", f"GOOD=fine\nOPEN=\"{VALUE}\n"),
    ("after.env", f"GOOD=fine\nAFTER='x' {VALUE}\n"),
    ("binary.env", b"GOOD=\xff\xfe\n"),
])
def test_import_malformed_file_writes_nothing(
    db: Path, tmp_path: Path, filename: str, content: str | bytes
) -> None:
    """A malformed import file: exit 2, one line naming the problem (never a value), nothing written."""
    source = tmp_path / filename
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content)
    before = head(db)
    result = invoke(db, "secrets", "import", str(source))
    assert result.exit_code == 2
    line = error_line(result)
    assert VALUE not in line and VALUE not in result.stdout
    assert head(db) == before
    assert values(db) == {}


def test_import_missing_file(db: Path, tmp_path: Path) -> None:
    """Importing a file that does not exist exits 2 with one line; nothing written."""
    before = head(db)
    result = invoke(db, "secrets", "import", str(tmp_path / "absent.json"))
    assert result.exit_code == 2
    assert "absent.json" in error_line(result)
    assert head(db) == before


# -- secrets import-seed -----------------------------------------------------------------


def test_import_seed_imports_good_entries_and_names_bad_one(db: Path, tmp_path: Path) -> None:
    """import-seed keeps the readable entries, names the unreadable one, and exits 1."""
    source = tmp_path / "exported_secrets.json"
    source.write_text(json.dumps({
        "versioned": seed_encrypt(PASSWORD, 3, "seed-value-three"),
        "legacy": seed_encrypt(PASSWORD, None, "seed-legacy-value"),
        "clash": seed_encrypt(PASSWORD, 1, "seed-value-one"),
        "garbage_entry": "!!! not base64 at all !!!",
    }))
    result = invoke(db, "secrets", "import-seed", str(source), "--json")
    assert result.exit_code == 1
    doc = document(result)
    assert doc["imported"] == 3
    assert doc["failed"] == 1
    assert [f["name"] for f in doc["failures"]] == ["garbage_entry"]
    assert 3 in doc["created_versions"]
    assert values(db) == {
        "versioned": "seed-value-three", "legacy": "seed-legacy-value", "clash": "seed-value-one",
    }
    human = invoke(db, "secrets", "import-seed", str(source))
    assert human.exit_code == 1
    assert "garbage_entry" in human.stderr
    for output in (result, human):
        assert "seed-value-three" not in output.stdout + output.stderr


def test_import_seed_all_good_exits_0(db: Path, tmp_path: Path) -> None:
    """import-seed with only readable entries exits 0."""
    source = tmp_path / "seed.json"
    source.write_text(json.dumps({"a": seed_encrypt(PASSWORD, 2, "alpha")}))
    result = invoke(db, "secrets", "import-seed", str(source), "--json")
    assert result.exit_code == 0, result.stderr
    assert document(result)["failures"] == []
    assert values(db) == {"a": "alpha"}


def test_import_seed_wrong_password_entries_fail(db: Path, tmp_path: Path) -> None:
    """Ciphertexts written under another password are reported as failures, not imported."""
    source = tmp_path / "seed.json"
    source.write_text(json.dumps({"a": seed_encrypt("some other password", 2, "alpha")}))
    result = invoke(db, "secrets", "import-seed", str(source), "--json")
    assert result.exit_code == 1
    assert [f["name"] for f in document(result)["failures"]] == ["a"]
    assert values(db) == {}


@pytest.mark.parametrize("content", ["not json", "[1, 2]"])
def test_import_seed_malformed_file(db: Path, tmp_path: Path, content: str) -> None:
    """import-seed of a file that is not a JSON object exits 2 and writes nothing."""
    source = tmp_path / "seed.json"
    source.write_text(content)
    before = head(db)
    result = invoke(db, "secrets", "import-seed", str(source))
    assert result.exit_code == 2
    error_line(result)
    assert head(db) == before


# -- wrong password, and values never shown ----------------------------------------------


@pytest.fixture
def import_file(tmp_path: Path) -> Path:
    path = tmp_path / "more.json"
    path.write_text(json.dumps({"new_one": "new-value"}))
    return path


@pytest.mark.parametrize("args", [
    ["secrets", "get", "db_password"],
    ["secrets", "set", "db_password", "--value", "changed"],
    ["secrets", "delete", "db_password"],
    ["secrets", "import", "{import_file}"],
    ["secrets", "import-seed", "{seed_file}"],
    ["rotate", "--yes"],
    ["rotate", "--new-version", "1", "--yes"],
    ["migrate", "--yes"],
    ["full-rotation", "--yes"],
    ["rekey-master", "--yes"],
    ["init"],
])
def test_wrong_password_changes_nothing(
    filled: Path, tmp_path: Path, import_file: Path, args: list[str]
) -> None:
    """A wrong master password: one line on stderr, exit 1, empty stdout, the events head unchanged."""
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps({"s": seed_encrypt("wrong password!", 1, "x")}))
    argv = [a.format(import_file=import_file, seed_file=seed_file) for a in args]
    before = head(filled)
    result = invoke(filled, *argv, password="wrong password!",
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert result.exit_code == 1
    assert "password" in error_line(result)
    assert result.stdout == ""
    assert head(filled) == before
    assert values(filled) == {"db_password": VALUE, "api_token": OTHER_VALUE}


def test_wrong_password_json_error_document(filled: Path) -> None:
    """Under --json a wrong password still prints one error document and one stderr line."""
    before = head(filled)
    result = invoke(filled, "secrets", "get", "db_password", "--json", password="nope")
    assert result.exit_code == 1
    assert document(result) == {"ok": False, "error": error_line(result).removeprefix("❌ Error: ")}
    assert VALUE not in result.stdout
    assert head(filled) == before


def test_values_and_password_never_printed_outside_get(filled: Path, tmp_path: Path) -> None:
    """No command but secrets get ever prints a secret value or the master password."""
    source = tmp_path / "more.env"
    source.write_text("IMPORTED=imported-hidden-value-77\n")
    commands = [
        ["info"], ["info", "--json"], ["report"], ["report", "--json"],
        ["secrets", "list"], ["secrets", "list", "--json"],
        ["secrets", "set", "extra", "--value", VALUE],
        ["secrets", "set", "extra2", "--value", VALUE, "--json"],
        ["secrets", "import", str(source)], ["secrets", "import", str(source), "--json"],
        ["rotate", "--yes"], ["migrate", "--dry-run"], ["migrate", "--yes"],
        ["migrate", "--yes", "--json"], ["full-rotation", "--yes"],
        ["full-rotation", "--yes", "--json"], ["health-check"], ["health-check", "--json"],
        ["rebuild-projections"], ["secrets", "delete", "extra"],
    ]
    for args in commands:
        result = invoke(filled, *args)
        assert result.exit_code == 0, (args, result.stderr)
        shown = result.stdout + result.stderr
        for hidden in (VALUE, OTHER_VALUE, "imported-hidden-value-77", PASSWORD):
            assert hidden not in shown, (args, hidden)


def test_set_from_empty_stdin_is_refused(db: Path) -> None:
    """An empty stdin is a mistake, not an empty secret: exit 2 and nothing written."""
    before = head(db)
    result = invoke(db, "secrets", "set", "token", stdin="")
    assert result.exit_code == 2 and "stdin was empty" in error_line(result)
    assert head(db) == before


def test_set_strips_one_crlf_line_ending(db: Path) -> None:
    """A value piped from a Windows file loses its trailing CR LF, and only that."""
    assert invoke(db, "secrets", "set", "token", stdin="abc \r\n").exit_code == 0
    assert values(db) == {"token": "abc "}


def test_import_skips_existing_names_unless_overwrite(db: Path, tmp_path: Path) -> None:
    """Re-importing never silently reverts a newer value; --overwrite replaces on purpose."""
    file = tmp_path / "values.json"
    file.write_text(json.dumps({"a": "from file", "b": "new"}))
    assert invoke(db, "secrets", "set", "a", stdin="newer by hand").exit_code == 0
    skipped = invoke(db, "secrets", "import", str(file), "--json")
    assert skipped.exit_code == 0
    assert (document(skipped)["imported"], document(skipped)["skipped"]) == (1, ["a"])
    assert values(db) == {"a": "newer by hand", "b": "new"}
    replaced = invoke(db, "secrets", "import", str(file), "--overwrite", "--json")
    assert document(replaced)["imported"] == 2
    assert values(db) == {"a": "from file", "b": "new"}
