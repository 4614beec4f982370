"""What handing secrets over costs: `make bench-handover`.

Environment:
  BENCH_REPEAT   runs of each measurement; the median and the best are shown (default 15)
  BENCH_SECRETS  secrets in the ledger (default 1000); `run` hands over 10 of them

Measured, each in a fresh process as a service manager would start it:
  - `keyledger run --only ... -- true` against `true` alone: the start-up `run` adds
    (the key derivation, 600,000 PBKDF2 iterations as `init` makes them, included; it is
    most of it);
  - the same with read auditing on (one more append, with its signed checkpoint);
  - `keyledger secrets export --format dotenv` of the same 10 secrets;
  - `keyledger audit log --follow --json`: from a write's commit in another process to
    its line on the follower's stdout.
Nothing is asserted: the figures go in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import PASSWORD, machine

from ledger import Ledger
from ledger.testing import keyledger_command

REPEAT = int(os.environ.get("BENCH_REPEAT", "15"))
SECRETS = int(os.environ.get("BENCH_SECRETS", "1000"))


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def summary(label: str, seconds: list[float]) -> str:
    return (f"| {label} | {statistics.median(seconds) * 1000:.0f} ms "
            f"| {min(seconds) * 1000:.0f} ms |")


def follow_latency(db: Path, env: dict[str, str]) -> list[float]:
    """Seconds from a write's commit (in this process) to the follower printing it."""
    child = subprocess.Popen([*keyledger_command(), "audit", "log", "--follow", "--json"],
                             env=env, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    assert child.stdout is not None
    stdout = child.stdout

    def pump() -> None:
        for line in stdout:
            lines.put((time.perf_counter(), line))

    threading.Thread(target=pump, daemon=True).start()
    found = []
    try:
        with Ledger.open(db, PASSWORD, seen=None) as ledger:
            top = ledger.recorder.head()[0]
            while True:  # the events so far
                _, line = lines.get(timeout=60)
                if f'"seq":{top},' in line:
                    break
            for n in range(REPEAT):
                ledger.set("followed", f"v{n}")
                committed = time.perf_counter()
                top = ledger.recorder.head()[0]
                while True:
                    at, line = lines.get(timeout=60)
                    if f'"seq":{top},' in line:
                        found.append(at - committed)
                        break
                time.sleep(0.05 + (n % 4) * 0.05)  # land anywhere in the 0.2 s poll
    finally:
        child.terminate()
        child.wait(timeout=30)
    return found


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="keyledger-bench-handover-") as tmp:
        db = Path(tmp) / "k.db"
        with Ledger.create(db, PASSWORD, actor="bench") as ledger:  # the real KDF
            ledger.import_values({f"S{i:05}": f"value {i} " + "x" * 40 for i in range(SECRETS)},
                                 source="json")
        env = {**os.environ, "KEYLEDGER_DB": str(db), "ENCRYPTION_MASTER_PASSWORD": PASSWORD,
               "KEYLEDGER_STATE_DIR": str(Path(tmp) / "state"), "NO_COLOR": "1"}
        only = [arg for i in range(10) for arg in ("--only", f"S{i:05}")]
        run = [*keyledger_command(), "run", *only, "--", "true"]
        export = [*keyledger_command(), "secrets", "export", *only]
        rows = [
            summary("`true` alone", [timed(["true"], env) for _ in range(REPEAT)]),
            summary("`keyledger run` (10 secrets) -- true", [timed(run, env) for _ in range(REPEAT)]),
            summary("`keyledger secrets export` (10 secrets)",
                    [timed(export, env) for _ in range(REPEAT)]),
        ]
        with Ledger.open(db, PASSWORD, seen=None) as ledger:
            ledger.set_read_auditing(True, reason="bench")
        rows.append(summary("`keyledger run` (10 secrets), read auditing on",
                            [timed(run, env) for _ in range(REPEAT)]))
        latency = follow_latency(db, {k: v for k, v in env.items()
                                      if k != "ENCRYPTION_MASTER_PASSWORD"})
        rows.append(summary("`audit log --follow`: commit to printed line", latency))
    print(f"machine: {machine()}; {SECRETS} secrets, {REPEAT} runs each")
    print("| measurement | median | best |")
    print("|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
