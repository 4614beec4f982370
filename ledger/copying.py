"""Moving a whole ledger between places and backends: ``keyledger copy SOURCE DEST``.

A copy is the ledger itself, not a re-encryption: the same events with the same hashes,
the same signed checkpoints, the same wrapped keys, so that ``audit verify --pubkey``
passes on both with the same head. The source is verified first (nothing unchecked is
carried anywhere), read in one snapshot while writers go on, written into an empty
destination in one transaction, and the destination is verified before the copy is
called done. Nothing is appended to either: the destination's head must be the source's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import IntegrityError
from ledger.integrity import verify_ledger
from ledger.locations import Target, open_recorder
from ledger.store import Projector, SQLRecorder


@dataclass(frozen=True, slots=True)
class CopyResult:
    source: str
    destination: str
    events: int
    head: str


def copy_ledger(source: Target, destination: Target, *, projector: Projector | None = None,
                pinned_key: str | None = None) -> CopyResult:
    """Copy the ledger at ``source`` into ``destination`` (an absent file, an empty one, or
    a schema that holds nothing), its read models built there by ``projector``.

    :raises IntegrityError: the source does not verify (nothing is written), or the copy
        does not (it is left for inspection, and the message says where).
    :raises LedgerFormatError: the destination already holds something.
    """
    with open_recorder(source, read_only=True) as src, src.snapshot():
        # One snapshot for the check and the copy: a write landing between them would
        # otherwise be copied unchecked (and the heads would differ).
        checked = verify_ledger(src, pinned_key=pinned_key)
        if not checked.ok:
            raise IntegrityError(f"{src.location} does not verify "
                                 f"({'; '.join(checked.problems)}); nothing was copied")
        with open_recorder(destination, create=True, projector=projector) as dst:
            assert isinstance(src, SQLRecorder) and isinstance(dst, SQLRecorder)
            dst.load_copy(src)
            copied = verify_ledger(dst, pinned_key=checked.public_key)
            where = dst.location
    if not copied.ok or (copied.events, copied.head) != (checked.events, checked.head):
        raise IntegrityError(f"the copy at {where} does not verify as the source did "
                             f"({'; '.join(copied.problems) or 'another head'}); check it")
    return CopyResult(src.location, where, copied.events, copied.head)
