"""The operations: open a ledger with a password, then read, write, rotate and migrate.

Every operation follows one pattern: read the streams it depends on, fold them into state
(:mod:`ledger.domain`), decide the events, and append them in one transaction that checks
the revisions it read. Nothing changes state except appending events.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from ledger import crypto
from ledger import events as ev
from ledger.domain import (
    KeyringState,
    SecretState,
    decide_rotation,
    range_warning,
    secret_state,
    validate_name,
    validate_value,
)
from ledger.errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidCiphertext,
    InvalidInputError,
    KeyledgerError,
    LedgerFormatError,
    UnknownSecretError,
    VersionError,
    WrongPasswordError,
)
from ledger.keyring import KeyMaterial, new_kdf, unlock_kek
from ledger.store import (
    FORMAT_VERSION,
    KdfRecord,
    LedgerMeta,
    NewEvent,
    Projector,
    SQLiteRecorder,
    StoredEvent,
)

Clock = Callable[[], datetime]
Progress = Callable[[int, int], None]

DEFAULT_BATCH_SIZE = 1000
_CONFLICT_RETRIES = 8


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_actor() -> str:
    """``user@host`` of whoever runs this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname() or 'localhost'}"


def format_time(moment: datetime) -> str:
    """UTC, ISO-8601, microseconds, ``Z``: sortable as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


@dataclass(slots=True)
class MigrationResult:
    target_version: int
    run_id: str | None
    dry_run: bool
    migrated: int = 0
    already_current: int = 0
    failures: list[ev.MigrationFailure] = field(default_factory=list)
    duration_seconds: float = 0.0
    resumed: str | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def total(self) -> int:
        return self.migrated + self.already_current + self.failed


@dataclass(slots=True)
class ImportEntryFailure:
    name: str
    reason: str


@dataclass(slots=True)
class ImportResult:
    imported: int = 0
    reencrypted: int = 0
    stored_as_is: int = 0
    created_versions: list[int] = field(default_factory=list)
    failures: list[ImportEntryFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Ledger:
    """An open ledger, unlocked with the master password.

    Build one with :meth:`create` or :meth:`open`; use it as a context manager or call
    :meth:`close`. ``actor`` and ``clock`` are recorded on every event appended.
    """

    def __init__(
        self, recorder: SQLiteRecorder, meta: LedgerMeta, kek: bytes, *,
        actor: str | None = None, clock: Clock = utc_now,
    ) -> None:
        self.recorder = recorder
        self.actor = actor or default_actor()
        self.clock = clock
        self._meta = meta
        self._kek = kek
        self._keyring = KeyringState()
        self._keys = KeyMaterial(kek, meta.ledger_id, {}, {})
        self._refresh_keyring()

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], password: str, *, actor: str | None = None,
        clock: Clock = utc_now, kdf_iterations: int = crypto.KEK_ITERATIONS,
        projector: Projector | None = None, _allow_weak_kdf: bool = False,
    ) -> Ledger:
        """Create a new ledger with key version 1 current.

        :raises LedgerFormatError: ``path`` already holds a ledger or another file.
        :raises ValueError: the password is empty or the KDF is below the floor.
        """
        if not password:
            raise InvalidInputError("the master password must not be empty")
        if kdf_iterations < crypto.KEK_ITERATIONS and not _allow_weak_kdf:
            raise ValueError(f"kdf_iterations must be at least {crypto.KEK_ITERATIONS}")
        recorder = SQLiteRecorder(path, create=True, projector=projector)
        try:
            if recorder.is_initialized():
                raise LedgerFormatError(f"{path} already holds a ledger")
            kdf, kek = new_kdf(password, kdf_iterations)
            meta = LedgerMeta(uuid.uuid4().hex, FORMAT_VERSION, kdf)
            data_key = crypto.generate_data_key()
            fp = crypto.fingerprint(data_key)
            first = [
                NewEvent(ev.LEDGER_STREAM, 1, ev.LedgerInitialized(
                    ledger_id=meta.ledger_id, kdf_algorithm=kdf.algorithm,
                    kdf_iterations=kdf.iterations,
                )),
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
                occurred_at=format_time(clock()),
            )
        except BaseException:
            recorder.close()
            raise
        return cls(recorder, meta, kek, actor=actor, clock=clock)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], password: str, *, actor: str | None = None,
        clock: Clock = utc_now, projector: Projector | None = None,
    ) -> Ledger:
        """Open an existing ledger.

        :raises LedgerNotFoundError: no ledger at ``path``.
        :raises WrongPasswordError: the password does not open it; nothing was changed.
        """
        recorder = SQLiteRecorder(path, projector=projector)
        try:
            meta = recorder.read_meta()
            kek = unlock_kek(meta, password)
            return cls(recorder, meta, kek, actor=actor, clock=clock)
        except BaseException:
            recorder.close()
            raise

    def close(self) -> None:
        self.recorder.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def kdf_iterations(self) -> int:
        return self._meta.kdf.iterations

    # -- keyring ------------------------------------------------------------------------

    def keyring(self) -> KeyringState:
        """The keyring as the ledger holds it now (re-read if another process changed it)."""
        head = self.recorder.stream_head(ev.KEYRING_STREAM)
        if head is None or head.stream_rev != self._keyring.revision:
            self._refresh_keyring()
        return self._keyring

    def _refresh_keyring(self) -> None:
        state = KeyringState()
        for stored in self.recorder.read_stream(ev.KEYRING_STREAM):
            state.apply(stored.decode(), stored.occurred_at)
        meta = self.recorder.read_meta()
        if not crypto.kek_matches(self._kek, meta.kdf.kek_check):
            raise WrongPasswordError(
                "the master password of this ledger was changed by another process; "
                "reopen with the new one"
            )
        self._meta = meta
        self._keyring = state
        fingerprints = {v.version: v.fingerprint for v in state.versions.values()}
        self._keys = KeyMaterial(
            self._kek, meta.ledger_id, self.recorder.read_wrapped_keys(), fingerprints
        )

    def check_keys(self) -> list[int]:
        """Unwrap every key version and check its fingerprint; the versions checked.

        :raises IntegrityError: a stored key does not open or was substituted.
        """
        self.keyring()
        versions = self._keys.versions()
        for version in versions:
            self._keys.data_key(version)
        return versions

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

    def rotate(
        self, new_version: int | None = None, *, reason: str | None = None,
        dry_run: bool = False, confirm: Callable[[int], None] | None = None,
    ) -> RotationResult:
        """Create a new key version and make it current. Versions are never reused.

        ``confirm`` is called with the chosen version before anything is appended; it
        may raise to cancel.

        :raises VersionError: the version is out of range or was used before (recorded
            as ``KeyRotationRejected`` unless ``dry_run``).
        """
        keyring = self.keyring()
        data_key = crypto.generate_data_key()
        try:
            version, events = decide_rotation(
                keyring, new_version, crypto.fingerprint(data_key), reason
            )
        except VersionError as exc:
            if not dry_run and new_version is not None:
                self._append(
                    [NewEvent(ev.KEYRING_STREAM, keyring.revision + 1, ev.KeyRotationRejected(
                        requested_version=new_version, reason=str(exc),
                    ))]
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
        kdf, new_kek = new_kdf(new_password, iterations)
        rewrapped = self._keys.rewrapped_under(new_kek)
        event = ev.MasterKeyRewrapped(
            kdf_algorithm=kdf.algorithm, kdf_iterations=kdf.iterations,
            fingerprints={str(v): keyring.versions[v].fingerprint for v in sorted(rewrapped)},
        )
        self._append(
            [NewEvent(ev.KEYRING_STREAM, keyring.revision + 1, event)], keys=rewrapped, kdf=kdf
        )
        self._kek = new_kek
        self._refresh_keyring()
        return len(rewrapped)

    # -- secrets ------------------------------------------------------------------------

    def secret(self, name: str) -> SecretState:
        head = self.recorder.stream_head(ev.secret_stream(name))
        if head is None:
            return SecretState(name, 0, deleted=True)
        return secret_state(name, head.stream_rev, head.decode())

    def get(self, name: str) -> SecretValue:
        """The plaintext of a live secret.

        :raises UnknownSecretError: no live secret has that name.
        :raises IntegrityError: its ciphertext does not decrypt under its recorded key.
        """
        state = self.secret(name)
        if state.deleted or state.ciphertext is None or state.key_version is None:
            raise UnknownSecretError(f"no secret named {name!r}")
        try:
            plaintext = self._decrypt(state)
        except InvalidCiphertext:
            raise IntegrityError(
                f"secret {name!r} does not decrypt under key version {state.key_version}"
            ) from None
        return SecretValue(name, plaintext.decode("utf-8"), state.key_version)

    def open_ciphertext(self, name: str, ciphertext: str, scheme: str = crypto.SCHEME_BOUND) -> str:
        """Decrypt any ciphertext this ledger holds for ``name`` (a past version, say).

        :raises IntegrityError: it does not decrypt under the key its version byte names.
        """
        try:
            version = crypto.parse_frame_untrusted(ciphertext).version
            state = SecretState(name, 0, False, version, ciphertext, scheme)
            return self._decrypt(state).decode("utf-8")
        except (InvalidCiphertext, UnicodeDecodeError):
            raise IntegrityError(f"that ciphertext of {name!r} does not decrypt") from None

    def _decrypt(self, state: SecretState) -> bytes:
        assert state.key_version is not None and state.ciphertext is not None
        if state.key_version not in self._keyring.versions:
            self._refresh_keyring()
        key = self._keys.data_key(state.key_version)
        frame = crypto.parse_frame_untrusted(state.ciphertext)
        if frame.version != state.key_version:
            raise InvalidCiphertext
        return crypto.decrypt_secret_untrusted(
            key, state.ciphertext, state.name, state.scheme or crypto.SCHEME_BOUND
        )

    def set(self, name: str, value: str) -> SecretState:
        """Encrypt ``value`` under the current key and record it as the secret's new value."""
        validate_name(name)
        plaintext = validate_value(value)
        for _ in range(_CONFLICT_RETRIES):
            keyring = self.keyring()
            version = keyring.require_current()
            state = self.secret(name)
            token = crypto.encrypt_secret(self._keys.data_key(version), version, name, plaintext)
            event = ev.SecretWritten(
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

    def delete(self, name: str) -> None:
        """Record that the secret is gone; its history stays in the ledger.

        :raises UnknownSecretError: no live secret has that name.
        """
        state = self.secret(name)
        if state.deleted:
            raise UnknownSecretError(f"no secret named {name!r}")
        self._append([NewEvent(ev.secret_stream(name), state.revision + 1,
                               ev.SecretDeleted(name=name))])

    def secrets(self) -> Iterator[SecretInfo]:
        """Every live secret, in name order, streamed from the ledger."""
        for stored in self._stream_heads():
            state = _state_of(stored)
            if not state.deleted:
                assert state.key_version is not None and state.scheme is not None
                yield SecretInfo(state.name, state.key_version, state.revision, state.scheme)

    def _stream_heads(self, prefix: str = ev.SECRET_STREAM_PREFIX) -> Iterator[StoredEvent]:
        after = ""
        while heads := self.recorder.stream_heads(prefix, after, DEFAULT_BATCH_SIZE):
            yield from heads
            after = heads[-1].stream

    # -- imports ------------------------------------------------------------------------

    def import_values(
        self, values: Mapping[str, str], *, source: Literal["json", "dotenv"],
        overwrite: bool = False,
    ) -> ImportResult:
        """Encrypt and record many plaintext values in one transaction (all or nothing).

        A name that already holds a live secret is skipped (listed in ``skipped``) unless
        ``overwrite``: re-running an import never silently reverts a newer value.

        :raises InvalidInputError: a name or value is invalid (named); nothing was written.
        """
        checked = [(name, _checked_entry(name, value)) for name, value in values.items()]
        for _ in range(_CONFLICT_RETRIES):
            keyring = self.keyring()
            version = keyring.require_current()
            key = self._keys.data_key(version)
            result = ImportResult()
            new = []
            for name, plaintext in checked:
                state = self.secret(name)
                if not state.deleted and not overwrite:
                    result.skipped.append(name)
                    continue
                token = crypto.encrypt_secret(key, version, name, plaintext)
                new.append(NewEvent(
                    ev.secret_stream(name), state.revision + 1,
                    ev.SecretImported(name=name, key_version=version, ciphertext=token,
                                      scheme=crypto.SCHEME_BOUND, source=source),
                ))
            try:
                self._append(new, expect={ev.KEYRING_STREAM: keyring.revision})
            except ConcurrencyError:
                continue
            result.imported = len(new)
            return result
        raise ConcurrencyError(["secrets being imported"])

    def import_seed(
        self, tokens: Mapping[str, object], password: str, *,
        salt_template: str = crypto.SEED_SALT_TEMPLATE, legacy_version: int = 1,
        overwrite: bool = False,
    ) -> ImportResult:
        """Import ciphertexts written by the guide's system under ``password``.

        A version this ledger lacks becomes a key version holding the guide's derived key,
        and its ciphertexts are kept as they are; where this ledger's version is another
        key, the value is re-encrypted under the current version. Unreadable entries are
        listed in the result with their reason; the others are imported. As with
        :meth:`import_values`, existing secrets are skipped unless ``overwrite``.
        """
        if not 1 <= legacy_version <= crypto.MAX_VERSION:
            raise InvalidInputError("--legacy-version must be 1-255")
        if "{v}" not in salt_template:
            raise InvalidInputError("the salt template must contain {v}")
        seed_keys: dict[int, bytes] = {}

        def seed_key(version: int) -> bytes:
            if version not in seed_keys:
                seed_keys[version] = crypto.derive_seed_key(password, version, salt_template)
            return seed_keys[version]

        opened: list[tuple[str, crypto.SeedPlaintext]] = []
        result = ImportResult()
        for name, token in tokens.items():
            try:
                validate_name(name)
                if not isinstance(token, str):
                    raise InvalidInputError("the ciphertext must be a string")
                sp = crypto.open_seed_ciphertext_untrusted(token, seed_key, legacy_version)
                validate_value(_utf8_untrusted(sp.plaintext))
                opened.append((name, sp))
            except (InvalidInputError, crypto.SeedDecodeError) as exc:
                result.failures.append(ImportEntryFailure(name, str(exc)))
        for _ in range(_CONFLICT_RETRIES):
            try:
                self._append_seed(opened, seed_key, result, overwrite)
                return result
            except ConcurrencyError:
                result.imported = result.reencrypted = result.stored_as_is = 0
                result.created_versions, result.skipped = [], []
        raise ConcurrencyError(["secrets being imported"])

    def _append_seed(
        self, opened: list[tuple[str, crypto.SeedPlaintext]],
        seed_key: Callable[[int], bytes], result: ImportResult, overwrite: bool,
    ) -> None:
        keyring = self.keyring()
        current = keyring.require_current()
        keyring_events: list[ev.DomainEvent] = []
        wrapped: dict[int, bytes] = {}
        secrets: list[NewEvent] = []
        for name, sp in opened:
            state = self.secret(name)
            if not state.deleted and not overwrite:
                result.skipped.append(name)
                continue
            version = sp.version
            fp = crypto.fingerprint(seed_key(version))
            if version not in keyring.versions and version not in wrapped:
                keyring_events.append(
                    ev.KeyVersionCreated(version=version, fingerprint=fp, origin="seed-import")
                )
                wrapped[version] = self._keys.wrap(version, seed_key(version))
                result.created_versions.append(version)
            same_key = version in wrapped or keyring.versions[version].fingerprint == fp
            if same_key:
                event = ev.SecretImported(
                    name=name, key_version=version, ciphertext=sp.frame.encode(),
                    scheme=crypto.SCHEME_SEED, source="seed", seed_version=version,
                    legacy=sp.legacy,
                )
                result.stored_as_is += 1
            else:
                token = crypto.encrypt_secret(
                    self._keys.data_key(current), current, name, sp.plaintext
                )
                event = ev.SecretImported(
                    name=name, key_version=current, ciphertext=token,
                    scheme=crypto.SCHEME_BOUND, source="seed", seed_version=version,
                    legacy=sp.legacy, reencrypted=True,
                )
                result.reencrypted += 1
            secrets.append(NewEvent(ev.secret_stream(name), state.revision + 1, event))
        new = [
            NewEvent(ev.KEYRING_STREAM, keyring.revision + i, e)
            for i, e in enumerate(keyring_events, 1)
        ]
        self._append(
            new + secrets, keys=wrapped or None,
            expect=None if new else {ev.KEYRING_STREAM: keyring.revision},
        )
        result.imported = len(secrets)
        if new:
            self._refresh_keyring()

    # -- migration ----------------------------------------------------------------------

    def migrate(
        self, target_version: int | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
        dry_run: bool = False, progress: Progress | None = None,
    ) -> MigrationResult:
        """Re-encrypt every live secret not yet under ``target_version`` (the current one).

        Batches commit one by one, so a killed run loses at most one batch of work and a
        re-run continues where it stopped. A secret written while the migration runs keeps
        its new value: the migration's append checks each secret's revision and re-reads
        the ones that changed. A secret that fails is reported and the rest go on.

        :raises VersionError: ``target_version`` is not the current version.
        """
        if batch_size < 1:
            raise InvalidInputError("--batch-size must be at least 1")
        keyring = self.keyring()
        current = keyring.require_current()
        target = current if target_version is None else target_version
        if target != current:
            raise VersionError(
                f"migration target {target} is not the current key version ({current}); "
                f"rotate first, or migrate to {current}"
            )
        started = time.perf_counter()
        total = self.recorder.stream_count(ev.SECRET_STREAM_PREFIX)
        result = MigrationResult(target, None, dry_run)
        if not dry_run:
            result.run_id = uuid.uuid4().hex[:16]
            result.resumed = self._unfinished_run(target)
            self._append([NewEvent(ev.migration_stream(result.run_id), 1, ev.MigrationStarted(
                run_id=result.run_id, target_version=target, batch_size=batch_size,
                candidates=total, resumes=result.resumed,
            ))])
        done = 0
        after = ""
        while heads := self.recorder.stream_heads(ev.SECRET_STREAM_PREFIX, after, batch_size):
            after = heads[-1].stream
            self._migrate_batch([_state_of(h) for h in heads], keyring, result)
            done += len(heads)
            if progress:
                progress(done, total)
        result.duration_seconds = round(time.perf_counter() - started, 6)
        if result.run_id is not None:
            self._append([NewEvent(ev.migration_stream(result.run_id), 2, ev.MigrationCompleted(
                run_id=result.run_id, target_version=target, migrated=result.migrated,
                already_current=result.already_current, failed=result.failed,
                failures=tuple(result.failures), duration_seconds=result.duration_seconds,
                status="success" if not result.failures else "partial",
            ))])
        return result

    def _migrate_batch(
        self, states: list[SecretState], keyring: KeyringState, result: MigrationResult
    ) -> None:
        target = keyring.require_current()
        for _ in range(_CONFLICT_RETRIES):
            events: list[NewEvent] = []
            failures: list[ev.MigrationFailure] = []
            already_current = 0
            for state in states:
                if state.deleted:
                    continue
                if state.key_version == target and state.scheme == crypto.SCHEME_BOUND:
                    already_current += 1
                    continue
                try:
                    events.append(self._migration_event(state, target, result.run_id))
                except KeyledgerError as exc:
                    failures.append(ev.MigrationFailure(name=state.name, error=str(exc)))
            if events and not result.dry_run:
                try:
                    self._append(events, expect={ev.KEYRING_STREAM: keyring.revision})
                except ConcurrencyError as exc:
                    if ev.KEYRING_STREAM in exc.streams:
                        raise VersionError(
                            "the keyring changed during the migration (another rotation?); "
                            "re-run migrate to continue"
                        ) from None
                    # Written meanwhile: re-read those secrets and decide the batch again,
                    # so the newer value is kept and never overwritten by an older one.
                    changed = set(exc.streams)
                    states = [
                        self.secret(s.name) if ev.secret_stream(s.name) in changed else s
                        for s in states
                    ]
                    continue
            result.migrated += len(events)
            result.already_current += already_current
            result.failures.extend(failures)
            return
        raise ConcurrencyError([ev.secret_stream(s.name) for s in states])

    def _migration_event(self, state: SecretState, target: int, run_id: str | None) -> NewEvent:
        assert state.key_version is not None
        try:
            plaintext = self._decrypt(state)
        except InvalidCiphertext:
            raise IntegrityError("decryption failed") from None
        token = crypto.encrypt_secret(self._keys.data_key(target), target, state.name, plaintext)
        return NewEvent(ev.secret_stream(state.name), state.revision + 1, ev.SecretMigrated(
            name=state.name, run_id=run_id or "dry-run", from_version=state.key_version,
            to_version=target, ciphertext=token, scheme=crypto.SCHEME_BOUND,
        ))

    def _unfinished_run(self, target: int) -> str | None:
        """The latest run to ``target`` that never completed and no later run took over."""
        unfinished: dict[str, int] = {}
        taken_over: set[str] = set()
        for head in self._stream_heads(ev.MIGRATION_STREAM_PREFIX):
            started = self.recorder.read_stream(head.stream)[0].decode()
            assert isinstance(started, ev.MigrationStarted)
            if started.resumes:
                taken_over.add(started.resumes)
            if head.type == "MigrationStarted" and started.target_version == target:
                unfinished[started.run_id] = head.seq
        candidates = {run: seq for run, seq in unfinished.items() if run not in taken_over}
        return max(candidates, key=candidates.__getitem__, default=None)

    # -- appending ----------------------------------------------------------------------

    def _append(
        self, events: Iterable[NewEvent], *, keys: dict[int, bytes] | None = None,
        kdf: KdfRecord | None = None, expect: Mapping[str, int] | None = None,
    ) -> list[StoredEvent]:
        return self.recorder.append(
            list(events), actor=self.actor, occurred_at=format_time(self.clock()),
            keys=keys, kdf=kdf, expect=expect,
        )


def _checked_entry(name: str, value: str) -> bytes:
    """An import entry's value as bytes, or an error that names the entry (not the value)."""
    try:
        validate_name(name)
        return validate_value(value)
    except InvalidInputError as exc:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidInputError(f"entry {shown!r}: {exc}") from None


def _utf8_untrusted(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("the decrypted value is not UTF-8 text") from None


def _state_of(stored: StoredEvent) -> SecretState:
    name = stored.stream.removeprefix(ev.SECRET_STREAM_PREFIX)
    return secret_state(name, stored.stream_rev, stored.decode())
