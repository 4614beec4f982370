"""SIGKILL a real ``keyledger`` at a random moment, then check that nothing was lost.

``tests/test_crash.py`` runs a few rounds of each command; a longer soak runs from here::

    .venv/bin/python tests/crash_support.py --rounds 200 [--seed 7] [--command migrate]

A round copies a prepared ledger (weak test KDF, so the child starts fast), starts the
command in a child process (password in its environment, stdin closed), kills it with
SIGKILL at a moment drawn from a seeded random, and checks on a copy of what the kill
left: every secret reads back its value under exactly one master password, the hash
chain holds, the read models agree with the events and a rebuild gives the same answers.
It then runs the same command again to completion on the crashed file and checks the
work is done. A failing round names its command, seed and kill time, and prints the
``--replay`` command line that repeats it.

Kill times are drawn around the moments the command commits, measured once per command by
a calibration run that polls the events head; most are counted from the moment the child
opens the ledger file (seen in ``/proc``), since Python's start-up time varies with the
machine's load far more than the work after it. Each round is classed by where the kill
landed: ``before`` the first commit, ``during`` (some commits made, not all) or ``after``
the last one (``exited`` counts the rounds where the command finished before the kill).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from typer.testing import CliRunner

from cli.app import app as cli_app
from ledger import Ledger, SQLiteRecorder, WrongPasswordError
from ledger.crypto import KEK_ITERATIONS
from ledger.testing import child_environment, create_test_ledger, keyledger_command, read_all
from projections import ReadModels, projector

PASSWORD = "crash-harness master password 5a9c"
NEW_PASSWORD = "crash-harness new master password e27b"
DB_NAME = "keyledger.db"
IMPORT_FILE = "import.json"
RUN_TIMEOUT = 120.0
PHASES = ("before", "during", "after")
COMMIT_MARGIN = 0.04  # seconds either side of a commit that the "around the commits" window spans


@dataclass(frozen=True, slots=True)
class Command:
    """A command under test and the ledger it starts from."""

    name: str
    args: tuple[str, ...]
    existing: int  # secrets written before the command runs
    imported: int = 0  # entries in the file ``secrets import`` reads
    rotated: bool = False  # key version 2 is current and most secrets still sit on 1
    multi_commit: bool = False  # commits once per batch, then once to record completion

    @property
    def rekeys(self) -> bool:
        return self.name == "rekey-master"


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("migrate", ("migrate", "--yes", "--batch-size", "10"), existing=500, rotated=True,
                multi_commit=True),
        Command("import", ("secrets", "import", IMPORT_FILE, "--json"), existing=100, imported=500),
        Command("rotate", ("rotate", "--yes", "--reason", "crash harness"), existing=100),
        Command("rekey-master", ("rekey-master", "--yes"), existing=100),
        Command("full-rotation", ("full-rotation", "--yes", "--batch-size", "10"), existing=500,
                rotated=True, multi_commit=True),
        # From 5,000 secrets or entries a forked worker prepares the batches (ledger.pipeline).
        Command("migrate-worker", ("migrate", "--yes", "--batch-size", "500"), existing=5000,
                rotated=True, multi_commit=True),
        Command("import-worker", ("secrets", "import", IMPORT_FILE, "--json"), existing=100,
                imported=5000),
    )
}


keyledger = keyledger_command


def environment(db: Path, command: Command) -> dict[str, str]:
    env = child_environment()
    env.update({"KEYLEDGER_DB": str(db), "ENCRYPTION_MASTER_PASSWORD": PASSWORD,
                "KEYLEDGER_ACTOR": "crash-harness@test", "NO_COLOR": "1",
                # Each round starts from a copy of one template ledger: a host that
                # remembered the last round's checkpoint would call the copy a rollback.
                "KEYLEDGER_STATE_DIR": str(db.parent / "host-state")})
    if command.rekeys:
        env["ENCRYPTION_NEW_MASTER_PASSWORD"] = NEW_PASSWORD
    return env


def value_of(name: str, index: int) -> str:
    """A deterministic test value; some carry non-ASCII text, some are long."""
    if index % 7 == 0:
        return f"pässwörd ✓ {name} {index}"
    if index % 11 == 0:
        return f"{name}-" + "x" * (200 + index % 97)
    return f"value-{name}-{index * 7919 % 100003}"


def make_values(prefix: str, count: int) -> dict[str, str]:
    return {f"{prefix}_{i:05d}": value_of(prefix, i) for i in range(count)}


# -- reading a ledger file -------------------------------------------------------------


def events_head(db: Path) -> tuple[int, str]:
    """``(seq, type)`` of the newest event, read straight from SQLite."""
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT seq, type FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, "") if row is None else (int(row[0]), str(row[1]))


def read_models_behind(db: Path) -> bool:
    """Whether the stored read-model checkpoint is behind the events head."""
    with closing(sqlite3.connect(db)) as conn:
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        try:
            seen = conn.execute("SELECT last_seq FROM proj_checkpoint WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return True
    return seen is None or seen[0] != top


def copy_ledger(source: Path, target: Path) -> None:
    """Copy the ledger file and its WAL (not the -shm index, which SQLite rebuilds)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-journal"):
        src = source.with_name(source.name + suffix)
        if src.exists():
            shutil.copyfile(src, target.with_name(target.name + suffix))


@contextmanager
def unlocked(db: Path, passwords: Iterable[str]) -> Iterator[tuple[Ledger, str]]:
    """The ledger opened with the one password in ``passwords`` that opens it (asserted)."""
    opened: list[tuple[Ledger, str]] = []
    try:
        for password in passwords:
            try:
                opened.append((Ledger.open(db, password), password))
            except WrongPasswordError:
                continue
        assert len(opened) == 1, f"{len(opened)} of the candidate master passwords open the ledger"
        yield opened[0]
    finally:
        for ledger, _ in opened:
            ledger.close()


def describe_difference(found: dict[str, str], expected: dict[str, str]) -> str:
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    changed = sorted(n for n in expected.keys() & found.keys() if expected[n] != found[n])
    return (f"{len(missing)} missing {missing[:3]}, {len(changed)} changed {changed[:3]}, "
            f"{len(extra)} unexpected {extra[:3]}")


# -- the invariants ----------------------------------------------------------------------


@dataclass(slots=True)
class LedgerCheck:
    """What the checks found in one ledger file."""

    values: dict[str, str]
    password: str
    current_version: int | None
    needing_migration: int
    caught_up: bool


def check_ledger(
    db: Path, passwords: Iterable[str], allowed: Iterable[dict[str, str]], *, rebuild: bool,
) -> LedgerCheck:
    """Check ``audit verify`` (chain, signed checkpoints), the values and the read models
    of the ledger at ``db``.

    ``allowed`` lists the sets of values the ledger may hold (an import: without or with
    the file's entries). With ``rebuild`` the read models are also rebuilt from the
    events and must give the same answers.
    """
    verified = CliRunner().invoke(cli_app, ["--db", str(db), "audit", "verify", "--json"])
    assert verified.exit_code == 0, f"audit verify failed: {verified.stdout}"
    with unlocked(db, passwords) as (ledger, password):
        values = read_all(ledger)
        candidates = list(allowed)
        assert values in candidates, "secrets lost or changed: " + "; ".join(
            describe_difference(values, c) for c in candidates
        )
        truth = ledger.report()
        rows = [(i.name, i.key_version, i.revision, i.scheme) for i in ledger.secrets()]
    caught_up = read_models_behind(db)
    with ReadModels.open(db) as views:
        assert views.problems() == [], f"read models disagree: {views.problems()}"
        report = views.report()
        shown = (report.total_secrets, report.current_version, report.needing_migration,
                 report.distribution)
        assert shown == (truth.total_secrets, truth.current_version, truth.needing_migration,
                         truth.distribution), f"report {shown} != events {truth}"
        listed = views.secrets()
        assert [(r.name, r.key_version, r.revision, r.scheme) for r in listed] == rows, (
            "the read models' secrets list differs from the events"
        )
        if rebuild:
            keyring = views.keyring()
            views.rebuild()
            assert views.problems() == [], f"after rebuild: {views.problems()}"
            assert views.report() == report, "a rebuild changed the report"
            assert views.secrets() == listed, "a rebuild changed the secrets list"
            assert views.keyring() == keyring, "a rebuild changed the keyring"
    return LedgerCheck(values, password, truth.current_version, truth.needing_migration, caught_up)


# -- timing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KillPlan:
    """When to kill: ``amount`` seconds after the spawn or after the child opened the
    ledger file (``anchor`` "spawn" or "open"), or after ``amount`` commits ("commits")."""

    anchor: Literal["spawn", "open", "commits"]
    amount: float

    def flag(self) -> str:
        """The soak's command-line option that replays this plan."""
        if self.anchor == "commits":
            return f"--after-commits {int(self.amount)}"
        return f"--{'delay' if self.anchor == 'spawn' else 'after-open'} {self.amount}"


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds from the spawn of a clean run to its opening the ledger, its first and last
    commits, and its exit."""

    opened: float
    first_commit: float
    last_commit: float
    exit: float

    def draw(self, rng: random.Random) -> KillPlan:
        """A kill: mostly around the commits, sometimes during start-up or after them.

        Python's start-up time varies with the machine's load far more than the work after
        it, so most kills are timed from the moment the child opens the ledger.
        """
        roll = rng.random()
        first, last, end = (t - self.opened for t in (self.first_commit, self.last_commit, self.exit))
        if roll < 0.1:
            seconds = rng.uniform(0.2, 0.95) * self.opened
            return KillPlan("spawn", round(seconds, 4))
        if roll < 0.25:
            seconds = rng.uniform(0.0, first)
        elif roll < 0.9:
            seconds = rng.uniform(max(0.0, first - COMMIT_MARGIN), last + COMMIT_MARGIN)
        else:
            seconds = rng.uniform(last, end)
        return KillPlan("open", round(seconds, 4))


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open (Linux ``/proc``)."""
    target = str(path.resolve())
    try:
        return any(os.readlink(entry.path) == target for entry in os.scandir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def wait_until_open(child: subprocess.Popen[bytes], db: Path) -> None:
    """Return once ``child`` has the ledger file open (or has exited)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while child.poll() is None and time.monotonic() < deadline and not has_open(child.pid, db):
        time.sleep(0.001)


def children_of(pid: int) -> list[int]:
    """The running processes whose parent is ``pid`` (from /proc; none where it is absent)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def assert_gone(pids: list[int], timeout: float = 10.0) -> None:
    """A worker must exit soon after the command it served is killed (an exited one may
    linger as a zombie until whoever adopted it reaps it)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state == "Z":
                break
            assert time.monotonic() < deadline, f"worker {pid} outlived the killed command"
            time.sleep(0.05)


def spawn(command: Command, db: Path, workdir: Path) -> subprocess.Popen[bytes]:
    with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
        return subprocess.Popen(
            [*keyledger(), *command.args], cwd=workdir, env=environment(db, command),
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )


def output_of(workdir: Path) -> str:
    return (workdir / "stdout").read_text(errors="replace") + (workdir / "stderr").read_text(
        errors="replace"
    )


def _head_seq(conn: sqlite3.Connection, fallback: int) -> int:
    """The events head's seq, or ``fallback`` while the writer holds the file busy."""
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return fallback


def wait_for_commits(db: Path, child: subprocess.Popen[bytes], commits: int) -> None:
    """Return as soon as the events head of ``db`` has moved ``commits`` times (or the child exited)."""
    with closing(sqlite3.connect(db)) as conn:
        seen = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        deadline = time.monotonic() + RUN_TIMEOUT
        while commits > 0 and child.poll() is None and time.monotonic() < deadline:
            top = _head_seq(conn, seen)
            if top != seen:
                seen = top
                commits -= 1
            else:
                time.sleep(0.001)


def finish(child: subprocess.Popen[bytes], workdir: Path) -> int:
    """Wait for a run that must not be killed; its exit code. No traceback may show."""
    try:
        code = child.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise AssertionError(f"the re-run did not finish within {RUN_TIMEOUT:g}s") from None
    assert "Traceback" not in output_of(workdir), output_of(workdir)
    return code


# -- rounds ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundResult:
    command: str
    seed: int
    killed_at: float  # seconds after the spawn
    phase: str
    exited: bool  # the command finished before the kill
    caught_up: bool  # the read models were behind after the kill and caught up when opened
    seconds: float


class RoundFailed(AssertionError):
    """A round broke an invariant; the message says how to replay it."""


@dataclass(slots=True)
class Template:
    db: Path
    existing: dict[str, str]
    imported: dict[str, str]
    current_version: int | None


@dataclass
class Harness:
    """Prepared ledgers, calibrations and results, kept across rounds in ``root``."""

    root: Path
    keep: bool = False
    results: list[RoundResult] = field(default_factory=list)
    _templates: dict[str, Template] = field(default_factory=dict)
    _timings: dict[str, Timing] = field(default_factory=dict)

    def template(self, command: Command) -> Template:
        if command.name not in self._templates:
            self._templates[command.name] = self._prepare(command)
        return self._templates[command.name]

    def _prepare(self, command: Command) -> Template:
        folder = self.root / "templates" / command.name.replace(" ", "-")
        folder.mkdir(parents=True)
        db = folder / DB_NAME
        existing = make_values("old", command.existing)
        imported = make_values("new", command.imported)
        with create_test_ledger(db, PASSWORD, projector=projector()) as ledger:
            ledger.import_values(existing, source="json")
            if command.rotated:
                ledger.rotate(reason="prepared by the crash harness")
                newer = make_values("newer", 50)
                ledger.import_values(newer, source="json")
                existing.update(newer)
            current = ledger.keyring().current
        (folder / IMPORT_FILE).write_text(json.dumps(imported, ensure_ascii=False), encoding="utf-8")
        return Template(db, existing, imported, current)

    def _workdir(self, command: Command, label: str) -> tuple[Path, Path]:
        template = self.template(command)
        workdir = self.root / f"{command.name.replace(' ', '-')}-{label}"
        if workdir.exists():
            shutil.rmtree(workdir)
        copy_ledger(template.db, workdir / DB_NAME)
        shutil.copyfile(template.db.parent / IMPORT_FILE, workdir / IMPORT_FILE)
        return workdir, workdir / DB_NAME

    def timing(self, command: Command) -> Timing:
        """Measure, once per command, when a clean run commits and exits."""
        if command.name not in self._timings:
            self._timings[command.name] = self._calibrate(command)
        return self._timings[command.name]

    def _calibrate(self, command: Command) -> Timing:
        workdir, db = self._workdir(command, "calibration")
        seen = events_head(db)[0]
        commits: list[float] = []
        with closing(sqlite3.connect(db)) as conn:
            start = time.monotonic()
            child = spawn(command, db, workdir)
            wait_until_open(child, db)
            opened = time.monotonic() - start
            while child.poll() is None:
                top = _head_seq(conn, seen)
                if top != seen:
                    seen = top
                    commits.append(time.monotonic() - start)
                time.sleep(0.001)
            finished = time.monotonic() - start
        assert child.returncode == 0, f"clean {command.name} run failed: {output_of(workdir)}"
        if events_head(db)[0] != seen or not commits:
            commits.append(finished)
        if not self.keep:
            shutil.rmtree(workdir)
        return Timing(min(opened, commits[0]), commits[0], commits[-1], finished)

    def run_round(self, command_name: str, seed: int, kill: KillPlan | None = None) -> RoundResult:
        """One kill and its checks; raises :class:`RoundFailed` naming the seed on any fault.

        ``kill`` says when to kill; by default it is drawn from ``seed`` and the command's
        calibrated timing.
        """
        command = COMMANDS[command_name]
        if kill is None:
            kill = self.timing(command).draw(random.Random(seed))
        try:
            result = self._round(command, seed, kill)
        except Exception as exc:
            replay = (f"python tests/crash_support.py --replay --command {command.name} "
                      f"--seed {seed} {kill.flag()}")
            raise RoundFailed(
                f"crash round failed: command={command.name!r} seed={seed} kill={kill}: "
                f"{type(exc).__name__}: {exc}\n  replay: {replay}"
            ) from exc
        self.results.append(result)
        return result

    def _round(self, command: Command, seed: int, kill: KillPlan) -> RoundResult:
        started = time.monotonic()
        template = self.template(command)
        workdir, db = self._workdir(command, str(seed))
        before = events_head(db)

        child = spawn(command, db, workdir)
        spawned = time.monotonic()
        if kill.anchor == "commits":
            wait_for_commits(db, child, int(kill.amount))
        else:
            if kill.anchor == "open":
                wait_until_open(child, db)
            anchor = time.monotonic()
            time.sleep(max(0.0, kill.amount - (time.monotonic() - anchor)))
        killed_at = time.monotonic() - spawned
        workers = children_of(child.pid)  # migrate's or import's worker process, if any
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)  # a child that exited meanwhile is a zombie: harmless
        code = child.wait(timeout=RUN_TIMEOUT)
        assert_gone(workers)
        exited = code != -signal.SIGKILL
        if exited:
            assert code == 0, f"the command failed on its own (exit {code}): {output_of(workdir)}"

        after = events_head(db)
        if after == before:
            phase = "before"
        elif not command.multi_commit or after[1] == "MigrationCompleted":
            phase = "after"
        else:
            phase = "during"

        # Inspect a copy, so the re-run meets the file exactly as the kill left it; the
        # re-run starts at once and works on the original while the copy is checked.
        crashed = workdir / "inspect" / DB_NAME
        copy_ledger(db, crashed)
        rerun = workdir / "rerun"
        rerun.mkdir()
        shutil.copyfile(workdir / IMPORT_FILE, rerun / IMPORT_FILE)
        second = spawn(command, db, rerun)
        try:
            passwords = (PASSWORD, NEW_PASSWORD) if command.rekeys else (PASSWORD,)
            existing = template.existing
            allowed = [existing, existing | template.imported] if command.imported else [existing]
            found = check_ledger(crashed, passwords, allowed, rebuild=True)
            self._check_phase(command, template, phase, found)
            code = finish(second, rerun)
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        if command.rekeys and found.password == NEW_PASSWORD:
            # Already re-keyed: the same command line now names the old password.
            lines = (rerun / "stderr").read_text().strip().splitlines()
            assert code == 1 and len(lines) == 1 and "password" in lines[0], (code, lines)
        else:
            assert code == 0, f"the re-run failed (exit {code}): {output_of(rerun)}"
        final = (NEW_PASSWORD,) if command.rekeys else (PASSWORD,)
        done = existing | template.imported
        finished = check_ledger(db, final, [done], rebuild=False)
        if command.rekeys:
            with closing(SQLiteRecorder(db)) as recorder:
                meta = recorder.read_meta()
            assert meta.kdf.iterations >= KEK_ITERATIONS, meta.kdf.iterations
        if command.rotated or command.name == "full-rotation":
            assert finished.needing_migration == 0, f"{finished.needing_migration} still need migrating"
        if command.name in ("rotate", "full-rotation"):
            assert template.current_version is not None
            assert finished.current_version is not None
            assert finished.current_version > template.current_version, "the key version did not move on"

        if not self.keep:
            shutil.rmtree(workdir)
        return RoundResult(command.name, seed, round(killed_at, 4), phase, exited, found.caught_up,
                           round(time.monotonic() - started, 3))

    @staticmethod
    def _check_phase(command: Command, template: Template, phase: str, found: LedgerCheck) -> None:
        """What the kill may have left, given where it landed."""
        moved = phase != "before"
        if command.rekeys:
            assert found.password == (NEW_PASSWORD if moved else PASSWORD), (phase, "password")
        if command.imported:
            assert (len(found.values) > len(template.existing)) == moved, (phase, "import")
        if command.name == "rotate":
            assert template.current_version is not None
            assert found.current_version == template.current_version + moved, (
                phase, found.current_version
            )
        if command.multi_commit and phase == "after":
            assert found.needing_migration == 0, found.needing_migration

    def summary(self) -> dict[str, dict[str, int]]:
        """Per command: rounds, kills before/during/after the commits, and self-exits."""
        table: dict[str, dict[str, int]] = {}
        for name in COMMANDS:
            mine = [r for r in self.results if r.command == name]
            counts = Counter(r.phase for r in mine)
            table[name] = {"rounds": len(mine), **{p: counts[p] for p in PHASES},
                           "exited": sum(r.exited for r in mine),
                           "caught_up": sum(r.caught_up for r in mine)}
        return table

    def summary_text(self) -> str:
        lines = [f"{'command':16} {'rounds':>6} {'before':>6} {'during':>6} {'after':>6} "
                 f"{'exited':>6} {'caught_up':>9}"]
        totals: Counter[str] = Counter()
        for name, row in self.summary().items():
            totals.update(row)
            lines.append(f"{name:16} " + " ".join(
                f"{row[k]:>{9 if k == 'caught_up' else 6}}" for k in row))
        lines.append(f"{'total':16} " + " ".join(
            f"{totals[k]:>{9 if k == 'caught_up' else 6}}"
            for k in ("rounds", *PHASES, "exited", "caught_up")))
        return "\n".join(lines)


def round_seed(base: int, index: int) -> int:
    """The seed of round ``index`` of a run started from ``base``."""
    return base * 10_000 + index


def plan(base: int, rounds: int, commands: list[str]) -> list[tuple[str, int]]:
    """Rounds cycle through ``commands``; each has its own seed."""
    return [(commands[i % len(commands)], round_seed(base, i)) for i in range(rounds)]


def main(argv: list[str] | None = None) -> int:
    """The soak: many rounds, a summary, exit 1 if any round failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None,
                        help="base seed (default: random, printed); with --replay, the round's seed")
    parser.add_argument("--replay", action="store_true",
                        help="run the one round --command/--seed name (as a failure prints it)")
    parser.add_argument("--command", action="append", choices=sorted(COMMANDS),
                        help="only this command (repeatable); default: all five")
    parser.add_argument("--delay", type=float, default=None,
                        help="kill this many seconds after the spawn (instead of a time drawn from the seed)")
    parser.add_argument("--after-open", type=float, default=None,
                        help="kill this many seconds after the child opened the ledger")
    parser.add_argument("--after-commits", type=int, default=None,
                        help="kill as soon as this many commits are seen instead of after a delay")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args(argv)
    kill = None
    if args.delay is not None:
        kill = KillPlan("spawn", args.delay)
    elif args.after_open is not None:
        kill = KillPlan("open", args.after_open)
    elif args.after_commits is not None:
        kill = KillPlan("commits", args.after_commits)
    commands = args.command or list(COMMANDS)
    root = Path(tempfile.mkdtemp(prefix="keyledger-crash-"))
    harness = Harness(root, keep=args.keep)
    if args.replay:
        if args.seed is None or len(commands) != 1:
            parser.error("--replay needs --seed and one --command")
        rounds = [(commands[0], args.seed)]
    else:
        base = args.seed if args.seed is not None else random.randrange(1, 10_000)
        print(f"crash soak: {args.rounds} rounds, base seed {base}, work in {root}", flush=True)
        rounds = plan(base, args.rounds, commands)
    failures: list[str] = []
    started = time.monotonic()
    for i, (name, seed) in enumerate(rounds, 1):
        try:
            result = harness.run_round(name, seed, kill)
        except RoundFailed as exc:
            failures.append(str(exc))
            print(f"[{i}/{len(rounds)}] FAILED {exc}", flush=True)
            continue
        print(f"[{i}/{len(rounds)}] {name:14} seed={seed} killed at {result.killed_at:.3f}s "
              f"{result.phase:6}{' (exited)' if result.exited else ''} {result.seconds:.1f}s",
              flush=True)
    print(harness.summary_text())
    print(f"{len(rounds) - len(failures)} passed, {len(failures)} failed "
          f"in {time.monotonic() - started:.0f}s")
    for failure in failures:
        print(failure)
    if not failures and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
