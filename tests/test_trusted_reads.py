"""Without the password, a forger who can write the ledger file cannot make keyledger serve
any value but the last one written, nor decide anything on facts they changed.

Each test tampers with a closed ledger as `forgery_support` does (the strongest forger
also recomputes the hash chain and the heads map) and checks that every read and write
either gives the truth or refuses with an IntegrityError naming the tampering. The tests
run on both backends: on PostgreSQL the forger is the server's superuser, whose session
skips every trigger. What is SQLite's alone (ledgers of earlier formats, which exist only
as files) runs on SQLite.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing, suppress
from pathlib import Path

import pytest
from conftest import Backend, vector_copy
from forgery_support import (
    CONSTRAINT_ERRORS,
    DATABASE_ERRORS,
    Target,
    duplicate,
    edit,
    forge_everything,
    head_seq,
    rebuild_heads,
    rebuild_tree,
    rehash_from,
    rows,
    run_sql,
    seqs_of,
)
from hypothesis import given
from hypothesis import strategies as st
from tamper_support import contents

from ledger import IntegrityError, Ledger, heads
from ledger import events as ev
from ledger.errors import KeyledgerError, UnknownSecretError
from ledger.session import Session
from ledger.testing import create_test_ledger

PASSWORD = "correct horse battery staple"


def make(path: Target) -> None:
    """db_password written twice, api_key once then deleted, stripe_key once."""
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("db_password", "old-value")
        ledger.set("db_password", "new-value")
        ledger.set("api_key", "gone")
        ledger.delete("api_key")
        ledger.set("stripe_key", "sk_live")


TRUTH = {"db_password": "new-value", "api_key": None, "stripe_key": "sk_live"}


def outcome(path: Target, name: str) -> str | None:
    """What keyledger serves for ``name``: the value, None for no secret, or 'refused'."""
    try:
        with Ledger.open(path, PASSWORD) as ledger:
            return ledger.get(name).value
    except UnknownSecretError:
        return None
    except IntegrityError:
        return "refused"


def write_outcome(path: Target) -> str:
    try:
        with Ledger.open(path, PASSWORD) as ledger:
            ledger.set("db_password", "third")
    except IntegrityError:
        return "refused"
    return "written"


@pytest.fixture
def ledger_file(backend: Backend) -> str:
    """The ledger :func:`make` writes, on each backend."""
    make(backend.target)
    return backend.target


def test_an_untouched_ledger_serves_the_last_values(ledger_file: str) -> None:
    """The baseline the attacks are measured against: every read gives the last write."""
    assert {name: outcome(ledger_file, name) for name in TRUTH} == TRUTH


def test_a_moved_streams_row_is_refused_by_get_and_by_writes(ledger_file: str) -> None:
    """One UPDATE of streams.head_seq (no trigger dropped) no longer changes what get serves:
    the streams row no longer proves against the signed heads root."""
    old = seqs_of(ledger_file, "secret:db_password")[0]
    edit(ledger_file, ("UPDATE streams SET head_seq = ?, revision = 1 WHERE stream = ?",
                       (old, "secret:db_password")))
    assert outcome(ledger_file, "db_password") == "refused"
    assert write_outcome(ledger_file) == "refused"


def test_a_moved_streams_row_with_the_tree_rebuilt_is_still_refused(ledger_file: str) -> None:
    """Recomputing the whole heads tree for the edited row gives a root nobody signed."""
    old = seqs_of(ledger_file, "secret:db_password")[0]
    run_sql(ledger_file, ("DELETE FROM events WHERE seq = ?",
                          (seqs_of(ledger_file, "secret:db_password")[1],)))
    rehash_from(ledger_file, old)
    rebuild_heads(ledger_file)
    assert outcome(ledger_file, "db_password") == "refused"


def test_an_old_write_replayed_as_the_newest_event_is_refused(ledger_file: str) -> None:
    """A genuine old SecretWritten copied to the tail, chain and heads recomputed and the
    last checkpoint moved onto it: the signature does not cover it."""
    first = rows(ledger_file,
                 "SELECT stream, type, schema_version, payload, occurred_at, actor, origin "
                 "FROM events WHERE stream = 'secret:db_password' ORDER BY stream_rev LIMIT 1")[0]
    top = rows(ledger_file, "SELECT max(seq) FROM events")[0][0]
    run_sql(ledger_file, (
        "INSERT INTO events (seq, stream, stream_rev, type, schema_version, payload, "
        "occurred_at, actor, origin, prev_hash, hash) VALUES (?, ?, 3, ?, ?, ?, ?, ?, ?, '', '')",
        (top + 1, *first)))
    forge_everything(ledger_file, top + 1)
    assert outcome(ledger_file, "db_password") == "refused"
    assert write_outcome(ledger_file) == "refused"


def test_a_changed_scheme_or_key_version_is_refused(ledger_file: str) -> None:
    """The head event's payload edited (scheme to the old system's, another key version),
    with or without the chain and heads redone: the head no longer matches what was signed."""
    seq = head_seq(ledger_file, "secret:stripe_key")
    run_sql(ledger_file, ("UPDATE events SET payload = replace(replace(payload, "
                          "'\"scheme\":\"bound-v1\"', '\"scheme\":\"seed\"'), '\"key_version\":1', "
                          "'\"key_version\":7') WHERE seq = ?", (seq,)))
    assert outcome(ledger_file, "stripe_key") == "refused"
    forge_everything(ledger_file, seq)
    assert outcome(ledger_file, "stripe_key") == "refused"


def test_swapped_stream_revisions_are_refused(ledger_file: str) -> None:
    """The old and new values of a secret swap revisions, everything recomputed."""
    first, second = seqs_of(ledger_file, "secret:db_password")
    run_sql(ledger_file,
            ("UPDATE events SET stream_rev = 99 WHERE seq = ?", (first,)),
            ("UPDATE events SET stream_rev = 1 WHERE seq = ?", (second,)),
            ("UPDATE events SET stream_rev = 2 WHERE seq = ?", (first,)))
    assert outcome(ledger_file, "db_password") == "refused"
    forge_everything(ledger_file, first)
    assert outcome(ledger_file, "db_password") == "refused"


def test_a_deleted_secret_deleted_event_does_not_bring_the_secret_back(ledger_file: str) -> None:
    """Removing the SecretDeleted event, with the streams row pointed back, or everything
    recomputed: get refuses instead of serving the deleted value."""
    gone = seqs_of(ledger_file, "secret:api_key")[-1]
    run_sql(ledger_file, ("DELETE FROM events WHERE seq = ?", (gone,)),
            ("UPDATE streams SET head_seq = head_seq - 1, revision = 1 WHERE stream = ?",
             ("secret:api_key",)))
    assert outcome(ledger_file, "api_key") == "refused"
    forge_everything(ledger_file, gone)
    assert outcome(ledger_file, "api_key") == "refused"


def test_an_edited_tree_node_or_signed_root_is_refused(ledger_file: str, backend: Backend) -> None:
    """A node of the heads tree, or the root a checkpoint records, changed: every proof
    through it fails, and a root that is not the signed one fails the signature."""
    copy = duplicate(ledger_file, backend.fresh("copy.db"))
    edit(ledger_file, ("UPDATE heads_tree SET digest = ? WHERE node IN (2, 3)", (bytes(32),)))
    assert outcome(ledger_file, "db_password") == "refused"
    run_sql(copy, "UPDATE checkpoints SET heads_root = '" + "0" * 64 + "' "
                  "WHERE seq = (SELECT max(seq) FROM checkpoints)")
    assert outcome(copy, "db_password") == "refused"


def test_an_edited_sibling_node_fails_audit_verify_and_rebuild_projections_repairs_it(
        ledger_file: str) -> None:
    """A tree node off every stream's own row, but on db_password's proof path, edited:
    reads refuse; audit verify must say so too (it compares every stored node, not only
    the root the rows give), and rebuild-projections rewrites the tree from the signed
    streams rows, after which reads serve again (attack pass 3, F2)."""
    from cli_support import error_line, invoke

    node = heads.node_of_bucket(heads.bucket_of("secret:db_password"))
    while node > 3:
        node >>= 1
    sibling = node ^ 1  # the top-level subtree db_password is not in
    edit(ledger_file, ("INSERT INTO heads_tree (node, digest) VALUES (?, ?) "
                       "ON CONFLICT (node) DO UPDATE SET digest = excluded.digest",
                       (sibling, bytes(32))))
    assert outcome(ledger_file, "db_password") == "refused"
    verified = invoke(ledger_file, "audit", "verify", password=None)
    assert verified.exit_code != 0
    assert f"heads tree node {sibling}" in verified.output
    repaired = invoke(ledger_file, "rebuild-projections", "--json", password=None)
    assert repaired.exit_code == 0, error_line(repaired)
    assert '"heads_tree_rewritten": true' in repaired.output
    assert {name: outcome(ledger_file, name) for name in TRUTH} == TRUTH
    assert invoke(ledger_file, "audit", "verify", password=None).exit_code == 0
    again = invoke(ledger_file, "rebuild-projections", "--json", password=None)
    assert '"heads_tree_rewritten": false' in again.output


def test_rebuild_projections_never_rewrites_the_tree_over_streams_rows_that_do_not_prove(
        ledger_file: str) -> None:
    """The repair builds on the streams rows only once they produce the signed root: an
    edited row is refused, and the tree is left as it was."""
    from cli_support import error_line, invoke

    before = rows(ledger_file, "SELECT node, digest FROM heads_tree ORDER BY node")
    edit(ledger_file, "UPDATE streams SET head_seq = head_seq - 1 "
                      "WHERE stream = 'secret:db_password'")
    rebuilt = invoke(ledger_file, "rebuild-projections", password=None)
    assert rebuilt.exit_code != 0
    assert "streams' heads do not match" in error_line(rebuilt)
    assert rows(ledger_file, "SELECT node, digest FROM heads_tree ORDER BY node") == before


def test_an_edited_keyring_event_is_refused(ledger_file: str) -> None:
    """The keyring is folded from every one of its events: a middle one edited (recomputed
    or not) fails the stream's running digest."""
    first = seqs_of(ledger_file, ev.KEYRING_STREAM)[0]
    run_sql(ledger_file, ("UPDATE events SET payload = replace(payload, 'generated', 'seed') "
                          "WHERE seq = ?", (first,)))
    rehash_from(ledger_file, first)
    with pytest.raises(IntegrityError):
        Ledger.open(ledger_file, PASSWORD)


def test_an_absent_secret_is_proven_absent(ledger_file: str) -> None:
    """A name with no events gets UnknownSecretError from a proof of absence, and a forged
    streams row for it (no event behind it) is refused, not served."""
    assert outcome(ledger_file, "never_written") is None
    edit(ledger_file, ("INSERT INTO streams (stream, revision, head_seq, head_hash, digest, bucket) "
                       "SELECT 'secret:never_written', revision, head_seq, head_hash, digest, ? "
                       "FROM streams WHERE stream = 'secret:stripe_key'",
                       (heads.bucket_of("secret:never_written"),)))
    assert outcome(ledger_file, "never_written") == "refused"


def test_a_streams_row_moved_into_another_bucket_is_refused_where_either_bucket_is_read(
        ledger_file: str) -> None:
    """The bucket column is only an index: a row given another stream's bucket changes
    the digest of both buckets, so a read of a secret in either refuses (the proof checks
    no row's bucket against its name on its own)."""
    victim = heads.bucket_of("secret:stripe_key")
    assert victim != heads.bucket_of("secret:db_password")
    edit(ledger_file, ("UPDATE streams SET bucket = ? WHERE stream = 'secret:db_password'",
                       (victim,)))
    assert outcome(ledger_file, "stripe_key") == "refused"  # its bucket gained a row
    assert outcome(ledger_file, "db_password") == "refused"  # its own bucket lost one


# -- the invariant, over random tampering --------------------------------------------------


def tamper(work: Target, table: str, column: str, key: str, target: object, other: object,
           kind: str) -> None:
    if kind == "edit":
        value = rows(work, f"SELECT {column} FROM {table} WHERE {key} = ?", (target,))[0][0]
        changed = (value + 1 if isinstance(value, int) else
                   bytes(32) if isinstance(value, bytes | memoryview) else f"{value or ''}x")
        run_sql(work, (f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (changed, target)))
    elif kind == "delete":
        run_sql(work, (f"DELETE FROM {table} WHERE {key} = ?", (target,)))
    else:
        run_sql(work, (f"UPDATE {table} SET {column} = (SELECT {column} FROM {table} "
                       f"WHERE {key} = ?) WHERE {key} = ?", (other, target)))

TABLES = {
    "events": ["stream", "stream_rev", "type", "payload", "prev_hash", "hash"],
    "streams": ["revision", "head_seq", "head_hash", "digest", "bucket"],
    "heads_tree": ["digest"],
    "checkpoints": ["seq", "head_hash", "signature", "heads_root"],
}


@st.composite
def tampering(draw: st.DrawFn) -> tuple[str, str, int, str, bool]:
    table = draw(st.sampled_from(sorted(TABLES)))
    column = draw(st.sampled_from(TABLES[table]))
    kind = draw(st.sampled_from(["edit", "delete", "swap"]))
    return table, column, draw(st.integers(0, 10_000)), kind, draw(st.booleans())


@given(change=tampering())
def test_no_tampering_makes_get_serve_a_value_that_is_not_the_last(
    ledger_file: str, backend: Backend, change: tuple[str, str, int, str, bool],
) -> None:
    """Any column of any row of the events, streams, heads tree or checkpoints edited, a row
    deleted or two swapped, with or without the chain and heads recomputed afterwards:
    every secret reads as its last write, reads as absent only if it is, or is refused."""
    table, column, pick, kind, forge = change
    work = duplicate(ledger_file, backend.fresh(f"work.{pick}.{kind}.db"))
    try:
        key = {"events": "seq", "streams": "stream", "heads_tree": "node",
               "checkpoints": "seq"}[table]
        keys = [r[0] for r in rows(work, f"SELECT {key} FROM {table} ORDER BY {key}")]
        target = keys[pick % len(keys)]
        other = keys[(pick + 1) % len(keys)]
        # A change the table's own constraints refuse leaves the ledger as it was.
        with suppress(*CONSTRAINT_ERRORS):
            tamper(work, table, column, key, target, other, kind)
        if forge and table == "events":
            with suppress(*DATABASE_ERRORS, TypeError, ValueError):
                forge_everything(work, 1)
        for name, truth in TRUTH.items():
            try:
                got = outcome(work, name)
            except KeyledgerError:
                got = "refused"
            assert got in (truth, "refused"), (name, got)
    finally:
        if backend.name == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{work}{suffix}").unlink(missing_ok=True)


# -- decisions on all secrets: retire, destroy, migrate ---------------------------------------


def rotated_and_migrated(path: Target) -> None:
    """Version 2 current, every secret migrated to it but db_password, which a forger will
    try to hide from retire and destroy by pointing its streams row at an older event."""
    make(path)
    with Ledger.open(path, PASSWORD) as ledger:
        ledger.rotate()


def test_an_edited_streams_row_cannot_make_migrate_skip_a_secret(backend: Backend) -> None:
    """The attack that shipped: one UPDATE of streams made migrate pass a secret by, after
    which its key could be retired and destroyed. Now migrate proves every row first."""
    path = backend.target
    rotated_and_migrated(path)
    edit(path, "UPDATE streams SET head_seq = (SELECT max(seq) FROM events "
               "WHERE stream = 'keyring') WHERE stream = 'secret:db_password'")
    with Ledger.open(path, PASSWORD) as ledger, pytest.raises(IntegrityError, match="signed"):
        ledger.migrate()


def test_retire_and_destroy_count_live_secrets_from_proven_heads(backend: Backend) -> None:
    """db_password's streams row aimed at another secret's SecretDeleted (leaf copied whole,
    tree rebuilt or not): retire, report and migrate refuse on the tampering instead of
    counting a live secret as gone."""
    path = backend.target
    rotated_and_migrated(path)
    with Ledger.open(path, PASSWORD) as ledger:
        result = ledger.migrate()
        assert result.migrated == 2
        ledger.set("db_password", "on-v1-again")  # written under v2: fine
    # The forger makes the streams say db_password is deleted (its streams row aimed at
    # api_key's SecretDeleted), tree and all rebuilt: retire must still see the truth.
    edit(path, "UPDATE streams SET (revision, head_seq, head_hash, digest) = (SELECT revision, "
               "head_seq, head_hash, digest FROM streams WHERE stream = 'secret:api_key') "
               "WHERE stream = 'secret:db_password'")
    # The tree left alone: the keyring still proves, so the ledger opens, but every
    # decision over all secrets proves every row first and refuses.
    with Ledger.open(path, PASSWORD) as ledger:
        for decide in (lambda: ledger.retire(1), lambda: ledger.report(),
                       lambda: ledger.migrate()):
            with pytest.raises(IntegrityError, match="signed checkpoint"):
                decide()
    # The tree rebuilt over the edited row: its root is not the signed one, so nothing
    # that unlocks proceeds at all.
    rebuild_tree(path)
    with pytest.raises(IntegrityError, match="signed checkpoint"):
        Ledger.open(path, PASSWORD)


def assert_upgraded(ledger: Ledger) -> None:
    """An earlier format's vector, just opened: now of the current format, one
    LedgerUpgraded event on top, and db_password's value as the old keyledger wrote it."""
    assert ledger.recorder.format_version == 5
    upgraded = ledger.recorder.stream_head(ev.LEDGER_STREAM)
    assert upgraded is not None and upgraded.type == "LedgerUpgraded"
    assert ledger.get("db_password").value == "new-value"


def test_a_format_3_ledger_is_upgraded_on_unlock_and_then_protected(tmp_path: Path) -> None:
    """A ledger written by the previous keyledger (format 3, no heads map) opens: its whole
    chain is verified, the map is built and signed in one LedgerUpgraded event, the values
    read as before, and an edited streams row is refused from then on."""
    path = vector_copy("ledger-format3.db", tmp_path / "old.db")
    with Ledger.open(path, PASSWORD) as ledger:
        assert_upgraded(ledger)
        assert ledger.get("stripe_key").value == "sk_live"
        assert ledger.report().needing_migration == 0
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
        conn.execute("UPDATE streams SET head_seq = 1 WHERE stream = 'secret:stripe_key'")
        conn.commit()
    assert outcome(path, "stripe_key") == "refused"


def test_an_untouched_format_3_ledger_upgrades_through_the_cli_as_an_upgrade_not_an_edit(
        tmp_path: Path) -> None:
    """The previous keyledger's file, as it left it (read models of its layout, schema
    cookie its own): the first commands rebuild the read models as an upgrade, never with
    the note that someone edited the file, and health-check passes (attack pass 3, F3:
    the vector had been copied with SQLite's backup API, which moves the cookie)."""
    from cli_support import error_line, invoke

    path = vector_copy("ledger-format3.db", tmp_path / "old.db")
    for args in (("secrets", "list"), ("secrets", "get", "db_password"), ("health-check",)):
        result = invoke(path, *args, password=PASSWORD)
        assert result.exit_code == 0, (args, error_line(result))
        assert "edited" not in result.output and "disagreed" not in result.output, args
    assert invoke(path, "secrets", "get", "db_password", password=PASSWORD).stdout == "new-value\n"


def test_a_format_4_ledger_is_upgraded_to_sign_a_tally(tmp_path: Path) -> None:
    """The last keyledger's file (format 4: a heads map, no tally) opens: the whole chain
    and the heads map are checked, the tally is folded from the verified events and signed
    in one LedgerUpgraded event, the values read as before."""
    from ledger import tally as tally_rules

    path = vector_copy("ledger-format4.db", tmp_path / "old.db")
    with Ledger.open(path, PASSWORD) as ledger:
        assert_upgraded(ledger)
        assert ledger.get("late_key").value == "on v2"
        tally = ledger.tally()
        assert dict(tally.live) == {"2/bound-v1": 3}
        # written under 1: db_password twice, api_key, stripe_key; under 2: two migrated, late_key
        assert dict(tally.encryptions) == {1: 4, 2: 3}
        events = ((s.stream, s.decode()) for s in ledger.recorder.read_events())
        assert tally_rules.fold(events) == tally


def test_a_format_4_ledger_with_an_edited_streams_row_is_not_upgraded(tmp_path: Path) -> None:
    """The upgrade signs a tally folded from the events on top of the old heads map: an
    edited streams row is refused first, and the file is left exactly as it was."""
    path = vector_copy("ledger-format4.db", tmp_path / "old.db")
    run_sql(path, "UPDATE streams SET head_seq = head_seq - 1 WHERE stream = 'secret:late_key'")
    before = path.read_bytes()
    with pytest.raises(IntegrityError):
        Ledger.open(path, PASSWORD)
    assert path.read_bytes() == before


def test_a_tampered_format_3_ledger_is_not_upgraded(tmp_path: Path) -> None:
    """The upgrade signs a root over the heads, so it first walks the whole chain: a format-3
    ledger with an event edited in the middle is refused and left exactly as it was."""
    path = vector_copy("ledger-format3.db", tmp_path / "old.db")
    run_sql(path, "UPDATE events SET actor = 'mallory' WHERE seq = 5")
    before = path.read_bytes()
    with pytest.raises(IntegrityError, match="seq 5"):
        Ledger.open(path, PASSWORD)
    assert path.read_bytes() == before


def test_the_unbound_scheme_needs_a_key_version_from_the_old_system() -> None:
    """A seed-scheme value is decrypted only under a version the keyring says was imported
    from the old system; keyledger's own write and migrate events never carry it."""
    from ledger.domain import KeyringState, SecretState, require_scheme_allowed, secret_state

    keyring = KeyringState()
    keyring.apply(ev.KeyVersionCreated(version=1, fingerprint="0" * 32, origin="generated"),
                  "2026-01-01T00:00:00.000000Z")
    keyring.apply(ev.KeyVersionCreated(version=90, fingerprint="1" * 32, origin="seed-import"),
                  "2026-01-01T00:00:00.000000Z")
    require_scheme_allowed(keyring, SecretState("a", 1, False, 90, "x", "seed"))
    require_scheme_allowed(keyring, SecretState("a", 1, False, 1, "x", "bound-v1"))
    with pytest.raises(IntegrityError, match="did not come from the old system"):
        require_scheme_allowed(keyring, SecretState("a", 1, False, 1, "x", "seed"))
    with pytest.raises(IntegrityError, match="never writes"):
        secret_state("a", 2, ev.SecretWritten(name="a", key_version=90, ciphertext="x",
                                              scheme="seed"))


def _rewrite_payload(path: Target, seq: int, payload: str) -> None:
    """The forger's edit: one event's payload, its stored hash kept (nothing walks the
    chain to notice), the append-only trigger dropped and put back by run_sql."""
    run_sql(path, ("UPDATE events SET payload = ? WHERE seq = ?", (payload, seq)))


def test_policy_set_and_full_rotation_if_due_decide_on_the_proven_policy(backend: Backend) -> None:
    """A forged policy head could make `full-rotation --if-due` skip a due rotation and
    `policy set` sign the forged limit into a new event (attack pass, finding 3)."""
    from datetime import timedelta

    from ledger.policy import proven_policy, set_policy

    path = backend.target
    with create_test_ledger(path, PASSWORD) as ledger:
        set_policy(ledger.session, max_encryptions=2)
        ledger.set("a", "1")
    seq = seqs_of(path, ev.POLICY_STREAM)[-1]
    payload = _payload_at(path, seq)
    _rewrite_payload(path, seq, payload.replace('"max_encryptions":2', '"max_encryptions":4000000000'))
    with Ledger.open(path, PASSWORD) as ledger:
        with pytest.raises(IntegrityError):
            proven_policy(ledger.session)
        top = ledger.recorder.head()[0]
        with pytest.raises(IntegrityError):
            set_policy(ledger.session, max_age=timedelta(days=30))
        assert ledger.recorder.head()[0] == top  # nothing signed over the forgery


def test_read_auditing_is_switched_on_the_proven_setting(backend: Backend) -> None:
    """A head forged to say 'on' made `audit reads on` append nothing, leaving reads
    unrecorded once the row was put back."""
    path = backend.target
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set_read_auditing(True)
        ledger.set_read_auditing(False)
        ledger.set("a", "1")  # the setting is not the last event, whose hash unlock checks
    seq = seqs_of(path, ev.AUDIT_SETTINGS_STREAM)[-1]
    payload = _payload_at(path, seq)
    _rewrite_payload(path, seq, payload.replace('"enabled":false', '"enabled":true'))
    with Ledger.open(path, PASSWORD) as ledger, pytest.raises(IntegrityError):
        ledger.set_read_auditing(True)


# -- decisions on heads read in batches (attack pass, findings 1 and 2) -------------------


def _payload_at(path: Target, seq: int) -> str:
    return str(rows(path, "SELECT payload FROM events WHERE seq = ?", (seq,))[0][0])


def _migrating_ledger(path: Target) -> tuple[int, int]:
    """zz_api_key written twice under version 1 (old, then new), on_v1 once, then a
    rotation; the seqs of zz's two writes."""
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.import_values({f"a{i:03}": "filler" for i in range(30)}, source="json")
        ledger.set("on_v1", "still on one")
        ledger.set("zz_api_key", "OLD-compromised-value")
        ledger.set("zz_api_key", "NEW-current-value")
        ledger.rotate()
    old, new = seqs_of(path, ev.secret_stream("zz_api_key"))
    return old, new


@pytest.mark.parametrize("worker", [False, True], ids=["in-process", "worker"])
def test_a_head_swapped_after_migrates_first_proof_is_never_re_encrypted(
        backend: Backend, monkeypatch: pytest.MonkeyPatch, worker: bool) -> None:
    """The forger waits for migrate's first proof of every head, then copies the older
    ciphertext into the head row (its stored hash kept): the batch that reads it must
    refuse, not re-encrypt the old value and sign it."""
    from ledger import migration

    path = backend.target
    old, new = _migrating_ledger(path)
    if worker:
        monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)
    proven = Session.prove_streams

    def then_forge(self: Session, prefix: str = ev.SECRET_STREAM_PREFIX) -> int:
        counted = proven(self, prefix)
        _rewrite_payload(path, new, _payload_at(path, old))
        return counted

    monkeypatch.setattr(Session, "prove_streams", then_forge)
    original = _payload_at(path, new)
    with Ledger.open(path, PASSWORD) as ledger, pytest.raises(IntegrityError):
        ledger.migrate(batch_size=8)
    monkeypatch.undo()
    _rewrite_payload(path, new, original)  # the forger covers their tracks
    with Ledger.open(path, PASSWORD) as ledger:
        assert ledger.get("zz_api_key").value == "NEW-current-value"
        ledger.migrate()
        assert ledger.get("zz_api_key").value == "NEW-current-value"
        assert ledger.secret("zz_api_key").key_version == 2


@pytest.mark.parametrize("worker", [False, True], ids=["in-process", "worker"])
def test_a_head_made_to_look_current_after_the_first_proof_is_not_skipped(
        backend: Backend, monkeypatch: pytest.MonkeyPatch, worker: bool) -> None:
    """A skip is a decision too: a head edited to claim the current version is refused."""
    from ledger import migration

    path = backend.target
    _migrating_ledger(path)
    if worker:
        monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)
    target = seqs_of(path, ev.secret_stream("on_v1"))[-1]
    forged = _payload_at(path, target).replace('"key_version":1', '"key_version":2')
    assert forged != _payload_at(path, target)
    proven = Session.prove_streams

    def then_forge(self: Session, prefix: str = ev.SECRET_STREAM_PREFIX) -> int:
        counted = proven(self, prefix)
        _rewrite_payload(path, target, forged)
        return counted

    monkeypatch.setattr(Session, "prove_streams", then_forge)
    with Ledger.open(path, PASSWORD) as ledger, pytest.raises(IntegrityError):
        ledger.migrate(batch_size=8)


@pytest.mark.parametrize("worker", [False, True], ids=["in-process", "worker"])
def test_a_secret_whose_head_event_is_gone_is_not_skipped_unnoticed(
        backend: Backend, monkeypatch: pytest.MonkeyPatch, worker: bool) -> None:
    """migrate proves the streams rows up front and each head event in the batch that
    acts on it; a head event deleted from under its (intact) streams row drops out of the
    pages, and the run must say so rather than finish as if the secret were migrated."""
    from ledger import migration

    path = backend.target
    _migrating_ledger(path)
    if worker:
        monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)
    gone = seqs_of(path, ev.secret_stream("on_v1"))[-1]
    run_sql(path, ("DELETE FROM events WHERE seq = ?", (gone,)))
    with Ledger.open(path, PASSWORD) as ledger:
        with pytest.raises(IntegrityError, match="visited 31 of the 32 secret streams"):
            ledger.migrate(batch_size=8)
        # No run was recorded as complete, and the secret was not written.
        assert ev.secret_stream("on_v1") not in {
            e.stream for e in ledger.recorder.read_events(gone)}
        assert not [e for e in ledger.recorder.read_events() if e.type == "MigrationCompleted"]


def _forge_head_as(path: Target, name: str, payload_event: ev.DomainEvent, stream: str,
                   stream_rev: int) -> None:
    """The head event under ``name``'s (intact) streams row rewritten as ``payload_event``
    of ``stream`` at ``stream_rev``."""
    type_name, schema_version, payload = ev.to_payload(payload_event)
    run_sql(path, ("UPDATE events SET stream = ?, stream_rev = ?, type = ?, schema_version = ?, "
                   "payload = ? WHERE seq = ?",
                   (stream, stream_rev, type_name, schema_version, payload,
                    seqs_of(path, ev.secret_stream(name))[-1])))


def _forty_secrets(path: Target) -> None:
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.import_values({f"s{i:02}": f"v{i}" for i in range(1, 41)}, source="json")
        ledger.rotate()


@pytest.mark.parametrize("worker", [False, True], ids=["in-process", "worker"])
@pytest.mark.parametrize("jump", ["back-and-forth", "to-the-start"])
def test_a_head_event_naming_another_stream_never_steers_migrates_pages(
        backend: Backend, monkeypatch: pytest.MonkeyPatch, worker: bool, jump: str) -> None:
    """Attack pass (issue 16), finding 1: the pages went on from the name the head *event*
    carried. Forged names made migrate skip real secrets with the count still matching
    (and finish "success"), or return to a page for ever. The event must be its row's."""
    from ledger import migration

    path = backend.target
    _forty_secrets(path)
    if worker:
        monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)
    forged = {"back-and-forth": {"s16": "s12a", "s28": "s32a"}, "to-the-start": {"s08": "s00"}}
    for name, fake in forged[jump].items():
        _forge_head_as(path, name, ev.SecretDeleted(name=fake), ev.secret_stream(fake), 1)
    with Ledger.open(path, PASSWORD) as ledger:
        with pytest.raises(IntegrityError, match="not match the latest signed checkpoint"):
            ledger.migrate(batch_size=8)
        assert not [e for e in ledger.recorder.read_events() if e.type == "MigrationCompleted"]


@pytest.mark.parametrize("worker", [False, True], ids=["in-process", "worker"])
def test_a_head_that_is_no_secrets_event_is_refused_as_forged(
        backend: Backend, monkeypatch: pytest.MonkeyPatch, worker: bool) -> None:
    """Finding 3: a secret's head rewritten as a keyring event (same stream and revision)
    raised a bare TypeError from migrate; it is refused as forged."""
    from ledger import migration

    path = backend.target
    _forty_secrets(path)
    if worker:
        monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)
    stream = ev.secret_stream("s20")
    revision = len(seqs_of(path, stream))
    _forge_head_as(path, "s20", ev.KeyRotated(from_version=1, to_version=2, reason="x"),
                   stream, revision)
    with Ledger.open(path, PASSWORD) as ledger, pytest.raises(IntegrityError):
        ledger.migrate(batch_size=8)


def test_a_planted_streams_row_for_a_new_name_is_refused_not_signed_in_place(
        backend: Backend) -> None:
    """Finding 2: a streams row planted for a name not yet written, under the wrong bucket
    (so no proof reads it), was kept by the first write of that name and signed; the name
    was unreadable from then on. The write is refused and the name stays writable."""
    path = backend.target
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("a", "1")
        ledger.set("b", "2")
    stream = ev.secret_stream("fresh")
    wrong = (heads.bucket_of(stream) + 1) % heads.BUCKETS
    edit(path, ("INSERT INTO streams (stream, revision, head_seq, head_hash, digest, bucket) "
                "SELECT ?, 0, head_seq, head_hash, digest, ? FROM streams WHERE stream = ?",
                (stream, wrong, ev.secret_stream("a"))))
    with Ledger.open(path, PASSWORD) as ledger:
        top = ledger.recorder.head()[0]
        with pytest.raises(IntegrityError):
            ledger.set("fresh", "value")
        assert ledger.recorder.head()[0] == top
    run_sql(path, ("DELETE FROM streams WHERE stream = ?", (stream,)))  # the row taken out
    with Ledger.open(path, PASSWORD) as ledger:
        ledger.set("fresh", "value")
        assert ledger.get("fresh").value == "value"


@pytest.mark.parametrize("forged_type", ["SecretDeleted", "live"])
def test_import_decides_skip_or_write_on_proven_heads(backend: Backend, forged_type: str) -> None:
    """A live head forged as deleted made `secrets import` overwrite it; a deleted one
    forged as live made it skip the name. Both are refused, and nothing is written."""
    path = backend.target
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.set("s1", "the live value")
        ledger.set("s2", "soon gone")
        ledger.delete("s2")
        ledger.set("later", "x")  # so neither head is the last event
    if forged_type == "SecretDeleted":
        seq, name, payload = seqs_of(path, ev.secret_stream("s1"))[-1], "s1", '{"name":"s1"}'
    else:
        seq, name = seqs_of(path, ev.secret_stream("s2"))[-1], "s2"
        payload = _payload_at(path, seqs_of(path, ev.secret_stream("s2"))[0])
        run_sql(path, ("UPDATE events SET type = 'SecretWritten' WHERE seq = ?", (seq,)))
    if forged_type == "SecretDeleted":
        run_sql(path, ("UPDATE events SET type = 'SecretDeleted' WHERE seq = ?", (seq,)))
    _rewrite_payload(path, seq, payload)
    with Ledger.open(path, PASSWORD) as ledger:
        top = ledger.recorder.head()[0]
        with pytest.raises(IntegrityError):
            ledger.import_values({name: "stale value from an old env file"}, source="json")
        assert ledger.recorder.head()[0] == top


def test_a_deleted_streams_row_is_found_by_audit_verify_verify_backup_and_deep_health(
        backend: Backend, tmp_path: Path) -> None:
    """A backup with one streams row deleted verified as intact, decrypted '2 of 2' and
    was restored, leaving a ledger every read refused (attack pass 2, F3)."""
    from cli_support import PASSWORD as CLI_PASSWORD
    from cli_support import document, invoke

    from ledger.backup import restore, take_backup, verify_backup

    live = backend.target
    with create_test_ledger(live, CLI_PASSWORD) as ledger:
        for name in ("a", "b", "c"):
            ledger.set(name, name * 3)
        backup = tmp_path / "bak.db"
        take_backup(ledger.session, backup)
    edit(backup, "DELETE FROM streams WHERE stream = 'secret:a'")
    verdict = invoke(live, "audit", "verify", "--json", env={"KEYLEDGER_DB": str(backup)})
    assert verdict.exit_code == 1
    assert any("map of stream heads" in p for p in document(verdict)["problems"])
    assert not verify_backup(backup, None).ok
    with pytest.raises(IntegrityError):
        verify_backup(backup, CLI_PASSWORD)
    before = contents(live)
    with pytest.raises(IntegrityError):
        restore(backup, live, CLI_PASSWORD, force=True)
    assert contents(live) == before
    # The same edit in the live ledger: migrate refused it, audit verify said intact.
    edit(live, "DELETE FROM streams WHERE stream = 'secret:b'")
    assert invoke(live, "audit", "verify").exit_code == 1
    deep = invoke(live, "health-check", "--deep", "--json")
    assert deep.exit_code == 1
    checks = {c["name"]: c for c in document(deep)["checks"]}
    assert checks["ledger"]["status"] == "fail"
