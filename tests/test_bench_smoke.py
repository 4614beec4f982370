"""The benchmark script still runs end to end (on a tiny ledger; no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_script_runs_and_prints_its_table() -> None:
    """`make bench`'s script completes on 50 secrets and reports every step it measures."""
    env = {**os.environ, "BENCH_SIZES": "50", "BENCH_GUIDE_SAMPLE": "2"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "benchmarks" / "bench.py")], env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    steps = ("secrets import", "migrate", "info", "report", "secrets get", "health-check",
             "rebuild-projections", "raw AES-GCM loop", "old system's approach", "ledger bytes per secret")
    for step in steps:
        assert f"| 50 | {step}" in result.stdout
