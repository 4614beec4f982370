"""An unlocked ledger's working parts: the one path every operation reads and writes by.

A :class:`Session` holds what the master password opened (the data keys, the
checkpoint-signing key) and what this process verified (the signed tip, the keyring it
folded). Every read of the ledger's state through it is proven against the latest signed
checkpoint and ends by checking that the file is still the one this process verified;
every write is one :meth:`Session.append`, which signs the new head in the same
transaction. :class:`ledger.service.Ledger` is a thin front over one session, and the
operation modules (imports, migration, lifecycle, policy, backup) receive it.

One session may be shared by threads: they take turns under :attr:`Session.lock`.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger import crypto
from ledger import events as ev
from ledger import tally as tally_rules
from ledger.chain import first_broken_link
from ledger.domain import (
    KeyringState,
    SecretState,
    format_time,
    head_state,
    needs_migration,
    require_scheme_allowed,
    secret_state,
)
from ledger.errors import (
    ConcurrencyError,
    IntegrityError,
    LedgerBusyError,
    RollbackError,
    WrongPasswordError,
    printable_ascii,
)
from ledger.events import NewEvent, StoredEvent
from ledger.keyring import KeyMaterial
from ledger.seen import Seen, SeenCheckpoints, memory_key
from ledger.signing import CheckpointSigner, SigningKey, open_signing_key, recorded_public_key
from ledger.store import FORMAT_VERSION, Decided, KdfRecord, LedgerMeta, Recorder
from ledger.tally import Tally

Clock = Callable[[], datetime]
log = logging.getLogger("keyledger")

#: How many times an operation decides again after another writer got there first.
CONFLICT_RETRIES = 8
#: Stream heads are paged through this many at a time.
HEADS_PAGE = 1000
# How many events past the checkpoint this host remembers are walked at unlock to prove
# the ledger extends it (about 0.25 s at audit verify's rate).
SEEN_PROOF_WINDOW = 100_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_actor() -> str:
    """``user@host`` of whoever runs this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname() or 'localhost'}"


def default_origin(program: str = "python-api") -> str:
    """Where an event comes from: this host and the program acting (PCI DSS 10.2.2's origin)."""
    return f"{socket.gethostname() or 'localhost'} {program} pid {os.getpid()}"


@dataclass(frozen=True, slots=True)
class VersionReport:
    total_secrets: int
    current_version: int | None
    needing_migration: int
    distribution: dict[int, int]


@dataclass(frozen=True, slots=True)
class _Restore:
    occurred_at: str
    events_before: int


class Session:
    """The ledger behind ``recorder``, unlocked with ``kek``; checked as it is built.

    Building one proves the signed tail (or, for a ledger of an earlier format read
    without upgrading it, its whole chain), refuses a rollback past what this host saw,
    upgrades an earlier format, reads the keyring, and finishes an erasure left pending.
    """

    def __init__(
        self, recorder: Recorder, meta: LedgerMeta, kek: bytes, *, actor: str | None = None,
        clock: Clock = utc_now, origin: str | None = None, upgrade: bool = True,
        seen: SeenCheckpoints | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.recorder = recorder
        self.actor = actor or default_actor()
        self.origin = origin or default_origin()
        self.clock = clock
        self.meta = meta
        self._kek = kek
        self._signing: SigningKey | None = None
        self._checkpoints: CheckpointSigner | None = None
        self._keyring = KeyringState()
        self.keys = KeyMaterial(kek, meta.ledger_id, {}, {})
        # A ledger from before the heads map, read without upgrading it (a backup, which
        # must keep its bytes): its whole chain is walked once, then its rows are trusted.
        self.whole_chain_checked = False
        self._seen = seen
        self._seen_tip: Seen | None = None
        if recorder.needs_upgrade and not upgrade:
            recorder.verify_whole_chain(self.signer())
            self.whole_chain_checked = True
        else:
            self._check_seen()  # before anything is written here, an upgrade included
            self._upgrade()
        self.refresh_keyring()
        self.recorder.finish_pending_erasure()

    # -- the signed tip and this host's memory of it --------------------------------------

    def signed_tip(self) -> Seen:
        """The latest checkpoint, shown to cover the last event and carry this ledger's
        signature (:meth:`SQLiteRecorder.verified_tip`)."""
        tip = self.recorder.verified_tip(self.signer())
        return Seen(tip.seq, tip.head_hash, tip.signed_at)

    def memory_key(self) -> str:
        """This ledger at this place: a backup or copy elsewhere is an older copy by
        design, so the memory is of the ledger where the host uses it."""
        return memory_key(self.meta.ledger_id, self.recorder.location)

    def _check_seen(self) -> None:
        """Refuse a ledger behind the newest checkpoint this host verified; then remember
        this one. A rollback explained by a restore signed since then is accepted."""
        if self._seen is None:
            self._seen_tip = self.signed_tip()  # this process's own guard only
            return
        # The memory first, then the ledger: the memory is written after each commit, so
        # read in this order a ledger that only moved on is never behind it.
        ledger_id = self.memory_key()
        seen = self._seen.get(ledger_id)
        tip = self.signed_tip()
        restored = False
        if seen is not None:
            hash_at = self._hash_at(seen, tip.seq) if tip.seq > seen.seq else None
            try:
                self._seen.check(seen, tip.seq, tip.head_hash, hash_at, None)
            except RollbackError:
                # Only a restore that replaced at least what this host saw, signed after it.
                restore = self._last_restore()
                if restore is None or restore.events_before < seen.seq:
                    raise
                self._seen.check(seen, tip.seq, tip.head_hash, hash_at, restore.occurred_at)
                restored = True
                log.warning("keyledger: the ledger is behind what this host saw (seq %d); "
                            "accepted, since it records a restore signed at %s",
                            seen.seq, restore.occurred_at)
        self._seen_tip = tip
        self._seen.record(ledger_id, tip, replace=restored)

    def _hash_at(self, seen: Seen, top: int) -> str | None:
        """The hash at ``seen.seq`` of a ledger that has moved on to ``top``. Within
        :data:`SEEN_PROOF_WINDOW` events it is proven: the chain from the remembered head
        links, hash by hash, to the signed tip, or the answer is None. Past the window the
        stored hash is taken as it is (a fork that long is only found by an anchor)."""
        if top - seen.seq > SEEN_PROOF_WINDOW:
            at = self.recorder.event_at(seen.seq)
            return None if at is None else at.hash
        broken = first_broken_link(self.recorder.chain_rows(seen.seq, top),
                                   prev_hash=seen.head_hash, expected_seq=seen.seq + 1)
        return seen.head_hash if broken is None else None

    def _last_restore(self) -> _Restore | None:
        """The newest ``LedgerRestored`` (its events proven): when it was signed and how
        far the ledger it replaced went; None if the ledger was never restored."""
        if not self.recorder.has_heads_map:  # no heads map yet to prove the stream with
            self.recorder.verify_whole_chain(self.signer())
            events = self.recorder.read_stream(ev.BACKUP_STREAM)
        else:
            events = self.stream(ev.BACKUP_STREAM)
        for stored in reversed(events):
            event = stored.decode()
            if isinstance(event, ev.LedgerRestored):
                return _Restore(stored.occurred_at, event.events_before)
        return None

    def _remember(self, seq: int, head_hash: str, signed_at: str) -> None:
        """After an append: remember the checkpoint this session just signed."""
        if self._seen_tip is not None:
            self._seen_tip = Seen(seq, head_hash, signed_at)
            if self._seen is not None:
                self._seen.record(self.memory_key(), self._seen_tip, durable=False)

    def _refuse_if_replaced(self) -> None:
        """A long-lived session's own guard: the event it last verified or signed must
        still be where it was, or the file was put back (or restored) under this process.
        One indexed read, before a value is served or anything is appended."""
        mine = self._seen_tip
        if mine is None:
            return
        at = self.recorder.event_at(mine.seq)
        if at is None or at.hash != mine.head_hash:
            raise RollbackError(
                f"the ledger no longer holds seq {mine.seq} as this process verified it "
                "(the file was rolled back or restored under it); open it again, and check "
                "it with `keyledger audit verify --anchor`"
            )

    def _upgrade(self) -> None:
        """Bring a ledger written by an earlier keyledger up to the current format (once,
        after its whole chain verifies; see :meth:`SQLiteRecorder.upgrade`)."""
        if not self.recorder.needs_upgrade:
            return
        head = self.recorder.stream_head(ev.LEDGER_STREAM)
        self.recorder.upgrade(
            NewEvent(ev.LEDGER_STREAM, (head.stream_rev if head else 0) + 1,
                     ev.LedgerUpgraded(from_format=self.recorder.format_version,
                                       to_format=FORMAT_VERSION)),
            actor=self.actor, occurred_at=format_time(self.clock()), origin=self.origin,
            signer=self.signer(),
        )

    # -- proven reads ---------------------------------------------------------------------
    # Every read of the ledger's state goes through these, and each ends with
    # _refuse_if_replaced: what was proven against the file's checkpoint is also this
    # process's ledger, not an older copy put back under it.

    def head(self, stream: str) -> StoredEvent | None:
        """The head event of ``stream``, shown to be the newest the ledger signed for."""
        if self.whole_chain_checked:
            head = self.recorder.stream_head(stream)
        else:
            head = self.recorder.verified_head(stream, self.signer())
        self._refuse_if_replaced()
        return head

    def stream(self, stream: str) -> list[StoredEvent]:
        """Every event of ``stream``, each shown to be the ledger's."""
        if self.whole_chain_checked:
            rows = self.recorder.read_stream(stream)
        else:
            rows = self.recorder.verified_stream(stream, self.signer(), whole=True)
        self._refuse_if_replaced()
        return rows

    def fold_heads(self, prefix: str, fold: Callable[[StoredEvent], None]) -> None:
        """``fold`` over every head of the streams named ``prefix...``; raises at the end
        if the heads are not the signed ones (act on what was folded only after)."""
        if self.whole_chain_checked:
            for stored in self.stream_heads(prefix):
                fold(stored)
        else:
            self.recorder.fold_verified_heads(self.signer(), prefix, fold)
        self._refuse_if_replaced()

    def verify_heads(self, prefix: str = ev.SECRET_STREAM_PREFIX) -> int:
        """Prove every streams row and head event against the latest signed checkpoint
        (O(n)); the number of streams named ``prefix...``.

        :raises IntegrityError: one of them is not the one signed for.
        """
        seen = 0

        def count(_: StoredEvent) -> None:
            nonlocal seen
            seen += 1

        self.fold_heads(prefix, count)
        return seen

    def prove_streams(self, prefix: str = ev.SECRET_STREAM_PREFIX) -> int:
        """Prove every streams row, not the head events, against the latest signed
        checkpoint (O(n), a fraction of :meth:`verify_heads`); the number of streams named
        ``prefix...``. For a caller that pages through those streams and proves each head
        event it acts on (``migrate``): once the rows are the signed ones, a stream its
        pages skip shows as one visited too few.

        :raises IntegrityError: a row or a tree node is not the one signed for.
        """
        if self.whole_chain_checked:
            return self.recorder.stream_count(prefix)
        count = self.recorder.heads_map_matches(self.signer(), prefix)
        self._refuse_if_replaced()
        return count

    def stream_heads(self, prefix: str = ev.SECRET_STREAM_PREFIX) -> Iterator[StoredEvent]:
        """The head events of the streams named ``prefix...`` in name order, as stored
        (prove them first with :meth:`verify_heads` or :meth:`fold_heads`)."""
        for heads in self.stream_head_batches(prefix, HEADS_PAGE):
            yield from heads

    def stream_head_batches(self, prefix: str, size: int) -> Iterator[list[StoredEvent]]:
        """:meth:`stream_heads`, ``size`` at a time."""
        after = ""
        while True:
            with self.lock:  # a page at a time: a caller between pages holds nothing
                heads = self.recorder.stream_heads(prefix, after, size)
            if not heads:
                return
            yield heads
            after = heads[-1].stream

    def secret(self, name: str) -> SecretState:
        """``name``'s state as its proven head leaves it (revision 0, deleted: never written)."""
        head = self.head(ev.secret_stream(name))
        if head is None:
            return SecretState(name, 0, deleted=True)
        return secret_state(name, head.stream_rev, head.decode())

    def report(self) -> VersionReport:
        """How many live secrets sit on each key version, folded from the events, every
        head proven against the latest signed checkpoint before any count is used
        (retire and destroy decide on these figures). O(n) in the number of secrets."""
        current = self.keyring().current
        distribution: dict[int, int] = {}
        up_to_date = 0

        def count(stored: StoredEvent) -> None:
            nonlocal up_to_date
            state = head_state(stored)
            if not state.deleted:
                assert state.key_version is not None
                distribution[state.key_version] = distribution.get(state.key_version, 0) + 1
                assert state.scheme is not None
                up_to_date += not needs_migration(state.key_version, state.scheme, current)

        self.fold_heads(ev.SECRET_STREAM_PREFIX, count)
        total = sum(distribution.values())
        return VersionReport(total, current, total - up_to_date, dict(sorted(distribution.items())))

    def tally(self) -> Tally:
        """How many live secrets sit on each key version and scheme, and how many values
        each version has encrypted, as the latest signed checkpoint says (constant time).

        :raises IntegrityError: the checkpoint does not hold or signs no tally.
        """
        if self.whole_chain_checked:  # an earlier format, read without upgrading it
            found = tally_rules.fold((s.stream, s.decode()) for s in self.recorder.read_events())
        else:
            found = self.recorder.verified_tally(self.signer())
        self._refuse_if_replaced()
        return found

    # -- keys -----------------------------------------------------------------------------

    def keyring(self) -> KeyringState:
        """The keyring as the ledger holds it now (re-read if another process changed it)."""
        head = self.head(ev.KEYRING_STREAM)
        if head is None or head.stream_rev != self._keyring.revision:
            self.refresh_keyring()
        return self._keyring

    def refresh_keyring(self) -> None:
        """Read the keyring, the KDF record and the wrapped keys again."""
        # One snapshot: a rekey-master committing between these reads must not pair the
        # new KDF parameters with the old wrapped keys (or the other way round).
        with self.recorder.snapshot():
            rows = self.stream(ev.KEYRING_STREAM)
            meta = self.recorder.read_meta()
            wrapped = self.recorder.read_wrapped_keys()
        state = KeyringState()
        for stored in rows:
            state.apply(stored.decode(), stored.occurred_at)
        if not crypto.kek_matches(self._kek, meta.kdf.kek_check):
            raise WrongPasswordError(
                "the master password of this ledger was changed by another process; "
                "reopen with the new one"
            )
        self.meta = meta
        self._keyring = state
        fingerprints = {v.version: v.fingerprint for v in state.versions.values()}
        self.keys = KeyMaterial(self._kek, meta.ledger_id, wrapped, fingerprints)

    def use_kek(self, kek: bytes) -> None:
        """After a rekey this session committed: unwrap with the new KEK from now on."""
        self._kek = kek
        self.refresh_keyring()

    def decrypt(self, state: SecretState) -> bytes:
        """``state``'s plaintext, under a key version the keyring still lets decrypt.

        :raises InvalidCiphertext: it does not open under that version's key.
        """
        assert state.key_version is not None and state.ciphertext is not None
        if state.key_version not in self._keyring.versions:
            self.refresh_keyring()
        self._keyring.require_usable(state.key_version)
        require_scheme_allowed(self._keyring, state)
        key = self.keys.cipher(state.key_version)
        return crypto.decrypt_secret_untrusted(
            key, state.ciphertext, state.name, state.scheme or crypto.SCHEME_BOUND,
            version=state.key_version,
        )

    def signer(self) -> CheckpointSigner:
        if self._checkpoints is None:
            self._checkpoints = CheckpointSigner(self.signing_key(), self.meta.ledger_id)
        return self._checkpoints

    def signing_key(self) -> SigningKey:
        """The checkpoint-signing key, unwrapped on first use and checked against the
        public key the ledger recorded.

        :raises SigningKeyError: the stored key does not open or was substituted.
        """
        if self._signing is None:
            self._signing = open_signing_key(self._kek, self.meta.signing_key,
                                             self.meta.ledger_id, recorded_public_key(self.recorder))
        return self._signing

    # -- appending ------------------------------------------------------------------------

    def append(
        self, events: Iterable[NewEvent], *, keys: Mapping[int, bytes | None] | None = None,
        kdf: KdfRecord | None = None, expect: Mapping[str, int] | None = None,
        signing_key: bytes | None = None, decided: Decided | None = None,
    ) -> list[StoredEvent]:
        """Append ``events`` with a signed checkpoint of the new head, in one transaction;
        ``decided`` and the events' ``based_on`` name the unproven heads they were decided
        on (:data:`ledger.store.Decided`)."""
        self._refuse_if_replaced()
        occurred_at = format_time(self.clock())
        stored = self.recorder.append(
            list(events), actor=self.actor, occurred_at=occurred_at,
            origin=self.origin, keys=keys, kdf=kdf, signing_key=signing_key, expect=expect,
            signer=self.signer(), decided=decided,
        )
        if stored:
            self._remember(stored[-1].seq, stored[-1].hash, occurred_at)
        return stored

    def append_chunks(
        self, chunks: Iterable[Sequence[NewEvent]], *, expect: Mapping[str, int] | None = None,
        decided: dict[str, tuple[int, str | None]] | None = None,
    ) -> int:
        """Append every chunk's events in one transaction, with one signed checkpoint of
        the final head; the number appended (see :meth:`SQLiteRecorder.append_chunks`)."""
        self._refuse_if_replaced()
        occurred_at = format_time(self.clock())
        appended = self.recorder.append_chunks(
            chunks, actor=self.actor, occurred_at=occurred_at, origin=self.origin,
            expect=expect, signer=self.signer(), decided=decided,
        )
        if appended:
            self._remember(*self.recorder.head(), occurred_at)
        return appended

    def append_to_stream(self, stream: str, *events: ev.DomainEvent) -> None:
        """Append ``events`` at the next revisions of a stream nobody decides against
        (rejections, policy, backups, reads), in one transaction, retrying if another
        process got there first."""
        for _ in range(CONFLICT_RETRIES):
            head = self.head(stream)
            rev = head.stream_rev if head else 0
            try:
                self.append([NewEvent(stream, rev + n, event)
                             for n, event in enumerate(events, start=1)])
                return
            except ConcurrencyError:
                continue
        raise ConcurrencyError([stream])

    def prove_decided(self, decided: Decided) -> None:
        """Decisions with nothing to append, shown to rest on the proven heads
        (:meth:`SQLiteRecorder.prove_decided`)."""
        self.recorder.prove_decided(decided, self.signer())

    # -- erasing from the file ------------------------------------------------------------

    def refuse_if_triggers_altered(self, what: str) -> None:
        """Before a change that cannot be undone (a destroy, a rekey): a trigger on the
        ledger's tables that keyledger did not create (or one of its own altered) runs
        inside that very write, and could keep a copy of the key being erased.

        :raises IntegrityError: the triggers are not keyledger's own, as created.
        """
        refuse_if_triggers_altered(self.recorder, what)

    def finish_erasure(self, what: str) -> bool:
        """After a change that must leave no old copy in the file (destroy, rekey): copy
        the WAL into the database file and truncate it (:meth:`SQLiteRecorder.shred`).
        If another process's older snapshot prevents that within the lock timeout,
        ``what`` is recorded as pending, reported by ``health-check``, and the next
        unlock finishes it. Whether it is erased now."""
        try:
            erased = self.recorder.shred()
        except LedgerBusyError:  # the change is committed; only its erasure waits
            erased = False
        if erased:
            if self.recorder.erase_pending() is not None:
                self.recorder.set_erase_pending(None)
            return True
        self.recorder.set_erase_pending(what)
        return False


def refuse_if_triggers_altered(recorder: Recorder, what: str) -> None:
    """:meth:`Session.refuse_if_triggers_altered` for a recorder not unlocked (a restore
    checks the ledger it replaces before it has opened anything with a password).

    :raises IntegrityError: the triggers are not keyledger's own, as created.
    """
    faults = recorder.trigger_faults()
    if faults:
        named = ", ".join(f"{printable_ascii(f.name, 60)} ({f.fault})" for f in faults[:3])
        raise IntegrityError(f"refusing to {what}: the ledger's triggers are not as "
                             f"keyledger made them ({named}); run `keyledger audit verify`")
