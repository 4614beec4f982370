"""Checking that the stored ledger is what was appended: SQLite's own checks and the chain."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.chain import GENESIS_HASH, first_broken_link
from ledger.store import SQLiteRecorder


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of a chain check. ``first_bad_seq`` is None when every link held."""

    ok: bool
    events: int
    first_bad_seq: int | None
    head: str
    problems: list[str] = field(default_factory=list)


def check_chain(recorder: SQLiteRecorder, *, tail: int | None = None) -> ChainReport:
    """Recompute the hash chain and run SQLite's integrity check.

    With ``tail`` only the last ``tail`` rows' links are recomputed and SQLite's cheaper
    ``quick_check`` runs (for ``health-check``); without it, every row from seq 1 and the
    full ``integrity_check``. An edited, deleted, inserted or reordered row breaks a link
    (or the gapless seq) at the first row affected. A cut tail does not: only a signed
    checkpoint kept elsewhere can show that.
    """
    conn = recorder.conn
    problems = []
    pragma = "quick_check" if tail is not None else "integrity_check"
    verdict = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
    if verdict != "ok":
        problems.append(f"SQLite {pragma}: {verdict}")
    count, top = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM events").fetchone()
    start = 0 if tail is None else max(0, top - tail)
    prev = conn.execute("SELECT hash FROM events WHERE seq = ?", (start,)).fetchone()
    first_bad = first_broken_link(
        recorder.read_events(start), prev[0] if prev else GENESIS_HASH, start + 1
    )
    if first_bad is None and count != top:
        first_bad = _first_gap(recorder)
    if first_bad is not None:
        problems.append(f"hash chain broken at seq {first_bad}")
    head = recorder.head()[1] if top else GENESIS_HASH
    return ChainReport(not problems, count, first_bad, head, problems)


def _first_gap(recorder: SQLiteRecorder) -> int:
    row = recorder.conn.execute(
        "SELECT min(seq) + 1 FROM events e WHERE NOT EXISTS "
        "(SELECT 1 FROM events n WHERE n.seq = e.seq + 1) AND seq < (SELECT max(seq) FROM events)"
    ).fetchone()
    return int(row[0] or 1)
