"""Build the sample ledger behind docs/samples/compliance-report.html, and render it.

A year of key management on a fixed calendar: five key versions (one per status), a
rejected rotation, a migration with a failure, retirements, a scheduled and a completed
destruction. Times are fixed, so the report is the same from run to run except for what
is random by design (the ledger id, key fingerprints and hashes).

    .venv/bin/python docs/samples/compliance_sample.py docs/samples/compliance-report.html
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ledger import events as ev
from ledger.crypto import SCHEME_BOUND
from ledger.service import Ledger
from ledger.store import NewEvent, SQLiteRecorder
from ledger.testing import StepClock, create_test_ledger
from projections.reports.compliance import build_compliance_report
from projections.renderers.compliance import render

PASSWORD = "sample ledger password"
REPORT_TIME = datetime(2026, 1, 20, 9, 0, tzinfo=UTC)
SECRETS = ("db_password", "api_token", "smtp_password", "stripe_key", "jwt_signing", "s3_access")


def on(clock: StepClock, day: str) -> None:
    clock.now = datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)


def plant_damaged(ledger: Ledger, name: str) -> None:
    """A value damaged outside keyledger: another secret's ciphertext under this name."""
    donor = ledger.secret(SECRETS[0]).ciphertext
    version = ledger.keyring().require_current()
    assert donor is not None
    ledger._append([NewEvent(ev.secret_stream(name), 1, ev.SecretWritten(
        name=name, key_version=version, ciphertext=donor, scheme=SCHEME_BOUND))])


def build_sample_ledger(path: Path) -> None:
    clock = StepClock(datetime(2025, 1, 6, 9, 0, tzinfo=UTC))
    with create_test_ledger(path, PASSWORD, actor="alice@ops-1", clock=clock) as ledger:
        ledger.origin = "ops-1 keyledger-cli pid 4242"  # this host's name has no place in docs
        for n, name in enumerate(SECRETS):
            ledger.set(name, f"sample-value-{n}")
        on(clock, "2025-03-03")
        ledger.rotate(reason="quarterly rotation")
        ledger.migrate()
        on(clock, "2025-03-10")
        ledger.retire(1, reason="every secret migrated to v2")
        on(clock, "2025-03-24")
        ledger.destroy(1, reason="crypto-shred after the retention check")
        on(clock, "2025-04-15")
        try:
            ledger.rotate(1, reason="restore the old key")
        except Exception:  # rejected: versions are never reused (recorded)
            pass
        on(clock, "2025-05-20")
        plant_damaged(ledger, "legacy_cache_key")
        on(clock, "2025-06-02")
        ledger.rotate(reason="quarterly rotation")
        ledger.migrate()  # partial: the damaged value does not decrypt
        on(clock, "2025-06-03")
        ledger.delete("legacy_cache_key")
        on(clock, "2025-06-09")
        ledger.retire(2, reason="every secret migrated to v3")
        on(clock, "2025-09-01")
        ledger.rotate(reason="quarterly rotation")
        ledger.migrate()
        on(clock, "2025-09-08")
        ledger.retire(3, reason="every secret migrated to v4")
        on(clock, "2025-10-06")
        ledger.rotate(reason="suspected exposure in a CI log")
        ledger.set("webhook_secret", "sample-value-6")
        ledger.set("oauth_client_secret", "sample-value-7")
        on(clock, "2025-11-03")
        ledger.destroy(2, after=timedelta(days=120))


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "sample.db"
        build_sample_ledger(db)
        with SQLiteRecorder(db) as recorder:  # metadata only: no password
            report = build_compliance_report(recorder, now=REPORT_TIME)
    out.write_text(render(report, "html"), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "compliance-report.html"))
