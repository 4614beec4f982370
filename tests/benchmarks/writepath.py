"""The write path beside the script a user would write instead (issue 16): `make bench`.

Environment:
  BENCH_SIZES     ledger sizes in secrets, comma-separated (default "1000000";
                  BENCH_SIZES=10000 is a quick run)
  BENCH_BACKENDS  sqlite, postgresql or both (default "sqlite,postgresql")
  BENCH_BASELINE  another checkout (``git worktree add DIR COMMIT``): its keyledger runs the
                  same steps on its own ledger in the same run, for the "x baseline" column
  BENCH_JSON      also write the results as JSON to this path
  BENCH_DIR       where the ledgers are built (default: a temporary directory, removed after)

For each backend and size, on the same values, interleaved step by step so that all of
them share the machine's speed of those minutes: keyledger's `secrets import`, the audited
script's import (`script.py`: one table, batches of 10,000 with ``executemany``, an audit
row per secret in the same transaction) and the plain script's (no audit rows); then twice
`rotate` + `migrate` beside both scripts' migrations; then `audit verify` and
`rebuild-projections`; then the raw AES-GCM loop over the same values. Every keyledger step
is the real CLI in a fresh process, and so is each script run; peak RSS is that process's
own (``wait4``). Bytes on disk are measured after a WAL checkpoint (SQLite) or as the
schema's relations' total size after a CHECKPOINT (PostgreSQL). Nothing is asserted: the
targets are reported, never enforced.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import kdf_seconds, machine, raw_aesgcm_loop, run_cli, write_values

SCRIPT = Path(__file__).resolve().parent / "script.py"
#: Rates the old code reached on a fast hour (issue 16), the floor of the verify and
#: rebuild targets: at least 2x and 3x these.
VERIFY_TODAY, REBUILD_TODAY = 400_000, 45_000
MAX_GROWTH, MAX_RSS_MB = 250, 300


def progress(label: str, message: str) -> None:
    print(f"[{label}] {message}", file=sys.stderr, flush=True)


def run_script(target: str, *args: str) -> tuple[float, float, int]:
    """(seconds, peak RSS MB, secrets) of one run of the script, a process of its own,
    timed as :func:`bench.run_cli` times keyledger."""
    seconds, rss, out = run_cli(target, target, *args, command=[sys.executable, str(SCRIPT)])
    return seconds, rss, int(json.loads(out)["secrets"])


class Store:
    """Where one contender keeps its data, and its size on disk."""

    def __init__(self, backend: str, location: str, cluster: Any = None) -> None:
        self.backend, self.location, self.cluster = backend, location, cluster

    def bytes_on_disk(self) -> int:
        if self.backend == "sqlite":
            path = Path(self.location)
            if not path.exists():
                return 0
            conn = sqlite3.connect(path)
            with suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        schema = self.location.rsplit("schema=", 1)[1]
        self.cluster.admin_sql("CHECKPOINT")
        ((total,),) = self.cluster.admin_sql(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'm')")
        return int(total)


def stores(backend: str, size: int, workdir: Path, cluster: Any) -> dict[str, Store]:
    names = ("keyledger", "audited", "plain", "baseline")
    if backend == "sqlite":
        for leftover in workdir.glob(f"*-{size}.db*"):
            leftover.unlink()
        return {n: Store(backend, str(workdir / f"{n}-{size}.db")) for n in names}
    return {n: Store(backend, cluster.url(f"bench_{n}_{size}"), cluster) for n in names}


def baseline_command(root: Path) -> list[str]:
    entry = "cli.launch" if (root / "cli" / "launch.py").exists() else "cli.app"
    return [sys.executable, "-c",
            f"import sys; sys.path.insert(0, {str(root)!r}); from {entry} import main; main()"]


def bench(backend: str, size: int, workdir: Path, cluster: Any,
          baseline: Path | None) -> dict[str, Any]:
    label = f"{size:,} on {backend}"
    source = workdir / f"values-{size}.json"
    write_values(source, size)
    at = stores(backend, size, workdir, cluster)
    old = baseline_command(baseline) if baseline else None
    found: dict[str, Any] = {"backend": backend, "size": size, "steps": {}, "bytes": {}}

    def cli(step: str, *args: str, who: str = "keyledger") -> dict[str, Any]:
        command = old if who == "baseline" else None
        seconds, rss, out = run_cli(at[who].location, *args, command=command)
        found["steps"].setdefault(step, {})[who] = {"seconds": seconds, "rss_mb": rss}
        progress(label, f"{who} {step}: {seconds:.3f} s, {rss:.0f} MB")
        return json.loads(out) if "--json" in args else {}

    def script(step: str, who: str, *args: str) -> None:
        seconds, rss, count = run_script(at[who].location, *args,
                                         *(["--plain"] if who == "plain" else []))
        if count != size:
            raise SystemExit(f"the {who} script handled {count} secrets, not {size}")
        found["steps"].setdefault(step, {})[who] = {"seconds": seconds, "rss_mb": rss}
        progress(label, f"{who} script {step}: {seconds:.3f} s")

    def measure(when: str) -> None:
        for who in at:
            if who != "baseline" or old:
                found["bytes"].setdefault(when, {})[who] = at[who].bytes_on_disk()

    contenders = ["keyledger", *(["baseline"] if old else [])]
    for who in contenders:
        cli("init", "init", who=who)
    for who in contenders:
        imported = cli("secrets import", "secrets", "import", str(source), "--json", who=who)
        if imported["imported"] != size:
            raise SystemExit(f"{who} imported {imported['imported']} secrets, not {size}")
    script("secrets import", "audited", "import", str(source))
    script("secrets import", "plain", "import", str(source))
    measure("import")
    for n in (1, 2):
        step = f"migrate {n}"
        for who in contenders:
            cli(f"rotate {n}", "rotate", "--yes", who=who)
            migrated = cli(step, "migrate", "--yes", "--json", who=who)
            if migrated["migrated"] != size:
                raise SystemExit(f"{who} migrated {migrated['migrated']} secrets, not {size}")
        script(step, "audited", "migrate")
        script(step, "plain", "migrate")
        measure(step)
    for who in contenders:
        events = int(cli("audit verify", "audit", "verify", "--json", who=who)["events"])
        found["steps"]["audit verify"][who]["items"] = events
    for who in contenders:
        replayed = cli("rebuild-projections", "rebuild-projections", "--json", who=who)
        found["steps"]["rebuild-projections"][who]["items"] = int(replayed["events_replayed"])
    raw = raw_aesgcm_loop(size)
    found["steps"]["raw AES-GCM loop"] = {"raw": {"seconds": raw, "rss_mb": None}}
    progress(label, f"raw AES-GCM loop: {raw:.3f} s")
    source.unlink()
    if backend == "sqlite":
        for leftover in workdir.glob(f"*-{size}.db*"):
            leftover.unlink()
    return found


def rate(result: dict[str, Any], step: str, who: str) -> float:
    cell = result["steps"][step][who]
    return (cell.get("items") or result["size"]) / cell["seconds"]


def cell(result: dict[str, Any], step: str, who: str) -> str:
    found = result["steps"].get(step, {}).get(who)
    if found is None:
        return "-"
    return f"{found['seconds']:.2f} s ({rate(result, step, who):,.0f}/s)"


def tables(results: list[dict[str, Any]], with_baseline: bool) -> Iterator[str]:
    extra = " baseline | keyledger / baseline |" if with_baseline else ""
    yield (f"| backend | secrets | step | keyledger | audited script | plain script |{extra} "
           "keyledger / audited | target | met? |")
    yield "|---|---:|---|---:|---:|---:|" + ("---:|---:|" if with_baseline else "") + "---:|---|---|"
    for r in results:
        lead = f"| {r['backend']} | {r['size']:,} |"
        for step in ("secrets import", "migrate 1", "migrate 2"):
            ratio = rate(r, step, "keyledger") / rate(r, step, "audited")
            base = (f" {cell(r, step, 'baseline')} | "
                    f"{rate(r, step, 'keyledger') / rate(r, step, 'baseline'):.2f}x |"
                    if with_baseline else "")
            yield (f"{lead} {step} | {cell(r, step, 'keyledger')} | {cell(r, step, 'audited')} | "
                   f"{cell(r, step, 'plain')} |{base} {ratio:.2f}x | >= 1.0x audited | "
                   f"{'yes' if ratio >= 1 else 'no'} |")
        for step, today, factor in (("audit verify", VERIFY_TODAY, 2),
                                    ("rebuild-projections", REBUILD_TODAY, 3)):
            got = rate(r, step, "keyledger")
            base = (f" {cell(r, step, 'baseline')} | "
                    f"{got / rate(r, step, 'baseline'):.2f}x |" if with_baseline else "")
            goal = factor * (rate(r, step, "baseline") if with_baseline else today)
            yield (f"{lead} {step} | {cell(r, step, 'keyledger')} | - | - |{base} - | "
                   f">= {goal:,.0f} events/s ({factor}x {'baseline' if with_baseline else 'today'}) | "
                   f"{'yes' if got >= goal else 'no'} |")
    yield ""
    yield ("| backend | secrets | bytes per secret on disk | keyledger | audited script | "
           "plain script |" + (" baseline |" if with_baseline else "") + " target | met? |")
    yield "|---|---:|---|---:|---:|---:|" + ("---:|" if with_baseline else "") + "---|---|"
    for r in results:
        lead = f"| {r['backend']} | {r['size']:,} |"
        whos = ["keyledger", "audited", "plain", *(["baseline"] if with_baseline else [])]
        sizes = r["bytes"]
        per = {w: [sizes[k][w] / r["size"] for k in ("import", "migrate 1", "migrate 2")]
               for w in whos}
        yield (f"{lead} after import | " + " | ".join(f"{per[w][0]:,.0f}" for w in whos)
               + " | - | - |")
        for n in (1, 2):
            grown = {w: per[w][n] - per[w][n - 1] for w in whos}
            yield (f"{lead} growth, migration {n} | " + " | ".join(f"{grown[w]:,.0f}" for w in whos)
                   + f" | <= {MAX_GROWTH} | {'yes' if grown['keyledger'] <= MAX_GROWTH else 'no'} |")
    yield ""
    for r in results:
        raw = rate(r, "raw AES-GCM loop", "raw")
        peak = max(c["rss_mb"] for step in r["steps"].values() for w, c in step.items()
                   if w == "keyledger")
        worst = max(r["steps"].items(), key=lambda kv: kv[1].get("keyledger", {}).get("rss_mb") or 0)
        ratios = ", ".join(f"{rate(r, s, 'keyledger') / raw:.3f}x" for s in ("migrate 1", "migrate 2"))
        plain = ", ".join(f"{rate(r, s, 'keyledger') / rate(r, s, 'plain'):.2f}x"
                          for s in ("migrate 1", "migrate 2"))
        yield (f"- {r['backend']}, {r['size']:,} secrets: raw AES-GCM loop {raw:,.0f}/s; migrate "
               f"runs at {ratios} of it and {plain} the plain script's rate; keyledger's peak RSS "
               f"{peak:.0f} MB ({worst[0]}; target < {MAX_RSS_MB} MB: "
               f"{'met' if peak < MAX_RSS_MB else 'missed'}).")


@contextmanager
def cluster_for(backends: list[str]) -> Iterator[Any]:
    if "postgresql" not in backends:
        yield None
        return
    from backends import durable_cluster

    with durable_cluster() as cluster:
        yield cluster


def main() -> None:
    calibration = [kdf_seconds()]
    sizes = [int(s.replace("_", "")) for s in os.environ.get("BENCH_SIZES", "1000000").split(",")
             if s.strip()]
    backends = [b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")
                if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        raise SystemExit(f"BENCH_BACKENDS: unknown backend {sorted(unknown)[0]!r}")
    baseline = Path(os.environ["BENCH_BASELINE"]).resolve() if os.environ.get("BENCH_BASELINE") else None
    results = []
    with tempfile.TemporaryDirectory(prefix="keyledger-bench-", dir=os.environ.get("BENCH_DIR")) as tmp, \
            cluster_for(backends) as cluster:
        workdir = Path(tmp)
        state = workdir / "host-state"
        state.mkdir()
        os.environ.setdefault("KEYLEDGER_STATE_DIR", str(state))
        for size in sizes:
            for backend in backends:
                results.append(bench(backend, size, workdir, cluster, baseline))
    calibration.append(kdf_seconds())
    command = (f"BENCH_SIZES={','.join(map(str, sizes))} BENCH_BACKENDS={','.join(backends)}"
               + (f" BENCH_BASELINE={baseline}" if baseline else "") + " make bench")
    date = datetime.date.today().isoformat()
    print(f"Command: `{command}`, {date}\n")
    print(f"Machine: {machine()}" + ("; PostgreSQL 15 on a Unix socket, fsync and "
                                     "synchronous_commit on" if cluster else "") + "\n")
    print(f"Machine speed: one PBKDF2-SHA256 derivation (600,000 iterations) took "
          f"{calibration[0]:.3f} s at the start of the run and {calibration[1]:.3f} s at the end.\n")
    print("\n".join(tables(results, baseline is not None)))
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(
            {"command": command, "date": date, "machine": machine(), "kdf_seconds": calibration,
             "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
