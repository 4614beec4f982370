"""``--format prometheus`` for ``audit metrics`` and ``health-check``: node_exporter's
textfile format, read back with prometheus_client's own parser."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from cli_support import PASSWORD, VALUE, error_line, invoke
from prometheus_client.parser import text_string_to_metric_families

from ledger import Ledger


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text: (name, sorted labels) to value. Parsing
    it with prometheus_client fails on anything the format does not allow."""
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_audit_metrics_has_what_a_dashboard_needs(filled: Path | str) -> None:
    with Ledger.open(filled, PASSWORD) as ledger:
        ledger.rotate()
        ledger.migrate(batch_size=1)
        ledger.set("late", "on v2")
        created = {v: info.created_at for v, info in ledger.keyring().versions.items()}
    result = invoke(filled, "audit", "metrics", "--format", "prometheus", password=None)
    assert result.exit_code == 0, result.stderr
    got = samples(result.stdout)
    assert got[("keyledger_key_version_current", ())] == 2
    assert got[("keyledger_secrets", (("key_version", "1"),))] == 0
    assert got[("keyledger_secrets", (("key_version", "2"),))] == 3
    assert got[("keyledger_secrets_needing_migration", ())] == 0
    assert got[("keyledger_key_encryptions_total", (("key_version", "1"),))] == 2
    assert got[("keyledger_key_encryptions_total", (("key_version", "2"),))] == 3
    assert got[("keyledger_key_encryption_limit", ())] == 2**32
    assert got[("keyledger_key_status", (("key_version", "2"), ("status", "active")))] == 1
    assert got[("keyledger_migration_runs", (("status", "success"),))] == 1
    current_since = datetime.fromisoformat(created[2].replace("Z", "+00:00")).timestamp()
    assert got[("keyledger_last_rotation_timestamp_seconds", ())] == pytest.approx(current_since)
    assert got[("keyledger_last_migration_timestamp_seconds", ())] >= current_since
    assert got[("keyledger_key_age_seconds", (("key_version", "1"),))] >= got[
        ("keyledger_key_age_seconds", (("key_version", "2"),))] >= 0
    assert got[("keyledger_ledger_events", ())] > 0
    assert VALUE not in result.stdout


def test_metrics_go_to_a_file_in_one_rename(filled: Path | str, tmp_path: Path) -> None:
    out = tmp_path / "textfile" / "keyledger.prom"
    out.parent.mkdir()
    out.write_text("stale\n")
    assert invoke(filled, "audit", "metrics", "--format", "prometheus", "--out", str(out),
                  password=None).exit_code == 0
    assert samples(out.read_text())[("keyledger_secrets_needing_migration", ())] == 0
    assert (out.stat().st_mode & 0o777) == 0o644  # node_exporter's user reads it
    assert sorted(os.listdir(out.parent)) == ["keyledger.prom"]


def test_health_check_as_metrics_healthy_and_not(filled: Path | str, tmp_path: Path) -> None:
    out = tmp_path / "health.prom"
    healthy = invoke(filled, "health-check", "--format", "prometheus", "--out", str(out))
    assert healthy.exit_code == 0, healthy.stderr
    got = samples(out.read_text())
    assert got[("keyledger_health_status", ())] == 1
    assert got[("keyledger_health_check", (("check", "round_trip"), ("status", "ok")))] == 1
    with Ledger.open(filled, PASSWORD) as ledger:
        assert got[("keyledger_last_verified_seq", ())] == ledger.recorder.head()[0]
    sick = invoke(filled, "health-check", "--format", "prometheus", "--out", str(out),
                  password="not the password")
    assert sick.exit_code == 1  # cron sees it; the collector sees the file
    got = samples(out.read_text())
    assert got[("keyledger_health_status", ())] == 0
    assert got[("keyledger_health_check", (("check", "master_password"), ("status", "fail")))] == 1
    assert "not the password" not in out.read_text()


@pytest.mark.parametrize("args", [
    ("audit", "metrics", "--format", "yaml"),
    ("audit", "metrics", "--out", "x.prom"),
    ("audit", "metrics", "--format", "prometheus", "--json"),
    ("health-check", "--format", "xml"),
    ("health-check", "--out", "x.prom"),
    ("health-check", "--format", "prometheus", "--json"),
])
def test_bad_format_options_are_one_line(filled: Path | str, args: tuple[str, ...]) -> None:
    result = invoke(filled, *args)
    assert result.exit_code == 2 and error_line(result)
