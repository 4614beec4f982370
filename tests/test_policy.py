"""Rotation policy: when rotation falls due, `due` for cron, and `full-rotation --if-due`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import PASSWORD as CLI_PASSWORD
from cli_support import document, invoke

from ledger import InvalidInputError, Ledger
from ledger.policy import DEFAULT_POLICY, NIST_GCM_LIMIT, current_policy, rotation_due, set_policy
from ledger.testing import create_test_ledger

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_default_policy_is_ninety_days_and_half_the_nist_limit() -> None:
    """Without a recorded policy: 90 days, a 14-day warning, 2^31 encryptions."""
    assert DEFAULT_POLICY.max_age_seconds == 90 * 86_400
    assert DEFAULT_POLICY.warn_seconds == 14 * 86_400
    assert DEFAULT_POLICY.max_encryptions == NIST_GCM_LIMIT // 2


@pytest.mark.parametrize(("age_days", "encryptions", "due", "warned"), [
    (10, 0, False, False), (80, 0, False, True), (90, 0, True, False), (400, 0, True, False),
    (1, 2**31, True, False), (1, int(2**31 * 0.95), False, True),
])
def test_rotation_falls_due_by_age_or_encryptions(
    age_days: int, encryptions: int, due: bool, warned: bool
) -> None:
    """Due past the maximum age or the encryption limit; warned in the window before either."""
    report = rotation_due(DEFAULT_POLICY, 3, START, encryptions, START + timedelta(days=age_days))
    assert report.due is due and bool(report.reasons) is due
    assert bool(report.warnings) is warned


def test_policy_is_recorded_as_an_event_and_partial_updates_keep_the_rest(ledger: Ledger) -> None:
    """policy set appends RotationPolicySet; settings not given keep their values."""
    set_policy(ledger.session, max_age=timedelta(days=30), warn=timedelta(days=5))
    set_policy(ledger.session, max_encryptions=1000)
    policy = current_policy(ledger.recorder)
    assert (policy.max_age_seconds, policy.warn_seconds) == (30 * 86_400, 5 * 86_400)
    assert policy.max_encryptions == 1000
    assert [e.type for e in ledger.recorder.read_stream("policy")] == ["RotationPolicySet"] * 2


@pytest.mark.parametrize("settings", [
    {"max_age": timedelta(days=1), "warn": timedelta(days=2)},
    {"max_encryptions": 0}, {"max_encryptions": NIST_GCM_LIMIT + 1},
])
def test_impossible_policies_are_refused(ledger: Ledger, settings: dict[str, object]) -> None:
    """A warning longer than the age, or a limit outside 1..2^32, is refused and not recorded."""
    with pytest.raises(InvalidInputError):
        set_policy(ledger.session, **settings)  # type: ignore[arg-type]
    assert ledger.recorder.stream_head("policy") is None


def test_an_old_key_is_due_and_if_due_rotates_it(tmp_path: Path) -> None:
    """A key past its age is due (exit 1); `full-rotation --if-due` rotates and migrates; then not due."""
    db = tmp_path / "k.db"
    with create_test_ledger(db, CLI_PASSWORD) as ledger:  # its clock: 2026-01-01, long ago
        ledger.set("a", "1")
    due = invoke(db, "due", "--json")
    assert due.exit_code == 1 and "old" in document(due)["reasons"][0]
    done = document(invoke(db, "full-rotation", "--if-due", "--yes", "--json"))
    assert done["rotation"]["to_version"] == 2 and done["migration"]["migrated"] == 1
    with Ledger.open(db, CLI_PASSWORD) as ledger:
        rotated = [e.decode() for e in ledger.recorder.read_stream("keyring") if e.type == "KeyRotated"]
    assert rotated[-1].reason.startswith("due: key version 1 is")  # type: ignore[attr-defined]
    assert invoke(db, "due").exit_code == 0


def test_if_due_does_nothing_until_the_encryption_limit(tmp_path: Path) -> None:
    """Under the policy nothing happens; at the encryption limit the key is due and rotated."""
    db = tmp_path / "fresh.db"
    with Ledger.create(db, CLI_PASSWORD, kdf_iterations=1000, _allow_weak_kdf=True) as ledger:
        ledger.set("a", "1")
        ledger.set("b", "1")
    quiet = invoke(db, "full-rotation", "--if-due", "--yes", "--json")
    assert quiet.exit_code == 0 and document(quiet) == {
        "due": False, "rotation": None, "migration": None, "warnings": []}
    assert invoke(db, "policy", "set", "--max-encryptions", "3").exit_code == 0
    assert invoke(db, "due").exit_code == 0
    assert invoke(db, "secrets", "set", "a", "--value", "2").exit_code == 0
    due = invoke(db, "due", "--json")
    assert due.exit_code == 1 and "encrypted 3 values" in document(due)["reasons"][0]
    done = document(invoke(db, "full-rotation", "--if-due", "--yes", "--json"))
    assert done["rotation"]["to_version"] == 2 and done["migration"]["migrated"] == 2
    assert invoke(db, "due").exit_code == 0
    assert document(invoke(db, "policy", "show", "--json"))["max_encryptions"] == 3


def test_a_rotation_conditional_on_the_current_version_does_not_repeat(ledger: Ledger) -> None:
    """Two crons deciding 'due' at once: the second rotation, expecting the old version, is refused."""
    from ledger import ConcurrencyError

    ledger.rotate(expect_current=1)
    with pytest.raises(ConcurrencyError):
        ledger.rotate(expect_current=1)
    assert ledger.keyring().current == 2
