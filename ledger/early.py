"""Deriving the master key before a command asks for it: keyledger's one start-up trick.

Unlocking costs one PBKDF2 derivation (600,000 iterations, about 0.3 s), and starting the
command line about as long again, importing typer, pydantic and keyledger itself. Neither
needs the other. :func:`start` begins the derivation on a thread of its own (OpenSSL's
PBKDF2 releases Python's lock, so it runs on another core), and :func:`derive_kek`, which
every unlock calls, takes its result when the inputs match, or derives in place.

The only entry point is :func:`start`, called by the executable (:mod:`cli.launch`)
before anything heavy is imported; so this module imports only :mod:`ledger.crypto` and
the store's light header reader. Being early never decides whether a command works: a
derivation that fails or was started for other inputs is simply not used.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from ledger import crypto
from ledger.store_header import kdf_inputs


def start(path: Path, password: str) -> bool:
    """Start deriving the KEK ``password`` gives for the ledger at ``path``, read without
    writing or creating anything; whether it started (not for anything but a readable
    ledger with keyledger's KDF)."""
    inputs = kdf_inputs(path)
    if inputs is None or inputs[0] != crypto.KDF_ALGORITHM:
        return False
    _, salt, iterations = inputs
    derivation = _Derivation(password, salt, iterations)
    _AHEAD[(password, salt, iterations)] = derivation
    derivation.start()
    return True


def derive_kek(password: str, salt: bytes, iterations: int) -> bytes:
    """The KEK for these inputs: the one :func:`start` began, if it did, else derived now."""
    ahead = _AHEAD.pop((password, salt, iterations), None)
    _AHEAD.clear()  # one unlock per process: nothing else started ahead is wanted now
    if ahead is not None:
        ahead.join()
        if ahead.kek is not None:
            return ahead.kek
    return crypto.derive_kek(password, salt, iterations)


class _Derivation(threading.Thread):
    def __init__(self, password: str, salt: bytes, iterations: int) -> None:
        super().__init__(name="keyledger-kdf", daemon=True)
        self._inputs = (password, salt, iterations)
        self.kek: bytes | None = None

    def run(self) -> None:
        # A failure leaves kek None: derive_kek then derives in place, and raises there.
        with contextlib.suppress(Exception):
            self.kek = crypto.derive_kek(*self._inputs)
        self._inputs = ("", b"", 0)


_AHEAD: dict[tuple[str, bytes, int], _Derivation] = {}
