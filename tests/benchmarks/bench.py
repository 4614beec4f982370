"""keyledger's benchmark: `make bench` (sizes from BENCH_SIZES, e.g. "1000,10000").

For each size it builds a fresh ledger and times the real CLI, each command a separate
process (cold), measuring wall time, throughput and the child's peak RSS; beside it, the
raw AES-GCM loop over the same values (the ceiling) and the old system's approach
(derive the key per secret, commit per secret) on a small sample. Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.crypto import derive_seed_key
from ledger.testing import keyledger_command

PASSWORD = "benchmark master password, not secret"
GUIDE_SAMPLE = int(os.environ.get("BENCH_GUIDE_SAMPLE", "20"))


@dataclass
class Row:
    size: int
    step: str
    seconds: float
    items: int
    peak_rss_mb: float | None

    @property
    def rate(self) -> str:
        return f"{self.items / self.seconds:,.0f}/s" if self.items and self.seconds else "-"


keyledger = keyledger_command


def run_cli(db: Path, *args: str) -> tuple[float, float, str]:
    """Run one CLI command in a fresh process: (wall seconds, peak RSS MB, stdout)."""
    env = {**os.environ, "KEYLEDGER_DB": str(db), "ENCRYPTION_MASTER_PASSWORD": PASSWORD,
           "NO_COLOR": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([*keyledger(), *args], env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        # wait4, not wait: it also returns this one child's resource usage (peak RSS).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"keyledger {' '.join(args)} failed: {err.read().strip()}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def values_for(size: int) -> dict[str, str]:
    return {f"app/secret-{i:07d}": f"value-{i}-" + "x" * 24 for i in range(size)}


def raw_aesgcm_loop(values: dict[str, str]) -> float:
    """Decrypt and re-encrypt every value with AES-GCM alone: the ceiling for migrate."""
    old, new = AESGCM(AESGCM.generate_key(256)), AESGCM(AESGCM.generate_key(256))
    sealed = [(n, os.urandom(12), old.encrypt(b"\0" * 12, v.encode(), n.encode())) for n, v in values.items()]
    started = time.perf_counter()
    for name, nonce, body in sealed:
        plaintext = old.decrypt(b"\0" * 12, body, name.encode())
        new.encrypt(nonce, plaintext, name.encode())
    return time.perf_counter() - started


def guide_approach(values: dict[str, str], workdir: Path) -> float:
    """The old system's migration: derive the key per secret, commit per secret."""
    conn = sqlite3.connect(workdir / f"guide-{len(values)}.db")
    conn.execute("CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB)")
    sample = list(values.items())[:GUIDE_SAMPLE]
    started = time.perf_counter()
    for name, value in sample:
        key_old = derive_seed_key(PASSWORD, 1)
        key_new = derive_seed_key(PASSWORD, 2)
        body = AESGCM(key_old).encrypt(b"\0" * 12, value.encode(), None)
        plaintext = AESGCM(key_old).decrypt(b"\0" * 12, body, None)
        conn.execute("INSERT OR REPLACE INTO secrets VALUES (?, ?)",
                     (name, AESGCM(key_new).encrypt(os.urandom(12), plaintext, None)))
        conn.commit()
    conn.close()
    return (time.perf_counter() - started) / len(sample)


def bench_size(size: int, workdir: Path) -> list[Row]:
    db = workdir / f"ledger-{size}.db"
    values = values_for(size)
    source = workdir / f"values-{size}.json"
    source.write_text(json.dumps(values))
    rows = []

    def timed(step: str, items: int, *args: str) -> str:
        seconds, rss, out = run_cli(db, *args)
        rows.append(Row(size, step, seconds, items, rss))
        return out

    timed("init", 0, "init")
    timed("secrets import", size, "secrets", "import", str(source))
    timed("rotate", 0, "rotate", "--yes")
    timed("migrate", size, "migrate", "--yes", "--json")
    timed("info", 0, "info", "--json")
    timed("report", 0, "report", "--json")
    timed("secrets get", 0, "secrets", "get", next(iter(values)))
    timed("health-check", 0, "health-check", "--json")
    events = sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone()[0]
    timed("rebuild-projections", events, "rebuild-projections", "--json")
    raw = raw_aesgcm_loop(values)
    rows.append(Row(size, "raw AES-GCM loop (ceiling)", raw, size, None))
    per_secret = guide_approach(values, workdir)
    rows.append(Row(size, f"old system's approach (sample of {GUIDE_SAMPLE})", per_secret * size, size, None))
    rows.append(Row(size, "ledger bytes per secret", db.stat().st_size / size, 0, None))
    return rows


def render(rows: list[Row]) -> str:
    lines = ["| secrets | step | wall time | throughput | peak RSS |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        if r.step == "ledger bytes per secret":
            lines.append(f"| {r.size:,} | {r.step} | {r.seconds:,.0f} B | - | - |")
            continue
        rss = f"{r.peak_rss_mb:.0f} MB" if r.peak_rss_mb else "-"
        lines.append(f"| {r.size:,} | {r.step} | {r.seconds:.3f} s | {r.rate} | {rss} |")
    by_size: dict[int, dict[str, Row]] = {}
    for r in rows:
        by_size.setdefault(r.size, {})[r.step.split(" (")[0]] = r
    lines.append("")
    for size, steps in by_size.items():
        migrate, raw = steps["migrate"], steps["raw AES-GCM loop"]
        guide = steps["old system's approach"]
        lines.append(f"- {size:,} secrets: migrate runs at {raw.seconds / migrate.seconds:.3g}x the raw "
                     f"AES-GCM loop and {guide.seconds / migrate.seconds:,.0f}x the old system's approach.")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}")


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "1000,10000").split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="keyledger-bench-") as tmp:
        rows = [row for size in sizes for row in bench_size(size, Path(tmp))]
    print(f"Machine: {machine()}\n")
    print(render(rows))


if __name__ == "__main__":
    main()
