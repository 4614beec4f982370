"""One Ledger shared by threads: they take turns on its connection, and nothing is lost."""

from __future__ import annotations

import threading
from pathlib import Path

from conftest import PASSWORD

from ledger import Ledger
from ledger.chain import first_broken_link
from ledger.testing import create_test_ledger, read_all

THREADS = 4
WRITES = 25


def test_threads_sharing_one_ledger_write_read_rotate_and_migrate_without_error(
        tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    errors: list[BaseException] = []
    with create_test_ledger(path, PASSWORD) as ledger:
        ledger.import_values({f"pre{i}": f"v{i}" for i in range(50)}, source="json")

        def guarded(work: object) -> threading.Thread:
            def run() -> None:
                try:
                    work()  # type: ignore[operator]
                except BaseException as exc:
                    errors.append(exc)
            return threading.Thread(target=run)

        def writer(n: int) -> None:
            for k in range(WRITES):
                ledger.set(f"t{n}-{k % 5}", f"{n}:{k}")
                assert ledger.get(f"t{n}-{k % 5}").value == f"{n}:{k}"

        def operator() -> None:
            for _ in range(2):
                ledger.rotate(reason="threads")
                ledger.migrate(batch_size=7)

        def lister() -> None:
            for _ in range(10):
                names = [info.name for info in ledger.secrets()]
                assert names == sorted(names)
                ledger.report()

        threads = [guarded(lambda n=n: writer(n)) for n in range(THREADS)]
        threads += [guarded(operator), guarded(lister)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        ledger.migrate()
        values = read_all(ledger)
    for n in range(THREADS):
        for name in range(5):
            last = max(k for k in range(WRITES) if k % 5 == name)
            assert values[f"t{n}-{name}"] == f"{n}:{last}"
    with Ledger.open(path, PASSWORD) as back:
        assert back.report().needing_migration == 0
        assert first_broken_link(back.recorder.chain_rows()) is None
