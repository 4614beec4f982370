"""Checking that the stored ledger is what was appended: SQLite's own checks, the chain,
and the signed checkpoints (:mod:`ledger.signing`)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import pipeline
from ledger.chain import GENESIS_HASH
from ledger.errors import (
    IntegrityError,
    InvalidInputError,
    KeyledgerError,
    LedgerFormatError,
    printable_ascii,
)
from ledger.signing import (
    Anchor,
    Checkpoint,
    CheckpointVerifier,
    parse_public_key,
    recorded_signing_keys,
    recorded_verifier,
    same_key,
    signature_holds,
    wrapped_key_problem,
)
from ledger.store import CheckpointRow, Recorder, TriggerFault


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of a chain check. ``first_bad_seq`` is None when every link held."""

    ok: bool
    events: int
    first_bad_seq: int | None
    head: str
    problems: list[str] = field(default_factory=list)


def check_chain(
    recorder: Recorder, *, tail: int | None = None, sqlite_check: bool = True
) -> ChainReport:
    """Recompute the hash chain and run the store's own check of the file.

    Without ``tail``: every row from seq 1, the full check and a count of the rows (a gap
    shows). With ``tail`` (``health-check``): only the last ``tail`` rows' links, and the
    cheaper quick check unless ``sqlite_check`` is False, so the cost does not grow with
    the ledger. An edited, deleted, inserted or reordered row breaks a link (or the
    gapless seq) at the first row affected. A cut tail does not: only a signed checkpoint
    kept elsewhere can show that.
    """
    problems: list[str] = []
    pragma = "quick_check" if tail is not None else "integrity_check"
    top = recorder.head()[0]
    count = recorder.event_count() if tail is None else top
    start = 0 if tail is None else max(0, top - tail)
    # The worker is forked before the thread starts: a fork while another thread holds
    # SQLite's or Python's locks can leave the worker waiting on them for ever.
    with _later_half(recorder, start, top) as split, ThreadPoolExecutor(1) as thread:
        # The store's own check runs beside the hashing: SQLite leaves Python's lock while it works.
        verdict = (thread.submit(recorder.storage_check, quick=tail is not None)
                   if sqlite_check else None)
        first_bad = _first_bad_link(recorder, start, split)
        if verdict is not None and verdict.result() != "ok":
            problems.insert(0, f"SQLite {pragma}: {verdict.result()}")
    if first_bad is None and count != top:
        first_bad = recorder.first_gap()
    if first_bad is not None:
        problems.append(f"hash chain broken at seq {first_bad}")
    head = recorder.head()[1] if top else GENESIS_HASH
    return ChainReport(not problems, count, first_bad, head, problems)


PARALLEL_MIN_EVENTS = 50_000  # below this a second process costs more than it saves


@dataclasses.dataclass(frozen=True, slots=True)
class _Split:
    """The later half of the chain, from ``middle`` (whose stored hash is ``middle_hash``),
    being checked by a forked worker; ``result`` waits for its answer."""

    middle: int
    middle_hash: str
    result: Callable[[], int | None]


@contextlib.contextmanager
def _later_half(recorder: Recorder, start: int, top: int) -> Iterator[_Split | None]:
    """A long chain is split in two: the later half is checked by a forked worker on the
    other core (:mod:`ledger.pipeline`) from the hash stored at the split, while this
    process checks the first half. None: short, a gap at the split, or no fork here."""
    middle = (start + top) // 2
    at_middle = recorder.event_at(middle) if top - start >= PARALLEL_MIN_EVENTS else None
    later = (recorder.worker_first_broken_link(middle, at_middle.hash)
             if at_middle is not None and pipeline.can_fork() else None)
    if at_middle is None or later is None:
        yield None
        return
    with pipeline.beside(later) as result:
        yield _Split(middle, at_middle.hash, result)


def _first_bad_link(recorder: Recorder, start: int, split: _Split | None) -> int | None:
    """The first broken link past ``start``; with ``split``, a break in the first half
    comes first, then the worker's answer for the later half."""
    prev = recorder.event_at(start)
    prev_hash = prev.hash if prev else GENESIS_HASH
    if split is None:
        return recorder.first_broken_link(start, prev_hash=prev_hash)
    first = recorder.first_broken_link(start, split.middle, prev_hash)
    if first is not None:
        return first
    try:
        return split.result()
    except KeyledgerError:  # the worker could not do its half: do it here
        return recorder.first_broken_link(split.middle, prev_hash=split.middle_hash)


@dataclass(slots=True)
class VerifyReport:
    """The outcome of ``audit verify``: the chain, the signed checkpoints, the anchor, and
    the triggers that keep the tables append-only (``trigger_faults``, also among the
    problems, blaming no seq)."""

    chain: ChainReport
    checkpoints: int = 0
    latest_checkpoint: Checkpoint | None = None
    public_key: str | None = None
    anchor: Anchor | None = None
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    trigger_faults: list[TriggerFault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def events(self) -> int:
        return self.chain.events

    @property
    def head(self) -> str:
        return self.chain.head

    def fault(self, message: str, seq: int | None) -> None:
        self.problems.append(message)
        if seq is not None and (self.first_bad_seq is None or seq < self.first_bad_seq):
            self.first_bad_seq = seq

    def add_trigger_faults(self, faults: Iterable[TriggerFault]) -> None:
        for found in faults:
            self.trigger_faults.append(found)
            self.fault(trigger_problem(found), None)

    @property
    def events_intact(self) -> bool:
        """Whether every problem is a trigger's: the events and checkpoints verify."""
        return len(self.problems) == len(self.trigger_faults)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "events": self.events, "first_bad_seq": self.first_bad_seq,
            "head": self.head, "checkpoints": self.checkpoints,
            "latest_checkpoint": None if self.latest_checkpoint is None
            else self.latest_checkpoint.to_json(),
            "public_key": self.public_key,
            "anchor": None if self.anchor is None else self.anchor.to_json(),
            "trigger_faults": [{"name": f.name, "table": f.table, "fault": f.fault}
                               for f in self.trigger_faults],
            "problems": self.problems,
        }


def verify_ledger(
    recorder: Recorder, *, anchor: Anchor | None = None, pinned_key: str | None = None,
    all_signatures: bool = False,
) -> VerifyReport:
    """Everything ``audit verify`` checks, without the master password.

    - the hash chain from seq 1 and SQLite's ``integrity_check`` (:func:`check_chain`);
    - the signing key the events recorded, against ``pinned_key`` if given, and the shape
      of the wrapped private key in ``meta`` (whether it opens and is that key's private
      half takes the master password: ``health-check`` checks it);
    - every checkpoint's position: it names an event that exists, with the hash it holds
      (a checkpoint past the last event means the tail was cut);
    - the latest checkpoint's signature, which must cover the last event: with an intact
      chain, one valid signature on the head vouches for every event before it. With
      ``all_signatures`` every checkpoint's signature is checked too (~0.25 ms each);
    - the ``anchor``, a checkpoint kept elsewhere: signed by the ledger's key, for this
      ledger, and still matching the event at its seq;
    - the map of stream heads (format 4 on): every streams row, head event and tree node
      proven against the root the latest checkpoint signs, as reads prove a part of it;
    - the triggers on the ledger's tables: the append-only ones present with the SQL
      keyledger creates them with, and no other (:meth:`SQLiteRecorder.trigger_faults`).

    ``first_bad_seq`` is the earliest seq any check blames (a trigger blames none).
    """
    chain = check_chain(recorder)
    report = VerifyReport(chain)
    for problem in chain.problems:
        report.fault(problem, chain.first_bad_seq)
    top = recorder.head()[0]
    ledger_id = recorder.ledger_id()
    report.public_key = _recorded_key(recorder, report.fault)
    signing_key = recorder.wrapped_signing_key()  # None: hidden from this role (an auditor)
    wrapped = None if signing_key is None else wrapped_key_problem(signing_key)
    if wrapped is not None:
        report.fault(wrapped, None)
    key = None if report.public_key is None else parse_public_key(report.public_key)
    if pinned_key is not None:
        pinned = parse_public_key(pinned_key)
        if key is not None and not same_key(key, pinned):
            report.fault("the ledger is signed with another key than the pinned one "
                         f"({report.public_key}): it may have been rewritten wholesale", 1)
        key = pinned
    _check_checkpoints(recorder, report, key, ledger_id, top, all_signatures)
    if anchor is not None:
        report.anchor = anchor
        _check_anchor(recorder, report, anchor, key, ledger_id, top)
    if key is not None and report.ok and recorder.has_heads_map:
        _check_heads_map(recorder, report, key, ledger_id)
    report.add_trigger_faults(recorder.trigger_faults())
    return report


def _check_heads_map(recorder: Recorder, report: VerifyReport, key: Ed25519PublicKey,
                     ledger_id: str) -> None:
    """Every streams row, head event and tree node against the root the latest checkpoint
    signs: what every read and write proves a part of (O(n) in the number of streams).
    Checked once the chain and the signed tail hold, which it builds on."""
    try:
        recorder.heads_map_matches(CheckpointVerifier(key, ledger_id))
    except IntegrityError as exc:
        report.fault(f"the map of stream heads: {exc}", None)


_TRIGGER_FAULTS = {
    "missing": "is missing (dropped behind keyledger's back)",
    "altered": "is not the one keyledger creates (altered behind its back: it may do nothing)",
    "foreign": "is not one keyledger creates (added behind its back: it runs inside "
               "keyledger's own writes)",
}


def trigger_problem(found: TriggerFault) -> str:
    """One line naming a trigger fault; the names are the file's, kept to printable ASCII."""
    return (f"trigger {printable_ascii(found.name)} on {printable_ascii(found.table)} "
            f"{_TRIGGER_FAULTS[found.fault]}")


def trigger_problems(recorder: Recorder) -> list[str]:
    """What is wrong with the triggers on the ledger's tables, one line each (constant time,
    for ``health-check``)."""
    return [trigger_problem(found) for found in recorder.trigger_faults()]


Fault = Callable[[str, int | None], None]  # a problem found, and the seq it blames


def _recorded_key(recorder: Recorder, fault: Fault) -> str | None:
    """The ledger's trusted public key (the first one recorded), or None; every problem
    with the recorded keys goes to ``fault``."""
    try:
        keys = recorded_signing_keys(recorder)
    except LedgerFormatError:
        keys = []
    if not keys:
        fault("the ledger records no signing key", 1)
        return None
    for seq, _ in keys[1:]:
        fault(f"event {seq} records a second signing key; a ledger keeps one for life", seq)
    try:
        parse_public_key(keys[0][1])
    except InvalidInputError:
        fault("the recorded signing key is not an Ed25519 public key", keys[0][0])
        return None
    return keys[0][1]


def _check_checkpoints(
    recorder: Recorder, report: VerifyReport, key: Ed25519PublicKey | None,
    ledger_id: str, top: int, all_signatures: bool,
) -> None:
    last: CheckpointRow | None = None
    matched = 0  # the last checkpoint whose event still holds the signed hash
    for row in recorder.checkpoints():
        report.checkpoints += 1
        if row.event_hash is None:
            report.fault(f"a checkpoint was signed at seq {row.seq} but the ledger ends at "
                         f"seq {top}: events were removed", top + 1)
        elif row.event_hash != row.head_hash:
            # With recomputed hashes the change can be anywhere since the last match.
            report.fault(f"event {row.seq} is not the one its checkpoint signed: events "
                         f"{matched + 1}-{row.seq} were rewritten", matched + 1)
        elif all_signatures and key is not None and not signature_holds(key, _checkpoint(ledger_id, row)):
            report.fault(f"the checkpoint at seq {row.seq} has a bad signature", row.seq)
        else:
            matched = row.seq
        last = row
    if last is None:
        report.fault("the ledger holds no signed checkpoint", 1)
        return
    report.latest_checkpoint = _checkpoint(ledger_id, last)
    if key is not None and not signature_holds(key, report.latest_checkpoint):
        report.fault(f"the latest checkpoint (seq {last.seq}) has a bad signature", last.seq)
    if last.seq < top:
        report.fault(f"events {last.seq + 1}-{top} are covered by no signed checkpoint",
                     last.seq + 1)


def _check_anchor(
    recorder: Recorder, report: VerifyReport, anchor: Anchor,
    key: Ed25519PublicKey | None, ledger_id: str, top: int,
) -> None:
    cp = anchor.checkpoint
    anchor_key = parse_public_key(anchor.public_key)
    if not signature_holds(anchor_key, cp):
        report.fault("the anchor's signature does not hold: the anchor file was altered", None)
        return
    if cp.ledger_id != ledger_id:
        report.fault(f"the anchor belongs to ledger {cp.ledger_id}, not this one ({ledger_id})", 1)
        return
    if key is not None and not same_key(key, anchor_key):
        report.fault("the anchor was signed with another key than the ledger's: "
                     "the ledger may have been rewritten wholesale", 1)
        return
    if cp.seq > top:
        report.fault(f"the anchor vouches for seq {cp.seq} but the ledger ends at seq {top}: "
                     "it was truncated or rolled back", top + 1)
        return
    row = recorder.event_at(cp.seq)
    if row is None or row.hash != cp.head:
        report.fault(f"event {cp.seq} differs from the anchored one: history up to it was "
                     "rewritten", cp.seq)


def _checkpoint(ledger_id: str, row: CheckpointRow) -> Checkpoint:
    return Checkpoint(ledger_id, row.seq, row.head_hash, row.signed_at, row.signature,
                      row.heads_root, row.tally)


def head_signature_problems(recorder: Recorder) -> list[str]:
    """What is wrong with the signature over the ledger's head, cheaply (for ``health-check``):
    the latest checkpoint must cover the last event, hold its hash and be validly signed."""
    top, head = recorder.head()
    problems: list[str] = []
    recorded = _recorded_key(recorder, lambda message, _seq: problems.append(message))
    latest = recorder.latest_checkpoint()
    if latest is None:
        return [*problems, "the ledger holds no signed checkpoint"]
    if latest.seq != top or latest.head_hash != head:
        problems.append(f"the latest signed checkpoint (seq {latest.seq}) does not cover the "
                        f"last event (seq {top})")
    checkpoint = _checkpoint(recorder.ledger_id(), latest)
    if recorded is not None and not signature_holds(parse_public_key(recorded), checkpoint):
        problems.append(f"the latest checkpoint (seq {latest.seq}) has a bad signature")
    return problems


def repair_heads_tree(recorder: Recorder) -> bool:
    """Rewrite the heads tree from the streams rows, once they produce the root the latest
    checkpoint signs under the recorded key; whether a node had to change. False for a
    ledger without a heads map (format 3) or a key to check it with: nothing to repair.

    :raises IntegrityError: the streams rows are not the signed ones: only the events
        can say what they should hold (``audit verify``).
    """
    verifier = recorded_verifier(recorder) if recorder.has_heads_map else None
    return verifier is not None and recorder.rewrite_heads_tree(verifier)
