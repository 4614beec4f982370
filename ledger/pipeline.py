"""A forked worker process that makes the next batch while the writer appends this one.

``migrate`` spends a good part of its time per secret reading and decoding the head
event, decrypting, re-encrypting and serialising the new event; ``secrets import``
encrypting and serialising. None of it decides anything: :func:`produce_ahead` runs it in
a forked worker that reads its own input (the ledger's head rows through a connection of
its own, :meth:`ledger.store.Recorder.worker_heads`, or the import file) and sends back
batch N+1 while the writer appends batch N. The writer keeps every decision, and its
revision checks catch a secret written after the worker read it. What a worker does with
each batch is the operation's: :func:`ledger.migration.prepare_migration`,
:func:`ledger.importing.prepare_import`.

The worker holds the data keys it inherited and returns plain tuples. No plaintext
crosses the pipe, only the ciphertexts and payloads the ledger stores anyway. If the
writer dies, the worker's next write on the pipe fails and it exits. ``multiprocessing``
is imported only when a worker is wanted, so that no other command pays for it at
start-up.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ledger.errors import IntegrityError, InvalidInputError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

R = TypeVar("R")

def can_fork() -> bool:
    """Whether a worker can be forked: on Linux and the BSDs. macOS offers ``fork`` but
    its system libraries are not safe across it, so work stays in process there."""
    import multiprocessing

    return sys.platform != "darwin" and "fork" in multiprocessing.get_all_start_methods()


def produce_ahead(produce: Callable[[], Iterable[R]]) -> Iterator[R]:
    """Each item of ``produce()``, made in a forked worker while the caller handles the
    ones before (the pipe's buffer keeps it at most about one item ahead).

    An :class:`InvalidInputError` or :class:`IntegrityError` raised by ``produce`` (an
    import file that changed while read, a forged head; keyledger's messages never quote a
    value) is raised again here with its message; any other failure as
    :class:`IntegrityError` naming only its type.
    """
    with _forked(produce) as conn:
        while (message := _receive(conn))[0] != "end":
            yield message[1]


@contextlib.contextmanager
def beside(work: Callable[[], R]) -> Iterator[Callable[[], R]]:
    """Run ``work`` in a forked worker while the caller goes on; the context's value
    waits for its result (a failure raised as :func:`produce_ahead` raises it). Leaving
    the context without asking ends the worker."""
    with _forked(lambda: (work(),)) as conn:
        yield lambda: _receive(conn)[1]


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
    An :class:`InvalidInputError` or :class:`IntegrityError` keeps its message: keyledger's
    name no value (a forged head the worker's pages refuse, say)."""
    if isinstance(exc, InvalidInputError):
        return "invalid", str(exc)
    if isinstance(exc, IntegrityError):
        return "integrity", str(exc)
    return "error", type(exc).__name__


def _receive(conn: Connection) -> tuple[str, Any]:
    """The worker's next ``(kind, value)``; its failure raised here."""
    try:
        kind, value = conn.recv()
    except (EOFError, OSError):
        raise IntegrityError(_DIED) from None
    if kind == "invalid":
        raise InvalidInputError(value)
    if kind == "integrity":
        raise IntegrityError(value)
    if kind == "error":
        raise IntegrityError(f"the worker process failed ({value}); nothing of what it was "
                             "preparing was written: run it again")
    return kind, value
