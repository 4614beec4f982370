"""SQLite beside PostgreSQL in one run: `make bench-backends`.

Environment:
  BENCH_BACKENDS  which backends, comma-separated (sqlite, postgresql)
  BENCH_SIZES     ledger sizes in secrets (default "10000,100000")
  BENCH_REPEAT    cold `secrets get` runs; the fastest is shown (default 3)
  BENCH_WRITERS   concurrent writer processes for the combined `secrets set` rate (default 4)
  BENCH_WRITES    `secrets set` calls per writer (default 100)

Each step is the real CLI in a fresh process (cold), on a fresh ledger per size and
backend: init, secrets import, rotate, migrate, secrets get, audit verify. PostgreSQL is a
throwaway cluster started for the run (tests/pg_support.py) with fsync and
synchronous_commit on, so that both backends make every commit durable; it listens on a
Unix socket on this machine, so the figures leave out a network's round trips. Then
BENCH_WRITERS processes, each with its own connection and --actor... in the library,
write secrets at once, and their combined rate is reported. Nothing is asserted: the
targets are reported, never enforced.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import pg_support
from bench import PASSWORD, machine, name_for, run_cli, write_values

from ledger import Ledger
from ledger.testing import create_test_ledger

STEPS = ("init", "secrets import", "rotate", "migrate", "secrets get (cold, best)",
         "audit verify", "concurrent secrets set")


@contextmanager
def durable_cluster() -> Iterator[pg_support.Cluster]:
    """A throwaway cluster that, like SQLite's synchronous=FULL, flushes every commit."""
    cluster = pg_support.Cluster.start()
    try:
        conf = cluster.data / "postgresql.conf"
        text = conf.read_text(encoding="utf-8").replace("fsync = off", "fsync = on").replace(
            "full_page_writes = off", "full_page_writes = on")
        cluster._write_as_owner(conf, text)
        cluster.pg_ctl("restart", "-w", "-l", str(cluster.root / "server.log"))
        yield cluster
    finally:
        cluster.stop()


def writer(target: str, index: int, writes: int, start: float) -> None:
    with Ledger.open(target, PASSWORD, actor=f"writer-{index}", seen=None) as ledger:
        while time.time() < start:
            time.sleep(0.001)
        for k in range(writes):
            ledger.set(f"w{index}-{k % 10}", f"{index}:{k}")


def concurrent_sets(target: str, writers: int, writes: int) -> float:
    """The combined rate of ``writers`` processes each setting ``writes`` secrets."""
    ctx = multiprocessing.get_context("spawn")
    start = time.time() + 3.0  # every process opened before the clock starts
    procs = [ctx.Process(target=writer, args=(target, i, writes, start)) for i in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit("a writer failed")
    return writers * writes / (time.time() - start)


def bench(target: str, size: int, workdir: Path, repeat: int, writers: int, writes: int
          ) -> dict[str, tuple[float, float | None]]:
    """step -> (seconds, items per second or None)."""
    out: dict[str, tuple[float, float | None]] = {}
    source = workdir / f"values-{size}.json"
    write_values(source, size)
    state = workdir / "host-state"
    state.mkdir(exist_ok=True)
    os.environ["KEYLEDGER_STATE_DIR"] = str(state)

    def timed(step: str, *args: str, items: int = 0) -> str:
        seconds, _, stdout = run_cli(target, *args)
        out[step] = (seconds, items / seconds if items else None)
        print(f"  {step}: {seconds:.3f} s", file=sys.stderr, flush=True)
        return stdout

    timed("init", "init")
    timed("secrets import", "secrets", "import", str(source), items=size)
    timed("rotate", "rotate", "--yes")
    timed("migrate", "migrate", "--yes", items=size)
    best = min(run_cli(target, "secrets", "get", name_for(size // 2))[0]
               for _ in range(repeat))
    out["secrets get (cold, best)"] = (best, None)
    events = json.loads(timed("audit verify", "audit", "verify", "--json"))["events"]
    seconds = out["audit verify"][0]
    out["audit verify"] = (seconds, events / seconds)
    source.unlink()
    return out


def main() -> None:
    backends = [b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")]
    sizes = [int(s.replace("_", "")) for s in os.environ.get("BENCH_SIZES", "10000,100000").split(",")]
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    writers = int(os.environ.get("BENCH_WRITERS", "4"))
    writes = int(os.environ.get("BENCH_WRITES", "100"))
    results: dict[tuple[int, str], dict[str, tuple[float, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="keyledger-bench-") as tmp, \
            (durable_cluster() if "postgresql" in backends else _nothing()) as cluster:
        workdir = Path(tmp)
        for size in sizes:
            for backend in backends:
                print(f"[{size:,} on {backend}]", file=sys.stderr, flush=True)
                target = (cluster.url() if backend == "postgresql"
                          else str(workdir / f"ledger-{size}.db"))
                results[size, backend] = bench(target, size, workdir, repeat, writers, writes)
        for backend in backends:
            target = cluster.url() if backend == "postgresql" else str(workdir / "writers.db")
            create_test_ledger(target, PASSWORD).close()
            rate = concurrent_sets(target, writers, writes)
            print(f"[{backend}] {writers} writers: {rate:,.0f} sets/s", file=sys.stderr, flush=True)
            for size in sizes:
                results[size, backend]["concurrent secrets set"] = (writers * writes / rate, rate)
    command = (f"BENCH_BACKENDS={','.join(backends)} BENCH_SIZES={','.join(map(str, sizes))} "
               "make bench-backends")
    print(f"Command: `{command}`\n\nMachine: {machine()}; PostgreSQL 15 on a Unix socket, "
          "fsync and synchronous_commit on\n")
    header = " | ".join(backends)
    print(f"| secrets | step | {header} |" + (" postgresql / sqlite |" if len(backends) == 2 else ""))
    print("|---:|---|" + "---:|" * len(backends) + ("---:|" if len(backends) == 2 else ""))
    for size in sizes:
        for step in STEPS:
            if step == "concurrent secrets set" and size != sizes[0]:
                continue
            cells = []
            figures = []
            for backend in backends:
                seconds, rate = results[size, backend][step]
                figures.append(rate if rate else 1 / seconds)
                cells.append(f"{seconds:.3f} s" + (f" ({rate:,.0f}/s)" if rate else ""))
            ratio = f" {figures[1] / figures[0]:.2f}x |" if len(backends) == 2 else ""
            label = f"{step} ({writers} writers x {writes})" if step.startswith("concurrent") else step
            print(f"| {size:,} | {label} | {' | '.join(cells)} |{ratio}")
    print("\nTargets: migrate on PostgreSQL at least 0.5x SQLite's rate; `secrets get` cold "
          "under 0.5 s. The ratio column is PostgreSQL's rate over SQLite's (above 1: faster).")


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
