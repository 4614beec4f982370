"""Bad input and tampering: every hostile or damaged input gives one clear line and changes nothing.

The matrix of issue 5: wrong passwords, missing, foreign, truncated, corrupted, locked and
newer ledgers; ciphertexts fuzzed by Hypothesis; oversized values; invalid UTF-8; odd names;
malformed imports; a full disk and a read-only file; an append that fails (fail closed);
and, last, read models edited behind keyledger's back.
Mostly in-process through typer's CliRunner; the real executable where only it can show it.
Helpers in ``bad_input_support`` and ``cli_support``.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import resource
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from bad_input_support import (
    ReadOnlyCopy,
    assert_clear,
    child_env,
    damage_payload,
    digest,
    exe_refusal,
    foreign_sqlite,
    ledger_state,
    plaintexts,
    read_only_copy,
    refusal,
    run_exe,
    scribble,
    truncate,
)
from cli_support import NEW_PASSWORD, OTHER_VALUE, PASSWORD, VALUE, document, invoke
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st
from tamper_support import edit_read_models

from ledger import Ledger
from ledger import crypto as crypto_module
from ledger import events as ev
from ledger.crypto import SCHEME_BOUND
from ledger.domain import MAX_NAME_LENGTH, MAX_VALUE_BYTES
from ledger.events import NewEvent
from ledger.store_sqlite import SQLiteRecorder
from ledger.testing import create_test_ledger, seed_encrypt
from projections import ReadModels

GOOD = {"db_password": VALUE, "api_token": OTHER_VALUE}


def make_ledger(path: Path) -> Path:
    """A ledger holding GOOD on key version 1, read models current, WAL checkpointed away."""
    create_test_ledger(path, PASSWORD).close()
    with Ledger.open(path, PASSWORD, actor="setup@test") as ledger:
        for name, value in GOOD.items():
            ledger.set(name, value)
    ReadModels.open(path).close()
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ledger(tmp_path_factory.mktemp("template") / "keyledger.db")


@pytest.fixture
def ledger_copy(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template ledger for one test."""
    path = tmp_path / "keyledger.db"
    shutil.copy(template, path)
    return path


@pytest.fixture
def import_file(tmp_path: Path) -> Path:
    path = tmp_path / "more.json"
    path.write_text(json.dumps({"new_one": "new-value"}))
    return path


# -- wrong and empty master password (what test_cli_errors does not cover) ----------------


@pytest.mark.parametrize("password", ["", "   ", PASSWORD + " ", PASSWORD.upper()])
@pytest.mark.parametrize("args", [
    ("secrets", "set", "x", "--value", "v"), ("secrets", "import", "{import_file}"),
    ("rotate", "--yes"), ("migrate", "--yes"), ("rekey-master", "--yes"),
])
def test_empty_or_near_miss_password_changes_nothing(
    ledger_copy: Path, import_file: Path, password: str, args: tuple[str, ...]
) -> None:
    """An empty, blank or almost-right master password is refused with one line; nothing changes."""
    before, raw = ledger_state(ledger_copy), digest(ledger_copy)
    argv = [a.format(import_file=import_file) for a in args]
    result = invoke(ledger_copy, *argv, password=password,
                    env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert "password" in refusal(result, 1).lower()
    assert result.stdout == ""
    assert ledger_state(ledger_copy) == before and digest(ledger_copy) == raw


def test_empty_new_master_password_is_refused(ledger_copy: Path) -> None:
    """rekey-master with an empty new password refuses with one line and keeps the old one working."""
    before = ledger_state(ledger_copy)
    result = invoke(ledger_copy, "rekey-master", "--yes", env={"ENCRYPTION_NEW_MASTER_PASSWORD": ""})
    assert "empty" in refusal(result, 1)
    assert ledger_state(ledger_copy) == before
    assert plaintexts(ledger_copy) == GOOD


# -- missing, foreign, truncated, corrupted, newer ledgers ---------------------------------

COMMANDS: dict[str, tuple[str, ...]] = {
    "info": ("info",), "report": ("report",), "list": ("secrets", "list"),
    "get": ("secrets", "get", "db_password"), "set": ("secrets", "set", "new_one", "--value", "v"),
    "delete": ("secrets", "delete", "api_token"), "import": ("secrets", "import", "{import_file}"),
    "rotate": ("rotate", "--yes"), "migrate": ("migrate", "--yes"),
    "full-rotation": ("full-rotation", "--yes"), "rekey": ("rekey-master", "--yes"),
    "rebuild": ("rebuild-projections",),
}


def run_command(db: Path, name: str, import_file: Path, *extra: str) -> Result:
    argv = [a.format(import_file=import_file) for a in COMMANDS[name]]
    return invoke(db, *extra, *argv, env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})


def _text(path: Path) -> None:
    path.write_text("DB_PASSWORD=hunter2\n" * 200)


def _png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 16)


def _newer(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()


# name -> (how to damage the copied ledger, words the error line must contain (any of them))
DAMAGE: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "text-file": (_text, ("not a keyledger ledger",)),
    "png-bytes": (_png, ("not a keyledger ledger",)),
    "other-sqlite-db": (lambda p: (p.unlink(), foreign_sqlite(p)),
                        ("not a keyledger ledger", "no keyledger ledger")),
    "other-sqlite-db-with-meta": (lambda p: (p.unlink(), foreign_sqlite(p, with_meta=True)),
                                  ("not a keyledger ledger", "no keyledger ledger")),
    "truncated-half": (lambda p: truncate(p, None), ("not a keyledger ledger", "malformed", "corrupt")),
    "truncated-100-bytes": (lambda p: truncate(p, 100), ("not a keyledger ledger", "malformed", "corrupt")),
    "truncated-0-bytes": (lambda p: truncate(p, 0), ("no keyledger ledger",)),
    "newer-format": (_newer, ("upgrade keyledger",)),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_unusable_ledger_file_is_refused_untouched(
    ledger_copy: Path, import_file: Path, damage: str, command: str
) -> None:
    """A foreign, truncated or newer-format file: one clear line, exit 1, the file's bytes unchanged."""
    spoil, words = DAMAGE[damage]
    spoil(ledger_copy)
    raw = digest(ledger_copy)
    line = refusal(run_command(ledger_copy, command, import_file), 1)
    assert any(word in line for word in words), line
    assert digest(ledger_copy) == raw


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_health_check_of_unusable_ledger_is_not_healthy(ledger_copy: Path, damage: str) -> None:
    """health-check on an unusable file reports 'not healthy' (exit 1) and leaves the file alone."""
    DAMAGE[damage][0](ledger_copy)
    raw = digest(ledger_copy)
    result = invoke(ledger_copy, "health-check", "--json")
    assert result.exit_code == 1
    assert document(result)["healthy"] is False
    assert digest(ledger_copy) == raw


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_ledger_is_refused_and_not_created(tmp_path: Path, import_file: Path, command: str) -> None:
    """Any command but init on a missing path: one line saying so, and no file appears."""
    path = tmp_path / "nowhere" / "keyledger.db"
    line = refusal(run_command(path, command, import_file), 1)
    assert "no ledger" in line and "keyledger init" in line
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_randomly_scribbled_ledger_never_crashes(ledger_copy: Path, import_file: Path, seed: int) -> None:
    """Random bytes over the middle pages: each command works or fails with one clear line, no traceback."""
    scribble(ledger_copy, seed)
    damaged = ledger_copy.read_bytes()
    for command in sorted(COMMANDS):
        ledger_copy.write_bytes(damaged)
        result = run_command(ledger_copy, command, import_file)
        if result.exit_code != 0:
            refusal(result)
            assert ledger_copy.read_bytes() == damaged, command
        elif command == "get":
            assert result.stdout == VALUE + "\n"


@pytest.mark.parametrize(("replacement", "label"), [
    (b"\xff\xfe\x00\x9c\x80\x0a\x0c\x1b[2J", "invalid UTF-8 with control bytes"),
    (b'"}{"x', "printable text that breaks the JSON"),
    (b"AAAAAAAA", "letters inside the base64"),
])
@pytest.mark.parametrize("command", [
    ("secrets", "get", "db_password"), ("secrets", "set", "db_password", "--value", "v"),
    ("secrets", "delete", "db_password"), ("rebuild-projections",),
], ids=["get", "overwrite", "delete", "rebuild"])
def test_damaged_event_payload_is_one_clear_line(
    ledger_copy: Path, replacement: bytes, label: str, command: tuple[str, ...]
) -> None:
    """Bytes changed inside a stored event: never a traceback or a dump of the row, never a wrong value."""
    # Each command reads db_password's event: get/overwrite/delete its head, rebuild every row.
    damage_payload(ledger_copy, "db_password", replacement)
    damaged = ledger_copy.read_bytes()
    result = invoke(ledger_copy, *command)
    if result.exit_code == 0 and command[1:2] == ("get",):
        pytest.fail(f"{label}: a damaged ciphertext was served: {result.stdout!r}")
    if result.exit_code != 0:
        line = refusal(result)
        assert "ciphertext" not in line, line
        assert ledger_copy.read_bytes() == damaged


@pytest.mark.parametrize("replacement", [b"\xff\xfe\x00\x9c\x80", b'"}{"x', b"AAAAAAAA"])
def test_health_check_reports_a_damaged_event(ledger_copy: Path, replacement: bytes) -> None:
    """A stored event edited in the file makes health-check say 'not healthy' (exit 1), not crash."""
    damage_payload(ledger_copy, "db_password", replacement)
    result = invoke(ledger_copy, "health-check", "--json")
    assert result.exit_code == 1
    assert document(result)["healthy"] is False


# -- a locked ledger ------------------------------------------------------------------------


@pytest.fixture
def held_lock(ledger_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[sqlite3.Connection]:
    """Another connection holding BEGIN EXCLUSIVE on the ledger for the whole test."""
    # SQLite's own busy wait (2 s) would dominate the test's runtime; --lock-timeout is what
    # is under test here, and test_cli_options covers the real busy_timeout.
    monkeypatch.setattr("ledger.store_sqlite.BUSY_TIMEOUT_MS", 50, raising=False)
    holder = sqlite3.connect(ledger_copy, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    yield holder
    holder.execute("ROLLBACK")
    holder.close()


@pytest.mark.parametrize("command", ["set", "delete", "import", "rotate", "rekey", "full-rotation"])
def test_locked_ledger_write_gives_up_with_one_line(
    ledger_copy: Path, import_file: Path, held_lock: sqlite3.Connection, command: str
) -> None:
    """A writer facing another process's exclusive lock gives up after --lock-timeout, changing nothing."""
    before = ledger_state(ledger_copy)
    started = time.monotonic()
    result = run_command(ledger_copy, command, import_file, "--lock-timeout", "0.5")
    assert time.monotonic() - started < 10
    assert "locked" in refusal(result, 1)
    held_lock.execute("ROLLBACK")
    assert ledger_state(ledger_copy) == before
    assert plaintexts(ledger_copy) == GOOD
    held_lock.execute("BEGIN EXCLUSIVE")


@pytest.mark.parametrize("command", ["info", "report", "list", "get"])
def test_locked_ledger_still_serves_reads(
    ledger_copy: Path, import_file: Path, held_lock: sqlite3.Connection, command: str
) -> None:
    """In WAL mode a held write lock does not stop readers: reads succeed with the committed truth."""
    result = run_command(ledger_copy, command, import_file, "--lock-timeout", "0.5")
    assert result.exit_code == 0, result.stderr
    if command == "get":
        assert result.stdout == VALUE + "\n"


# -- ciphertexts fuzzed by Hypothesis -------------------------------------------------------

seed_values = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda raw: base64.b64encode(raw).decode("ascii")),
    st.integers() | st.none() | st.lists(st.integers(), max_size=2),
)


@pytest.fixture
def cached_seed_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Derive each old-system key once per test: the derivation is pure, and 100,000 rounds each."""
    monkeypatch.setattr(crypto_module, "derive_seed_key",
                        functools.lru_cache(maxsize=None)(crypto_module.derive_seed_key))


# Names with control characters are test_seed_failure_lines_do_not_pass_control_characters_through's.
seed_names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co", "Zl", "Zp")), max_size=12)


@settings(max_examples=25)
@given(entries=st.dictionaries(seed_names, seed_values, min_size=1, max_size=4))
def test_fuzzed_seed_file_names_every_bad_entry(
    template: Path, tmp_path: Path, cached_seed_kdf: None, entries: dict[str, object]
) -> None:
    """import-seed of arbitrary values names each entry with a reason (exit 1) and imports none."""
    db = tmp_path / "fuzz.db"
    shutil.copy(template, db)
    source = tmp_path / "seed.json"
    source.write_text(json.dumps(entries))
    before = ledger_state(db)
    result = invoke(db, "secrets", "import-seed", str(source), "--json")
    assert result.exit_code == 1, result.stderr
    doc = document(result)
    assert doc["imported"] == 0
    assert sorted(f["name"] for f in doc["failures"]) == sorted(entries)
    assert all(f["error"] and "\n" not in f["error"] for f in doc["failures"])
    assert ledger_state(db) == before
    human = invoke(db, "secrets", "import-seed", str(source))
    assert human.exit_code == 1
    lines = [line for line in human.stderr.splitlines() if line.strip()]
    assert len(lines) == len(entries), human.stderr


@pytest.mark.parametrize("name", ["bad\nname", "\x1b[2Jwipe", "tab\tbed", "cr\rreturn"])
def test_seed_failure_lines_do_not_pass_control_characters_through(
    ledger_copy: Path, tmp_path: Path, name: str
) -> None:
    """A hostile entry name in an import-seed file is shown escaped: one line, no terminal escapes."""
    source = tmp_path / "seed.json"
    source.write_text(json.dumps({name: seed_encrypt(PASSWORD, 2, "v")}))
    result = invoke(ledger_copy, "secrets", "import-seed", str(source))
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert_clear(lines[0])


def test_seed_entry_over_the_size_limit_is_named(ledger_copy: Path, tmp_path: Path) -> None:
    """A seed ciphertext whose plaintext is over 64 KiB fails by name; the good entry is imported."""
    source = tmp_path / "seed.json"
    source.write_text(json.dumps({
        "huge": seed_encrypt(PASSWORD, 1, "h" * (MAX_VALUE_BYTES + 1)),
        "fine": seed_encrypt(PASSWORD, 1, "fine-value"),
    }))
    result = invoke(ledger_copy, "secrets", "import-seed", str(source), "--json")
    assert result.exit_code == 1
    doc = document(result)
    assert [f["name"] for f in doc["failures"]] == ["huge"]
    assert str(MAX_VALUE_BYTES) in doc["failures"][0]["error"]
    assert plaintexts(ledger_copy) == {**GOOD, "fine": "fine-value"}


def _valid_token() -> str:
    key = os.urandom(32)
    return crypto_module.encrypt_secret(key, 1, "victim", b"whatever")


fuzzed_ciphertexts = st.one_of(
    st.text(max_size=120),
    st.binary(max_size=120).map(lambda raw: base64.b64encode(raw).decode("ascii")),
    st.binary(min_size=29, max_size=120).map(lambda raw: base64.b64encode(b"\x01" + raw).decode("ascii")),
    st.builds(lambda flip: _flip(_valid_token(), flip), st.integers(min_value=0, max_value=8 * 60)),
)


def _flip(token: str, bit: int) -> str:
    raw = bytearray(base64.b64decode(token))
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    return base64.b64encode(bytes(raw)).decode("ascii")


@settings(max_examples=20)
@given(ciphertext=fuzzed_ciphertexts)
def test_fuzzed_stored_ciphertext_fails_closed_everywhere(
    template: Path, tmp_path: Path, ciphertext: str
) -> None:
    """A garbage recorded ciphertext: get fails in one line, health-check fails, migrate carries on."""
    # A new place per example: copying the template back over one file would be the
    # rollback this host's memory of checkpoints refuses.
    db = Path(tempfile.mkdtemp(dir=tmp_path)) / "fuzz.db"
    shutil.copy(template, db)
    with Ledger.open(db, PASSWORD) as ledger:
        ledger.session.append(
            [NewEvent(ev.secret_stream("victim"), 1, ev.SecretWritten(
                name="victim", key_version=1, ciphertext=ciphertext, scheme=SCHEME_BOUND))],
        )
    got = invoke(db, "secrets", "get", "victim")
    assert "does not decrypt" in refusal(got, 1)
    assert got.stdout == ""
    health = invoke(db, "health-check", "--json")
    assert health.exit_code == 1 and document(health)["healthy"] is False
    assert invoke(db, "rotate", "--yes").exit_code == 0
    migrated = invoke(db, "migrate", "--yes", "--json")
    assert migrated.exit_code == 1
    doc = document(migrated)
    assert [f["name"] for f in doc["failures"]] == ["victim"]
    assert doc["migrated"] == len(GOOD)
    for name, value in GOOD.items():
        assert document(invoke(db, "secrets", "get", name, "--json")) == {
            "name": name, "value": value, "version": 2}


# -- oversized values -------------------------------------------------------------------------


def test_value_at_the_limit_is_accepted_one_byte_more_refused(ledger_copy: Path) -> None:
    """64 KiB exactly (counted in UTF-8 bytes, not characters) is stored; one byte more is refused."""
    exact = "é" * (MAX_VALUE_BYTES // 2)
    assert invoke(ledger_copy, "secrets", "set", "exact", stdin=exact).exit_code == 0
    before = ledger_state(ledger_copy)
    over = invoke(ledger_copy, "secrets", "set", "over", stdin=exact + "a")
    assert str(MAX_VALUE_BYTES) in refusal(over, 2)
    assert ledger_state(ledger_copy) == before
    assert plaintexts(ledger_copy)["exact"] == exact


def test_oversized_value_option_is_refused(ledger_copy: Path) -> None:
    """--value over 64 KiB: exit 2, one line that does not echo the value, nothing written."""
    before = ledger_state(ledger_copy)
    result = invoke(ledger_copy, "secrets", "set", "big", "--value", "Q" * (MAX_VALUE_BYTES + 1))
    line = refusal(result, 2)
    assert "QQQQ" not in line and str(MAX_VALUE_BYTES) in line
    assert ledger_state(ledger_copy) == before


@pytest.mark.parametrize("filename", ["big.json", "big.env"])
def test_oversized_value_in_import_file_writes_nothing(
    ledger_copy: Path, tmp_path: Path, filename: str
) -> None:
    """One oversized entry among good ones: exit 2, a line naming it (not its value), nothing imported."""
    source = tmp_path / filename
    big = "Q" * (MAX_VALUE_BYTES + 1)
    if filename.endswith(".json"):
        source.write_text(json.dumps({"ok_one": "fine", "too_big": big, "ok_two": "fine"}))
    else:
        source.write_text(f"OK_ONE=fine\nTOO_BIG={big}\nOK_TWO=fine\n")
    before = ledger_state(ledger_copy)
    line = refusal(invoke(ledger_copy, "secrets", "import", str(source)), 2)
    assert "too_big".upper() in line.upper() and "QQQQ" not in line
    assert ledger_state(ledger_copy) == before


# -- invalid UTF-8 ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"abc\xe2\x82", b"\xed\xa0\x80 surrogate", b"\xc0\xaf overlong", b"\xf8\x88\x80\x80\x80",
])
def test_invalid_utf8_on_stdin_is_refused(ledger_copy: Path, data: bytes) -> None:
    """Truncated, surrogate, overlong or 5-byte sequences on stdin: exit 2, one line, nothing written."""
    before = ledger_state(ledger_copy)
    assert "UTF-8" in refusal(invoke(ledger_copy, "secrets", "set", "k", stdin=data), 2)
    assert ledger_state(ledger_copy) == before


@pytest.mark.parametrize(("command", "content"), [
    ("import", b'{"a": "ok", "b": "\xed\xa0\x80"}'),
    ("import", b'{"a\xff": "ok"}'),
    ("import-seed", b'{"a": "\xff"}'),
    ("import", b'{"lone": "\\ud800"}'),
    ("import", b'{"\\udc80": "v"}'),
])
def test_invalid_utf8_in_import_files_is_refused(
    ledger_copy: Path, tmp_path: Path, command: str, content: bytes
) -> None:
    """Import files with bytes or escapes that are not UTF-8 text: exit 2, one line, nothing written."""
    source = tmp_path / "bad.json"
    source.write_bytes(content)
    before = ledger_state(ledger_copy)
    refusal(invoke(ledger_copy, "secrets", command, str(source)), 2)
    assert ledger_state(ledger_copy) == before


@pytest.mark.parametrize("args", [
    [b"secrets", b"set", b"na\xffme", b"--value", b"v"],
    [b"secrets", b"set", b"ok", b"--value", b"v\xff"],
    [b"secrets", b"get", b"na\xffme"],
    [b"secrets", b"delete", b"na\xffme"],
])
def test_invalid_utf8_on_the_command_line_is_one_line(ledger_copy: Path, args: list[bytes]) -> None:
    """Bytes in argv that are not UTF-8 (real process: Python sees surrogates): one line, no traceback."""
    before = ledger_state(ledger_copy)
    exe_refusal(run_exe(list(args), child_env(ledger_copy)))
    assert ledger_state(ledger_copy) == before


def test_invalid_utf8_master_password_is_one_line(ledger_copy: Path) -> None:
    """A master password variable holding non-UTF-8 bytes is refused in one line, not a traceback."""
    env = {k.encode(): v.encode() for k, v in child_env(ledger_copy).items()}
    env[b"ENCRYPTION_MASTER_PASSWORD"] = PASSWORD.encode() + b"\xff"
    exe_refusal(run_exe([b"secrets", b"get", b"db_password"], env))


# -- names with odd characters ---------------------------------------------------------------

ODD_NAMES = [
    "app/db:primary", "clé-secrète", "日本語の秘密", "emoji🔑name", "quote'\"name", "a b c",
    "back\\slash", "semi;colon$(rm -rf)", "-leading-dash", "x" * MAX_NAME_LENGTH,
]


def test_odd_names_round_trip_through_the_cli(ledger_copy: Path, tmp_path: Path) -> None:
    """Unicode, slashes, quotes, inner spaces, emoji and 256 characters are accepted names."""
    for name in ODD_NAMES:
        stored = invoke(ledger_copy, "secrets", "set", "--", name, stdin=name[::-1])
        assert stored.exit_code == 0, (name, stored.stderr)
    listed = {r["name"] for r in document(invoke(ledger_copy, "secrets", "list", "--json"))}
    assert set(ODD_NAMES) <= listed
    for name in ODD_NAMES:
        got = invoke(ledger_copy, "secrets", "get", "--json", "--", name)
        assert document(got)["value"] == name[::-1]
    source = tmp_path / "odd.json"
    source.write_text(json.dumps({f"imported {n}"[:MAX_NAME_LENGTH]: "v" for n in ODD_NAMES}))
    imported = invoke(ledger_copy, "secrets", "import", str(source), "--json")
    assert document(imported)["imported"] == len(ODD_NAMES)
    for name in ODD_NAMES:
        assert invoke(ledger_copy, "secrets", "delete", "--", name).exit_code == 0


BAD_NAMES = [
    "", " lead", "trail ", "\tindent", "new\nline", "cr\rname", "nul\x00byte", "esc\x1b[31mred",
    "del\x7fchar", "nel\x85char", "x" * (MAX_NAME_LENGTH + 1), " ",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_by_set_and_import(ledger_copy: Path, tmp_path: Path, name: str) -> None:
    """Control characters, surrounding spaces, empty or over-long names: exit 2 with one clean line."""
    before = ledger_state(ledger_copy)
    assert "name" in refusal(invoke(ledger_copy, "secrets", "set", "--value", VALUE, "--", name), 2)
    source = tmp_path / "names.json"
    source.write_text(json.dumps({"good": "v", name: VALUE}))
    line = refusal(invoke(ledger_copy, "secrets", "import", str(source)), 2)
    assert VALUE not in line
    assert ledger_state(ledger_copy) == before


@pytest.mark.parametrize("name", ["new\nline", "esc\x1b[2J", "nul\x00byte", ""])
@pytest.mark.parametrize("command", ["get", "delete"])
def test_bad_names_on_read_and_delete_are_one_line(ledger_copy: Path, name: str, command: str) -> None:
    """get and delete of a name no secret could have: one escaped line, nothing written."""
    before = ledger_state(ledger_copy)
    refusal(invoke(ledger_copy, "secrets", command, "--", name))
    assert ledger_state(ledger_copy) == before


# -- malformed JSON and .env imports (beyond test_cli_secrets) ------------------------------


@pytest.mark.parametrize(("filename", "content"), [
    ("deep.json", "[" * 100_000 + "]" * 100_000),
    ("deep-object.json", '{"a":' * 50_000 + '"x"' + "}" * 50_000),
    ("empty.json", ""),
    ("trailing.json", '{"a": "x"} and more'),
    ("nested.json", '{"a": {"nested": "x"}}'),
    ("null.json", '{"a": null}'),
    ("nan.json", '{"a": NaN}'),
    ("duplicate.json", '{"a": "x", "a": "y"}'),
    ("duplicate.env", "A=x\nA=y\n"),
    ("string.json", '"just a string"'),
    ("digit.env", "1BAD=x\n"),
    ("space.env", "MY KEY=x\n"),
    ("only-key.env", "JUSTAKEY\n"),
    ("equals.env", "=value-without-name\n"),
])
def test_more_malformed_imports_write_nothing(
    ledger_copy: Path, tmp_path: Path, filename: str, content: str
) -> None:
    """Deeply nested, empty, trailing-garbage, non-string and badly keyed files: exit 2, one line."""
    source = tmp_path / filename
    source.write_text(content, encoding="utf-8")
    before = ledger_state(ledger_copy)
    line = refusal(invoke(ledger_copy, "secrets", "import", str(source)), 2)
    assert filename in line
    assert ledger_state(ledger_copy) == before


@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '{"a": ' * 50_000])
def test_deeply_nested_seed_file_is_one_line(ledger_copy: Path, tmp_path: Path, content: str) -> None:
    """import-seed of a pathologically nested file: exit 2, one line, not a RecursionError."""
    source = tmp_path / "seed.json"
    source.write_text(content)
    before = ledger_state(ledger_copy)
    refusal(invoke(ledger_copy, "secrets", "import-seed", str(source)), 2)
    assert ledger_state(ledger_copy) == before


def test_importing_a_directory_is_one_line(ledger_copy: Path, tmp_path: Path) -> None:
    """The real executable given a directory to import: exit 2, one line (no usage box)."""
    folder = tmp_path / "secrets.env"
    folder.mkdir()
    result = run_exe([b"secrets", b"import", bytes(folder)], child_env(ledger_copy))
    assert result.returncode == 2
    exe_refusal(result)


# -- disk full and read-only ------------------------------------------------------------------


def test_disk_full_fails_cleanly_before_any_effect(ledger_copy: Path, tmp_path: Path) -> None:
    """A file-size limit hit mid-import (as on a full disk): one line, exit 1, the ledger as it was."""
    source = tmp_path / "big.json"
    source.write_text(json.dumps({f"k{i:03}": "x" * 60_000 for i in range(100)}))
    before, values_before = ledger_state(ledger_copy), plaintexts(ledger_copy)
    limit = ledger_copy.stat().st_size + 64 * 1024

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_exe([b"secrets", b"import", bytes(source)], child_env(ledger_copy), preexec_fn=full_disk)
    line = exe_refusal(result)
    assert result.returncode == 1
    assert "disk" in line or "full" in line, line
    assert ledger_state(ledger_copy) == before
    assert plaintexts(ledger_copy) == values_before
    assert invoke(ledger_copy, "health-check").exit_code == 0


@pytest.fixture
def read_only_ledger(template: Path) -> Iterator[ReadOnlyCopy]:
    """A copy of the ledger keyledger may read but not write (see ``read_only_copy``)."""
    with read_only_copy(template) as copy:
        yield copy


@pytest.mark.parametrize("args", [
    [b"secrets", b"set", b"new_one", b"--value", b"v"], [b"rotate", b"--yes"],
    [b"secrets", b"delete", b"api_token"],
])
def test_read_only_ledger_write_fails_cleanly(
    read_only_ledger: ReadOnlyCopy, args: list[bytes]
) -> None:
    """A write to a ledger the user may not write: one line that says read-only, nothing changes."""
    db, prefix, preexec = read_only_ledger
    before, raw = ledger_state(db), digest(db)
    result = run_exe(list(args), child_env(db), prefix=prefix, preexec_fn=preexec)
    line = exe_refusal(result)
    assert "read-only" in line or "readonly" in line or "permission" in line.lower(), line
    assert "not a keyledger ledger" not in line, line
    assert ledger_state(db) == before and digest(db) == raw


# -- fail closed: an append that cannot be written has no effect ------------------------------


def break_appends(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Make every event append fail with a disk I/O error from SQLite, before or after its
    rows were written (the store turns it into keyledger's error)."""
    def refused(self: SQLiteRecorder, *args: object, **kwargs: object) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    original = SQLiteRecorder._append_locked

    def half_written(self: SQLiteRecorder, *args: object, **kwargs: object) -> object:
        original(self, *args, **kwargs)
        raise sqlite3.OperationalError("disk I/O error")

    if mode == "refused":
        monkeypatch.setattr(SQLiteRecorder, "_check_revisions", refused)
    else:
        monkeypatch.setattr(SQLiteRecorder, "_append_locked", half_written)


FAIL_CLOSED = {
    "rotate": ("rotate", "--yes"),
    "set": ("secrets", "set", "db_password", "--value", "replaced"),
    "import": ("secrets", "import", "{values}", "--overwrite"),
    "import-seed": ("secrets", "import-seed", "{seed}", "--overwrite"),
    "rekey-master": ("rekey-master", "--yes"),
    "migrate": ("migrate", "--yes"),
    "full-rotation": ("full-rotation", "--yes"),
    "delete": ("secrets", "delete", "api_token"),
}


@pytest.mark.parametrize("mode", ["refused", "half-written"])
@pytest.mark.parametrize("command", sorted(FAIL_CLOSED))
def test_failed_append_has_no_effect(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, mode: str,
) -> None:
    """If the append raises, the command fails in one line and nothing moved: events, keys, meta, password."""
    db = tmp_path / "keyledger.db"
    shutil.copy(template, db)
    assert invoke(db, "rotate", "--yes").exit_code == 0  # so migrate has work to do
    values = tmp_path / "values.json"
    values.write_text(json.dumps({"db_password": "from-file", "brand_new": "x"}))
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"db_password": seed_encrypt(PASSWORD, 7, "seeded")}))
    before, raw_before = ledger_state(db), plaintexts(db)
    with closing(sqlite3.connect(db)) as conn:
        projected = conn.execute("SELECT * FROM proj_secrets ORDER BY name").fetchall()
    break_appends(monkeypatch, mode)
    argv = [a.format(values=values, seed=seed) for a in FAIL_CLOSED[command]]
    result = invoke(db, *argv, env={"ENCRYPTION_NEW_MASTER_PASSWORD": NEW_PASSWORD})
    assert "disk I/O error" in refusal(result, 1)
    monkeypatch.undo()
    assert ledger_state(db) == before
    assert plaintexts(db, PASSWORD) == raw_before  # the old password still opens it
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT * FROM proj_secrets ORDER BY name").fetchall() == projected
    assert invoke(db, "health-check").exit_code == 0


# -- read models edited behind keyledger's back (contract being implemented by the lead) ----

TAMPERING = {
    "secret-version": "UPDATE proj_secrets SET key_version = 7 WHERE name = 'db_password'",
    "secret-row-deleted": "DELETE FROM proj_secrets WHERE name = 'api_token'",
    "secret-revision": "UPDATE proj_secrets SET revision = 42 WHERE name = 'api_token'",
    "keyring-current": "UPDATE proj_keyring SET current_version = 9",
    "key-version-status": "UPDATE proj_key_versions SET status = 'destroyed'",
    "checkpoint-behind": "UPDATE proj_checkpoint SET last_seq = 1",
    "checkpoint-ahead": "UPDATE proj_checkpoint SET last_seq = last_seq + 100",
    "checkpoint-hash": "UPDATE proj_checkpoint SET last_hash = 'f00d'",
    "checkpoint-deleted": "DELETE FROM proj_checkpoint",
}


def tamper(db: Path, statement: str) -> None:
    edit_read_models(db, statement)  # the guards dropped first, as a plain edit is refused


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_tampered_read_models_are_rebuilt_before_being_served(ledger_copy: Path, tampering: str) -> None:
    """After a naive edit to a proj_* row, report, info and list still print the truth, with a warning."""
    truth = {
        "report": document(invoke(ledger_copy, "report", "--json")),
        "info": document(invoke(ledger_copy, "info", "--json")),
        "list": document(invoke(ledger_copy, "secrets", "list", "--json")),
    }
    for key, args in (("report", ("report",)), ("info", ("info",)), ("list", ("secrets", "list"))):
        tamper(ledger_copy, TAMPERING[tampering])
        result = invoke(ledger_copy, *args, "--json", password=None)
        assert result.exit_code == 0, result.stderr
        assert document(result) == truth[key], key
        assert result.stderr.strip(), f"{key}: the repair was silent"
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_health_check_catches_a_tampered_read_model(ledger_copy: Path, tampering: str) -> None:
    """health-check compares every read-model row with its event and fails (exit 1) on a disagreement."""
    before = ledger_state(ledger_copy)
    tamper(ledger_copy, TAMPERING[tampering])
    result = invoke(ledger_copy, "health-check", "--json")
    assert result.exit_code == 1
    ledger_check = next(c for c in document(result)["checks"] if c["name"] == "ledger")
    assert ledger_check["status"] == "fail"
    assert ledger_state(ledger_copy) == before


def test_the_read_models_hold_no_ciphertext(ledger_copy: Path) -> None:
    """Values come from the events only: no read-model table keeps a copy of a ciphertext
    that an edit could swap."""
    with closing(sqlite3.connect(ledger_copy)) as conn:
        tokens = [json.loads(p)["ciphertext"] for (p,) in conn.execute(
            "SELECT payload FROM events WHERE type LIKE 'Secret%' AND payload LIKE '%ciphertext%'")]
        tables = [t for (t,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'proj%'")]
        cells = [str(v) for t in tables for row in conn.execute(f"SELECT * FROM {t}") for v in row]
    assert tokens and tables
    assert not any(token in cell for token in tokens for cell in cells)
    for name, value in GOOD.items():
        assert invoke(ledger_copy, "secrets", "get", name).stdout == value + "\n"


@pytest.mark.parametrize(("filename", "content"), [
    ("bom.json", '\ufeff{"a": "x"}'), ("bom.env", "\ufeffa=x\n"),
])
def test_a_byte_order_mark_is_not_part_of_the_first_name(
    ledger_copy: Path, tmp_path: Path, filename: str, content: str
) -> None:
    """Files saved by editors that write a UTF-8 byte-order mark import as if it were not there."""
    source = tmp_path / filename
    source.write_text(content, encoding="utf-8")
    result = invoke(ledger_copy, "secrets", "import", str(source), "--json")
    assert result.exit_code == 0, result.stderr
    assert invoke(ledger_copy, "secrets", "get", "a").stdout == "x\n"


@pytest.mark.parametrize("args", [
    ("secrets", "set", "new_one", "--value", "v"), ("rotate", "--yes"), ("secrets", "delete", "api_token"),
    ("full-rotation", "--yes"),
])
def test_read_only_connection_fails_cleanly(
    ledger_copy: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    """A ledger SQLite will only read (query_only, as for a read-only file): one line, no change."""
    original = SQLiteRecorder.__init__

    def read_only(self: SQLiteRecorder, *a: object, **kw: object) -> None:
        original(self, *a, **kw)  # type: ignore[arg-type]
        self.conn.execute("PRAGMA query_only = 1")

    monkeypatch.setattr(SQLiteRecorder, "__init__", read_only)
    before = ledger_state(ledger_copy)
    line = refusal(invoke(ledger_copy, *args))
    monkeypatch.undo()
    assert "read-only" in line
    assert ledger_state(ledger_copy) == before
