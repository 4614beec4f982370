"""Invariants under random sequences of operations (Hypothesis stateful testing)."""

from __future__ import annotations

import base64
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ledger import Ledger, VersionError, migration
from ledger import tally as tally_rules
from ledger.testing import TEST_KDF_ITERATIONS, StepClock, create_test_ledger, read_all
from projections import ReadModels, projector

NAMES = st.sampled_from(["db_password", "api_key", "smtp", "clé", "a/b:c", "x"])
VALUES = st.text(max_size=40)
PASSWORDS = st.text(min_size=1, max_size=12)

PROJECTION_TABLES = ("proj_key_versions", "proj_keyring", "proj_secrets", "proj_migration_runs")


def dump_read_models(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in PROJECTION_TABLES}


class LedgerMachine(RuleBasedStateMachine):
    """A model of the ledger: a dict of the last value written to each live secret."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="keyledger-prop-"))
        self.path = self.dir / "ledger.db"
        self.password = "initial password"
        self.runner = projector()
        self.ledger: Ledger = create_test_ledger(
            self.path, self.password, clock=StepClock(), projector=self.runner
        )
        self.model: dict[str, str] = {}
        self.history: list[tuple[str, str, str, str]] = []  # name, token, scheme, plaintext
        self.destroyed: set[int] = set()

    @rule(name=NAMES, value=VALUES)
    def set_secret(self, name: str, value: str) -> None:
        state = self.ledger.set(name, value)
        assert state.ciphertext is not None and state.scheme is not None
        self.history.append((name, state.ciphertext, state.scheme, value))
        self.model[name] = value

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete_secret(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.model)))
        self.ledger.delete(name)
        del self.model[name]

    @rule(version=st.none() | st.integers(1, 255), reason=st.none() | st.text(max_size=10))
    def rotate(self, version: int | None, reason: str | None) -> None:
        keyring = self.ledger.keyring()
        before, used = keyring.current, set(keyring.versions)
        regular_left = max((v for v in used if v <= 20), default=0) < 20
        if (version is None and not regular_left) or version in used:
            with pytest.raises(VersionError):
                self.ledger.rotate(version, reason=reason)
            assert self.ledger.keyring().current == before
            return
        result = self.ledger.rotate(version, reason=reason)
        assert result.from_version == before and result.to_version not in used
        assert self.ledger.keyring().current == result.to_version

    @rule(batch_size=st.integers(min_value=1, max_value=5), worker=st.booleans())
    def migrate(self, batch_size: int, worker: bool) -> None:
        threshold = migration.PIPELINE_MIN_SECRETS
        migration.PIPELINE_MIN_SECRETS = 0 if worker else 10**9  # a forked worker, or not
        try:
            result = self.ledger.migrate(batch_size=batch_size)
        finally:
            migration.PIPELINE_MIN_SECRETS = threshold
        assert result.failed == 0
        assert result.total == len(self.model)

    @rule(data=st.data())
    def retire_and_destroy_an_empty_old_version(self, data: st.DataObject) -> None:
        keyring = self.ledger.keyring()
        in_use = set(self.ledger.report().distribution)
        candidates = sorted(v for v in keyring.versions
                            if v != keyring.current and v not in in_use and v not in self.destroyed)
        if not candidates:
            return
        version = data.draw(st.sampled_from(candidates))
        self.ledger.retire(version)
        assert self.ledger.destroy(version).status == "destroyed"
        self.destroyed.add(version)

    @rule(new_password=PASSWORDS)
    def rekey_master(self, new_password: str) -> None:
        self.ledger.rekey_master(new_password, kdf_iterations=TEST_KDF_ITERATIONS, _allow_weak_kdf=True)
        self.password = new_password

    @rule()
    def reopen(self) -> None:
        self.ledger.close()
        self.ledger = Ledger.open(self.path, self.password, projector=self.runner)

    @invariant()
    def every_live_secret_reads_back_its_last_value(self) -> None:
        assert read_all(self.ledger) == self.model

    @invariant()
    def every_ciphertext_ever_written_decrypts_unless_its_key_was_destroyed(self) -> None:
        for name, token, scheme, plaintext in self.history:
            if int(base64.b64decode(token)[0]) in self.destroyed:
                with pytest.raises(VersionError, match="destroyed"):
                    self.ledger.open_ciphertext(name, token, scheme)
            else:
                assert self.ledger.open_ciphertext(name, token, scheme) == plaintext

    @invariant()
    def report_matches_the_model(self) -> None:
        views = ReadModels(self.ledger.recorder, self.runner)
        report = views.report()
        assert report.total_secrets == len(self.model)
        assert report.current_version == self.ledger.keyring().current
        folded = self.ledger.report()  # from the events, not the read models
        assert (folded.total_secrets, folded.current_version, folded.needing_migration,
                folded.distribution) == (report.total_secrets, report.current_version,
                                         report.needing_migration, report.distribution)

    @invariant()
    def the_signed_tally_matches_the_read_models(self) -> None:
        """What report and due check the read models against: the tally the checkpoint
        signs, moved by each append, equals the read models' figures."""
        views = ReadModels(self.ledger.recorder, self.runner)
        report, tally = views.report(), self.ledger.tally()
        assert (tally.total, tally.distribution, tally.needing_migration(report.current_version)
                ) == (report.total_secrets, report.distribution, report.needing_migration)
        assert {v.version: v.encryptions for v in views.keyring().versions if v.encryptions} == dict(
            tally.encryptions)

    def teardown(self) -> None:
        try:
            events = ((s.stream, s.decode()) for s in self.ledger.recorder.read_events())
            assert tally_rules.fold(events) == self.ledger.tally(), "the signed tally drifted"
            conn = self.ledger.recorder.conn
            incremental = dump_read_models(conn)
            ReadModels(self.ledger.recorder, self.runner).rebuild()
            assert dump_read_models(conn) == incremental, "incremental read models differ from a rebuild"
            seqs = [e.seq for e in self.ledger.recorder.read_events()]
            assert seqs == list(range(1, len(seqs) + 1))
        finally:
            self.ledger.close()
            shutil.rmtree(self.dir, ignore_errors=True)


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
test_ledger_invariants = LedgerMachine.TestCase


def test_events_hold_no_plaintext_or_key_material(tmp_path: Path) -> None:
    """No event payload contains a value written, the password, or a data key."""
    password = "pw-that-must-not-leak"
    with create_test_ledger(tmp_path / "l.db", password) as ledger:
        ledger.set("a", "plaintext-marker-123")
        ledger.rotate()
        ledger.migrate()
        ledger.rekey_master("new-pw-that-must-not-leak")
        payloads = [e.payload for e in ledger.recorder.read_events()]
        keys = [ledger.session.keys.data_key(v).hex() for v in ledger.session.keys.versions()]
    blob = "\n".join(payloads)
    for needle in ("plaintext-marker-123", password, "new-pw-that-must-not-leak", *keys):
        assert needle not in blob
