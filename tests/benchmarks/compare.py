"""Compare two checkouts of keyledger on this machine, in the same minutes.

    python tests/benchmarks/compare.py OLD_DIR NEW_DIR [SECRETS]
    python tests/benchmarks/compare.py --reads OLD_DIR NEW_DIR [SECRETS]

This machine's speed drifts by up to 2x over an hour, so figures from different runs of
`make bench` cannot show what a change bought. This runs the same steps for both
checkouts, interleaved as new, old, old, new, each step a cold CLI process, and prints
both runs of each per step. The read commands keep the best of 3 cold starts. Both
checkouts run with this interpreter and its installed dependencies; ``git worktree add
OLD_DIR COMMIT`` makes an old one.

``--reads`` times only the cold starts, which is what a change to the read path needs,
in a fraction of the time at 1,000,000 secrets: the old checkout imports the secrets
once, the new one gets a copy of that ledger (and upgrades it, untimed, if its format is
newer), then each read command runs on each, interleaved old, new, new, old, best of 3.
``COMPARE_BEST=N`` keeps the best of N instead, ``COMPARE_ROUNDS=R`` repeats the
interleaving R times: on a machine whose speed wanders within minutes, more of both
make the comparison steadier. The last line gives each step's best over every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bench

READS = {"info": ["info", "--json"], "report": ["report", "--json"],
         "secrets get": None, "health-check": ["health-check", "--json"]}


def run(root: Path, db: Path, *args: str) -> float:
    """Seconds for one cold ``keyledger`` process of the checkout at ``root``."""
    # The executable's entry point: cli.launch, or cli.app in checkouts older than it.
    entry = "cli.launch" if (root / "cli" / "launch.py").exists() else "cli.app"
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from {entry} import main; main()"
    return bench.run_cli(db, *args, command=[sys.executable, "-c", code])[0]


def steps(root: Path, db: Path, source: Path, size: int) -> dict[str, float]:
    for leftover in db.parent.glob(f"{db.name}*"):
        leftover.unlink()
    run(root, db, "init")
    timed = {"secrets import": run(root, db, "secrets", "import", str(source), "--json")}
    run(root, db, "rotate", "--yes")
    timed["migrate"] = run(root, db, "migrate", "--yes", "--json")
    for step, args in READS.items():
        args = args or ["secrets", "get", bench.name_for(size // 2)]
        timed[f"{step} (best of 3)"] = min(run(root, db, *args) for _ in range(3))
    timed["audit verify"] = run(root, db, "audit", "verify", "--json")
    timed["rebuild-projections"] = run(root, db, "rebuild-projections", "--json")
    return timed


def print_table(results: dict[str, dict[str, list[float]]], size: int, old: Path, new: Path,
                *, digits: int) -> None:
    """Both checkouts' runs of each step, as a Markdown table."""
    print(f"{size:,} secrets; old = {old}, new = {new}; seconds, two runs each\n")
    print("| step | old | new |")
    print("|---|---:|---:|")
    for step, runs in results["old"].items():
        shown = [", ".join(f"{s:.{digits}f}" for s in r) for r in (runs, results["new"][step])]
        print(f"| {step} | {shown[0]} | {shown[1]} |")


def read_step_args(size: int) -> dict[str, list[str]]:
    return {step: args or ["secrets", "get", bench.name_for(size // 2)]
            for step, args in READS.items()}


def run_library_get(root: Path, db: Path, name: str) -> float:
    """Seconds for a cold Python process that opens the ledger and reads one value."""
    code = (f"import os, sys; sys.path.insert(0, {str(root)!r}); from ledger import Ledger; "
            f"ledger = Ledger.open({str(db)!r}, os.environ['ENCRYPTION_MASTER_PASSWORD']); "
            f"print(len(ledger.get({name!r}).value)); ledger.close()")
    return bench.run_cli(db, command=[sys.executable, "-c", code])[0]


def compare_reads(old: Path, new: Path, size: int) -> None:
    results: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory(prefix="keyledger-compare-") as tmp:
        source, old_db, new_db = (Path(tmp) / n for n in ("values.json", "old.db", "new.db"))
        bench.write_values(source, size)
        run(old, old_db, "init")
        run(old, old_db, "secrets", "import", str(source), "--json")
        run(old, old_db, "info", "--json")  # leaves the file checkpointed and closed
        shutil.copyfile(old_db, new_db)
        upgrade = run(new, new_db, "info", "--json")
        run(new, new_db, "secrets", "get", bench.name_for(0))  # unlock: upgrades once
        print(f"[setup] done; the new checkout's first open took {upgrade:.1f} s",
              file=sys.stderr, flush=True)
        tries = int(os.environ.get("COMPARE_BEST", "3"))
        order = (("old", old, old_db), ("new", new, new_db),
                 ("new", new, new_db), ("old", old, old_db))
        for name, root, db in order * int(os.environ.get("COMPARE_ROUNDS", "1")):
            for step, args in read_step_args(size).items():
                best = min(run(root, db, *args) for _ in range(tries))
                results[name].setdefault(f"{step} (best of {tries})", []).append(best)
            best = min(run_library_get(root, db, bench.name_for(size // 2)) for _ in range(tries))
            results[name].setdefault(f"library Ledger.open + get (best of {tries})", []).append(best)
    print_table(results, size, old, new, digits=3)
    print("\nbest over every run:", "; ".join(
        f"{step}: {min(runs):.3f} -> {min(results['new'][step]):.3f} s "
        f"({min(results['new'][step]) / min(runs) - 1:+.0%})"
        for step, runs in results["old"].items()))


def compile_checkouts(*roots: Path) -> None:
    """Byte-compile both checkouts first, as an installed package is (and as `make bench`
    does): with ``PYTHONDONTWRITEBYTECODE`` set, each cold process would otherwise compile
    every module it imports, which costs the larger checkout more."""
    for root in roots:
        subprocess.run([sys.executable, "-m", "compileall", "-q", "ledger", "projections", "cli"],
                       cwd=root, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--reads":
        if len(sys.argv) not in (4, 5):
            raise SystemExit(__doc__)
        compile_checkouts(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve())
        compare_reads(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve(),
                      int(sys.argv[4]) if len(sys.argv) == 5 else 100_000)
        return
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    old, new = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    compile_checkouts(old, new)
    size = int(sys.argv[3]) if len(sys.argv) == 4 else 100_000
    results: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory(prefix="keyledger-compare-") as tmp:
        source = Path(tmp) / "values.json"
        bench.write_values(source, size)
        for name, root in (("new", new), ("old", old), ("old", old), ("new", new)):
            for step, seconds in steps(root, Path(tmp) / f"{name}.db", source, size).items():
                results[name].setdefault(step, []).append(seconds)
            print(f"[{name}] done", file=sys.stderr, flush=True)
    print_table(results, size, old, new, digits=2)


if __name__ == "__main__":
    main()
