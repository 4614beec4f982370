"""Migration: re-encrypt every live secret under the current key version, in batches.

Each batch is one transaction, so a killed run loses at most one batch of work and a
re-run continues where it stopped (recording which run it ``resumes``). A run records
itself (``MigrationStarted``, in the transaction of its first re-encrypted batch) only
when it has something to record: a migrate with nothing to do appends nothing, unless it
closes a killed run that had already finished its last batch. Each batch's
append checks every secret's revision: a secret written meanwhile is re-read and decided
again, so a newer value is never overwritten by an older one.

With enough secrets the reading, decoding, decrypting, re-encrypting and serialising of
each batch runs in a forked worker process (:mod:`ledger.pipeline`) one batch ahead of
this process, which decides and appends: the two halves of the work then run on two cores.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ledger import crypto, pipeline, tally
from ledger import events as ev
from ledger.domain import (
    KeyringState,
    SecretState,
    needs_migration,
    secret_state,
    unproven_head_state,
)
from ledger.errors import (
    ConcurrencyError,
    IntegrityError,
    InvalidCiphertext,
    InvalidInputError,
    KeyledgerError,
    LedgerDatabaseError,
    LedgerFormatError,
    LedgerStorageError,
    VersionError,
)
from ledger.events import NewEvent
from ledger.session import CONFLICT_RETRIES, Session
from ledger.store import HeadRow, decision_hash

Progress = Callable[[int, int], None]

#: Secrets per transaction. 10,000 (the size the script a user would write picks): at
#: 1,000 each commit rewrote most of the heads tree and its index pages: 3.6 GB written
#: by a 100,000-secret migrate, against 0.6 GB now (docs/benchmarks.md, issue 16).
DEFAULT_BATCH_SIZE = 10_000
#: From this many secrets on, a worker process prepares the batches (forking costs ~20 ms).
PIPELINE_MIN_SECRETS = 5_000


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


class Migration:
    """One run of ``migrate`` against an open ledger."""

    def __init__(
        self, session: Session, target_version: int | None, *, batch_size: int = DEFAULT_BATCH_SIZE,
        dry_run: bool = False, progress: Progress | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError("--batch-size must be at least 1")
        self.session = session
        self.keyring: KeyringState = session.keyring()
        current = self.keyring.require_current()
        target = current if target_version is None else target_version
        if target != current:
            raise VersionError(
                f"migration target {target} is not the current key version ({current}); "
                f"rotate first, or migrate to {current}"
            )
        self.batch_size = batch_size
        self.progress = progress
        self.result = MigrationResult(target, None, dry_run)
        self._started: NewEvent | None = None  # appended with the first batch that needs it
        self._recorded = False
        # name -> (revision, new ciphertext, payload) for the batch at hand, from the worker
        self._prepared: dict[str, tuple[int, str, str]] = {}
        # name -> the content hash of the head the batch at hand was read with, unproven
        # (None: no head): each decision on it names it, and the store checks it.
        self._decided_on: dict[str, str | None] = {}

    def run(self) -> MigrationResult:
        session, result = self.session, self.result
        started = time.perf_counter()
        # Every streams row the batches will page through, proven against the signed
        # checkpoint first: an edited row must not make the run skip a secret. Each head
        # event is proven by the batch that acts on it (its decision names the head's
        # hash, which the store checks against the proven leaf), and a stream the pages
        # skip (a head event gone from under its row) shows as one visited too few.
        total = session.prove_streams(ev.SECRET_STREAM_PREFIX)
        if not result.dry_run:
            run_id = uuid.uuid4().hex[:16]
            resumes = self._unfinished_run()
            self._started = NewEvent(ev.migration_stream(run_id), 1, ev.MigrationStarted(
                run_id=run_id, target_version=result.target_version,
                batch_size=self.batch_size, candidates=total, resumes=resumes,
            ))
        done = 0
        try:
            for states in self._states(total):
                self._batch(states)
                self._prepared.clear()
                done += len(states)
                if self.progress:
                    self.progress(done, total)
            if done < total:
                raise IntegrityError(
                    f"migrate visited {done} of the {total} secret streams the signed "
                    "checkpoint lists (a head event is missing from under its streams "
                    "row): run `keyledger audit verify`"
                )
        except LedgerStorageError as exc:
            # The batches before this one stay committed: say so, not "nothing changed".
            raise LedgerStorageError(exc.reason, (
                f"{result.migrated} secret(s) were migrated (committed) before that; free "
                "space, then `keyledger migrate` finishes the rest" if result.migrated else
                "no secret was migrated; free space, then run `keyledger migrate`"
            )) from None
        result.duration_seconds = round(time.perf_counter() - started, 6)
        started_event = None if self._started is None else self._started.event
        # Record the run if it changed anything, failed anything, or takes over an
        # interrupted run (which would otherwise show as running for ever).
        if isinstance(started_event, ev.MigrationStarted) and (
            self._recorded or result.failures or started_event.resumes
        ):
            assert self._started is not None
            completed = NewEvent(self._started.stream, 2, ev.MigrationCompleted(
                run_id=started_event.run_id, target_version=result.target_version,
                migrated=result.migrated, already_current=result.already_current,
                failed=result.failed, failures=tuple(result.failures),
                duration_seconds=result.duration_seconds,
                status="success" if not result.failures else "partial",
            ))
            session.append(([] if self._recorded else [self._started]) + [completed])
            self._mark_recorded()
        return result

    def _states(self, total: int) -> Iterator[list[SecretState]]:
        """Each batch's secrets as their heads left them; with a worker, the re-encrypted
        ones also have their new event waiting in ``_prepared``."""
        recorder = self.session.recorder
        pages = (recorder.worker_heads(ev.SECRET_STREAM_PREFIX, self.batch_size)
                 if total >= PIPELINE_MIN_SECRETS and pipeline.can_fork() else None)
        if pages is None:
            for heads in self.session.stream_head_batches(ev.SECRET_STREAM_PREFIX, self.batch_size):
                batch = [unproven_head_state(h) for h in heads]
                self._decided_on = {s.name: decision_hash(h) for s, h in zip(batch, heads, strict=True)}
                yield batch
            return
        produce = functools.partial(
            _prepared_batches, pages, keys=self._usable_keys(),
            target=self.result.target_version, run_id=self._run_id(),
        )
        for verdicts in pipeline.produce_ahead(produce):
            states: list[SecretState] = []
            for_writer: dict[int, str] = {}  # position in the batch -> stream
            self._decided_on = {}
            for verdict, name, revision, version, scheme, token, payload, head_hash in verdicts:
                self._decided_on[name] = head_hash
                if verdict == DELETED:
                    states.append(SecretState(name, revision, True))
                elif verdict == WRITER:  # read again below, and decided here
                    for_writer[len(states)] = ev.secret_stream(name)
                    states.append(SecretState(name, revision, True))
                else:  # the old ciphertext is not needed: current, or re-encrypted already
                    states.append(SecretState(name, revision, False, version, None, scheme))
                    if token is not None and payload is not None:
                        self._prepared[name] = (revision, token, payload)
            if for_writer:  # a retired version's secrets, say: one query for the batch
                found = recorder.stream_heads_of(for_writer.values())
                for i, stream in for_writer.items():
                    head = found.get(stream)
                    self._decided_on[states[i].name] = None if head is None else decision_hash(head)
                    states[i] = (unproven_head_state(head) if head is not None
                                 else SecretState(states[i].name, 0, deleted=True))
            yield states

    def _usable_keys(self) -> dict[int, crypto.Key]:
        """The keys a worker may decrypt with: the versions not retired or destroyed."""
        keys: dict[int, crypto.Key] = {}
        for version in self.keyring.versions:
            try:
                self.keyring.require_usable(version)
                keys[version] = self.session.keys.cipher(version)
            except KeyledgerError:
                continue  # the writer meets it and reports it, as without a worker
        return keys

    def _mark_recorded(self) -> None:
        assert self._started is not None
        started_event = self._started.event
        assert isinstance(started_event, ev.MigrationStarted)
        self._recorded = True
        self.result.run_id = started_event.run_id
        self.result.resumed = started_event.resumes

    def _batch(self, states: list[SecretState]) -> None:
        target, result = self.result.target_version, self.result
        for _ in range(CONFLICT_RETRIES):
            events: list[NewEvent] = []
            failures: list[ev.MigrationFailure] = []
            already_current = 0
            # What was decided on heads read without a proof and appends nothing (skipped
            # as deleted or current, failed, or all of it in a dry run): proven below.
            decided: dict[str, tuple[int, str | None]] = {}
            for state in states:
                stream = ev.secret_stream(state.name)
                if state.name in self._decided_on:
                    decided[stream] = (state.revision, self._decided_on[state.name])
                if state.deleted:
                    continue
                assert state.key_version is not None and state.scheme is not None
                if not needs_migration(state.key_version, state.scheme, target):
                    already_current += 1
                    continue
                try:
                    events.append(self._event(state))
                except LedgerDatabaseError:
                    raise  # the file, not this secret: the run stops, as it always did
                except KeyledgerError as exc:
                    failures.append(ev.MigrationFailure(name=state.name, error=str(exc)))
                    continue
                if not result.dry_run:
                    decided.pop(stream, None)  # the event names it itself (based_on)
            try:
                if events and not result.dry_run:
                    opening = [] if self._recorded or self._started is None else [self._started]
                    self.session.append(
                        opening + events, expect={ev.KEYRING_STREAM: self.keyring.revision},
                        decided=decided,
                    )
                    if opening:
                        self._mark_recorded()
                else:
                    self.session.prove_decided(decided)
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
                    self._proven(s.name) if ev.secret_stream(s.name) in changed else s
                    for s in states
                ]
                continue
            result.migrated += len(events)
            result.already_current += already_current
            result.failures.extend(failures)
            return
        raise ConcurrencyError([ev.secret_stream(s.name) for s in states])

    def _proven(self, name: str) -> SecretState:
        """``name`` read again, its head proven on the way (after a write meanwhile)."""
        self._decided_on.pop(name, None)
        return self.session.secret(name)

    def _event(self, state: SecretState) -> NewEvent:
        assert state.key_version is not None and state.scheme is not None
        target = self.result.target_version
        prepared = self._prepared.get(state.name)
        payload = None
        if prepared is not None and prepared[0] == state.revision:
            _, token, payload = prepared  # re-encrypted and serialised by the worker
        else:
            try:
                plaintext = self.session.decrypt(state)
            except InvalidCiphertext:
                raise IntegrityError("decryption failed") from None
            token = crypto.encrypt_secret(
                self.session.keys.cipher(target), target, state.name, plaintext
            )
        event = migrated_event(state.name, self._run_id(), state.key_version, target, token)
        # The head's tag comes from the row whose hash the decision names (the worker's,
        # or head_state's): the store takes it once that hash is the proven leaf's.
        return NewEvent(ev.secret_stream(state.name), state.revision + 1, event, payload=payload,
                        based_on=self._decided_on.get(state.name),
                        based_on_tag=tally.tag(state.key_version, state.scheme))

    def _run_id(self) -> str:
        if self._started is None:
            return "dry-run"
        started_event = self._started.event
        assert isinstance(started_event, ev.MigrationStarted)
        return started_event.run_id

    def _unfinished_run(self) -> str | None:
        """The latest run to this target that never completed and no later run took over."""
        unfinished: dict[str, int] = {}
        taken_over: set[str] = set()
        # The runs as listed (the whole map was proven just before, in run()), each one's
        # events then proven on their own: a few streams, not the secrets.
        for listed in list(self.session.stream_heads(ev.MIGRATION_STREAM_PREFIX)):
            events = self.session.stream(listed.stream)
            head, started = events[-1], events[0].decode()
            assert isinstance(started, ev.MigrationStarted)
            if started.resumes:
                taken_over.add(started.resumes)
            if head.type == "MigrationStarted" and started.target_version == self.result.target_version:
                unfinished[started.run_id] = head.seq
        candidates = {run: seq for run, seq in unfinished.items() if run not in taken_over}
        return max(candidates, key=candidates.__getitem__, default=None)


# -- what the worker does with each batch (ledger.pipeline) --------------------------------

#: The worker's verdict on one head: ``(verdict, name, revision, key_version, scheme,
#: new_ciphertext, payload, head_hash)``, the verdict one of ``DELETED``, ``CURRENT``
#: (already on the target), ``PREPARED`` (ciphertext and payload filled in) or ``WRITER``
#: (a key the worker lacks, a payload or ciphertext that does not open: the writer reads
#: the secret again, decides it and reports it exactly as it does without a worker).
#: ``head_hash`` is the head's as the worker read it: the writer's decision names it.
Prepared = tuple[str, str, int, int | None, str | None, str | None, str | None, str | None]
DELETED, CURRENT, PREPARED, WRITER = "deleted", "current", "prepared", "writer"


def migrated_event(name: str, run_id: str, from_version: int, to_version: int,
                   token: str) -> ev.SecretMigrated:
    """The event of one re-encryption, built alike by the worker that serialises it and
    by the writer that hands it to the read models."""
    return ev.SecretMigrated(name=name, run_id=run_id, from_version=from_version,
                             to_version=to_version, ciphertext=token, scheme=crypto.SCHEME_BOUND)


def _prepared_batches(
    pages: Callable[[], Iterable[Sequence[HeadRow]]], keys: Mapping[int, crypto.Key], target: int,
    run_id: str,
) -> Iterator[list[Prepared]]:
    """:func:`prepare_migration` of each page of head rows the worker reads."""
    for rows in pages():
        yield prepare_migration(rows, keys, target, run_id)


def prepare_migration(
    rows: Sequence[HeadRow], keys: Mapping[int, crypto.Key], target: int, run_id: str
) -> list[Prepared]:
    """Re-encrypt under ``target`` every head that needs it, and serialise its event.

    What this does not settle (deleted, already on ``target``, a version not in ``keys``,
    a payload or ciphertext that does not open) comes back without a payload, for the
    writer to decide and report exactly as it does without a worker.
    """
    out: list[Prepared] = []
    target_key = keys[target]
    for stream, revision, type_name, schema_version, payload, head_hash in rows:
        name = stream.removeprefix(ev.SECRET_STREAM_PREFIX)
        try:
            state = secret_state(name, revision, ev.from_payload(type_name, schema_version, payload))
        except (LedgerFormatError, IntegrityError, TypeError):
            out.append((WRITER, name, revision, None, None, None, None, None))
            continue
        version, scheme = state.key_version, state.scheme
        if state.deleted:
            out.append((DELETED, name, revision, None, None, None, None, head_hash))
            continue
        assert version is not None and scheme is not None
        if not needs_migration(version, scheme, target):
            out.append((CURRENT, name, revision, version, scheme, None, None, head_hash))
            continue
        key = keys.get(version) if version is not None else None
        try:
            if version is None or key is None or state.ciphertext is None:
                raise InvalidCiphertext  # not the worker's to settle
            plaintext = crypto.decrypt_secret_untrusted(
                key, state.ciphertext, name, scheme or crypto.SCHEME_BOUND, version=version
            )
        except InvalidCiphertext:
            out.append((WRITER, name, revision, None, None, None, None, None))
            continue
        token = crypto.encrypt_secret(target_key, target, name, plaintext)
        event = migrated_event(name, run_id, version, target, token)
        out.append((PREPARED, name, revision, version, scheme, token, ev.to_payload(event)[2],
                    head_hash))
    return out
