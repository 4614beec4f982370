"""`make bench-reads`'s script still runs end to end at 10,000 secrets (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIZE = 10_000
CLI_STEPS = ("init", "secrets import", "rotate", "migrate", "info", "report", "secrets get",
             "health-check", "audit verify", "rebuild-projections")
STEPS = (*CLI_STEPS, "raw AES-GCM loop", "guide's approach", "ledger bytes per secret")
TARGETED = ("secrets import", "migrate", "info", "report", "secrets get", "health-check",
            "audit verify", "rebuild-projections")


def run_benchmark(script: str, tmp_path: Path, results: Path, **settings: str) -> str:
    """What ``tests/benchmarks/SCRIPT`` prints, run with ``settings`` and its JSON sent to
    ``results``; it must succeed."""
    env = {**os.environ, **settings, "BENCH_JSON": str(results), "BENCH_DIR": str(tmp_path)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "benchmarks" / script)], env=env,
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_benchmark_script_prints_every_step_with_sane_figures(tmp_path: Path) -> None:
    """The benchmark at 10,000 secrets prints a row per step, its targets, the ratios and the
    machine, and its JSON holds positive times, rates and sizes that agree with the ledger."""
    results = tmp_path / "bench.json"
    out = run_benchmark("bench.py", tmp_path, results, BENCH_SIZES=str(SIZE),
                        BENCH_GUIDE_SAMPLE="2", BENCH_REPEAT="1")
    assert "| secrets | step | wall time | throughput | peak RSS | target | met? |" in out
    for step in STEPS:
        assert f"| {SIZE:,} | {step}" in out, step
    assert f"- {SIZE:,} secrets: migrate runs at " in out
    assert "Machine: " in out and "SQLite " in out
    assert "Machine speed: one PBKDF2-SHA256 derivation" in out
    assert f"Command: `BENCH_SIZES={SIZE} BENCH_GUIDE_SAMPLE=2 make bench-reads`" in out

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


WRITE_SIZE = 2_000


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_write_path_benchmark_times_keyledger_beside_both_scripts(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """`make bench` (writepath.py) at 2,000 secrets: keyledger, the audited and the plain
    script each import the same values and migrate them twice, and the tables report every
    step, the ratios and the bytes; the JSON agrees with what each did."""
    if backend == "postgresql":
        request.getfixturevalue("pg_cluster")  # skips (or fails under CI) without a server
    results = tmp_path / "write.json"
    out = run_benchmark("writepath.py", tmp_path, results, BENCH_SIZES=str(WRITE_SIZE),
                        BENCH_BACKENDS=backend)
    assert f"Command: `BENCH_SIZES={WRITE_SIZE} BENCH_BACKENDS={backend} make bench`" in out
    for step in ("secrets import", "migrate 1", "migrate 2", "audit verify",
                 "rebuild-projections", "after import", "growth, migration 1",
                 "growth, migration 2"):
        assert f"| {backend} | {WRITE_SIZE:,} | {step} |" in out, step
    assert f"- {backend}, {WRITE_SIZE:,} secrets: raw AES-GCM loop" in out

    (found,) = json.loads(results.read_text())["results"]
    steps = found["steps"]
    for step in ("secrets import", "migrate 1", "migrate 2"):
        assert set(steps[step]) == {"keyledger", "audited", "plain"}, step
        assert all(cell["seconds"] > 0 and cell["rss_mb"] > 0 for cell in steps[step].values())
    # One event per secret imported and per secret migrated, twice, and a few more.
    assert 3 * WRITE_SIZE <= steps["audit verify"]["keyledger"]["items"] < 3 * WRITE_SIZE + 100
    assert steps["rebuild-projections"]["keyledger"]["items"] >= 3 * WRITE_SIZE
    sizes = found["bytes"]
    for when in ("import", "migrate 1", "migrate 2"):
        # The audit rows take room the plain script does not spend.
        assert sizes[when]["audited"] > sizes[when]["plain"] > 0, when
    assert sizes["import"]["keyledger"] < sizes["migrate 1"]["keyledger"] < sizes["migrate 2"]["keyledger"]
