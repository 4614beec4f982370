"""The operations: open a ledger with a password, then read, write, rotate and migrate.

Every operation follows one pattern: read the streams it depends on, fold them into state
(:mod:`ledger.domain`), decide the events, and append them in one transaction that checks
the revisions it read. Nothing changes state except appending events.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Concatenate, Literal, ParamSpec, TypeVar

from ledger import crypto
from ledger import events as ev
from ledger.domain import (
    KeyringState,
    SecretState,
    decide_rotation,
    format_time,
    head_state,
    range_warning,
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
    UnknownSecretError,
    VersionError,
    WrongPasswordError,
)
from ledger.events import NewEvent, StoredEvent
from ledger.keyring import new_kdf, unlock_kek
from ledger.locations import DEFAULT_LOCK_TIMEOUT, open_recorder
from ledger.migration import (
    DEFAULT_BATCH_SIZE,
    Migration,
    MigrationResult,
    Progress,
)
from ledger.seen import Seen, SeenCheckpoints, SeenReview, review
from ledger.session import (
    CONFLICT_RETRIES,
    Clock,
    Session,
    VersionReport,
    default_actor,
    default_origin,
    utc_now,
)
from ledger.signing import CheckpointSigner, SigningKey
from ledger.store import FORMAT_VERSION, LedgerMeta, Projector, Recorder
from ledger.tally import Tally

if TYPE_CHECKING:
    from ledger.import_formats import ImportFile
    from ledger.importing import ImportResult
    from ledger.lifecycle import LifecycleResult

# ``seen``'s default: this host's memory of checkpoints as the environment names it.
FROM_ENVIRONMENT: Literal["environment"] = "environment"
SeenOption = SeenCheckpoints | None | Literal["environment"]


P = ParamSpec("P")
R = TypeVar("R")


def _serialized(method: Callable[Concatenate[Ledger, P], R]) -> Callable[Concatenate[Ledger, P], R]:
    """Run a :class:`Ledger` method under the ledger's lock: one Ledger may be shared by
    threads, which then take turns on its one SQLite connection."""

    def serialized(self: Ledger, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.session.lock:
            return method(self, *args, **kwargs)

    functools.update_wrapper(serialized, method)
    return serialized


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
        # One session, shared by every thread that uses this Ledger: each public method
        # runs under its lock, so threads take turns (see _serialized).
        self.session = Session(
            recorder, meta, kek, actor=actor, clock=clock, origin=origin, upgrade=upgrade,
            seen=SeenCheckpoints.from_environment() if isinstance(seen, str) else seen,
        )

    @property
    def recorder(self) -> Recorder:
        return self.session.recorder

    @property
    def actor(self) -> str:
        """Who the events appended from now on are recorded as done by."""
        return self.session.actor

    @actor.setter
    def actor(self, actor: str) -> None:
        self.session.actor = actor

    @property
    def origin(self) -> str:
        return self.session.origin

    @property
    def clock(self) -> Clock:
        return self.session.clock

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
        recorder = open_recorder(path, create=True, projector=projector)
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
                raise LedgerFormatError(f"{recorder.location} already holds a ledger")
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
            open_recorder(path, projector=projector), password, actor=actor, clock=clock,
            origin=origin, upgrade=upgrade, seen=seen,
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, projector: Projector | None = None,
        origin: str | None = None,
    ) -> Ledger:
        """Open the ledger the environment names, as the CLI reads it: ``KEYLEDGER_DB``
        (a path or a PostgreSQL URL; default ``keyledger.db``), ``KEYLEDGER_ACTOR``,
        ``KEYLEDGER_LOCK_TIMEOUT`` (seconds) and the master password from
        ``ENCRYPTION_MASTER_PASSWORD`` or the file ``ENCRYPTION_MASTER_PASSWORD_FILE``
        names (:mod:`ledger.environment`). ``environ`` defaults to ``os.environ``.

        :raises WrongPasswordError: no password is set, both are, or it does not open it.
        :raises InvalidInputError: ``KEYLEDGER_LOCK_TIMEOUT`` is not a number of seconds.
        """
        from ledger import environment as names

        environ = os.environ if environ is None else environ
        password = names.from_environment(names.PASSWORD_ENV, environ)
        if password is None:
            raise WrongPasswordError(f"{names.PASSWORD_ENV} is not set, nor "
                                     f"{names.PASSWORD_ENV}{names.FILE_SUFFIX}")
        target = environ.get(names.DB_ENV) or names.DEFAULT_DB
        timeout = environ.get(names.LOCK_TIMEOUT_ENV)
        try:
            lock_timeout = DEFAULT_LOCK_TIMEOUT if timeout is None else float(timeout)
            if not lock_timeout >= 0:
                raise ValueError(timeout)
        except ValueError:
            raise InvalidInputError(
                f"{names.LOCK_TIMEOUT_ENV} is not a number of seconds") from None
        return cls.unlock(
            open_recorder(target, projector=projector, lock_timeout=lock_timeout), password,
            actor=environ.get(names.ACTOR_ENV) or None, origin=origin)

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
        return self.session.meta.kdf.iterations

    @property
    def erase_pending(self) -> str | None:
        """What a destroy or rekey has not yet erased from the file, or None."""
        with self.session.lock:
            return self.recorder.erase_pending()

    @property
    def ledger_id(self) -> str:
        return self.session.meta.ledger_id

    @_serialized
    def signed_tip(self) -> Seen:
        """The latest checkpoint, shown to cover the last event and carry this ledger's
        signature (:meth:`SQLiteRecorder.verified_tip`)."""
        return self.session.signed_tip()

    @_serialized
    def finish_erasure(self, what: str) -> bool:
        """Erase from the file what a destroy or rekey left behind; see
        :meth:`ledger.session.Session.finish_erasure`. Whether it is erased now."""
        return self.session.finish_erasure(what)

    @_serialized
    def review_seen(self, *, forget: bool = False) -> SeenReview:
        """This host's memory of the ledger here beside its verified tip now; ``forget``
        replaces the memory with that tip (an older copy was put back on purpose). Open
        the ledger with ``seen=None`` to review one the memory refuses."""
        return review(self.session.memory_key(), self.session.signed_tip(), forget=forget)

    @_serialized
    def head_of(self, stream: str) -> StoredEvent | None:
        """The head event of ``stream``, proven against the latest signed checkpoint."""
        return self.session.head(stream)

    @_serialized
    def keyring(self) -> KeyringState:
        """The keyring as the ledger holds it now (re-read if another process changed it)."""
        return self.session.keyring()

    @_serialized
    def check_keys(self) -> list[int]:
        """Unwrap every key version and check its fingerprint; the versions checked.

        :raises IntegrityError: a stored key does not open or was substituted.
        """
        self.keyring()
        keys = self.session.keys
        versions = keys.versions()
        for version in versions:
            keys.data_key(version)
        return versions

    @_serialized
    def check_signing_key(self) -> str:
        """Open the checkpoint-signing key and check it is the private half of the public
        key the events recorded (:func:`ledger.signing.open_signing_key`); that public key.

        :raises SigningKeyError: it does not open or was substituted.
        """
        return self.session.signing_key().public_key

    @_serialized
    def self_test(self) -> None:
        """Encrypt and decrypt a probe under the current key, in memory only."""
        version = self.keyring().require_current()
        key = self.session.keys.data_key(version)
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
                self.session.append_to_stream(ev.REJECTIONS_STREAM, ev.KeyRotationRejected(
                    requested_version=new_version, reason=str(exc)))
            raise
        result = RotationResult(keyring.current, version, dry_run, range_warning(version))
        if dry_run:
            return result
        if confirm is not None:
            confirm(version)
        wrapped = self.session.keys.wrap(version, data_key)
        self.session.append(
            [NewEvent(ev.KEYRING_STREAM, keyring.revision + i, e) for i, e in enumerate(events, 1)],
            keys={version: wrapped},
        )
        self.session.refresh_keyring()
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
        iterations = kdf_iterations or max(self.session.meta.kdf.iterations, crypto.KEK_ITERATIONS)
        if iterations < crypto.KEK_ITERATIONS and not _allow_weak_kdf:
            raise ValueError(f"kdf_iterations must be at least {crypto.KEK_ITERATIONS}")
        keyring = self.keyring()
        self.session.refuse_if_triggers_altered("change the master password")
        if not self.recorder.ready_to_erase():
            # Before anything changes: a reader of an older snapshot would keep the old
            # wraps in the database file, and a copy of it would open with the old password.
            raise LedgerBusyError(
                "another process is reading an older state of the ledger and keeps the "
                "database file from being rewritten; the master password was not changed. "
                "Retry when it is done (or raise --lock-timeout)"
            )
        kdf, new_kek = new_kdf(new_password, iterations)
        rewrapped = self.session.keys.rewrapped_under(new_kek)
        signing_key = crypto.wrap_signing_key(
            new_kek, self.session.signing_key().private_bytes(), self.session.meta.ledger_id
        )
        event = ev.MasterKeyRewrapped(
            kdf_algorithm=kdf.algorithm, kdf_iterations=kdf.iterations,
            fingerprints={str(v): keyring.versions[v].fingerprint for v in sorted(rewrapped)},
        )
        self.session.append(
            [NewEvent(ev.KEYRING_STREAM, keyring.revision + 1, event)], keys=rewrapped, kdf=kdf,
            signing_key=signing_key,
        )
        self.session.use_kek(new_kek)
        self.session.finish_erasure("the key wraps under the old master password")
        return len(rewrapped)

    # -- secrets ------------------------------------------------------------------------

    @_serialized
    def secret(self, name: str) -> SecretState:
        return self.session.secret(name)

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
        :raises LedgerBusyError, ConcurrencyError, LedgerDatabaseError: read auditing is on and
            the read could not be recorded; no value is returned.
        """
        secret = self._get_unaudited(name)
        self._record_read(name, secret.version)
        return secret

    @_serialized
    def get_many(self, names: Iterable[str] | None = None, *, prefix: str = "",
                 before_recording: Callable[[dict[str, SecretValue]], None] | None = None,
                 ) -> dict[str, SecretValue]:
        """Several live secrets in one unlock, by name: ``names`` (every one must exist), or
        every live secret whose name starts with ``prefix``, listed from the proven map of
        stream heads (:meth:`secrets`). Everything is decrypted before anything is handed
        out; with read auditing on, one ``SecretRead`` per secret is appended, all in one
        transaction, before the values are returned (fail closed, as :meth:`get`).

        ``before_recording`` sees the decrypted values before any read is recorded, and may
        refuse them by raising (a value a caller cannot hand over): nothing is recorded then.

        :raises UnknownSecretError: a name in ``names`` is no live secret (nothing recorded).
        :raises IntegrityError: a ciphertext does not decrypt, or the heads do not prove.
        :raises TypeError: ``names`` is one string rather than a collection of names.
        """
        if isinstance(names, str):
            raise TypeError("get_many takes a collection of names; for one, use get()")
        chosen = (sorted(set(names)) if names is not None
                  else [info.name for info in self.secrets() if info.name.startswith(prefix)])
        found = {name: self._get_unaudited(name) for name in chosen}
        if before_recording is not None:
            before_recording(found)
        self._record_reads(list(found.values()))
        return found

    def _record_read(self, name: str, version: int) -> None:
        """Append ``SecretRead`` while read auditing is on; raises (fail closed) if it cannot."""
        if self.read_auditing():
            self.session.append_to_stream(ev.READS_STREAM, ev.SecretRead(name=name, key_version=version))

    def _record_reads(self, secrets: Sequence[SecretValue]) -> None:
        """:meth:`_record_read` for several secrets, in one append."""
        if secrets and self.read_auditing():
            self.session.append_to_stream(ev.READS_STREAM, *(
                ev.SecretRead(name=s.name, key_version=s.version) for s in secrets))

    def _get_unaudited(self, name: str) -> SecretValue:
        """:meth:`get` without recording the read: for callers that decrypt a value without
        disclosing it (verifying or restoring from a backup), never for handing one out."""
        validate_name(name)
        state = self.secret(name)
        if state.deleted or state.ciphertext is None or state.key_version is None:
            raise UnknownSecretError(f"no secret named {name!r}")
        self.keyring()  # a retirement by another process takes effect at once
        try:
            plaintext = self.session.decrypt(state)
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
        return _read_auditing_at(self.session.head(ev.AUDIT_SETTINGS_STREAM)).enabled

    @_serialized
    def set_read_auditing(self, enabled: bool, *, reason: str | None = None) -> bool:
        """Turn read auditing on or off (``ReadAuditingSet``); whether anything changed.

        Setting it to what it already is appends nothing: an event that changes nothing
        would only be noise in the audit trail.
        """
        for _ in range(CONFLICT_RETRIES):
            head = self.session.head(ev.AUDIT_SETTINGS_STREAM)
            if _read_auditing_at(head).enabled == enabled:
                return False
            event = ev.ReadAuditingSet(enabled=enabled, reason=reason)
            try:
                # Decided against this revision: two operators switching at once append
                # one event between them, not two identical ones.
                self.session.append([NewEvent(ev.AUDIT_SETTINGS_STREAM,
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
            value = self.session.decrypt(state).decode("utf-8")
        except (InvalidCiphertext, UnicodeDecodeError):
            raise IntegrityError(f"that ciphertext of {name!r} does not decrypt") from None
        self._record_read(name, version)
        return value

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
            token = crypto.encrypt_secret(
                self.session.keys.cipher(version), version, name, plaintext
            )
            event = make(
                name=name, key_version=version, ciphertext=token, scheme=crypto.SCHEME_BOUND
            )
            try:
                self.session.append(
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

        report = verify_ledger(backup.recorder)
        if not report.ok:
            raise IntegrityError(f"the backup does not verify: {'; '.join(report.problems)}")
        if (backup.ledger_id != self.ledger_id
                or backup.check_signing_key() != self.check_signing_key()):
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
        self.session.append([NewEvent(ev.secret_stream(name), state.revision + 1,
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

        self.session.fold_heads(ev.SECRET_STREAM_PREFIX, collect)
        return sorted(found, key=lambda info: info.name)

    @_serialized
    def report(self) -> VersionReport:
        """How many live secrets sit on each key version, folded from the events.

        Reads every secret's head event and proves the whole map of stream heads against
        the latest signed checkpoint, so it costs time in proportion to the number of
        secrets; the CLI's ``report`` reads the same figures from the read models.

        :raises IntegrityError: a streams row or head event is not the one signed for.
        """
        return self.session.report()

    @_serialized
    def tally(self) -> Tally:
        """How many live secrets sit on each key version and scheme, and how many values
        each version has encrypted, as the latest signed checkpoint says: constant time,
        and proven (see :mod:`ledger.tally`).

        :raises IntegrityError: the checkpoint does not hold or signs no tally.
        """
        return self.session.tally()

    @_serialized
    def verify_heads(self, prefix: str = ev.SECRET_STREAM_PREFIX) -> int:
        """Prove every streams row and head event against the latest signed checkpoint
        (O(n)); the number of streams named ``prefix...``.

        :raises IntegrityError: one of them is not the one signed for.
        """
        return self.session.verify_heads(prefix)

    # -- imports and migration (see ledger.importing, ledger.migration) -----------------------

    @_serialized
    def import_values(
        self, values: Mapping[str, str], *, source: Literal["json", "dotenv"],
        overwrite: bool = False,
    ) -> ImportResult:
        """Encrypt and record many plaintext values at once; see :func:`ledger.importing.import_values`."""
        from ledger import importing  # the operations load on first use: start-up stays lean

        return importing.import_values(self.session, values, source=source, overwrite=overwrite)

    @_serialized
    def import_file(
        self, checked: ImportFile, *, overwrite: bool = False,
        chunk_size: int | None = None,
    ) -> ImportResult:
        """Record a checked import file of any size in one transaction; see
        :func:`ledger.importing.import_file`."""
        from ledger import importing

        return importing.import_file(self.session, checked, overwrite=overwrite,
                                     chunk_size=importing.IMPORT_CHUNK if chunk_size is None else chunk_size)

    @_serialized
    def import_seed(
        self, tokens: Mapping[str, object], password: str, *,
        salt_template: str = crypto.SEED_SALT_TEMPLATE, legacy_version: int = 1,
        overwrite: bool = False,
    ) -> ImportResult:
        """Import the old system's ciphertexts; see :func:`ledger.importing.import_seed`."""
        from ledger import importing

        return importing.import_seed(
            self.session, tokens, password, salt_template=salt_template, legacy_version=legacy_version,
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
            self.session, target_version, batch_size=batch_size, dry_run=dry_run, progress=progress
        ).run()

    # -- lifecycle (see ledger.lifecycle) --------------------------------------------------

    @_serialized
    def retire(self, version: int, *, force: bool = False, reason: str | None = None) -> LifecycleResult:
        """Stop a version from encrypting or decrypting; see :func:`ledger.lifecycle.retire`."""
        from ledger import lifecycle

        return lifecycle.retire(self.session, version, force=force, reason=reason)

    @_serialized
    def reinstate(self, version: int, *, reason: str | None = None) -> LifecycleResult:
        """Undo :meth:`retire`."""
        from ledger import lifecycle

        return lifecycle.reinstate(self.session, version, reason=reason)

    @_serialized
    def destroy(
        self, version: int, *, after: timedelta | None = None, reason: str | None = None
    ) -> LifecycleResult:
        """Erase a retired version's key (crypto-shredding); see :func:`ledger.lifecycle.destroy`."""
        from ledger import lifecycle

        return lifecycle.destroy(self.session, version, after=after, reason=reason)

    @_serialized
    def cancel_destroy(self, version: int) -> LifecycleResult:
        """Cancel a scheduled destruction; the version stays retired."""
        from ledger import lifecycle

        return lifecycle.cancel_destroy(self.session, version)
