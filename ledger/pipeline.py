"""Work for a batch done on the second core while the writer appends the batch before.

``migrate`` spends a good part of its time per secret reading and decoding the head
event, decrypting, re-encrypting and serialising the new event; ``secrets import``
reading, encrypting and serialising. None of it decides anything: :func:`produce_ahead`
runs it in a forked worker that reads its own input (the ledger's head rows through a
read-only connection of its own, or the import file) and sends back batch N+1 while the
writer appends batch N. The writer keeps every decision, and its revision checks catch a
secret written after the worker read it.

The worker never uses a SQLite connection it inherited (one must not be used across
``fork``): :func:`migration_batches` opens its own. It holds the data keys it inherited,
and returns plain tuples. No plaintext crosses the pipe, only the ciphertexts and payloads
the ledger stores anyway. If the writer dies, the worker's next write on the pipe fails
and it exits.

:func:`prepare_migration` and :func:`prepare_import` are what the workers do with each
batch. ``multiprocessing`` is imported only when a worker is wanted, so that no other
command pays for it at start-up.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ledger import crypto
from ledger import events as ev
from ledger.domain import secret_state
from ledger.errors import IntegrityError, InvalidCiphertext, InvalidInputError, LedgerFormatError
from ledger.store import head_rows, open_reader

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

R = TypeVar("R")

#: A head row as the worker sees it: stream, stream_rev, type, schema_version, payload,
#: and the hash its own fields produce (None: fields keyledger never writes).
HeadRow = tuple[str, int, str, int, str, str | None]
#: The worker's verdict on one head: ``(verdict, name, revision, key_version, scheme,
#: new_ciphertext, payload, head_hash)``, the verdict one of ``DELETED``, ``CURRENT``
#: (already on the target), ``PREPARED`` (ciphertext and payload filled in) or ``WRITER``
#: (a key the worker lacks, a payload or ciphertext that does not open: the writer reads
#: the secret again, decides it and reports it exactly as it does without a worker).
#: ``head_hash`` is the head's as the worker read it: the writer's decision names it.
Prepared = tuple[str, str, int, int | None, str | None, str | None, str | None, str | None]
DELETED, CURRENT, PREPARED, WRITER = "deleted", "current", "prepared", "writer"


def can_fork() -> bool:
    """Whether a worker can be forked: on Linux and the BSDs. macOS offers ``fork`` but
    its system libraries are not safe across it, so work stays in process there."""
    import multiprocessing

    return sys.platform != "darwin" and "fork" in multiprocessing.get_all_start_methods()


def produce_ahead(produce: Callable[[], Iterable[R]]) -> Iterator[R]:
    """Each item of ``produce()``, made in a forked worker while the caller handles the
    ones before (the pipe's buffer keeps it at most about one item ahead).

    An :class:`InvalidInputError` raised by ``produce`` (an import file that changed
    while read, say; keyledger's messages never quote a value) is raised again here
    with its message; any other failure as :class:`IntegrityError` naming only its type.
    """
    with _forked(produce) as conn:
        while (message := _receive(conn))[0] != "end":
            yield message[1]


# -- the worker's side, and the pipe between ----------------------------------------------

_DIED = "the worker process died; nothing of what it was preparing was written: run it again"


@contextlib.contextmanager
def _forked(produce: Callable[[], Iterable[Any]]) -> Iterator[Connection]:
    """A forked worker sending ``produce()``'s items (:func:`_produce`), and this end of
    its pipe. On leaving, this end is closed (the worker's next write then fails, and it
    exits) and the worker is joined."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe(duplex=False)
    worker = context.Process(target=_run_worker, args=(ours, theirs, produce), daemon=True)
    worker.start()
    theirs.close()
    try:
        yield ours
    finally:
        ours.close()
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
            worker.join()


def _run_worker(ours: Connection, theirs: Connection,
                produce: Callable[[], Iterable[Any]]) -> None:
    # Ctrl-C reaches the whole process group: the writer handles it and closes the pipe,
    # which ends the worker; the worker must not print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ours.close()
    try:
        _produce(theirs, produce)
    except (EOFError, OSError):
        return  # the writer closed the pipe, or is gone


def _produce(conn: Connection, produce: Callable[[], Iterable[Any]]) -> None:
    """Every item, then the end; or the failure that stopped them."""
    try:
        for item in produce():
            conn.send(("ok", item))
        conn.send(("end", None))
    except Exception as exc:  # a broken pipe fails again in this send, which ends the worker
        conn.send(_failure(exc))


def _failure(exc: Exception) -> tuple[str, str]:
    """What crosses the pipe of a failure: only its type, as a message might quote data.
    An :class:`InvalidInputError` keeps its message: keyledger's name no value."""
    if isinstance(exc, InvalidInputError):
        return "invalid", str(exc)
    return "error", type(exc).__name__


def _receive(conn: Connection) -> tuple[str, Any]:
    """The worker's next ``(kind, value)``; its failure raised here."""
    try:
        kind, value = conn.recv()
    except (EOFError, OSError):
        raise IntegrityError(_DIED) from None
    if kind == "invalid":
        raise InvalidInputError(value)
    if kind == "error":
        raise IntegrityError(f"the worker process failed ({value}); nothing of what it was "
                             "preparing was written: run it again")
    return kind, value


# -- what the workers prepare ------------------------------------------------------------


def migrated_event(name: str, run_id: str, from_version: int, to_version: int,
                   token: str) -> ev.SecretMigrated:
    """The event of one re-encryption, built alike by the worker that serialises it and
    by the writer that hands it to the read models."""
    return ev.SecretMigrated(name=name, run_id=run_id, from_version=from_version,
                             to_version=to_version, ciphertext=token, scheme=crypto.SCHEME_BOUND)


def imported_event(name: str, version: int, source: str, token: str) -> ev.SecretImported:
    """The event of one imported value; see :func:`migrated_event`."""
    return ev.SecretImported(name=name, key_version=version, scheme=crypto.SCHEME_BOUND,
                             source=source, ciphertext=token)


def migration_batches(
    path: Path, size: int, keys: Mapping[int, bytes], target: int, run_id: str
) -> Iterator[list[Prepared]]:
    """:func:`prepare_migration` of the secrets' head rows, ``size`` at a time in name
    order, read through a connection of the worker's own."""
    conn = open_reader(path)
    try:
        after = ""
        while rows := head_rows(conn, ev.SECRET_STREAM_PREFIX, after, size):
            after = rows[-1][0]
            yield prepare_migration(rows, keys, target, run_id)
    finally:
        conn.close()


def prepare_migration(
    rows: Sequence[HeadRow], keys: Mapping[int, bytes], target: int, run_id: str
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
        if version == target and scheme == crypto.SCHEME_BOUND:
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


def prepare_import(
    entries: Callable[[], Iterable[tuple[str, bytes]]], key: bytes, version: int,
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
