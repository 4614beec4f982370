"""migrate with a forked worker preparing the batches (ledger.pipeline)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, Backend

from ledger import IntegrityError, Ledger, VersionError, migration
from ledger import events as ev
from ledger.copying import copy_ledger
from ledger.integrity import verify_ledger
from ledger.locations import is_server
from ledger.store import HeadRow, content_hash
from ledger.testing import create_test_ledger, read_all, seed_encrypt
from projections import ReadModels, projector

SEED_PASSWORD = "the old system's password"


@pytest.fixture
def mixed(ledger: Ledger) -> Ledger:
    """Secrets in every state migrate meets: on an old version, already current, deleted,
    imported from the old system (no associated data), and under a retired version."""
    for i in range(12):
        ledger.set(f"old-{i:02}", f"value {i} ✓")
    ledger.set("gone", "x")
    ledger.delete("gone")
    ledger.import_seed({"seeded": seed_encrypt(SEED_PASSWORD, 1, "from the guide")}, SEED_PASSWORD)
    ledger.rotate()
    ledger.set("on-v2", "kept")
    ledger.rotate()
    ledger.set("current", "already")
    return ledger


def migrate_copy(source: str, target: str, *, worker: bool, monkeypatch: pytest.MonkeyPatch,
                 ) -> tuple[migration.MigrationResult, dict[str, str], list[str]]:
    if is_server(source):
        copy_ledger(source, target)
    for suffix in ("", "-wal"):
        if not is_server(source) and Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    with monkeypatch.context() as patch:
        patch.setattr(migration, "PIPELINE_MIN_SECRETS", 0 if worker else 10**9)
        # Two copies of one ledger going separate ways: no host memory to call it a fork.
        with Ledger.open(target, PASSWORD, projector=projector(), seen=None) as ledger:
            result = ledger.migrate(batch_size=4)
            values = {}
            for info in ledger.secrets():
                try:
                    values[info.name] = ledger.get(info.name).value
                except VersionError as exc:  # a secret under a retired key
                    values[info.name] = f"refused: {exc}"
            types = [e.type for e in ledger.recorder.read_events()]
            views = ReadModels(ledger.recorder)
            assert views.problems(deep=True) == []
            assert verify_ledger(ledger.recorder).ok
    return result, values, types


def test_the_worker_and_the_writer_alone_agree(mixed: Ledger, backend: Backend, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Same counts, same failures, same values, same event types, whichever path ran."""
    mixed.retire(2, force=True)  # "on-v2" now fails: its key is retired
    mixed.close()
    copies = ([backend.cluster.url(), backend.cluster.url()] if backend.cluster
              else [str(tmp_path / "a.db"), str(tmp_path / "b.db")])
    alone, alone_values, alone_types = migrate_copy(backend.target, copies[0], worker=False,
                                                     monkeypatch=monkeypatch)
    forked, forked_values, forked_types = migrate_copy(backend.target, copies[1], worker=True,
                                                        monkeypatch=monkeypatch)
    assert (alone.migrated, alone.already_current, alone.failed) == (13, 1, 1)
    assert (forked.migrated, forked.already_current, forked.failed) == (13, 1, 1)
    assert forked.failures == alone.failures and "on-v2" in forked.failures[0].name
    assert forked_values == alone_values
    assert forked_values["seeded"] == "from the guide" and forked_values["old-03"] == "value 3 ✓"
    assert forked_values["on-v2"].startswith("refused: key version 2 is retired")
    assert forked_types == alone_types


def test_a_worker_failure_writes_nothing_of_its_batch(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that raises ends the run with one clean error; the batches before it stay,
    the ledger verifies, and a re-run finishes the work."""
    for i in range(10):
        ledger.set(f"s{i:02}", str(i))
    ledger.rotate()
    monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)
    real = migration.prepare_migration
    calls = []

    def fail_on_second(rows: list[HeadRow], *args: Any) -> list[migration.Prepared]:
        calls.append(len(rows))  # in the worker: a list of its own
        if rows[0][0] == "secret:s04":
            raise ValueError("the value of s04 is 4")  # never crosses the pipe
        return real(rows, *args)

    monkeypatch.setattr(migration, "prepare_migration", fail_on_second)
    with pytest.raises(IntegrityError, match=r"worker process failed \(ValueError\)") as caught:
        ledger.migrate(batch_size=4)
    assert "s04" not in str(caught.value)
    assert ledger.report().needing_migration == 6  # the first batch of 4 landed
    assert verify_ledger(ledger.recorder).ok
    monkeypatch.setattr(migration, "prepare_migration", real)
    second = ledger.migrate(batch_size=4)
    assert (second.migrated, second.already_current) == (6, 4)
    assert read_all(ledger) == {f"s{i:02}": str(i) for i in range(10)}


def test_a_killed_worker_is_a_clean_error(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker dying (OOM killer, say) ends the run with one clean error, nothing half-written."""
    for i in range(6):
        ledger.set(f"s{i}", str(i))
    ledger.rotate()
    monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)

    def die(rows: list[HeadRow], *args: Any) -> list[migration.Prepared]:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    monkeypatch.setattr(migration, "prepare_migration", die)
    head_before = ledger.recorder.head()
    with pytest.raises(IntegrityError, match="worker process died"):
        ledger.migrate(batch_size=10)
    assert ledger.recorder.head() == head_before
    assert ledger.report().needing_migration == 6


def test_the_worker_finds_a_ledger_opened_by_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker opens the ledger again: where it is, not where the working directory
    has moved to since (and it creates nothing there)."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.setattr(migration, "PIPELINE_MIN_SECRETS", 0)
    with create_test_ledger(Path("keyledger.db"), PASSWORD, projector=projector()) as opened:
        for i in range(6):
            opened.set(f"s{i}", str(i))
        opened.rotate()
        monkeypatch.chdir(elsewhere)
        result = opened.migrate(batch_size=4)
        assert (result.migrated, result.failed) == (6, 0)
        assert read_all(opened) == {f"s{i}": str(i) for i in range(6)}
    assert list(elsewhere.iterdir()) == []


def test_prepare_sorts_every_kind_of_head(mixed: Ledger) -> None:
    """The worker re-encrypts what it can and hands the rest back to the writer, by kind."""
    keyring = mixed.keyring()
    current = keyring.require_current()
    heads = list(mixed.session.stream_heads(ev.SECRET_STREAM_PREFIX))
    rows = [(h.stream, h.stream_rev, h.type, h.schema_version, h.payload, content_hash(h))
            for h in heads]
    keys = {v: mixed.session.keys.data_key(v) for v in (1, current)}  # no key for version 2
    verdicts = {v[1]: v for v in migration.prepare_migration(rows, keys, current, "run")}
    assert verdicts["gone"][0] == migration.DELETED
    assert verdicts["current"][0] == migration.CURRENT
    assert verdicts["on-v2"][0] == migration.WRITER  # the worker lacks its key
    for name in ("seeded", "old-00", "old-11"):
        kind, _, _, _, _, token, payload, _ = verdicts[name]
        assert kind == migration.PREPARED and token is not None and payload is not None
        event = ev.from_payload("SecretMigrated", 1, payload)
        assert isinstance(event, ev.SecretMigrated)
        assert (event.name, event.to_version, event.ciphertext) == (name, current, token)
        assert mixed.open_ciphertext(name, token, event.scheme) == read_all(mixed)[name]
    damaged = [("secret:bad", 1, "SecretWritten", 1, "{not json", None)]
    assert migration.prepare_migration(damaged, keys, current, "run")[0][0] == migration.WRITER


WRITER_DIES = """
import itertools, os, signal, sys, time
from ledger import pipeline

def forever():
    for i in itertools.count():
        yield (i, os.getpid())  # the worker's pid, for the test to watch
        time.sleep(0.01)

for i, worker in pipeline.produce_ahead(forever):
    print(worker, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the writer dies holding the pipe
"""


def test_a_worker_outlives_no_killed_writer(tmp_path: Path) -> None:
    """SIGKILL of the writer (the crash harness's kill) leaves no worker behind: its next
    write to the pipe fails and it exits."""
    done = subprocess.run([sys.executable, "-c", WRITER_DIES], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL
    worker = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not running(worker):
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {worker} still running 10 s after its writer was killed")


def running(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (exited, not yet reaped by whoever adopted it) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

