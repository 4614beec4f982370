"""`audit verify` catches rows edited, deleted, inserted, reordered, rewritten or cut off,
on both backends (the forger as in `forgery_support`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Backend
from forgery_support import Target, duplicate, rebuild_heads, rehash_from, rows, run_sql
from hypothesis import given
from hypothesis import strategies as st

from ledger import IntegrityError, Ledger
from ledger import events as ev
from ledger.chain import event_hash
from ledger.events import NewEvent
from ledger.integrity import VerifyReport, check_chain, verify_ledger
from ledger.locations import open_recorder
from ledger.signing import Anchor, read_anchor, write_anchor
from ledger.testing import create_test_ledger

COLUMNS = ["stream", "stream_rev", "type", "payload", "occurred_at", "actor", "origin", "prev_hash", "hash"]


def build(path: Target) -> int:
    with create_test_ledger(path, "pw") as ledger:
        for i in range(6):
            ledger.set(f"s{i}", f"v{i}")
        ledger.rotate()
        ledger.migrate(batch_size=2)
        return ledger.recorder.head()[0]


@pytest.fixture
def template(backend: Backend, tmp_path: Path) -> tuple[Target, int, Path]:
    """One ledger of a few dozen events and an anchor of its head, copied per example."""
    path = backend.target
    top = build(path)
    anchor = tmp_path / "l.anchor"
    with open_recorder(path) as recorder:
        report = verify_ledger(recorder)
        assert report.latest_checkpoint is not None and report.public_key is not None
        write_anchor(anchor, Anchor(report.latest_checkpoint, report.public_key))
    return path, top, anchor


def tamper(path: Target, sql: list[tuple[str, tuple[object, ...]]]) -> None:
    """Run ``sql`` as someone with write access who lifted the append-only triggers (and
    put them back)."""
    run_sql(path, *sql)


def verdict(path: Target, anchor: Path | None = None, pubkey: str | None = None) -> VerifyReport:
    with open_recorder(path) as recorder:
        return verify_ledger(recorder, anchor=None if anchor is None else read_anchor(anchor),
                             pinned_key=pubkey)


TAMPERINGS = st.one_of(
    st.tuples(st.just("edit"), st.integers(1, 10_000), st.sampled_from(COLUMNS)),
    st.tuples(st.just("delete"), st.integers(1, 10_000), st.just("")),
    st.tuples(st.just("insert"), st.integers(1, 10_000), st.just("")),
    st.tuples(st.just("swap"), st.integers(1, 10_000), st.just("")),
    st.tuples(st.just("rewrite"), st.integers(1, 10_000), st.sampled_from(["keep", "drop"])),
    st.tuples(st.just("truncate"), st.integers(1, 10_000), st.sampled_from(["events", "both"])),
)


@given(TAMPERINGS)
def test_any_tampering_is_detected(template: tuple[Target, int, Path], backend: Backend,
                                   change: tuple[str, int, str]) -> None:
    """Editing any column, deleting, inserting, swapping, rewriting with recomputed hashes, or
    cutting the tail (checked against an anchor of the head) always fails verification."""
    source, top, anchor = template
    kind, pick, detail = change
    path = duplicate(source, backend.fresh("work.db"))
    try:
        assert verdict(path, anchor).ok
        seq = 1 + pick % (top - 1)
        if kind == "edit":
            value = "0" if detail == "stream_rev" else "tampered"
            tamper(path, [(f"UPDATE events SET {detail} = ? WHERE seq = ?", (value, seq))])
        elif kind == "delete":
            tamper(path, [("DELETE FROM events WHERE seq = ?", (seq,))])
        elif kind == "insert":
            tamper(path, [
                ("UPDATE events SET seq = -seq - 1 WHERE seq >= ?", (seq,)),
                ("UPDATE events SET seq = -seq WHERE seq < 0", ()),
                ("INSERT INTO events SELECT ?, 'forged', 1, type, schema_version, payload, occurred_at,"
                 " actor, origin, prev_hash, hash FROM events WHERE seq = ?", (seq, seq + 1)),
            ])
        elif kind == "swap":
            tamper(path, [
                ("UPDATE events SET seq = -1 WHERE seq = ?", (seq,)),
                ("UPDATE events SET seq = ? WHERE seq = ?", (seq, seq + 1)),
                ("UPDATE events SET seq = ? WHERE seq = -1", (seq + 1,)),
            ])
        elif kind == "rewrite":  # a consistent forged chain; "drop" also hides the checkpoints
            tamper(path, [("UPDATE events SET actor = 'forger' WHERE seq = ?", (seq,))]
                   + ([("DELETE FROM checkpoints WHERE seq >= ?", (seq,))] if detail == "drop" else []))
            rehash_from(path, seq)
        else:
            tamper(path, [("DELETE FROM events WHERE seq > ?", (seq,))]
                   + ([("DELETE FROM checkpoints WHERE seq > ?", (seq,))] if detail == "both" else []))
        report = verdict(path, anchor)
        assert not report.ok
        # A rewrite with recomputed hashes is placed after the last checkpoint that still
        # matches: at or before the row changed.
        assert report.first_bad_seq is not None and report.first_bad_seq <= seq + 1
        if kind in ("edit", "delete", "insert", "swap"):  # the chain alone already tells
            assert not verdict(path).ok
    finally:
        if backend.name == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_a_cut_tail_verifies_by_itself_but_not_against_an_anchor(
        template: tuple[Target, int, Path]) -> None:
    """Cutting events and checkpoints back to an earlier checkpoint leaves a self-consistent
    ledger; only the anchor kept elsewhere shows the cut, naming the first missing seq."""
    path, _, anchor = template
    with open_recorder(path) as recorder:
        earlier = [row.seq for row in recorder.checkpoints()][-2]
    tamper(path, [("DELETE FROM events WHERE seq > ?", (earlier,)),
                  ("DELETE FROM checkpoints WHERE seq > ?", (earlier,))])
    rebuild_heads(path)  # the streams and the tree put back as they were at that checkpoint
    with open_recorder(path) as recorder:
        assert check_chain(recorder).ok
    assert verdict(path).ok
    report = verdict(path, anchor)
    assert not report.ok and report.first_bad_seq == earlier + 1
    assert any("truncated or rolled back" in p for p in report.problems)


def test_a_ledger_rewritten_wholesale_is_caught_by_the_pinned_key(
        template: tuple[Target, int, Path], backend: Backend) -> None:
    """A forger who builds a whole new ledger has a new signing key: it verifies alone, but
    not with the original public key pinned, nor against the original's anchor."""
    source, _, anchor = template
    original_key = read_anchor(anchor).public_key
    forged = backend.fresh("forged.db")
    build(forged)
    assert verdict(forged).ok
    pinned = verdict(forged, pubkey=original_key)
    assert not pinned.ok and pinned.first_bad_seq == 1
    anchored = verdict(forged, anchor)
    assert not anchored.ok and any("another key" in p or "belongs to ledger" in p
                                   for p in anchored.problems)
    assert verdict(source, anchor, original_key).ok


def test_events_appended_behind_keyledgers_back_are_never_signed_over(backend: Backend) -> None:
    """An event written straight into the file carries no checkpoint: verify names it, and
    the next write through keyledger refuses rather than vouch for it with a signature."""
    path = backend.target
    with create_test_ledger(path, "pw") as ledger:
        ledger.set("a", "1")
        top = ledger.recorder.head()[0]
        ledger.recorder.append(
            [NewEvent(ev.secret_stream("a"), 2, ev.SecretDeleted(name="a"))],
            actor="intruder", occurred_at="2026-01-01T00:00:00.000000Z",
        )
        report = verify_ledger(ledger.recorder)  # type: ignore[arg-type]
        assert not report.ok and report.first_bad_seq == top + 1
        with pytest.raises(IntegrityError, match="not covered by a valid signed checkpoint"):
            ledger.set("b", "2")
        assert ledger.recorder.head()[0] == top + 1


def test_a_forged_checkpoint_signature_fails(template: tuple[Target, int, Path]) -> None:
    """A checkpoint whose signature was altered fails: the latest always, older ones with
    ``all_signatures``."""
    path, top, _ = template
    with open_recorder(path) as recorder:
        first = next(recorder.checkpoints()).seq
    tamper(path, [("UPDATE checkpoints SET signature = ? WHERE seq IN (?, ?)",
                   (bytes(64), first, top))])
    report = verdict(path)
    assert not report.ok and report.first_bad_seq == top
    with open_recorder(path) as recorder:
        full = verify_ledger(recorder, all_signatures=True)
    assert full.first_bad_seq == first


@pytest.mark.parametrize("where", ["first half", "second half"])
def test_the_split_check_finds_a_break_in_either_half(
    template: tuple[Target, int, Path], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """With the chain split between this process and a forked one (as for long ledgers),
    an edit in either half is found and named, and an intact chain still passes."""
    import ledger.integrity as integrity

    monkeypatch.setattr(integrity, "PARALLEL_MIN_EVENTS", 4)
    path, top, _ = template
    assert verdict(path).chain.ok
    seq = 3 if where == "first half" else top - 2
    tamper(path, [("UPDATE events SET actor = 'tampered' WHERE seq = ?", (seq,))])
    report = verdict(path)
    assert not report.chain.ok and report.chain.first_bad_seq == seq


def _forge(path: Target, stream: str, rev: int, type_name: str, payload: str) -> tuple[int, str]:
    """Append one event row as a forger who knows the chain's recipe: correct seq, link and
    hash, inserted straight into the ledger. Returns its seq and hash."""
    seq, prev_hash, at, origin = rows(
        path, "SELECT seq, hash, occurred_at, origin FROM events ORDER BY seq DESC LIMIT 1")[0]
    seq += 1
    digest = event_hash(seq, prev_hash, stream, rev, type_name, 1, at, "forger", origin, payload)
    run_sql(path,
            ("INSERT INTO events VALUES (?, ?, ?, ?, 1, ?, ?, 'forger', ?, ?, ?)",
             (seq, stream, rev, type_name, payload, at, origin, prev_hash, digest)),
            ("INSERT INTO streams (stream, revision, head_seq) VALUES (?, ?, ?) ON CONFLICT "
             "(stream) DO UPDATE SET revision = excluded.revision, head_seq = excluded.head_seq",
             (stream, rev, seq)))
    return seq, digest


def test_a_forged_event_with_a_forged_checkpoint_is_never_signed_over(backend: Backend) -> None:
    """An event slipped in with a chain-correct hash and a checkpoint row of its own (a bad
    signature) fails verify, and keyledger refuses to sign the next append over it."""
    path = backend.target
    with create_test_ledger(path, "pw") as ledger:
        ledger.set("a", "1")
        top = ledger.recorder.head()[0]
    seq, head_hash = _forge(path, ev.secret_stream("a"), 2, "SecretDeleted", '{"name":"a"}')
    run_sql(path, ("INSERT INTO checkpoints (seq, head_hash, signed_at, signature) "
                   "VALUES (?, ?, 'x', ?)", (seq, head_hash, bytes(64))))
    assert not verdict(path).ok
    # Unlocking already proves the tail (the keyring is read through it), so the ledger
    # refuses before any write is attempted.
    with pytest.raises(IntegrityError, match="not covered by a valid signed checkpoint"):
        Ledger.open(path, "pw")
    with open_recorder(path) as recorder:
        assert recorder.head()[0] == top + 1


@pytest.mark.parametrize("seq", [0, -5])
def test_a_checkpoint_row_forged_below_the_first_event_fails_verify(backend: Backend,
                                                                     seq: int) -> None:
    """The checkpoints are read by key a page at a time; a row forged at seq 0 or below
    (no event there, a bad signature) must still be read, and fail `audit verify`."""
    path = backend.target
    with create_test_ledger(path, "pw") as ledger:
        ledger.set("a", "1")
    assert verdict(path).ok
    run_sql(path, ("INSERT INTO checkpoints (seq, head_hash, signed_at, signature) "
                   "VALUES (?, ?, 'x', ?)", (seq, "0" * 64, bytes(64))))
    assert not verdict(path).ok


def test_a_second_signing_key_is_never_trusted(backend: Backend, tmp_path: Path) -> None:
    """A forger who appends their own SigningKeyCreated and signs a checkpoint with that key
    still fails verification, and restore refuses a copy carrying it."""
    from ledger.backup import restore
    from ledger.signing import SigningKey

    path = backend.target
    with create_test_ledger(path, "pw") as ledger:
        ledger.set("a", "1")
        top = ledger.recorder.head()[0]
        ledger_id = ledger.recorder.read_meta().ledger_id
        rev = ledger.recorder.stream_head(ev.LEDGER_STREAM).stream_rev  # type: ignore[union-attr]
    forged = duplicate(path, backend.fresh("forged.db"))
    key = SigningKey.generate()
    payload = ev.canonical_json({"algorithm": "Ed25519", "public_key": key.public_key})
    seq, head_hash = _forge(forged, ev.LEDGER_STREAM, rev + 1, "SigningKeyCreated", payload)
    assert seq == top + 1
    at = "2026-01-01T00:00:00.000000Z"
    run_sql(forged, ("INSERT INTO checkpoints (seq, head_hash, signed_at, signature) "
                     "VALUES (?, ?, ?, ?)",
                     (seq, head_hash, at, key.sign(ledger_id, seq, head_hash, at))))
    report = verdict(forged)
    assert not report.ok and report.first_bad_seq == top + 1
    assert any("second signing key" in p for p in report.problems)
    carried = Path(forged) if backend.name == "sqlite" else tmp_path / "forged-backup.db"
    if backend.name != "sqlite":  # the copy a restore reads is a file: the server's backup
        with open_recorder(forged) as recorder:
            recorder.backup_to(carried)
    with pytest.raises(IntegrityError, match="does not verify"):
        restore(carried, path, "pw")


def test_a_garbage_recorded_key_is_a_fault_not_a_crash(backend: Backend) -> None:
    """A recorded public key that is not Ed25519 makes verification fail with a named
    problem, never an exception."""
    path = backend.target
    build(path)
    tamper(path, [("UPDATE events SET payload = ? WHERE type = 'SigningKeyCreated'",
                   ('{"algorithm":"Ed25519","public_key":"ed25519:AAAA"}',))])
    report = verdict(path)
    assert not report.ok and any("not an Ed25519" in p for p in report.problems)


@pytest.mark.parametrize("field, value", [
    ("ledger_id", "\ud800"), ("ledger_id", "not hex"), ("head", "x" * 64),
    ("signed_at", "yesterday"), ("seq", -1), ("seq", True), ("signature", "!!"),
    ("public_key", "ed25519:short"),
])
def test_a_malformed_anchor_is_one_clean_error(template: tuple[Target, int, Path], tmp_path: Path,
                                               field: str, value: object) -> None:
    """Each malformed anchor field is refused as 'not a keyledger anchor' (or not a key),
    and the CLI says so in one line with exit 2, never a traceback."""
    import json

    from typer.testing import CliRunner

    from cli.app import app
    from ledger import InvalidInputError

    source, _, anchor = template
    data = json.loads(anchor.read_text())
    data[field] = value
    bad = tmp_path / "bad.anchor"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InvalidInputError):
        read_anchor(bad)
    result = CliRunner().invoke(app, ["--db", str(source), "audit", "verify", "--anchor", str(bad), "--json"])
    assert (result.exit_code == 2 and result.exception is None) or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
