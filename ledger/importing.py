"""Recording imports: the values ``secrets import`` reads, and the old system's export
``import-seed`` reads.

The files themselves are read by :mod:`ledger.import_formats`. A plaintext import is
appended in one transaction, however large: chunk by chunk, each chunk's events decided
from what the ledger (and the chunks before it) hold, with one signed checkpoint at the
end; a fault anywhere rolls it all back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import TypeVar, get_args

from ledger import crypto, pipeline
from ledger import events as ev
from ledger.domain import (
    ACTIVE,
    DECRYPT_ONLY,
    unproven_head_state,
    validate_name,
    validate_value,
)
from ledger.errors import ConcurrencyError, InvalidInputError
from ledger.events import NewEvent
from ledger.import_formats import ImportFile, ImportFormat, checked_entry
from ledger.session import CONFLICT_RETRIES, Session
from ledger.store import decision_hash

T = TypeVar("T")

# Events decided, encrypted and appended at a time: enough to amortise each chunk's
# queries, few enough that a chunk's events take a few megabytes.
IMPORT_CHUNK = 5_000
#: From this many entries on, a worker process reads and encrypts them (see ledger.pipeline).
PIPELINE_MIN_ENTRIES = 5_000


# -- recording imports -----------------------------------------------------------------


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


def import_values(
    session: Session, values: Mapping[str, str], *, source: ImportFormat,
    overwrite: bool = False, chunk_size: int = IMPORT_CHUNK,
) -> ImportResult:
    """Encrypt and record many plaintext values in one transaction (all or nothing).

    A name that already holds a live secret is skipped (listed in ``skipped``) unless
    ``overwrite``: re-running an import never silently reverts a newer value.

    :raises InvalidInputError: a name or value is invalid (named); nothing was written.
    :raises ValueError: ``source`` is not one of the import formats.
    """
    if source not in get_args(ImportFormat):
        # Caught here, not by the event's validation later (inside the import worker
        # that is only "the worker failed").
        raise ValueError(f"source must be one of {', '.join(get_args(ImportFormat))}, "
                         f"not {source!r}")
    checked = [(name, checked_entry(name, value)) for name, value in values.items()]
    return _record(session, lambda: iter(checked), len(checked), source, overwrite, chunk_size)


def import_file(
    session: Session, checked: ImportFile, *, overwrite: bool = False,
    chunk_size: int = IMPORT_CHUNK,
) -> ImportResult:
    """:func:`import_values` for a file of any size, read again entry by entry.

    ``checked`` comes from :func:`ledger.import_formats.check_import_file_untrusted`, so
    every entry is known to be valid; the file is read again while the transaction is
    open, and if it is no longer the same, nothing is written.

    :raises InvalidInputError: the file changed since it was checked; nothing was written.
    """
    return _record(session, checked.entries, checked.count, checked.format, overwrite, chunk_size)


def _record(
    session: Session, entries: Callable[[], Iterable[tuple[str, bytes]]], count: int,
    source: ImportFormat, overwrite: bool, chunk_size: int,
) -> ImportResult:
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    for _ in range(CONFLICT_RETRIES):
        keyring = session.keyring()
        version = keyring.require_current()
        key = session.keys.cipher(version)
        result = ImportResult()
        # The names skipped as existing, each with the head it was skipped on: checked
        # against the proven heads with the chunk that skipped them.
        skipped: dict[str, tuple[int, str | None]] = {}
        chunks: Iterator[list[NewEvent]]
        if count >= PIPELINE_MIN_ENTRIES and pipeline.can_fork():
            # A worker reads and encrypts the entries; this process never sees a plaintext.
            prepared = pipeline.produce_ahead(partial(
                prepare_import, entries, key, version, source, chunk_size))
            chunks = _decided_chunks(
                session, ([(name, (token, payload)) for name, token, payload in batch]
                         for batch in prepared),
                overwrite, result, partial(_from_worker, version, source), skipped)
        else:
            chunks = _decided_chunks(
                session, _batched(entries(), chunk_size), overwrite, result,
                partial(_encrypted, key, version, source), skipped)
        try:
            result.imported = session.append_chunks(
                chunks, expect={ev.KEYRING_STREAM: keyring.revision}, decided=skipped,
            )
        except ConcurrencyError:
            continue
        return result
    raise ConcurrencyError(["secrets being imported"])


def _encrypted(
    key: crypto.Key, version: int, source: ImportFormat, name: str, plaintext: bytes
) -> tuple[ev.SecretImported, None]:
    token = crypto.encrypt_secret(key, version, name, plaintext)
    return imported_event(name, version, source, token), None


def _from_worker(
    version: int, source: ImportFormat, name: str, prepared: tuple[str, str]
) -> tuple[ev.SecretImported, str]:
    token, payload = prepared
    return imported_event(name, version, source, token), payload


def _batched(entries: Iterable[T], size: int) -> Iterator[list[T]]:
    entries = iter(entries)
    while batch := list(islice(entries, size)):
        yield batch


def _decided_chunks(
    session: Session, batches: Iterable[list[tuple[str, T]]], overwrite: bool,
    result: ImportResult, made: Callable[[str, T], tuple[ev.SecretImported, str | None]],
    skipped: dict[str, tuple[int, str | None]],
) -> Iterator[list[NewEvent]]:
    """The events of each batch of ``(name, entry)``, decided when the recorder asks for
    them: inside its transaction, against the ledger as the batches before left it. A name
    that holds a live secret is skipped unless ``overwrite``; ``made`` turns an entry into
    its event and, when a worker already serialised it, the payload. The heads are read
    without a proof: each event names the head it was decided on (``based_on``), and each
    name skipped goes into ``skipped`` for the recorder to check (ledger.store.Decided)."""
    for batch in batches:
        heads = session.recorder.stream_heads_of([ev.secret_stream(name) for name, _ in batch])
        new = []
        for name, entry in batch:
            stream = ev.secret_stream(name)
            head = heads.get(stream)
            based_on = None if head is None else decision_hash(head)
            if head is not None and not overwrite and not unproven_head_state(head).deleted:
                result.skipped.append(name)
                skipped[stream] = (head.stream_rev, based_on)
                continue
            event, payload = made(name, entry)
            revision = 0 if head is None else head.stream_rev
            new.append(NewEvent(stream, revision + 1, event, payload=payload, based_on=based_on))
        yield new


def import_seed(
    session: Session, tokens: Mapping[str, object], password: str, *,
    salt_template: str = crypto.SEED_SALT_TEMPLATE, legacy_version: int = 1,
    overwrite: bool = False,
) -> ImportResult:
    """Import ciphertexts written by the old system under ``password``.

    A version this ledger lacks becomes a key version holding the old system's derived key,
    and its ciphertexts are kept as they are; where this ledger's version is another
    key, the value is re-encrypted under the current version. Unreadable entries are
    listed in the result with their reason; the others are imported. As with
    :func:`import_values`, existing secrets are skipped unless ``overwrite``.
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
    for _ in range(CONFLICT_RETRIES):
        try:
            _append_seed(session, opened, seed_key, result, overwrite)
            return result
        except ConcurrencyError:
            result.imported = result.reencrypted = result.stored_as_is = 0
            result.created_versions, result.skipped = [], []
    raise ConcurrencyError(["secrets being imported"])

def _append_seed(
    session: Session, opened: list[tuple[str, crypto.SeedPlaintext]],
    seed_key: Callable[[int], bytes], result: ImportResult, overwrite: bool,
) -> None:
    keyring = session.keyring()
    current = keyring.require_current()
    keyring_events: list[ev.DomainEvent] = []
    wrapped: dict[int, bytes] = {}
    secrets: list[NewEvent] = []
    for name, sp in opened:
        state = session.secret(name)
        if not state.deleted and not overwrite:
            result.skipped.append(name)
            continue
        version = sp.version
        fp = crypto.fingerprint(seed_key(version))
        if version not in keyring.versions and version not in wrapped:
            keyring_events.append(
                ev.KeyVersionCreated(version=version, fingerprint=fp, origin="seed-import")
            )
            wrapped[version] = session.keys.wrap(version, seed_key(version))
            result.created_versions.append(version)
        # Kept as is only under a key that is ours, the same, and still usable: never
        # under a retired or destroyed version, where the value would be lost.
        same_key = version in wrapped or (
            keyring.versions[version].fingerprint == fp
            and keyring.status(version) in (ACTIVE, DECRYPT_ONLY)
        )
        if same_key:
            event = ev.SecretImported(
                name=name, key_version=version, ciphertext=sp.frame.encode(),
                scheme=crypto.SCHEME_SEED, source="seed", seed_version=version,
                legacy=sp.legacy,
            )
            result.stored_as_is += 1
        else:
            token = crypto.encrypt_secret(
                session.keys.cipher(current), current, name, sp.plaintext
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
    session.append(
        new + secrets, keys=wrapped or None,
        expect=None if new else {ev.KEYRING_STREAM: keyring.revision},
    )
    result.imported = len(secrets)
    if new:
        session.refresh_keyring()


def _utf8_untrusted(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("the decrypted value is not UTF-8 text") from None


# -- what the worker does (ledger.pipeline) ------------------------------------------------


def imported_event(name: str, version: int, source: str, token: str) -> ev.SecretImported:
    """The event of one imported value, built alike by the worker that serialises it and
    by the writer that hands it to the read models."""
    return ev.SecretImported(name=name, key_version=version, scheme=crypto.SCHEME_BOUND,
                             source=source, ciphertext=token)


def prepare_import(
    entries: Callable[[], Iterable[tuple[str, bytes]]], key: crypto.Key, version: int,
    source: str, size: int,
) -> Iterator[list[tuple[str, str, str]]]:
    """``(name, ciphertext, payload)`` of each entry, encrypted under ``version`` and
    serialised as its ``SecretImported``, ``size`` entries at a time. Whether an entry is
    recorded (or skipped as existing) is the writer's decision."""
    batch: list[tuple[str, str, str]] = []
    for name, plaintext in entries():
        token = crypto.encrypt_secret(key, version, name, plaintext)
        batch.append((name, token, ev.to_payload(imported_event(name, version, source, token))[2]))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
