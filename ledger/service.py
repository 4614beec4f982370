"""The operations: open a ledger with a password, then read, write, rotate and migrate.

Every operation follows one pattern: read the streams it depends on, fold them into state
(:mod:`ledger.domain`), decide the events, and append them in one transaction that checks
the revisions it read. Nothing changes state except appending events.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Concatenate, Literal, ParamSpec, TypeVar

from ledger import crypto, imports, lifecycle
from ledger import events as ev
from ledger import tally as tally_rules
from ledger.chain import first_broken_link
from ledger.domain import (
    KeyringState,
    SecretState,
    decide_rotation,
    format_time,
    head_state,
    range_warning,
    require_scheme_allowed,
    secret_state,
    validate_name,
    validate_value,
)
from ledger.errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidCiphertext,
    InvalidInputError,
    LedgerBusyError,
    LedgerFormatError,
    RollbackError,
    UnknownSecretError,
    VersionError,
    WrongPasswordError,
)
from ledger.import_files import ImportFile
from ledger.imports import ImportResult
from ledger.keyring import KeyMaterial, new_kdf, unlock_kek
from ledger.lifecycle import LifecycleResult
from ledger.migration import (
    CONFLICT_RETRIES,
    DEFAULT_BATCH_SIZE,
    Migration,
    MigrationResult,
    Progress,
)
from ledger.seen import Seen, SeenCheckpoints, SeenReview, memory_key, review
from ledger.signing import CheckpointSigner, SigningKey, open_signing_key, recorded_public_key
from ledger.store import (
    FORMAT_VERSION,
    Decided,
    KdfRecord,
    LedgerMeta,
    NewEvent,
    Projector,
    Recorder,
    SQLiteRecorder,
    StoredEvent,
)
from ledger.tally import Tally

Clock = Callable[[], datetime]
log = logging.getLogger("keyledger")


@dataclass(frozen=True, slots=True)
class _Restore:
    occurred_at: str
    events_before: int
# ``seen``'s default: this host's memory of checkpoints as the environment names it.
FROM_ENVIRONMENT: Literal["environment"] = "environment"
SeenOption = SeenCheckpoints | None | Literal["environment"]
# How many events past the checkpoint this host remembers are walked at unlock to prove
# the ledger extends it (about 0.25 s at audit verify's rate).
SEEN_PROOF_WINDOW = 100_000


P = ParamSpec("P")
R = TypeVar("R")


def _serialized(method: Callable[Concatenate[Ledger, P], R]) -> Callable[Concatenate[Ledger, P], R]:
    """Run a :class:`Ledger` method under the ledger's lock: one Ledger may be shared by
    threads, which then take turns on its one SQLite connection."""

    def serialized(self: Ledger, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    functools.update_wrapper(serialized, method)
    return serialized


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
class SecretValue:
    name: str
    value: str
    version: int


@dataclass(frozen=True, slots=True)
class SecretInfo:
    name: str
    key_version: int
    revision: int
    scheme: str


@dataclass(frozen=True, slots=True)
class VersionReport:
    total_secrets: int
    current_version: int | None
    needing_migration: int
    distribution: dict[int, int]


@dataclass(frozen=True, slots=True)
class RotationResult:
    from_version: int | None
    to_version: int
    dry_run: bool
    warning: str | None


@dataclass(frozen=True, slots=True)
class ReadAuditing:
    """Whether reads of secret values are recorded, and who last said so (None: never set)."""

    enabled: bool
    changed_at: str | None = None
    actor: str | None = None
    reason: str | None = None


def read_auditing_status(recorder: Recorder) -> ReadAuditing:
    """The read-auditing setting in force: the head of the audit-settings stream, found
    with one indexed lookup. Off until someone turns it on. Needs no password."""
    return _read_auditing_at(recorder.stream_head(ev.AUDIT_SETTINGS_STREAM))


def _read_auditing_at(head: StoredEvent | None) -> ReadAuditing:
    if head is None:
        return ReadAuditing(False)
    event = head.decode()
    if not isinstance(event, ev.ReadAuditingSet):
        raise LedgerFormatError(f"event {head.seq} in the audit settings is a {head.type}")
    return ReadAuditing(event.enabled, head.occurred_at, head.actor, event.reason)


class Ledger:
    """An open ledger, unlocked with the master password.

    Build one with :meth:`create` or :meth:`open`; use it as a context manager or call
    :meth:`close`. ``actor`` and ``clock`` are recorded on every event appended.
    """

    def __init__(
        self, recorder: Recorder, meta: LedgerMeta, kek: bytes, *,
        actor: str | None = None, clock: Clock = utc_now, origin: str | None = None,
        upgrade: bool = True, seen: SeenOption = FROM_ENVIRONMENT,
    ) -> None:
        # One connection, shared by every thread that uses this Ledger: each public
        # method runs under this lock, so threads take turns (see _serialized).
        self._lock = threading.RLock()
        self.recorder = recorder
        self.actor = actor or default_actor()
        self.origin = origin or default_origin()
        self.clock = clock
        self._meta = meta
        self._kek = kek
        self._signing: SigningKey | None = None
        self._checkpoints: CheckpointSigner | None = None
        self._keyring = KeyringState()
        self._keys = KeyMaterial(kek, meta.ledger_id, {}, {})
        # A ledger from before the heads map, read without upgrading it (a backup, which
        # must keep its bytes): its whole chain is walked once, then its rows are trusted.
        self._whole_chain_checked = False
        self._seen = SeenCheckpoints.from_environment() if isinstance(seen, str) else seen
        self._seen_tip: Seen | None = None
        if recorder.needs_upgrade and not upgrade:
            recorder.verify_whole_chain(self._signer())
            self._whole_chain_checked = True
        else:
            self._check_seen()  # before anything is written here, an upgrade included
            self._upgrade()
        self._refresh_keyring()
        self._finish_pending_erasure()

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], password: str, *, actor: str | None = None,
        clock: Clock = utc_now, kdf_iterations: int = crypto.KEK_ITERATIONS,
        projector: Projector | None = None, origin: str | None = None,
        seen: SeenOption = FROM_ENVIRONMENT, _allow_weak_kdf: bool = False,
    ) -> Ledger:
        """Create a new ledger file at ``path`` with key version 1 current.

        :raises LedgerFormatError: ``path`` already holds a ledger or another file.
        :raises InvalidInputError: the password is empty.
        :raises ValueError: the KDF is below the floor.
        """
        if kdf_iterations < crypto.KEK_ITERATIONS and not _allow_weak_kdf:
            raise ValueError(f"kdf_iterations must be at least {crypto.KEK_ITERATIONS}")
        recorder = SQLiteRecorder(path, create=True, projector=projector)
        return cls.initialize(
            recorder, password, actor=actor, clock=clock, kdf_iterations=kdf_iterations,
            origin=origin, seen=seen,
        )

    @classmethod
    def initialize(
        cls, recorder: Recorder, password: str, *, actor: str | None = None,
        clock: Clock = utc_now, kdf_iterations: int = crypto.KEK_ITERATIONS,
        origin: str | None = None, seen: SeenOption = FROM_ENVIRONMENT,
    ) -> Ledger:
        """Write a new ledger's first events into an empty ``recorder``; closes it on error."""
        try:
            if not password:
                raise InvalidInputError("the master password must not be empty")
            if recorder.is_initialized():
                raise LedgerFormatError("that file already holds a ledger")
            kdf, kek = new_kdf(password, kdf_iterations)
            ledger_id = uuid.uuid4().hex
            signing = SigningKey.generate()
            meta = LedgerMeta(
                ledger_id, FORMAT_VERSION, kdf,
                crypto.wrap_signing_key(kek, signing.private_bytes(), ledger_id),
            )
            data_key = crypto.generate_data_key()
            fp = crypto.fingerprint(data_key)
            first = [
                NewEvent(ev.LEDGER_STREAM, 1, ev.LedgerInitialized(
                    ledger_id=meta.ledger_id, kdf_algorithm=kdf.algorithm,
                    kdf_iterations=kdf.iterations,
                )),
                NewEvent(ev.LEDGER_STREAM, 2, ev.SigningKeyCreated(public_key=signing.public_key)),
                NewEvent(ev.KEYRING_STREAM, 1, ev.KeyVersionCreated(
                    version=1, fingerprint=fp, origin="generated",
                )),
                NewEvent(ev.KEYRING_STREAM, 2, ev.KeyRotated(
                    from_version=None, to_version=1, reason="ledger initialised",
                )),
            ]
            wrapped = crypto.wrap_data_key(kek, data_key, meta.ledger_id, 1)
            recorder.initialize(
                meta, first, {1: wrapped}, actor=actor or default_actor(),
                occurred_at=format_time(clock()), origin=origin or default_origin(),
                signer=CheckpointSigner(signing, ledger_id),
            )
        except BaseException:
            recorder.close()
            raise
        return cls(recorder, meta, kek, actor=actor, clock=clock, origin=origin, seen=seen)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], password: str, *, actor: str | None = None,
        clock: Clock = utc_now, projector: Projector | None = None, origin: str | None = None,
        upgrade: bool = True, seen: SeenOption = FROM_ENVIRONMENT,
    ) -> Ledger:
        """Open an existing ledger. A ledger from an earlier keyledger is upgraded in place
        (once) unless ``upgrade`` is False, as for a backup being read.

        ``seen`` is this host's memory of the newest checkpoint verified per ledger
        (:mod:`ledger.seen`; by default where the environment says, None for none, as
        for a backup, which is an older copy by design).

        :raises LedgerNotFoundError: no ledger at ``path``.
        :raises WrongPasswordError: the password does not open it; nothing was changed.
        :raises IntegrityError: its signed tail or heads do not verify; nothing was changed.
        :raises RollbackError: it is behind, or off, the newest checkpoint this host saw.
        """
        return cls.unlock(
            SQLiteRecorder(path, projector=projector), password, actor=actor, clock=clock,
            origin=origin, upgrade=upgrade, seen=seen,
        )

    @classmethod
    def unlock(
        cls, recorder: Recorder, password: str, *, actor: str | None = None,
        clock: Clock = utc_now, origin: str | None = None, upgrade: bool = True,
        seen: SeenOption = FROM_ENVIRONMENT,
    ) -> Ledger:
        """Unlock the ledger behind ``recorder``; closes it if the password is wrong.

        :raises WrongPasswordError: the password does not open it; nothing was changed.
        """
        try:
            meta = recorder.read_meta()
            kek = unlock_kek(meta, password)
            return cls(recorder, meta, kek, actor=actor, clock=clock, origin=origin,
                       upgrade=upgrade, seen=seen)
        except BaseException:
            recorder.close()
            raise

    @_serialized
    def close(self) -> None:
        self.recorder.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def kdf_iterations(self) -> int:
        return self._meta.kdf.iterations

    @property
    def erase_pending(self) -> str | None:
        """What a destroy or rekey has not yet erased from the file, or None."""
        with self._lock:
            return self.recorder.erase_pending()

    @property
    def ledger_id(self) -> str:
        return self._meta.ledger_id

    @_serialized
    def signed_tip(self) -> Seen:
        """The latest checkpoint, shown to cover the last event and carry this ledger's
        signature (:meth:`SQLiteRecorder.verified_tip`)."""
        tip = self.recorder.verified_tip(self._signer())
        return Seen(tip.seq, tip.head_hash, tip.signed_at)

    # -- erasing from the file ----------------------------------------------------------

    @_serialized
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

    def _finish_pending_erasure(self) -> None:
        """At unlock: one quick try to finish an erasure an earlier command left pending."""
        self.recorder.finish_pending_erasure()

    # -- what this host has seen ---------------------------------------------------------

    def _check_seen(self) -> None:
        """Refuse a ledger behind the newest checkpoint this host verified; then remember
        this one. A rollback explained by a restore signed since then is accepted."""
        if self._seen is None:
            self._seen_tip = self.signed_tip()  # this process's own guard only
            return
        # The memory first, then the ledger: the memory is written after each commit, so
        # read in this order a ledger that only moved on is never behind it.
        ledger_id = self._memory_key()
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
            self.recorder.verify_whole_chain(self._signer())
            events = self.recorder.read_stream(ev.BACKUP_STREAM)
        else:
            events = self._stream(ev.BACKUP_STREAM)
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
                self._seen.record(self._memory_key(), self._seen_tip, durable=False)

    def _refuse_if_replaced(self) -> None:
        """A long-lived Ledger's own guard: the event it last verified or signed must still
        be where it was, or the file was put back (or restored) under this process. One
        indexed read, before a value is served or anything is appended."""
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

    @_serialized
    def review_seen(self, *, forget: bool = False) -> SeenReview:
        """This host's memory of the ledger here beside its verified tip now; ``forget``
        replaces the memory with that tip (an older copy was put back on purpose). Open
        the ledger with ``seen=None`` to review one the memory refuses."""
        return review(self._memory_key(), self.signed_tip(), forget=forget)

    def _memory_key(self) -> str:
        """This ledger at this place: a backup or copy elsewhere is an older copy by
        design, so the memory is of the ledger where the host uses it."""
        return memory_key(self._meta.ledger_id, self.recorder.location)

    # -- keyring ------------------------------------------------------------------------

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
            signer=self._signer(),
        )

    @_serialized
    def head_of(self, stream: str) -> StoredEvent | None:
        """The head event of ``stream``, proven against the latest signed checkpoint."""
        return self._head(stream)

    # Every read of the ledger's state goes through these three, and each ends with
    # _refuse_if_replaced: what was proven against the file's checkpoint is also this
    # process's ledger, not an older copy put back under it.

    def _head(self, stream: str) -> StoredEvent | None:
        """The head event of ``stream``, shown to be the newest the ledger signed for."""
        if self._whole_chain_checked:
            head = self.recorder.stream_head(stream)
        else:
            head = self.recorder.verified_head(stream, self._signer())
        self._refuse_if_replaced()
        return head

    def _stream(self, stream: str) -> list[StoredEvent]:
        """Every event of ``stream``, each shown to be the ledger's."""
        if self._whole_chain_checked:
            rows = self.recorder.read_stream(stream)
        else:
            rows = self.recorder.verified_stream(stream, self._signer(), whole=True)
        self._refuse_if_replaced()
        return rows

    def _fold_heads(self, prefix: str, fold: Callable[[StoredEvent], None]) -> None:
        """``fold`` over every head of the streams named ``prefix...``; raises at the end
        if the heads are not the signed ones (act on what was folded only after)."""
        if self._whole_chain_checked:
            for stored in self._stream_heads(prefix):
                fold(stored)
        else:
            self.recorder.fold_verified_heads(self._signer(), prefix, fold)
        self._refuse_if_replaced()

    @_serialized
    def keyring(self) -> KeyringState:
        """The keyring as the ledger holds it now (re-read if another process changed it)."""
        head = self._head(ev.KEYRING_STREAM)
        if head is None or head.stream_rev != self._keyring.revision:
            self._refresh_keyring()
        return self._keyring

    def _refresh_keyring(self) -> None:
        # One snapshot: a rekey-master committing between these reads must not pair the
        # new KDF parameters with the old wrapped keys (or the other way round).
        with self.recorder.snapshot():
            rows = self._stream(ev.KEYRING_STREAM)
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
        self._meta = meta
        self._keyring = state
        fingerprints = {v.version: v.fingerprint for v in state.versions.values()}
        self._keys = KeyMaterial(self._kek, meta.ledger_id, wrapped, fingerprints)

    @_serialized
    def check_keys(self) -> list[int]:
        """Unwrap every key version and check its fingerprint; the versions checked.

        :raises IntegrityError: a stored key does not open or was substituted.
        """
        self.keyring()
        versions = self._keys.versions()
        for version in versions:
            self._keys.data_key(version)
        return versions

    @_serialized
    def check_signing_key(self) -> str:
        """Open the checkpoint-signing key and check it is the private half of the public
        key the events recorded (:func:`ledger.signing.open_signing_key`); that public key.

        :raises SigningKeyError: it does not open or was substituted.
        """
        return self._signing_key().public_key

    @_serialized
    def self_test(self) -> None:
        """Encrypt and decrypt a probe under the current key, in memory only."""
        version = self.keyring().require_current()
        key = self._keys.data_key(version)
        probe = os.urandom(16)
        token = crypto.encrypt_secret(key, version, "keyledger/self-test", probe)
        if crypto.decrypt_secret_untrusted(
            key, token, "keyledger/self-test", crypto.SCHEME_BOUND
        ) != probe:
            raise InvalidCiphertext

    @_serialized
    def rotate(
        self, new_version: int | None = None, *, reason: str | None = None,
        dry_run: bool = False, confirm: Callable[[int], None] | None = None,
        expect_current: int | None = None,
    ) -> RotationResult:
        """Create a new key version and make it current. Versions are never reused.

        ``confirm`` is called with the chosen version before anything is appended; it
        may raise to cancel. ``expect_current`` makes the rotation conditional on the
        current version still being that one (``full-rotation --if-due`` from two crons).

        :raises VersionError: the version is out of range or was used before (recorded
            as ``KeyRotationRejected`` unless ``dry_run``).
        """
        keyring = self.keyring()
        if expect_current is not None and keyring.current != expect_current:
            raise ConcurrencyError([ev.KEYRING_STREAM])
        data_key = crypto.generate_data_key()
        try:
            version, events = decide_rotation(
                keyring, new_version, crypto.fingerprint(data_key), reason
            )
        except VersionError as exc:
            if not dry_run and new_version is not None:
                self._record_rejection(
                    ev.KeyRotationRejected(requested_version=new_version, reason=str(exc))
                )
            raise
        result = RotationResult(keyring.current, version, dry_run, range_warning(version))
        if dry_run:
            return result
        if confirm is not None:
            confirm(version)
        wrapped = self._keys.wrap(version, data_key)
        self._append(
            [NewEvent(ev.KEYRING_STREAM, keyring.revision + i, e) for i, e in enumerate(events, 1)],
            keys={version: wrapped},
        )
        self._refresh_keyring()
        return result

    @_serialized
    def rekey_master(
        self, new_password: str, *, kdf_iterations: int | None = None,
        _allow_weak_kdf: bool = False,
    ) -> int:
        """Re-wrap every data key under a KEK from ``new_password``; no secret is touched.

        The KDF gets a fresh salt and at least the current floor of iterations (by
        default the ledger's own count, raised to the floor if it was below it). Returns
        the number of keys re-wrapped. Afterwards only ``new_password`` opens the ledger.
        """
        if not new_password:
            raise InvalidInputError("the new master password must not be empty")
        iterations = kdf_iterations or max(self._meta.kdf.iterations, crypto.KEK_ITERATIONS)
        if iterations < crypto.KEK_ITERATIONS and not _allow_weak_kdf:
            raise ValueError(f"kdf_iterations must be at least {crypto.KEK_ITERATIONS}")
        keyring = self.keyring()
        if not self.recorder.shred():
            # Before anything changes: a reader of an older snapshot would keep the old
            # wraps in the database file, and a copy of it would open with the old password.
            raise LedgerBusyError(
                "another process is reading an older state of the ledger and keeps the "
                "database file from being rewritten; the master password was not changed. "
                "Retry when it is done (or raise --lock-timeout)"
            )
        kdf, new_kek = new_kdf(new_password, iterations)
        rewrapped = self._keys.rewrapped_under(new_kek)
        signing_key = crypto.wrap_signing_key(
            new_kek, self._signing_key().private_bytes(), self._meta.ledger_id
        )
        event = ev.MasterKeyRewrapped(
            kdf_algorithm=kdf.algorithm, kdf_iterations=kdf.iterations,
            fingerprints={str(v): keyring.versions[v].fingerprint for v in sorted(rewrapped)},
        )
        self._append(
            [NewEvent(ev.KEYRING_STREAM, keyring.revision + 1, event)], keys=rewrapped, kdf=kdf,
            signing_key=signing_key,
        )
        self._kek = new_kek
        self._refresh_keyring()
        self.finish_erasure("the key wraps under the old master password")
        return len(rewrapped)

    # -- secrets ------------------------------------------------------------------------

    @_serialized
    def secret(self, name: str) -> SecretState:
        head = self._head(ev.secret_stream(name))
        if head is None:
            return SecretState(name, 0, deleted=True)
        return secret_state(name, head.stream_rev, head.decode())

    @_serialized
    def get(self, name: str) -> SecretValue:
        """The plaintext of a live secret.

        With read auditing on (:meth:`set_read_auditing`), a ``SecretRead`` event naming
        the secret, its key version and this ledger's actor is appended after the value
        decrypts and before it is returned. Fail closed: if that event cannot be appended
        (read-only file, full disk, lock held too long), the error propagates and the
        value is not returned. A read of a missing secret records nothing.

        :raises UnknownSecretError: no live secret has that name.
        :raises IntegrityError: its ciphertext does not decrypt under its recorded key.
        :raises LedgerBusyError, ConcurrencyError, sqlite3.Error: read auditing is on and
            the read could not be recorded; no value is returned.
        """
        secret = self._get_unaudited(name)
        self._record_read(name, secret.version)
        return secret

    def _record_read(self, name: str, version: int) -> None:
        """Append ``SecretRead`` while read auditing is on; raises (fail closed) if it cannot."""
        if self.read_auditing():
            self._append_to_stream(ev.READS_STREAM, ev.SecretRead(name=name, key_version=version))

    def _get_unaudited(self, name: str) -> SecretValue:
        """:meth:`get` without recording the read: for callers that decrypt a value without
        disclosing it (verifying or restoring from a backup), never for handing one out."""
        validate_name(name)
        state = self.secret(name)
        if state.deleted or state.ciphertext is None or state.key_version is None:
            raise UnknownSecretError(f"no secret named {name!r}")
        self.keyring()  # a retirement by another process takes effect at once
        try:
            plaintext = self._decrypt(state)
        except InvalidCiphertext:
            raise IntegrityError(
                f"secret {name!r} does not decrypt under key version {state.key_version}"
            ) from None
        return SecretValue(name, plaintext.decode("utf-8"), state.key_version)

    # -- read auditing -------------------------------------------------------------------

    @_serialized
    def check_decrypts(self, name: str) -> int:
        """Decrypt a live secret without handing its value out (and so without recording a
        read): its key version. For health checks and backup verification.

        :raises UnknownSecretError: no live secret has that name.
        :raises IntegrityError: its ciphertext does not decrypt under its recorded key.
        """
        return self._get_unaudited(name).version

    @_serialized
    def read_auditing(self) -> bool:
        """Whether every :meth:`get` is recorded as a ``SecretRead`` event (one indexed lookup)."""
        return _read_auditing_at(self._head(ev.AUDIT_SETTINGS_STREAM)).enabled

    @_serialized
    def set_read_auditing(self, enabled: bool, *, reason: str | None = None) -> bool:
        """Turn read auditing on or off (``ReadAuditingSet``); whether anything changed.

        Setting it to what it already is appends nothing: an event that changes nothing
        would only be noise in the audit trail.
        """
        for _ in range(CONFLICT_RETRIES):
            head = self._head(ev.AUDIT_SETTINGS_STREAM)
            if _read_auditing_at(head).enabled == enabled:
                return False
            event = ev.ReadAuditingSet(enabled=enabled, reason=reason)
            try:
                # Decided against this revision: two operators switching at once append
                # one event between them, not two identical ones.
                self._append([NewEvent(ev.AUDIT_SETTINGS_STREAM,
                                       (head.stream_rev if head else 0) + 1, event)])
            except ConcurrencyError:
                continue
            return True
        raise ConcurrencyError([ev.AUDIT_SETTINGS_STREAM])

    @_serialized
    def open_ciphertext(self, name: str, ciphertext: str, scheme: str = crypto.SCHEME_BOUND) -> str:
        """Decrypt any ciphertext this ledger holds for ``name`` (a past version, say).

        Recorded as a ``SecretRead`` while read auditing is on, like :meth:`get`, and
        failing closed in the same way.

        :raises IntegrityError: it does not decrypt under the key its version byte names.
        """
        self.keyring()
        try:
            version = crypto.parse_frame_untrusted(ciphertext).version
            state = SecretState(name, 0, False, version, ciphertext, scheme)
            value = self._decrypt(state).decode("utf-8")
        except (InvalidCiphertext, UnicodeDecodeError):
            raise IntegrityError(f"that ciphertext of {name!r} does not decrypt") from None
        self._record_read(name, version)
        return value

    def _decrypt(self, state: SecretState) -> bytes:
        assert state.key_version is not None and state.ciphertext is not None
        if state.key_version not in self._keyring.versions:
            self._refresh_keyring()
        self._keyring.require_usable(state.key_version)
        require_scheme_allowed(self._keyring, state)
        key = self._keys.data_key(state.key_version)
        return crypto.decrypt_secret_untrusted(
            key, state.ciphertext, state.name, state.scheme or crypto.SCHEME_BOUND,
            version=state.key_version,
        )

    @_serialized
    def set(self, name: str, value: str) -> SecretState:
        """Encrypt ``value`` under the current key and record it as the secret's new value."""
        return self._write(name, value, ev.SecretWritten)

    def _write(
        self, name: str, value: str, make: Callable[..., ev.SecretWritten]
    ) -> SecretState:
        validate_name(name)
        plaintext = validate_value(value)
        for _ in range(CONFLICT_RETRIES):
            keyring = self.keyring()
            version = keyring.require_current()
            state = self.secret(name)
            token = crypto.encrypt_secret(self._keys.data_key(version), version, name, plaintext)
            event = make(
                name=name, key_version=version, ciphertext=token, scheme=crypto.SCHEME_BOUND
            )
            try:
                self._append(
                    [NewEvent(ev.secret_stream(name), state.revision + 1, event)],
                    expect={ev.KEYRING_STREAM: keyring.revision},
                )
            except ConcurrencyError:
                continue
            return SecretState(name, state.revision + 1, False, version, token, event.scheme)
        raise ConcurrencyError([ev.secret_stream(name)])

    @_serialized
    def reset(self, name: str, value: str, *, reason: str | None = None) -> SecretState:
        """Replace an existing secret's value to repair it (the old repair script, recorded).

        :raises UnknownSecretError: no secret of that name was ever written.
        """
        if self.secret(name).revision == 0:
            raise UnknownSecretError(f"no secret named {name!r} to reset")
        return self._write(name, value, lambda **f: ev.SecretReset(**f, reason=reason))

    @_serialized
    def restore_from_backup(self, name: str, backup: Ledger, *, backup_file: str) -> SecretState:
        """Bring back ``name``'s value from an open ``backup`` ledger, as a new event here.

        :raises UnknownSecretError: the backup holds no live secret of that name.
        :raises IntegrityError: the backup does not verify as ``verify-backup`` checks it,
            or is of another ledger (another id or signing key); nothing is written.
        """
        from ledger.integrity import verify_ledger  # only a restore pays for the full walk

        report = verify_ledger(backup.recorder)  # type: ignore[arg-type]
        if not report.ok:
            raise IntegrityError(f"the backup does not verify: {'; '.join(report.problems)}")
        if (backup._meta.ledger_id != self._meta.ledger_id
                or backup._signing_key().public_key != self._signing_key().public_key):
            raise IntegrityError("the backup is of another ledger (its id or signing key "
                                 "differs from this one's); nothing was restored")
        # Not a disclosure: the value goes straight into this ledger, recorded as a restore;
        # and a backup being read for that must not gain events of its own.
        secret = backup._get_unaudited(name)
        revision = backup.secret(name).revision
        return self._write(name, secret.value, lambda **f: ev.SecretRestored(
            **f, backup_file=backup_file, backup_revision=revision))

    @_serialized
    def delete(self, name: str) -> None:
        """Record that the secret is gone; its history stays in the ledger.

        :raises UnknownSecretError: no live secret has that name.
        """
        validate_name(name)
        state = self.secret(name)
        if state.deleted:
            raise UnknownSecretError(f"no secret named {name!r}")
        self._append([NewEvent(ev.secret_stream(name), state.revision + 1,
                               ev.SecretDeleted(name=name))])

    @_serialized
    def secrets(self) -> list[SecretInfo]:
        """Every live secret, in name order, once the whole map of stream heads is proven
        against the latest signed checkpoint: a name hidden or added behind keyledger's
        back fails the listing rather than going unnoticed. O(n) in the number of secrets,
        in time and memory (the CLI's ``secrets list`` reads the read models instead).

        :raises IntegrityError: a streams row or head event is not the one signed for.
        """
        found: list[SecretInfo] = []

        def collect(stored: StoredEvent) -> None:
            state = head_state(stored)
            if not state.deleted:
                assert state.key_version is not None and state.scheme is not None
                found.append(SecretInfo(state.name, state.key_version, state.revision,
                                        state.scheme))

        self._fold_heads(ev.SECRET_STREAM_PREFIX, collect)
        return sorted(found, key=lambda info: info.name)

    @_serialized
    def report(self) -> VersionReport:
        """How many live secrets sit on each key version, folded from the events.

        Reads every secret's head event and proves the whole map of stream heads against
        the latest signed checkpoint, so it costs time in proportion to the number of
        secrets; the CLI's ``report`` reads the same figures from the read models.

        :raises IntegrityError: a streams row or head event is not the one signed for.
        """
        current = self.keyring().current
        distribution: dict[int, int] = {}
        up_to_date = 0

        def count(stored: StoredEvent) -> None:
            nonlocal up_to_date
            state = head_state(stored)
            if not state.deleted:
                assert state.key_version is not None
                distribution[state.key_version] = distribution.get(state.key_version, 0) + 1
                up_to_date += state.key_version == current and state.scheme == crypto.SCHEME_BOUND

        # Every head proven against the signed root before any count is used: retire and
        # destroy decide on these figures.
        self._fold_heads(ev.SECRET_STREAM_PREFIX, count)
        total = sum(distribution.values())
        return VersionReport(total, current, total - up_to_date, dict(sorted(distribution.items())))

    @_serialized
    def tally(self) -> Tally:
        """How many live secrets sit on each key version and scheme, and how many values
        each version has encrypted, as the latest signed checkpoint says: constant time,
        and proven (see :mod:`ledger.tally`).

        :raises IntegrityError: the checkpoint does not hold or signs no tally.
        """
        if self._whole_chain_checked:  # an earlier format, read without upgrading it
            found = tally_rules.fold((s.stream, s.decode()) for s in self.recorder.read_events())
        else:
            found = self.recorder.verified_tally(self._signer())
        self._refuse_if_replaced()
        return found

    @_serialized
    def verify_heads(self, prefix: str = ev.SECRET_STREAM_PREFIX) -> int:
        """Prove every streams row and head event against the latest signed checkpoint
        (O(n)); the number of streams named ``prefix...``.

        :raises IntegrityError: one of them is not the one signed for.
        """
        seen = 0

        def count(_: StoredEvent) -> None:
            nonlocal seen
            seen += 1

        self._fold_heads(prefix, count)
        return seen

    def _stream_heads(self, prefix: str = ev.SECRET_STREAM_PREFIX) -> Iterator[StoredEvent]:
        for heads in self._stream_head_batches(prefix, DEFAULT_BATCH_SIZE):
            yield from heads

    def _stream_head_batches(self, prefix: str, size: int) -> Iterator[list[StoredEvent]]:
        """The head events of the streams named ``prefix...``, ``size`` at a time in name order."""
        after = ""
        while True:
            with self._lock:  # a page at a time: a caller between pages holds nothing
                heads = self.recorder.stream_heads(prefix, after, size)
            if not heads:
                return
            yield heads
            after = heads[-1].stream

    # -- imports and migration (see ledger.imports, ledger.migration) -----------------------

    @_serialized
    def import_values(
        self, values: Mapping[str, str], *, source: Literal["json", "dotenv"],
        overwrite: bool = False,
    ) -> ImportResult:
        """Encrypt and record many plaintext values at once; see :func:`ledger.imports.import_values`."""
        return imports.import_values(self, values, source=source, overwrite=overwrite)

    @_serialized
    def import_file(
        self, checked: ImportFile, *, overwrite: bool = False,
        chunk_size: int = imports.IMPORT_CHUNK,
    ) -> ImportResult:
        """Record a checked import file of any size in one transaction; see
        :func:`ledger.imports.import_file`."""
        return imports.import_file(self, checked, overwrite=overwrite, chunk_size=chunk_size)

    @_serialized
    def import_seed(
        self, tokens: Mapping[str, object], password: str, *,
        salt_template: str = crypto.SEED_SALT_TEMPLATE, legacy_version: int = 1,
        overwrite: bool = False,
    ) -> ImportResult:
        """Import the old system's ciphertexts; see :func:`ledger.imports.import_seed`."""
        return imports.import_seed(
            self, tokens, password, salt_template=salt_template, legacy_version=legacy_version,
            overwrite=overwrite,
        )

    @_serialized
    def migrate(
        self, target_version: int | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
        dry_run: bool = False, progress: Progress | None = None,
    ) -> MigrationResult:
        """Re-encrypt every live secret not yet under the current key version.

        Batched and resumable; a secret written meanwhile keeps its newer value; a secret
        that fails is reported and the rest go on. See :mod:`ledger.migration`.

        :raises VersionError: ``target_version`` is not the current version.
        """
        return Migration(
            self, target_version, batch_size=batch_size, dry_run=dry_run, progress=progress
        ).run()

    def _record_rejection(self, event: ev.DomainEvent) -> None:
        self._append_to_stream(ev.REJECTIONS_STREAM, event)

    def _append_to_stream(self, stream: str, event: ev.DomainEvent) -> None:
        """Append one event at the next revision of a stream nobody decides against
        (rejections, policy, backups), retrying if another process got there first."""
        for _ in range(CONFLICT_RETRIES):
            head = self._head(stream)
            try:
                self._append([NewEvent(stream, (head.stream_rev if head else 0) + 1, event)])
                return
            except ConcurrencyError:
                continue
        raise ConcurrencyError([stream])

    # -- lifecycle (see ledger.lifecycle) --------------------------------------------------

    @_serialized
    def retire(self, version: int, *, force: bool = False, reason: str | None = None) -> LifecycleResult:
        """Stop a version from encrypting or decrypting; see :func:`ledger.lifecycle.retire`."""
        return lifecycle.retire(self, version, force=force, reason=reason)

    @_serialized
    def reinstate(self, version: int, *, reason: str | None = None) -> LifecycleResult:
        """Undo :meth:`retire`."""
        return lifecycle.reinstate(self, version, reason=reason)

    @_serialized
    def destroy(
        self, version: int, *, after: timedelta | None = None, reason: str | None = None
    ) -> LifecycleResult:
        """Erase a retired version's key (crypto-shredding); see :func:`ledger.lifecycle.destroy`."""
        return lifecycle.destroy(self, version, after=after, reason=reason)

    @_serialized
    def cancel_destroy(self, version: int) -> LifecycleResult:
        """Cancel a scheduled destruction; the version stays retired."""
        return lifecycle.cancel_destroy(self, version)

    # -- appending ----------------------------------------------------------------------

    def _append(
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
            signer=self._signer(), decided=decided,
        )
        if stored:
            self._remember(stored[-1].seq, stored[-1].hash, occurred_at)
        return stored

    def _append_chunks(
        self, chunks: Iterable[Sequence[NewEvent]], *, expect: Mapping[str, int] | None = None,
        decided: dict[str, tuple[int, str | None]] | None = None,
    ) -> int:
        """Append every chunk's events in one transaction, with one signed checkpoint of
        the final head; the number appended (see :meth:`SQLiteRecorder.append_chunks`)."""
        self._refuse_if_replaced()
        occurred_at = format_time(self.clock())
        appended = self.recorder.append_chunks(
            chunks, actor=self.actor, occurred_at=occurred_at, origin=self.origin,
            expect=expect, signer=self._signer(), decided=decided,
        )
        if appended:
            self._remember(*self.recorder.head(), occurred_at)
        return appended

    def _prove_decided(self, decided: Decided) -> None:
        """Decisions with nothing to append, shown to rest on the proven heads
        (:meth:`SQLiteRecorder.prove_decided`)."""
        self.recorder.prove_decided(decided, self._signer())

    def _signer(self) -> CheckpointSigner:
        if self._checkpoints is None:
            self._checkpoints = CheckpointSigner(self._signing_key(), self._meta.ledger_id)
        return self._checkpoints

    def _signing_key(self) -> SigningKey:
        """The checkpoint-signing key, unwrapped on first use and checked against the
        public key the ledger recorded.

        :raises SigningKeyError: the stored key does not open or was substituted.
        """
        if self._signing is None:
            self._signing = open_signing_key(self._kek, self._meta.signing_key,
                                             self._meta.ledger_id, recorded_public_key(self.recorder))
        return self._signing


