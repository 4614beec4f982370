"""Several processes writing one ledger at once: no lost write, no gap, no stale overwrite."""

from __future__ import annotations

import multiprocessing

from conftest import Backend

from ledger import Ledger
from ledger import events as ev
from ledger.chain import first_broken_link
from ledger.integrity import verify_ledger
from ledger.testing import create_test_ledger, read_all
from projections import ReadModels, projector

PASSWORD = "concurrent"
WRITERS = 4
WRITES = 40
NAMES_PER_WRITER = 5


def writer(path: str, writer_id: int) -> None:
    with Ledger.open(path, PASSWORD, actor=f"writer-{writer_id}", projector=projector()) as ledger:
        for k in range(WRITES):
            ledger.set(f"w{writer_id}-{k % NAMES_PER_WRITER}", f"{writer_id}:{k}")
            if k % 4 == 0:
                ledger.set("shared", f"{writer_id}:{k}")


def migrator(path: str) -> None:
    with Ledger.open(path, PASSWORD, actor="migrator", projector=projector()) as ledger:
        for _ in range(3):
            ledger.rotate(reason="race test")
            ledger.migrate(batch_size=3)


def test_writers_beside_a_migrating_process_lose_nothing(backend: Backend) -> None:
    """Four writer processes (each its own connection and actor) and a rotating, migrating
    one: every final value is the last write, seq has no gap, the chain and every
    checkpoint verify, and the read models equal a rebuild."""
    path = backend.target
    with create_test_ledger(path, PASSWORD, projector=projector()) as ledger:
        for w in range(WRITERS):
            for n in range(NAMES_PER_WRITER):
                ledger.set(f"w{w}-{n}", "initial")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=writer, args=(str(path), w)) for w in range(WRITERS)]
    procs.append(ctx.Process(target=migrator, args=(str(path),)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(procs)

    runner = projector()
    with Ledger.open(path, PASSWORD, projector=runner) as ledger:
        values = read_all(ledger)
        for w in range(WRITERS):
            for n in range(NAMES_PER_WRITER):
                last_k = max(k for k in range(WRITES) if k % NAMES_PER_WRITER == n)
                assert values[f"w{w}-{n}"] == f"{w}:{last_k}"
        # The shared secret holds whatever its last real write (not a migration) wrote.
        writes = [e.decode() for e in ledger.recorder.read_stream(ev.secret_stream("shared"))]
        last_write = [e for e in writes if isinstance(e, ev.SecretWritten)][-1]
        assert values["shared"] == ledger.open_ciphertext("shared", last_write.ciphertext)

        rows = list(ledger.recorder.read_events())
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        assert first_broken_link(ledger.recorder.chain_rows()) is None
        assert verify_ledger(ledger.recorder, all_signatures=True).ok
        assert {e.actor for e in rows} >= {f"writer-{w}" for w in range(WRITERS)} | {"migrator"}
        assert ledger.keyring().current == 4
        views = ReadModels(ledger.recorder, runner)
        incremental = (views.report(), views.secrets())
        views.rebuild()
        assert (views.report(), views.secrets()) == incremental


def test_opening_the_read_models_beside_a_writer_finds_nothing_to_repair(backend: Backend) -> None:
    """The open-time checks read the events, then the read models: a rotation committed
    between the two read as a disagreement, and a genuine ledger was "repaired" and failed
    its next health-check (attack pass 4, F3). Each look is now one snapshot."""
    import subprocess
    import sys

    db = backend.target
    with create_test_ledger(db, "pw", projector=projector()) as ledger:
        ledger.set("x", "1")
    script = (
        "import sys; from ledger import Ledger; from projections import projector\n"
        f"with Ledger.open({str(db)!r}, 'pw', projector=projector(), seen=None) as l:\n"
        "    v = max(l.keyring().versions)\n"
        "    for _ in range(150): v += 1; l.rotate(new_version=v)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script])
    repaired: list[str] = []
    try:
        while writer.poll() is None:
            with ReadModels.open(db) as views:
                repaired += views.repaired
    finally:
        writer.wait()
    assert writer.returncode == 0
    assert repaired == []
