"""The compliance report (``audit export``): what it counts, how it is stamped and rendered."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import OTHER_VALUE, VALUE, document, error_line, invoke, mode
from tamper_support import plain_rows, rewrite_rows

from ledger import events as ev
from ledger.crypto import SCHEME_BOUND
from ledger.errors import VersionError
from ledger.events import NewEvent
from ledger.locations import open_recorder
from ledger.service import Ledger
from ledger.signing import recorded_public_key
from ledger.store_sqlite import SQLiteRecorder
from ledger.testing import StepClock, create_test_ledger
from projections.renderers.charts import time_ticks
from projections.renderers.compliance import FORMATS, render
from projections.reports import compliance
from projections.reports.compliance import SECTIONS, ComplianceReport, build_compliance_report

PASSWORD = "compliance suite password"
THIRD_VALUE = "third-hidden-value-0c77"
IMPORTED = (("imported_a", "imported-hidden-value-a1"), ("imported_b", "imported-hidden-value-b2"))
REPORT_TIME = datetime(2026, 7, 1, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script> & =HYPERLINK("x")'


def at(clock: StepClock, day: str) -> None:
    clock.now = datetime.fromisoformat(day).replace(tzinfo=UTC)


def build_scenario(db: Path, *, reason: str = "quarterly rotation") -> None:
    """Five versions, one per status: v1 destroyed, v2 scheduled for destruction, v3
    retired, v4 decrypt-only (two live secrets), v5 active (three, two imported); one
    rejected rotation, three migration runs (the first partial), a reset, a delete."""
    clock = StepClock(datetime(2026, 1, 1, tzinfo=UTC))
    with create_test_ledger(db, PASSWORD, actor="alice@test", clock=clock) as ledger:
        ledger.set("db_password", VALUE)
        ledger.set("api_token", OTHER_VALUE)
        donor = ledger.secret("db_password").ciphertext
        assert donor is not None
        ledger.session.append([NewEvent(ev.secret_stream("broken"), 1, ev.SecretWritten(
            name="broken", key_version=1, ciphertext=donor, scheme=SCHEME_BOUND))])
        at(clock, "2026-01-10")
        ledger.rotate(reason=reason)
        assert ledger.migrate().failed == 1
        ledger.delete("broken")
        ledger.reset("api_token", OTHER_VALUE + "-2", reason="repair")
        with pytest.raises(VersionError):
            ledger.rotate(1, reason="bring back the old key")
        ledger.retire(1)
        ledger.destroy(1)
        at(clock, "2026-02-01")
        ledger.rotate(reason=reason)
        ledger.migrate()
        ledger.retire(2)
        ledger.destroy(2, after=timedelta(days=365))
        at(clock, "2026-02-15")
        ledger.rotate(reason=reason)
        ledger.migrate()
        ledger.retire(3)
        at(clock, "2026-03-01")
        ledger.rotate(reason=reason)
        ledger.set("new_one", THIRD_VALUE)
        ledger.import_values(dict(IMPORTED), source="json")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("compliance") / "keyledger.db"
    build_scenario(db)
    return db


@pytest.fixture(scope="module")
def report(scenario: Path) -> ComplianceReport:
    with SQLiteRecorder(scenario) as recorder:
        return build_compliance_report(recorder, now=REPORT_TIME)


def by_version(report: ComplianceReport) -> dict[int, compliance.KeyVersionEntry]:
    return {k.version: k for k in report.inventory}


def test_inventory_shows_every_status_and_age(report: ComplianceReport) -> None:
    """Each version's status follows its lifecycle, and ages count from its creation."""
    versions = by_version(report)
    assert {v: k.status for v, k in versions.items()} == {
        1: "destroyed", 2: "scheduled-for-destruction", 3: "retired", 4: "decrypt-only",
        5: "active",
    }
    assert all(k.algorithm == "AES-256-GCM" for k in versions.values())
    assert versions[5].created_at.startswith("2026-03-01")
    assert versions[5].age_days == pytest.approx(122, abs=0.01)
    assert versions[1].destroyed_at is not None and versions[1].retired_at is not None
    assert versions[2].destroy_after is not None and versions[2].destroy_after.startswith("2027-02-01")
    assert versions[4].rotated_at is not None and versions[4].rotated_at.startswith("2026-03-01")


def test_version_past_the_cryptoperiod_is_flagged_overdue(scenario: Path) -> None:
    """The active version is overdue once older than --policy-days, and only then."""
    with SQLiteRecorder(scenario) as recorder:
        strict = build_compliance_report(recorder, now=REPORT_TIME)
        lenient = build_compliance_report(recorder, policy_days=200, now=REPORT_TIME)
        early = build_compliance_report(recorder, now=datetime(2026, 4, 1, tzinfo=UTC))
    assert strict.overdue_versions == [5]
    assert by_version(strict)[5].rotation_due == "2026-05-30T00:00:00.000000Z"
    assert lenient.overdue_versions == []
    assert early.overdue_versions == []
    assert not by_version(strict)[4].overdue  # decrypt-only versions no longer encrypt


def test_rotations_and_rejections_are_counted(report: ComplianceReport) -> None:
    """Every rotation is listed as a success, the reused version as a rejection with its reason."""
    assert report.rotations_total == 5
    assert report.rejections_total == 1
    outcomes = [(r.outcome, r.from_version, r.to_version) for r in report.rotations]
    assert outcomes == [("success", 1, 2), ("rejected", None, 1), ("success", 2, 3),
                        ("success", 3, 4), ("success", 4, 5)]
    rejected = report.rotations[1]
    assert "already used" in (rejected.reason or "")
    assert all(r.actor == "alice@test" and r.origin for r in report.rotations)


def test_migration_runs_and_failures_are_counted(report: ComplianceReport) -> None:
    """Three runs with their outcome, and failed operations list the rejection and the
    secret a run could not decrypt."""
    assert report.migrations_total == 3
    runs = [(r.target_version, r.migrated, r.failed, r.status) for r in report.migrations]
    assert runs == [(2, 2, 1, "partial"), (3, 2, 0, "success"), (4, 2, 0, "success")]
    assert all(r.started_at and r.ended_at for r in report.migrations)
    assert report.failures_total == 2
    assert [(f.kind, f.subject) for f in report.failures] == [
        ("migration-failure", "broken"), ("rotation-rejected", "version 1")]


def test_secrets_and_encryptions_per_version(report: ComplianceReport) -> None:
    """Live secrets come from each secret's latest event; encryptions count every write,
    reset, import and migration under each version against 2^32."""
    assert {c.version: c.live_secrets for c in report.secrets.per_version} == {
        1: 0, 2: 0, 3: 0, 4: 2, 5: 3}
    assert report.secrets.live_total == 5
    assert report.secrets.needing_migration == 2
    assert report.secrets.deleted == 1
    assert {e.version: e.encryptions for e in report.encryptions} == {1: 3, 2: 3, 3: 2, 4: 2, 5: 3}
    assert report.encryptions[0].limit == 2**32
    assert report.encryptions[0].fraction_used == pytest.approx(3 / 2**32)
    assert {e.flag for e in report.encryptions} == {"ok"}
    assert [(a.version, a.action) for a in report.lifecycle] == [
        (1, "retired"), (1, "destroyed"), (2, "retired"), (2, "destruction-scheduled"),
        (3, "retired")]


def test_report_is_stamped_with_the_ledger_head_and_attests_it(
    scenario: Path, report: ComplianceReport,
) -> None:
    """The stamp and the attestation name the head the report was built from, verified."""
    with SQLiteRecorder(scenario) as recorder:
        seq, head = recorder.head()
        key = recorded_public_key(recorder)
    assert (report.built_from_seq, report.built_from_head) == (seq, head)
    att = report.integrity
    assert att.ok and att.problems == ()
    assert (att.first_seq, att.last_seq, att.head, att.events) == (1, seq, head, seq)
    assert att.checkpoint_seq == seq and att.checkpoint_covers_head
    assert att.public_key == key
    assert report.generated_at == "2026-07-01T00:00:00.000000Z"


def test_report_rebuilds_identically(scenario: Path, report: ComplianceReport) -> None:
    """Built again for the same time, the report and every rendering are identical."""
    with SQLiteRecorder(scenario) as recorder:
        again = build_compliance_report(recorder, now=REPORT_TIME)
    assert again == report
    for fmt in FORMATS:
        assert render(again, fmt) == render(report, fmt)


def test_every_format_shows_every_section(report: ComplianceReport) -> None:
    """JSON has a key, CSV rows, Markdown a heading and HTML a section for each section."""
    data = json.loads(render(report, "json"))
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    markdown, page = render(report, "md"), render(report, "html")
    assert list(rows[0]) == ["section", "item", "field", "value"]
    assert {r["section"] for r in rows} == {key for key, _ in SECTIONS}
    for key, title in SECTIONS:
        assert key == "stamp" or key in data
        assert f"## {title}" in markdown
        assert f'<section id="{key}">' in page and f"<h2>{title}</h2>" in page
    assert data["built_from_seq"] == report.built_from_seq  # the stamp's fields lead the document
    assert data["generated_at"] == report.generated_at
    assert data["integrity"]["ok"] is True
    assert len(data["standards"]) == 6


def test_csv_rows_carry_the_counts(report: ComplianceReport) -> None:
    """The long-form CSV gives each table row a number and each column a field."""
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    cell = {(r["section"], r["item"], r["field"]): r["value"] for r in rows}
    assert cell[("inventory", "5", "status")] == "active"
    assert cell[("inventory", "5", "overdue")] == "true"
    assert cell[("encryptions", "1", "encryptions")] == "3"
    assert cell[("rotations", "", "rejected")] == "1"
    assert cell[("stamp", "", "built_from_head")] == report.built_from_head


def test_no_value_or_ciphertext_appears_in_any_format(scenario: Path, report: ComplianceReport) -> None:
    """No rendering contains a secret value or any ciphertext the ledger stores."""
    with closing(sqlite3.connect(scenario)) as conn:
        payloads = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM events")]
    ciphertexts = [p["ciphertext"] for p in payloads if "ciphertext" in p]
    assert len(ciphertexts) >= 10
    for fmt in FORMATS:
        data = render(report, fmt).encode("utf-8")
        for value in (VALUE, OTHER_VALUE, OTHER_VALUE + "-2", THIRD_VALUE, *dict(IMPORTED).values()):
            assert value.encode() not in data, (fmt, value)
        for token in ciphertexts:
            assert token[:40].encode() not in data, fmt


def test_html_is_self_contained_with_two_charts(report: ComplianceReport) -> None:
    """The page loads nothing from anywhere and draws a bar per version and a timeline."""
    page = render(report, "html")
    for forbidden in ("http://", "https://", "src=", "<link", "<script", "@import", "url("):
        assert forbidden not in page.lower()
    assert page.count("<svg") == 2
    assert "Content-Security-Policy" in page and "<style>" in page
    bars = re.findall(r'<rect class="bar" data-version="(\d+)" data-live="(\d+)"', page)
    assert [(int(v), int(n)) for v, n in bars] == [(1, 0), (2, 0), (3, 0), (4, 2), (5, 3)]
    markers = set(re.findall(r'data-marker="(\w+)" data-version="(\d+)"', page))
    assert {("created", "5"), ("rotated", "4"), ("retired", "3"), ("destroyed", "1")} <= markers


def test_user_text_is_escaped_in_html_markdown_and_csv(tmp_path: Path) -> None:
    """A reason holding markup or a formula is shown as text: escaped in HTML and
    Markdown, quoted out of formula position in CSV."""
    db = tmp_path / "hostile.db"
    with create_test_ledger(db, PASSWORD, actor="<b>eve</b>") as ledger:
        ledger.rotate(reason=HOSTILE)
    with open_recorder(db) as recorder:
        built = build_compliance_report(recorder, now=REPORT_TIME)
    page, markdown = render(built, "html"), render(built, "md")
    assert "<script>" not in page and "<b>eve</b>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;eve&lt;/b&gt;" in page
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    rows = list(csv.DictReader(io.StringIO(render(built, "csv"))))
    reasons = [r["value"] for r in rows if r["section"] == "rotations" and r["field"] == "reason"]
    assert reasons == [HOSTILE]  # CSV keeps text as it is, unless it starts like a formula
    formula = compliance.RotationEntry(1, "t", "=cmd|' /C calc'!A0", "", "success", 1, 2, "-1+1")
    rows = list(csv.DictReader(io.StringIO(render(replace(built, rotations=(formula,)), "csv"))))
    shown = {r["field"]: r["value"] for r in rows if r["section"] == "rotations" and r["item"] == "1"}
    assert shown["actor"] == "'=cmd|' /C calc'!A0" and shown["reason"] == "'-1+1"


def test_lists_keep_the_most_recent_entries_and_count_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the listing limit a list keeps its newest entries while its total counts
    every one, so memory stays bounded however long the ledger."""
    monkeypatch.setattr(compliance, "MAX_LISTED", 2)
    db = tmp_path / "many.db"
    with create_test_ledger(db, PASSWORD) as ledger:
        for n in range(5):
            ledger.rotate(reason=f"rotation {n}")
    with open_recorder(db) as recorder:
        built = build_compliance_report(recorder, now=REPORT_TIME)
    assert built.rotations_total == 5
    assert [r.reason for r in built.rotations] == ["rotation 3", "rotation 4"]
    assert "Showing the 2 most recent of 5" in render(built, "md")


def test_new_ledger_gives_a_report(tmp_path: Path) -> None:
    """A ledger holding only its first key still renders in every format."""
    db = tmp_path / "new.db"
    create_test_ledger(db, PASSWORD).close()
    with open_recorder(db) as recorder:
        built = build_compliance_report(recorder, now=REPORT_TIME)
    assert [k.status for k in built.inventory] == ["active"]
    assert built.rotations_total == 0 and built.migrations == () and built.failures == ()
    for fmt in FORMATS:
        assert render(built, fmt)


def test_time_axis_ticks_are_round_and_few() -> None:
    """The timeline's ticks fall on round moments (seconds for a test ledger, months for
    a year), never more than eight of them."""
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    ticks, pattern = time_ticks(start + 0.5, start + 12)
    assert ticks == [start + 5, start + 10] and pattern == "%H:%M:%S"
    ticks, pattern = time_ticks(start - 40 * 86_400, start + 300 * 86_400)
    assert pattern == "%Y-%m" and 2 <= len(ticks) <= 8
    assert all(datetime.fromtimestamp(t, UTC).day == 1 for t in ticks)


def test_policy_days_must_be_positive(scenario: Path) -> None:
    """A cryptoperiod of zero days is refused."""
    with SQLiteRecorder(scenario) as recorder, pytest.raises(ValueError):
        build_compliance_report(recorder, policy_days=0)


# -- the command ----------------------------------------------------------------------


def test_export_writes_a_private_file_without_a_password(filled: Path, tmp_path: Path) -> None:
    """`audit export` needs no password, writes mode 0600 and says what it built from."""
    out = tmp_path / "report.html"
    result = invoke(filled, "audit", "export", "--format", "html", "--out", str(out), password=None)
    assert result.exit_code == 0, result.stderr
    assert "ledger verified" in result.stdout and "seq" in result.stdout
    assert mode(out) == 0o600
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".report.html.*"))  # no temporary file left behind


def test_export_refuses_to_overwrite_without_force(filled: Path, tmp_path: Path) -> None:
    """An existing --out file is kept (exit 2) unless --force replaces it."""
    out = tmp_path / "report.json"
    out.write_text("keep me", encoding="utf-8")
    refused = invoke(filled, "audit", "export", "--out", str(out), password=None)
    assert refused.exit_code == 2
    assert "exists" in error_line(refused)
    assert out.read_text(encoding="utf-8") == "keep me"
    replaced = invoke(filled, "audit", "export", "--out", str(out), "--force", password=None)
    assert replaced.exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8"))["format"] == compliance.REPORT_FORMAT
    assert mode(out) == 0o600


def test_export_json_summary_and_format_from_suffix(filled: Path, tmp_path: Path) -> None:
    """--json prints path, format, seq, head and ok; the format follows the file suffix."""
    out = tmp_path / "report.md"
    result = invoke(filled, "audit", "export", "--out", str(out), "--json", password=None)
    assert result.exit_code == 0
    summary = document(result)
    with open_recorder(filled) as recorder:
        seq, head = recorder.head()
    assert summary["path"] == str(out) and summary["format"] == "md"
    assert (summary["seq"], summary["head"], summary["ok"]) == (seq, head, True)
    assert out.read_text(encoding="utf-8").startswith("# keyledger compliance report")
    unknown = invoke(filled, "audit", "export", "--out", str(tmp_path / "r.txt"), password=None)
    assert unknown.exit_code == 2 and "--format" in error_line(unknown)


def test_export_of_a_tampered_ledger_writes_the_report_and_exits_1(filled: Path, tmp_path: Path) -> None:
    """A ledger that does not verify still gets its report, which records the failure,
    and the command exits 1 so that a cron job notices."""
    rewrite_rows(filled, "UPDATE events SET actor = 'mallory' WHERE seq = 3")
    out = tmp_path / "report.json"
    result = invoke(filled, "audit", "export", "--out", str(out), "--json", password=None)
    assert result.exit_code == 1
    assert document(result)["ok"] is False
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["integrity"]["ok"] is False
    assert data["integrity"]["first_bad_seq"] == 3
    plain = invoke(filled, "audit", "export", "--out", str(tmp_path / "r.csv"), password=None)
    assert plain.exit_code == 1 and "does NOT verify" in error_line(plain)


def test_export_report_equals_the_library_build(scenario: Path, tmp_path: Path) -> None:
    """The command writes what the library renders (apart from the generation time)."""
    out = tmp_path / "report.json"
    assert invoke(scenario, "audit", "export", "--out", str(out), password=None).exit_code == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    with SQLiteRecorder(scenario) as recorder:
        built = build_compliance_report(recorder, now=datetime.fromisoformat(written["generated_at"]))
    assert written == json.loads(render(built, "json"))


def test_scenario_ledger_still_opens(scenario: Path) -> None:
    """Building reports leaves the ledger as it was (a projection never writes events)."""
    with SQLiteRecorder(scenario) as recorder:
        before = recorder.head()
        build_compliance_report(recorder, now=REPORT_TIME)
        assert recorder.head() == before
    with Ledger.open(scenario, PASSWORD) as ledger:
        assert ledger.get("new_one").value == THIRD_VALUE


def test_unreadable_event_is_reported_not_fatal(filled: Path, tmp_path: Path) -> None:
    """An event whose payload no longer parses is counted and listed as a failure, and the
    rest of the report is still built (marked as not verified)."""
    seq = plain_rows(filled, "SELECT max(seq) FROM events WHERE type = 'SecretWritten'")[0][0]
    rewrite_rows(filled, f"UPDATE events SET payload = '{{' WHERE seq = {seq}")
    with open_recorder(filled) as recorder:
        built = build_compliance_report(recorder, now=REPORT_TIME)
    assert not built.integrity.ok and built.integrity.unreadable_events == 1
    assert [(f.kind, f.seq) for f in built.failures] == [("unreadable-event", seq)]
    assert built.secrets.live_total == 1  # the damaged secret's head is left out
    assert "could not be read" in render(built, "html")
