"""`make bench`'s script still runs end to end at 10,000 secrets (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = 10_000
CLI_STEPS = ("init", "secrets import", "rotate", "migrate", "info", "report", "secrets get",
             "health-check", "audit verify", "rebuild-projections")
STEPS = (*CLI_STEPS, "raw AES-GCM loop", "guide's approach", "ledger bytes per secret")
TARGETED = ("secrets import", "migrate", "info", "report", "secrets get", "health-check",
            "audit verify", "rebuild-projections")


def test_benchmark_script_prints_every_step_with_sane_figures(tmp_path: Path) -> None:
    """The benchmark at 10,000 secrets prints a row per step, its targets, the ratios and the
    machine, and its JSON holds positive times, rates and sizes that agree with the ledger."""
    results = tmp_path / "bench.json"
    env = {**os.environ, "BENCH_SIZES": str(SIZE), "BENCH_GUIDE_SAMPLE": "2", "BENCH_REPEAT": "1",
           "BENCH_JSON": str(results), "BENCH_DIR": str(tmp_path)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "benchmarks" / "bench.py")], env=env,
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr

    out = result.stdout
    assert "| secrets | step | wall time | throughput | peak RSS | target | met? |" in out
    for step in STEPS:
        assert f"| {SIZE:,} | {step}" in out, step
    assert f"- {SIZE:,} secrets: migrate runs at " in out
    assert "Machine: " in out and "SQLite " in out
    assert "Machine speed: one PBKDF2-SHA256 derivation" in out
    assert f"Command: `BENCH_SIZES={SIZE} BENCH_GUIDE_SAMPLE=2 make bench`" in out

    document = json.loads(results.read_text())
    rows = {row["step"].split(" (")[0]: row for row in document["rows"]}
    assert set(rows) == set(STEPS)
    for step in CLI_STEPS:
        assert rows[step]["seconds"] > 0 and 0 < rows[step]["peak_rss_mb"] < 4096, step
    for step in TARGETED:
        assert rows[step]["target"] and rows[step]["met"].startswith(("yes", "no")), step
    for step in ("secrets import", "migrate", "raw AES-GCM loop", "guide's approach"):
        assert rows[step]["items"] == SIZE and rows[step]["rate"] > 0, step

    (detail,) = document["sizes_detail"]
    # One event per secret imported and one per secret migrated, at least.
    assert rows["audit verify"]["items"] == detail["events"] >= 2 * SIZE
    assert rows["rebuild-projections"]["items"] >= 2 * SIZE
    assert 40 < detail["bytes_per_secret"] < 100_000
    assert detail["migrate_vs_raw"] > 0 and detail["migrate_vs_guide"] > 0
    assert len(document["kdf_seconds"]) == 2 and all(s > 0 for s in document["kdf_seconds"])
