"""Work for a batch done on the second core while the writer appends the batch before.

``migrate`` spends a good part of its time per secret decoding the head event, decrypting,
re-encrypting and serialising the new event; ``secrets import`` reading, encrypting and
serialising. None of it needs the database: :func:`map_ahead` hands each batch of head
rows to a forked worker process and gives the writer batch N's result while the worker
prepares batch N+1, and :func:`produce_ahead` lets a worker read and encrypt an import
file while the writer appends what it already sent.

The worker never touches SQLite (a connection must not be used across ``fork``): it gets
plain rows and the data keys it inherited, and returns plain tuples. No plaintext crosses
the pipe, only the ciphertexts and payloads the ledger stores anyway. If the writer dies,
the worker's next read or write on the pipe fails and it exits.

:func:`prepare_migration` and :func:`prepare_import` are the workers' functions for
``migrate`` and ``secrets import``. ``multiprocessing`` is imported only when a worker is
wanted, so that no other command pays for it at start-up.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ledger import crypto
from ledger import events as ev
from ledger.domain import secret_state
from ledger.errors import IntegrityError, InvalidCiphertext, InvalidInputError, LedgerFormatError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

T = TypeVar("T")
R = TypeVar("R")

#: A head row as the worker sees it: stream, stream_rev, type, schema_version, payload.
HeadRow = tuple[str, int, str, int, str]
#: The worker's verdict on one head: ``(verdict, name, revision, key_version, scheme,
#: new_ciphertext, payload)``, the verdict one of ``DELETED``, ``CURRENT`` (already on the
#: target), ``PREPARED`` (ciphertext and payload filled in) or ``WRITER`` (a key the worker
#: lacks, a payload or ciphertext that does not open: the writer decides it from the row
#: and reports it exactly as it does without a worker).
Prepared = tuple[str, str, int, int | None, str | None, str | None, str | None]
DELETED, CURRENT, PREPARED, WRITER = "deleted", "current", "prepared", "writer"


def can_fork() -> bool:
    """Whether a worker can be forked: on Linux and the BSDs. macOS offers ``fork`` but
    its system libraries are not safe across it, so work stays in process there."""
    import multiprocessing

    return sys.platform != "darwin" and "fork" in multiprocessing.get_all_start_methods()


def map_ahead(
    batches: Iterable[T], rows: Callable[[T], Any], work: Callable[[Any], R]
) -> Iterator[tuple[T, R]]:
    """``(batch, work(rows(batch)))`` for each batch, in order, with ``work`` run in a
    forked worker one batch ahead of the caller.

    ``rows`` turns a batch into what crosses the pipe. The next batch is taken from
    ``batches`` (and sent) before the current result is yielded, so ``batches`` must not
    depend on what the caller does with a result.

    :raises IntegrityError: the worker failed or died.
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    worker = context.Process(target=_serve, args=(ours, theirs, work), daemon=True)
    worker.start()
    theirs.close()
    try:
        source = iter(batches)
        current = next(source, None)
        if current is None:
            return
        _send(ours, rows(current))
        while current is not None:
            result = _receive(ours)
            following = next(source, None)
            if following is not None:
                _send(ours, rows(following))  # the worker is waiting for it: no deadlock
            yield current, result
            current = following
    finally:
        ours.close()  # the worker reads EOF and exits
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
            worker.join()


def produce_ahead(produce: Callable[[], Iterable[R]]) -> Iterator[R]:
    """Each item of ``produce()``, made in a forked worker while the caller handles the
    ones before (the pipe's buffer keeps it at most about one item ahead).

    An :class:`InvalidInputError` raised by ``produce`` (an import file that changed
    while read, say; keyledger's messages never quote a value) is raised again here
    with its message; any other failure as :class:`IntegrityError` naming only its type.
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe(duplex=False)
    worker = context.Process(target=_produce, args=(ours, theirs, produce), daemon=True)
    worker.start()
    theirs.close()
    try:
        while True:
            kind, value = _message(ours)
            if kind == "end":
                return
            yield value
    finally:
        ours.close()
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
            worker.join()


def _produce(ours: Connection, theirs: Connection, produce: Callable[[], Iterable[Any]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the writer handles Ctrl-C (see _serve)
    ours.close()
    try:
        try:
            for item in produce():
                theirs.send(("ok", item))
            theirs.send(("end", None))
        except InvalidInputError as exc:
            theirs.send(("invalid", str(exc)))
        except Exception as exc:  # only the type crosses: a message might quote data
            theirs.send(("error", type(exc).__name__))
    except (BrokenPipeError, OSError):
        return  # the writer is gone


def _message(conn: Connection) -> tuple[str, Any]:
    try:
        kind, value = conn.recv()
    except (EOFError, OSError):
        raise IntegrityError(_DIED) from None
    if kind == "invalid":
        raise InvalidInputError(value)
    if kind == "error":
        raise IntegrityError(f"the worker process failed ({value}); nothing was written: "
                             "run it again")
    return kind, value


_DIED = "the re-encryption worker process died; nothing of its batch was written: re-run to continue"


def _send(conn: Connection, rows: Any) -> None:
    try:
        conn.send(rows)
    except OSError:  # a broken pipe: the worker is gone
        raise IntegrityError(_DIED) from None


def _receive(conn: Connection) -> Any:
    try:
        kind, value = conn.recv()
    except (EOFError, OSError):
        raise IntegrityError(_DIED) from None
    if kind == "error":
        raise IntegrityError(f"the re-encryption worker failed ({value}); nothing of its "
                             "batch was written: re-run to continue")
    return value


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
        event = ev.SecretImported(name=name, key_version=version, scheme=crypto.SCHEME_BOUND,
                                  source=source, ciphertext=token)
        batch.append((name, token, ev.to_payload(event)[2]))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _serve(ours: Connection, theirs: Connection, work: Callable[[Any], Any]) -> None:
    """The worker's loop: rows in, results out, until the writer closes the pipe."""
    # Ctrl-C reaches the whole process group: the writer handles it and closes the pipe,
    # which ends this loop; the worker must not print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ours.close()
    while True:
        try:
            rows = theirs.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", work(rows))
        except Exception as exc:  # only the type crosses: a message might quote data
            reply = ("error", type(exc).__name__)
        try:
            theirs.send(reply)
        except (BrokenPipeError, OSError):
            return


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
    for stream, revision, type_name, schema_version, payload in rows:
        name = stream.removeprefix(ev.SECRET_STREAM_PREFIX)
        try:
            state = secret_state(name, revision, ev.from_payload(type_name, schema_version, payload))
        except (LedgerFormatError, TypeError):
            out.append((WRITER, name, revision, None, None, None, None))
            continue
        version, scheme = state.key_version, state.scheme
        if state.deleted:
            out.append((DELETED, name, revision, None, None, None, None))
            continue
        if version == target and scheme == crypto.SCHEME_BOUND:
            out.append((CURRENT, name, revision, version, scheme, None, None))
            continue
        key = keys.get(version) if version is not None else None
        try:
            if key is None or state.ciphertext is None:
                raise InvalidCiphertext
            plaintext = crypto.decrypt_secret_untrusted(
                key, state.ciphertext, name, scheme or crypto.SCHEME_BOUND, version=version
            )
        except InvalidCiphertext:
            out.append((WRITER, name, revision, None, None, None, None))
            continue
        token = crypto.encrypt_secret(target_key, target, name, plaintext)
        event = ev.SecretMigrated(name=name, run_id=run_id, from_version=version,
                                  to_version=target, ciphertext=token, scheme=crypto.SCHEME_BOUND)
        out.append((PREPARED, name, revision, version, scheme, token, ev.to_payload(event)[2]))
    return out
