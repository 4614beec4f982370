"""keyledger's benchmark, run by `make bench-reads`.

Environment:
  BENCH_SIZES         ledger sizes in secrets, comma-separated (default "10000,100000,1000000";
                      BENCH_SIZES=10000 is a quick run)
  BENCH_GUIDE_SAMPLE  secrets the guide's approach is timed on (default 20)
  BENCH_JSON          also write the results as JSON to this path
  BENCH_DIR           where the ledgers are built (default: a temporary directory, removed after)
  BENCH_REPEAT        cold starts of each read command (info, report, get, health-check); the
                      table shows the fastest, as this shared machine's other tenants only ever
                      add time (default 3)

For each size it builds a fresh ledger and times the real CLI, each command a separate
process (cold), measuring wall time, throughput and that process's peak RSS. Beside it, in
the same run: the raw AES-GCM loop over the same values (the ceiling for migrate) and the
guide's approach (derive the keys per secret, commit per secret) on a small sample. Prints
one Markdown table with each target and whether it was met, ready for docs/benchmarks.md.
No timing is asserted anywhere: the targets are reported, never enforced.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.crypto import KEK_ITERATIONS, derive_kek, derive_seed_key
from ledger.testing import keyledger_command

DEFAULT_SIZES = "10000,100000,1000000"
DEFAULT_GUIDE_SAMPLE = 20
PASSWORD = "benchmark master password, not secret"
# Values are generated and encrypted this many at a time, so the bench process itself stays
# small at a million secrets.
CHUNK = 50_000


@dataclass(frozen=True)
class Target:
    min_rate: float | None = None  # items per second
    min_raw_ratio: float | None = None  # fraction of the raw AES-GCM loop's rate
    max_seconds: float | None = None  # whole process, cold
    max_rss_mb: float | None = None

    def describe(self) -> str:
        parts = []
        if self.min_rate is not None:
            parts.append(f">= {self.min_rate:,.0f}/s")
        if self.min_raw_ratio is not None:
            parts.append(f">= {self.min_raw_ratio:g}x raw")
        if self.max_seconds is not None:
            parts.append(f"< {self.max_seconds:g} s")
        if self.max_rss_mb is not None:
            parts.append(f"RSS < {self.max_rss_mb:.0f} MB")
        return ", ".join(parts)


TARGETS = {
    "secrets import": Target(min_rate=100_000, max_rss_mb=300),
    "migrate": Target(min_rate=100_000, min_raw_ratio=0.3, max_rss_mb=300),
    "info": Target(max_seconds=0.5),
    "report": Target(max_seconds=0.5),
    "secrets get": Target(max_seconds=0.5),
    "health-check": Target(max_seconds=0.5),
    "audit verify": Target(min_rate=300_000, max_rss_mb=300),
    "rebuild-projections": Target(min_rate=200_000, max_rss_mb=300),
}


@dataclass
class Row:
    size: int
    step: str
    seconds: float | None
    items: int = 0  # secrets or events processed, for the throughput
    unit: str = ""
    peak_rss_mb: float | None = None
    target: str = ""
    met: str = ""
    runs: int = 1  # cold starts timed; the fastest is kept

    @property
    def rate(self) -> float | None:
        return self.items / self.seconds if self.items and self.seconds else None

    def throughput(self) -> str:
        if self.unit == "B":
            return f"{self.items:,} B"
        return f"{self.rate:,.0f} {self.unit}/s" if self.rate else "-"


def name_for(i: int) -> str:
    return f"app/secret-{i:07d}"


def value_for(i: int) -> str:
    return f"value-{i}-" + "x" * 24


def write_values(path: Path, size: int) -> None:
    """The import file, a JSON object of `size` secrets, written a chunk at a time."""
    with path.open("w", encoding="utf-8") as out:
        out.write("{")
        for start in range(0, size, CHUNK):
            out.write("," if start else "")
            out.write(",".join(f"{json.dumps(name_for(i))}: {json.dumps(value_for(i))}"
                               for i in range(start, min(size, start + CHUNK))))
        out.write("}")


def run_cli(db: Path | str, *args: str, command: list[str] | None = None) -> tuple[float, float, str]:
    """Run one CLI command in a fresh process: (wall seconds, peak RSS MB, stdout).
    ``command`` replaces the installed ``keyledger`` (another checkout's, say)."""
    env = {**os.environ, "KEYLEDGER_DB": str(db), "ENCRYPTION_MASTER_PASSWORD": PASSWORD,
           "NO_COLOR": "1",
           # The host's memory of checkpoints (ledger.seen) is on, as for a user, but
           # kept beside the benchmark's ledgers rather than in the user's own.
           "KEYLEDGER_STATE_DIR": os.environ.get("KEYLEDGER_STATE_DIR")
                                  or str(Path(db).parent / "host-state")}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([*(command or keyledger_command()), *args], env=env,
                                stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        # wait4, not wait: it also returns this one child's resource usage (peak RSS).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"keyledger {' '.join(args)} failed ({proc.returncode}): {err.read().strip()}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def raw_aesgcm_loop(size: int) -> float:
    """Seconds to decrypt and re-encrypt every value (AAD = name) with AES-GCM alone.

    The ceiling for migrate. Values are sealed under the old key a chunk at a time, outside
    the timing; only the decrypt, the fresh nonce and the re-encrypt are timed.
    """
    old, new = AESGCM(AESGCM.generate_key(256)), AESGCM(AESGCM.generate_key(256))
    elapsed = 0.0
    for start in range(0, size, CHUNK):
        sealed = []
        for i in range(start, min(size, start + CHUNK)):
            aad, nonce = name_for(i).encode(), os.urandom(12)
            sealed.append((aad, nonce, old.encrypt(nonce, value_for(i).encode(), aad)))
        started = time.perf_counter()
        for aad, nonce, body in sealed:
            new.encrypt(os.urandom(12), old.decrypt(nonce, body, aad), aad)
        elapsed += time.perf_counter() - started
    return elapsed


def guide_seconds_per_secret(sample: int, workdir: Path) -> float:
    """The guide's migration, per secret: derive the old and the new key with PBKDF2, decrypt,
    re-encrypt, and commit that one secret on its own (SQLite's defaults: rollback journal,
    synchronous FULL)."""
    conn = sqlite3.connect(workdir / "guide.db")
    conn.execute("DROP TABLE IF EXISTS secrets")
    conn.execute("CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB)")
    old_key = derive_seed_key(PASSWORD, 1)
    rows = []
    for i in range(sample):
        nonce = os.urandom(12)
        rows.append((name_for(i), nonce + AESGCM(old_key).encrypt(nonce, value_for(i).encode(), None)))
    conn.executemany("INSERT INTO secrets VALUES (?, ?)", rows)
    conn.commit()
    started = time.perf_counter()
    for name, stored in rows:
        key_old = derive_seed_key(PASSWORD, 1)
        key_new = derive_seed_key(PASSWORD, 2)
        plaintext = AESGCM(key_old).decrypt(stored[:12], stored[12:], None)
        nonce = os.urandom(12)
        conn.execute("UPDATE secrets SET value = ? WHERE name = ?",
                     (nonce + AESGCM(key_new).encrypt(nonce, plaintext, None), name))
        conn.commit()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds / sample


def progress(size: int, message: str) -> None:
    print(f"[{size:,}] {message}", file=sys.stderr, flush=True)


def bench_size(size: int, workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    """Every measurement at one size: the table's rows and the extra figures (ratios, bytes)."""
    db = workdir / f"ledger-{size}.db"
    for leftover in workdir.glob(f"{db.name}*"):
        leftover.unlink()
    source = workdir / f"values-{size}.json"
    write_values(source, size)
    rows: list[Row] = []

    def timed(step: str, *args: str, items: int = 0, unit: str = "", repeat: int = 1) -> dict[str, Any]:
        runs = [run_cli(db, *args) for _ in range(repeat)]
        seconds, rss, out = min(runs)
        rows.append(Row(size, step, seconds, items, unit, max(r[1] for r in runs), runs=repeat))
        progress(size, f"{step}: {seconds:.3f} s, {rss:.0f} MB "
                       f"(all: {', '.join(f'{r[0]:.3f}' for r in runs)})")
        return json.loads(out) if "--json" in args else {}

    repeat = int(os.environ.get("BENCH_REPEAT", "3"))

    timed("init", "init")
    imported = timed("secrets import", "secrets", "import", str(source), "--json", items=size, unit="secrets")
    source.unlink()
    timed("rotate", "rotate", "--yes")
    migrated = timed("migrate", "migrate", "--yes", "--json", items=size, unit="secrets")
    if imported["imported"] != size or migrated["migrated"] != size:
        raise SystemExit(f"expected {size} secrets imported and migrated, got "
                         f"{imported['imported']} and {migrated['migrated']}")
    timed("info", "info", "--json", repeat=repeat)
    timed("report", "report", "--json", repeat=repeat)
    timed("secrets get", "secrets", "get", name_for(size // 2), repeat=repeat)
    timed("health-check", "health-check", "--json", repeat=repeat)
    events = int(timed("audit verify", "audit", "verify", "--json")["events"])
    rows[-1].items, rows[-1].unit = events, "events"
    replayed = timed("rebuild-projections", "rebuild-projections", "--json")
    rows[-1].items, rows[-1].unit = int(replayed.get("events_replayed", events)), "events"

    ledger_bytes = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    for leftover in workdir.glob(f"{db.name}*"):
        leftover.unlink()

    raw = raw_aesgcm_loop(size)
    rows.append(Row(size, "raw AES-GCM loop (ceiling)", raw, size, "secrets"))
    progress(size, f"raw AES-GCM loop: {raw:.3f} s")
    guide_sample = min(size, int(os.environ.get("BENCH_GUIDE_SAMPLE", DEFAULT_GUIDE_SAMPLE)))
    per_secret = guide_seconds_per_secret(guide_sample, workdir)
    rows.append(Row(size, f"guide's approach (sample of {guide_sample}, scaled)", per_secret * size,
                    size, "secrets"))
    progress(size, f"guide's approach: {per_secret:.3f} s per secret")

    migrate_rate = next(r.rate for r in rows if r.step == "migrate") or 0.0
    migrate_vs_raw = migrate_rate / (size / raw)
    extra: dict[str, Any] = {
        "size": size,
        "events": events,
        "ledger_bytes": ledger_bytes,
        "bytes_per_secret": ledger_bytes / size,
        "migrate_vs_raw": migrate_vs_raw,
        "migrate_vs_guide": migrate_rate * per_secret,
        "migrate_in_process_seconds": migrated.get("duration_seconds"),
        "guide_sample": guide_sample,
    }
    rows.append(Row(size, "ledger bytes per secret", None, items=round(ledger_bytes / size), unit="B"))
    for row in rows:
        judge(row, migrate_vs_raw)
    return rows, extra


def judge(row: Row, migrate_vs_raw: float) -> None:
    """Fill in the row's target and whether it was met, naming what missed."""
    target = TARGETS.get(row.step)
    if target is None:
        return
    missed = []
    if target.min_rate is not None and (row.rate or 0) < target.min_rate:
        missed.append("throughput")
    if target.min_raw_ratio is not None and migrate_vs_raw < target.min_raw_ratio:
        missed.append("vs raw")
    if target.max_seconds is not None and (row.seconds or 0) >= target.max_seconds:
        missed.append("time")
    if target.max_rss_mb is not None and (row.peak_rss_mb or 0) >= target.max_rss_mb:
        missed.append("RSS")
    row.target = target.describe()
    row.met = f"no ({', '.join(missed)})" if missed else "yes"


def render(rows: list[Row], extras: list[dict[str, Any]]) -> Iterator[str]:
    yield "| secrets | step | wall time | throughput | peak RSS | target | met? |"
    yield "|---:|---|---:|---:|---:|---|---|"
    for r in rows:
        wall = f"{r.seconds:.3f} s" if r.seconds is not None else "-"
        rss = f"{r.peak_rss_mb:.0f} MB" if r.peak_rss_mb else "-"
        step = r.step if r.runs == 1 else f"{r.step} (best of {r.runs})"
        yield (f"| {r.size:,} | {step} | {wall} | {r.throughput()} | {rss} "
               f"| {r.target or '-'} | {r.met or '-'} |")
    yield ""
    for e in extras:
        inside = e["migrate_in_process_seconds"]
        own = f" (its own timer: {inside:.3f} s, {e['size'] / inside:,.0f}/s)" if inside else ""
        yield (f"- {e['size']:,} secrets: migrate runs at {e['migrate_vs_raw']:.3g}x the raw AES-GCM loop "
               f"and {e['migrate_vs_guide']:,.0f}x the guide's approach{own}; the ledger holds "
               f"{e['events']:,} events in {e['ledger_bytes'] / 2**20:,.1f} MB, "
               f"{e['bytes_per_secret']:,.0f} bytes per secret.")


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


def kdf_seconds() -> float:
    """One PBKDF2-HMAC-SHA256 derivation at keyledger's 600,000 iterations: pure CPU, so the
    same figure at the start and the end of a run shows how fast this (shared, virtual)
    machine was meanwhile, and lets runs on different days be compared."""
    started = time.perf_counter()
    derive_kek(PASSWORD, b"\0" * 16, KEK_ITERATIONS)
    return time.perf_counter() - started


def main() -> None:
    calibration = [kdf_seconds()]
    sizes_text = os.environ.get("BENCH_SIZES", DEFAULT_SIZES)
    sizes = [int(s.replace("_", "")) for s in sizes_text.split(",") if s.strip()]
    sample = os.environ.get("BENCH_GUIDE_SAMPLE", str(DEFAULT_GUIDE_SAMPLE))
    command = f"BENCH_SIZES={','.join(map(str, sizes))} BENCH_GUIDE_SAMPLE={sample} make bench-reads"
    rows: list[Row] = []
    extras: list[dict[str, Any]] = []
    bench_dir = os.environ.get("BENCH_DIR")
    with tempfile.TemporaryDirectory(prefix="keyledger-bench-", dir=bench_dir) as tmp:
        for size in sizes:
            size_rows, extra = bench_size(size, Path(tmp))
            rows += size_rows
            extras.append(extra)
    calibration.append(kdf_seconds())
    date = datetime.date.today().isoformat()
    own_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Command: `{command}`, {date}\n")
    print(f"Machine: {machine()}\n")
    print(f"Machine speed: one PBKDF2-SHA256 derivation (600,000 iterations) took "
          f"{calibration[0]:.3f} s at the start of the run and {calibration[1]:.3f} s at the end.\n")
    print("\n".join(render(rows, extras)))
    print(f"\nThe benchmark process itself peaked at {own_rss:.0f} MB RSS.")
    if os.environ.get("BENCH_JSON"):
        document = {"command": command, "date": date, "machine": machine(), "sizes": sizes,
                    "rows": [{**asdict(r), "rate": r.rate} for r in rows], "sizes_detail": extras,
                    "bench_peak_rss_mb": own_rss, "kdf_seconds": calibration}
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
