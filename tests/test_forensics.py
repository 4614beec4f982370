"""``keyledger audit log``, ``audit replay`` and ``audit incident``: forensics from the events.

The ``history`` fixture builds one ledger on a step clock (one second per append, from
2026-03-01T00:00:00Z), so every seq and time below is known:

====  ====  ==============================================================
seq   +s    event
====  ====  ==============================================================
1-4   0     LedgerInitialized, SigningKeyCreated, KeyVersionCreated 1, KeyRotated to 1
5     1     SecretWritten db_password (v1)
6     2     SecretWritten api_token (v1)
7     3     ReadAuditingSet
8     4     SecretRead db_password (v1), by reader@test
9-10  5     KeyVersionCreated 2, KeyRotated 1 -> 2
11    6     SecretWritten new_key (v2)
12-14 7     MigrationStarted (target 2), SecretMigrated api_token, db_password (1 -> 2)
15    8     MigrationCompleted
16    9     SecretDeleted api_token
17    10    KeyVersionRetired 1
====  ====  ==============================================================
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_support import OTHER_VALUE, PASSWORD, VALUE, document, error_line, invoke
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tamper_support import edit_read_models

from ledger import Ledger
from ledger.domain import format_time
from ledger.errors import KeyledgerError
from ledger.store_sqlite import SQLiteRecorder
from ledger.testing import TEST_KDF_ITERATIONS, StepClock, create_test_ledger
from projections import ReadModels, projector
from projections.reports.forensics import audit_log, incident, replay

THIRD_VALUE = "third-hidden-value-0c7e"
START = datetime(2026, 3, 1, tzinfo=UTC)
HEAD = 17


def at(seconds: float) -> str:
    """The ledger's time text ``seconds`` after START."""
    return format_time(START + timedelta(seconds=seconds))


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """The ledger of the module docstring's table."""
    path = tmp_path / "keyledger.db"
    with create_test_ledger(path, PASSWORD, clock=StepClock(START)) as ledger:
        ledger.set("db_password", VALUE)
        ledger.set("api_token", OTHER_VALUE)
        ledger.set_read_auditing(True)
        ledger.actor = "reader@test"
        ledger.get("db_password")
        ledger.actor = "tester@example"
        ledger.rotate(reason="quarterly")
        ledger.set("new_key", THIRD_VALUE)
        ledger.migrate()
        ledger.delete("api_token")
        ledger.retire(1)
    return path


@pytest.fixture
def recorder(history: Path) -> Iterator[SQLiteRecorder]:
    with SQLiteRecorder(history) as opened:
        yield opened


def seqs(documents: list[dict[str, Any]]) -> list[int]:
    return [doc["seq"] for doc in documents]


# -- audit log -------------------------------------------------------------------------


def test_log_lists_every_event_in_seq_order_with_its_fields(history: Path) -> None:
    """log --json is a list of every event in seq order, each with its row and own fields."""
    result = invoke(history, "audit", "log", "--json")
    assert result.exit_code == 0, result.stderr
    docs = document(result)
    assert seqs(docs) == list(range(1, HEAD + 1))
    written = docs[4]
    assert {"seq", "type", "occurred_at", "actor", "origin", "stream"} <= written.keys()
    assert (written["type"], written["name"], written["key_version"]) == ("SecretWritten", "db_password", 1)
    assert written["occurred_at"] == at(1) and written["actor"] == "tester@example"
    assert not any("ciphertext" in doc for doc in docs)


def test_log_secret_selects_its_stream_and_its_reads(history: Path) -> None:
    """log --secret shows the secret's own events and its SecretRead events, nothing else."""
    docs = document(invoke(history, "audit", "log", "--secret", "db_password", "--json"))
    assert seqs(docs) == [5, 8, 14]
    assert [d["type"] for d in docs] == ["SecretWritten", "SecretRead", "SecretMigrated"]
    assert document(invoke(history, "audit", "log", "--secret", "no_such", "--json")) == []


def test_log_secret_includes_a_migration_run_that_failed_on_it(tmp_path: Path) -> None:
    """log --secret also finds a MigrationCompleted whose failures name the secret."""
    path = tmp_path / "keyledger.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("stuck", VALUE)
        ledger.set("fine", OTHER_VALUE)
        ledger.rotate()
        ledger.retire(1, force=True)
        assert ledger.migrate().failed == 2
    docs = document(invoke(path, "audit", "log", "--secret", "stuck", "--json"))
    assert [d["type"] for d in docs] == ["SecretWritten", "MigrationCompleted"]
    assert "stuck" in {f["name"] for f in docs[1]["failures"]}


def test_log_secret_name_with_quotes_and_backslash_is_matched_exactly(tmp_path: Path) -> None:
    """A name the JSON encoding escapes is still found, and a name it contains is not."""
    path = tmp_path / "keyledger.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set('we"ird\\name', VALUE)
        ledger.set("ird", OTHER_VALUE)
    docs = document(invoke(path, "audit", "log", "--secret", 'we"ird\\name', "--json"))
    assert [d["name"] for d in docs] == ['we"ird\\name']
    assert [d["name"] for d in document(invoke(path, "audit", "log", "--secret", "ird", "--json"))] == ["ird"]


def test_log_filters_by_type_actor_and_time(history: Path) -> None:
    """--type (repeatable), --actor and --since/--until (inclusive) each narrow the log."""
    by_type = document(invoke(history, "audit", "log", "--type", "KeyRotated",
                              "--type", "SecretDeleted", "--json"))
    assert seqs(by_type) == [4, 10, 16]
    by_actor = document(invoke(history, "audit", "log", "--actor", "reader@test", "--json"))
    assert seqs(by_actor) == [8]
    by_time = document(invoke(history, "audit", "log", "--since", at(5), "--until", at(7), "--json"))
    assert seqs(by_time) == [9, 10, 11, 12, 13, 14]
    combined = document(invoke(history, "audit", "log", "--secret", "db_password",
                               "--type", "SecretMigrated", "--since", "2026-03-01", "--json"))
    assert seqs(combined) == [14]


def test_log_relative_since_counts_back_from_now(recorder: SQLiteRecorder) -> None:
    """--since 3s means three seconds before the ``now`` passed in (time is a parameter)."""
    found = audit_log(recorder, since="3m", now=START + timedelta(minutes=3, seconds=8))
    assert [e.seq for e in found] == [15, 16, 17]


def test_log_unknown_type_is_a_usage_error_listing_valid_types(history: Path) -> None:
    """An unknown --type exits 2 with one line naming it and every valid type."""
    result = invoke(history, "audit", "log", "--type", "KeyRotatd")
    assert result.exit_code == 2
    line = error_line(result)
    assert "KeyRotatd" in line and "KeyRotated" in line and "SecretWritten" in line


def test_log_bad_filters_are_usage_errors(history: Path) -> None:
    """A malformed time, --since after --until, or an invalid secret name exits 2 with one line."""
    for args in (["--since", "yesterday"], ["--since", at(5), "--until", at(1)],
                 ["--secret", " padded "]):
        result = invoke(history, "audit", "log", *args)
        assert result.exit_code == 2, args
        error_line(result)


def test_log_text_shows_one_aligned_line_per_event(history: Path) -> None:
    """The text log shows seq, time, actor, type and a summary, one line per event."""
    result = invoke(history, "audit", "log", "--since", at(4), "--until", at(5))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:5] == ["8", at(4), "reader@test", "SecretRead", "db_password"]
    assert lines[2].split()[3:] == ["KeyRotated", "from_version=1", "to_version=2", "reason=quarterly"]
    assert len({line.index("Secret" if "Secret" in line else "Key") for line in lines}) == 1


def test_log_with_no_match_says_so(history: Path) -> None:
    """No matching event: an empty JSON list, or a sentence in text."""
    assert document(invoke(history, "audit", "log", "--actor", "nobody", "--json")) == []
    assert "No events match" in invoke(history, "audit", "log", "--actor", "nobody").stdout


def test_log_escapes_control_characters_in_text(tmp_path: Path) -> None:
    """An actor holding terminal escape codes is shown escaped, never sent to the terminal."""
    path = tmp_path / "keyledger.db"
    create_test_ledger(path, PASSWORD, actor="evil\x1b[2J@host").close()
    result = invoke(path, "audit", "log")
    assert "\x1b" not in result.stdout and "evil\\u001b[2J@host" in result.stdout


# -- audit replay ----------------------------------------------------------------------


def test_replay_before_a_rotation_shows_the_earlier_state(history: Path) -> None:
    """replay --seq 8 shows version 1 current and both secrets on it, as before the rotation."""
    doc = document(invoke(history, "audit", "replay", "--seq", "8", "--json"))
    with closing(sqlite3.connect(history)) as conn:
        hash_at_8 = conn.execute("SELECT hash FROM events WHERE seq = 8").fetchone()[0]
    assert doc["seq"] == 8 and doc["head"] == hash_at_8
    assert doc["current_version"] == 1 and doc["available_versions"] == [1]
    assert list(doc["key_metadata"]) == ["1"]
    assert doc["key_metadata"]["1"]["status"] == "active"
    assert doc["key_metadata"]["1"]["rotated_at"] is None
    assert doc["secrets"] == {"api_token": 1, "db_password": 1}


def test_replay_at_the_head_shows_the_latest_state(history: Path) -> None:
    """replay at the head: version 2 current, 1 retired, deleted secrets absent."""
    doc = document(invoke(history, "audit", "replay", "--seq", str(HEAD), "--json"))
    assert doc["current_version"] == 2 and doc["available_versions"] == [2]
    assert doc["key_metadata"]["1"] == {
        "created_at": at(0), "rotated_at": at(5), "status": "retired", "origin": "generated",
        "fingerprint": doc["key_metadata"]["1"]["fingerprint"], "algorithm": "AES-256-GCM",
    }
    assert doc["key_metadata"]["2"]["status"] == "active"
    assert doc["secrets"] == {"db_password": 2, "new_key": 2}


def test_replay_as_of_stops_at_the_last_event_by_that_time(history: Path) -> None:
    """--as-of T replays every event recorded at or before T and none after."""
    doc = document(invoke(history, "audit", "replay", "--as-of", at(5.5), "--json"))
    assert doc["seq"] == 10 and doc["occurred_at"] == at(5) and doc["current_version"] == 2
    assert document(invoke(history, "audit", "replay", "--as-of", at(4), "--json"))["seq"] == 8


def test_replay_as_of_a_duration_counts_back_from_now(recorder: SQLiteRecorder) -> None:
    """--as-of 1h is an hour before the ``now`` passed in."""
    state = replay(recorder, as_of="1h", now=START + timedelta(hours=1, seconds=6))
    assert state.seq == 11 and state.secrets == {"api_token": 1, "db_password": 1, "new_key": 2}


@pytest.mark.parametrize("args", [
    [], ["--seq", "3", "--as-of", "2026-03-01"], ["--seq", "0"], ["--seq", str(HEAD + 1)],
    ["--as-of", "2026-02-28"], ["--as-of", "not a time"],
], ids=["neither", "both", "zero", "past-head", "before-first-event", "bad-time"])
def test_replay_bad_point_is_a_usage_error(history: Path, args: list[str]) -> None:
    """Neither or both of --seq/--as-of, a seq outside 1..head, or a time before the first
    event exits 2 with one line."""
    result = invoke(history, "audit", "replay", *args, "--json")
    assert result.exit_code == 2
    error_line(result)
    assert document(result)["ok"] is False


def test_replay_ignores_the_read_models(history: Path) -> None:
    """replay folds the events itself: read models edited behind its back change nothing."""
    views = ReadModels.open(history)
    views.close()
    edit_read_models(history, "UPDATE proj_keyring SET current_version = 99", "DELETE FROM proj_secrets")
    doc = document(invoke(history, "audit", "replay", "--seq", str(HEAD), "--json"))
    assert doc["current_version"] == 2 and doc["secrets"] == {"db_password": 2, "new_key": 2}


def test_replay_text_names_the_point_and_the_secrets(history: Path) -> None:
    """The text replay names the seq, the current version and each live secret's version."""
    result = invoke(history, "audit", "replay", "--seq", "8")
    assert result.exit_code == 0, result.stderr
    assert "event 8" in result.stdout and "Current key version: 1" in result.stdout
    assert "db_password  v1" in result.stdout and "api_token  v1" in result.stdout


# -- audit incident --------------------------------------------------------------------


def test_incident_on_a_retired_version_lists_its_history(history: Path) -> None:
    """incident --version 1: nothing on it now, two secrets ever, every event touching it."""
    result = invoke(history, "audit", "incident", "--version", "1", "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert {"version", "secrets_currently_on_version", "secrets_ever_on_version", "events",
            "window", "remediation"} <= doc.keys()
    assert doc["version"] == 1 and doc["status"] == "retired"
    assert doc["secrets_currently_on_version"] == []
    assert doc["secrets_ever_on_version"] == ["api_token", "db_password"]
    assert seqs(doc["events"]) == [3, 4, 5, 6, 8, 10, 13, 14, 17]
    assert doc["window"] == {"since": None, "until": None}
    assert doc["as_of"]["seq"] == HEAD
    assert doc["remediation"] == [
        "keyledger keys destroy 1 --confirm-version 1",
        "revoke the credential api_token held: deleted from the ledger, its value was "
        "still readable with key version 1",
        "change the credential itself, then `keyledger secrets reset db_password`",
    ]


def test_incident_on_the_current_version_starts_with_a_rotation(history: Path) -> None:
    """For the current version the remediation rotates, migrates, retires, destroys, resets."""
    doc = document(invoke(history, "audit", "incident", "--version", "2", "--json"))
    assert doc["secrets_currently_on_version"] == ["db_password", "new_key"]
    assert doc["secrets_ever_on_version"] == ["api_token", "db_password", "new_key"]
    assert seqs(doc["events"]) == [9, 10, 11, 12, 13, 14, 15, 16]
    assert doc["remediation"][:4] == [
        'keyledger rotate --reason "key version 2 compromised"',
        "keyledger migrate",
        'keyledger keys retire 2 --reason "compromised"',
        "keyledger keys destroy 2 --confirm-version 2",
    ]
    assert doc["remediation"][5:] == [
        "change the credential itself, then `keyledger secrets reset db_password`",
        "change the credential itself, then `keyledger secrets reset new_key`",
    ]


@pytest.mark.parametrize(("window", "events", "ever"), [
    (["--since", at(7)], [13, 14, 17], ["api_token", "db_password"]),
    (["--since", at(8)], [17], []),
    (["--until", at(0)], [3, 4], []),
    (["--until", at(1)], [3, 4, 5], ["db_password"]),
    (["--since", at(3), "--until", at(4)], [8], ["api_token", "db_password"]),
    (["--since", "2026-04-01"], [], []),
], ids=["since-migration", "since-after-migration", "until-creation", "until-first-write",
        "between-events", "after-everything"])
def test_incident_window_narrows_events_and_ever(
    history: Path, window: list[str], events: list[int], ever: list[str]
) -> None:
    """--since/--until keep the events in the window and the secrets on it at some time in it."""
    doc = document(invoke(history, "audit", "incident", "--version", "1", *window, "--json"))
    assert seqs(doc["events"]) == events
    assert doc["secrets_ever_on_version"] == ever
    assert doc["secrets_currently_on_version"] == []


def test_incident_counts_secrets_on_it_when_a_later_window_opens(recorder: SQLiteRecorder) -> None:
    """A window opening after the last event still counts the secrets on the version then."""
    report = incident(recorder, 2, since="2026-04-01")
    assert report.events == [] and report.secrets_ever_on_version == ["db_password", "new_key"]


def test_incident_unknown_version_fails_with_one_line(history: Path) -> None:
    """An unknown version exits 1 with one line naming it."""
    result = invoke(history, "audit", "incident", "--version", "7")
    assert result.exit_code == 1
    assert "7" in error_line(result)


def test_incident_text_shows_secrets_events_and_steps(history: Path) -> None:
    """The text incident report lists the secrets, the events and numbered steps."""
    result = invoke(history, "audit", "incident", "--version", "2")
    assert result.exit_code == 0, result.stderr
    assert "Key version 2 (active)" in result.stdout
    assert "1. keyledger rotate" in result.stdout and "secrets reset new_key" in result.stdout


def test_incident_after_a_forced_retirement_reinstates_before_migrating(tmp_path: Path) -> None:
    """With live secrets on a force-retired version, the steps reinstate it so migrate can read them."""
    path = tmp_path / "keyledger.db"
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("stuck", VALUE)
        ledger.rotate()
        ledger.retire(1, force=True)
    doc = document(invoke(path, "audit", "incident", "--version", "1", "--json"))
    assert doc["secrets_currently_on_version"] == ["stuck"]
    assert doc["remediation"][:4] == [
        'keyledger keys reinstate 1 --reason "migrating off a compromised key"',
        "keyledger migrate",
        'keyledger keys retire 1 --reason "compromised"',
        "keyledger keys destroy 1 --confirm-version 1",
    ]


# -- no plaintext, anywhere ------------------------------------------------------------


def test_no_plaintext_value_in_any_output(history: Path) -> None:
    """No command, in text or JSON, prints a stored value (scanned as bytes)."""
    runs = [
        ["audit", "log"], ["audit", "log", "--secret", "db_password"],
        ["audit", "replay", "--seq", "8"], ["audit", "replay", "--as-of", at(100)],
        ["audit", "incident", "--version", "1"], ["audit", "incident", "--version", "2"],
    ]
    for args in runs:
        for extra in ([], ["--json"]):
            result = invoke(history, *args, *extra)
            assert result.exit_code == 0, (args, result.stderr)
            output = result.stdout_bytes + result.stderr_bytes
            for value in (VALUE, OTHER_VALUE, THIRD_VALUE):
                assert value.encode() not in output, (args, extra)


# -- replay at the head equals the live read models ------------------------------------

NAMES = ("a", "b")
# A version operation's argument picks one of the versions that are not current (if any).
operations = st.one_of(
    st.tuples(st.sampled_from(["set", "delete"]), st.sampled_from(NAMES)),
    st.tuples(st.sampled_from(["rotate", "migrate", "rekey"]), st.none()),
    st.tuples(st.sampled_from(["retire", "force-retire", "reinstate", "destroy"]), st.integers(0, 3)),
)


def apply(ledger: Ledger, operation: str, argument: str | int | None) -> None:
    """One operation; those the ledger refuses (VersionError and the like) change nothing."""
    keyring = ledger.keyring()
    older = sorted(v for v in keyring.versions if v != keyring.current) or [keyring.require_current()]
    version = older[argument % len(older)] if isinstance(argument, int) else 0
    try:
        match operation, argument:
            case "set", str(name):
                ledger.set(name, f"value of {name}")
            case "delete", str(name):
                ledger.delete(name)
            case "rotate", _:
                ledger.rotate()
            case "migrate", _:
                ledger.migrate()
            case "retire" | "force-retire", _:
                ledger.retire(version, force=operation == "force-retire")
            case "reinstate", _:
                ledger.reinstate(version)
            case "destroy", _:
                if not keyring.versions[version].retired:
                    ledger.retire(version)
                ledger.destroy(version)
            case "rekey", _:
                ledger.rekey_master(PASSWORD + "!", kdf_iterations=TEST_KDF_ITERATIONS,
                                    _allow_weak_kdf=True)
    except KeyledgerError:
        pass


def assert_replay_matches(ledger: Ledger, views: ReadModels) -> None:
    state = replay(ledger.recorder, seq=ledger.recorder.head()[0])
    keyring = views.keyring()
    assert (state.seq, state.head) == views.position()
    assert state.current_version == keyring.current_version
    assert state.available_versions == keyring.available_versions
    assert {v: (m.created_at, m.rotated_at, m.status, m.origin, m.fingerprint, m.algorithm)
            for v, m in state.key_metadata.items()} == {
        v.version: (v.created_at, v.rotated_at, v.status, v.origin, v.fingerprint, v.algorithm)
        for v in keyring.versions
    }
    assert state.secrets == {row.name: row.key_version for row in views.secrets()}


@settings(max_examples=25, deadline=None)
@given(st.lists(operations, min_size=4, max_size=14))
@example([("rotate", None), ("force-retire", 0), ("set", "b"), ("reinstate", 0), ("migrate", None),
          ("delete", "b"), ("destroy", 0), ("rekey", None), ("rotate", None), ("retire", 1)])
def test_replay_at_the_head_equals_the_read_models(steps: list[tuple[str, str | int | None]]) -> None:
    """After any sequence of operations, replaying every event gives what the read models report."""
    with tempfile.TemporaryDirectory() as tmp:
        runner = projector()
        with create_test_ledger(Path(tmp) / "k.db", PASSWORD, projector=runner) as ledger:
            views = ReadModels(ledger.recorder, runner)
            for operation, argument in [("set", "a"), *steps]:
                apply(ledger, operation, argument)
                assert_replay_matches(ledger, views)
