"""SIGKILL the real ``keyledger`` during migrate, import, rotate, rekey-master and full-rotation.

Each round kills the command at a seeded random moment, then checks that no secret was
lost or changed, the hash chain holds, the read models agree with the events, and running
the command again completes the work (the harness is ``crash_support.py``, which is also
the soak: ``python tests/crash_support.py --rounds 200``). ``CRASH_SEED`` picks other
rounds; a failing round prints its seed and the command line that replays it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from crash_support import Harness, KillPlan, round_seed

BASE_SEED = int(os.environ.get("CRASH_SEED", "5"))
# rekey-master gets fewer rounds: after it, each opening derives 600,000 PBKDF2 iterations.
# One round with migrate's worker process; `make crash-soak` also runs import's.
SCHEDULE = ["migrate", "full-rotation", "import", "rotate"] * 4 + ["rekey-master"] * 2 + ["migrate-worker"]
ROUNDS = [(command, round_seed(BASE_SEED, i)) for i, command in enumerate(SCHEDULE)]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """One harness for the module, so each command's ledger is prepared and timed once."""
    shared = Harness(Path(tmp_path_factory.mktemp("crash")))
    yield shared
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None and shared.results:
        with capture.global_and_fixture_disabled():
            print(f"\ncrash rounds (CRASH_SEED={BASE_SEED}):\n{shared.summary_text()}")


@pytest.mark.parametrize(("command", "seed"), ROUNDS, ids=[f"{c}-{s}" for c, s in ROUNDS])
def test_sigkill_at_random_loses_nothing_and_rerun_completes(
    harness: Harness, command: str, seed: int
) -> None:
    """A SIGKILL at a seeded moment keeps every secret, the chain and the read models; a re-run finishes."""
    harness.run_round(command, seed)


@pytest.mark.parametrize("command", ["migrate", "full-rotation"])
def test_sigkill_between_batches_is_resumed(harness: Harness, command: str) -> None:
    """A kill just after the third commit leaves a half-done run that loses nothing; a re-run completes it."""
    result = harness.run_round(command, round_seed(BASE_SEED, 9_000), KillPlan("commits", 3))
    assert result.phase == "during", result
