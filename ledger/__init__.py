"""keyledger's core: events, crypto, the event store and the operations.

An application reads its secrets with::

    from ledger import Ledger

    with Ledger.open("keyledger.db", os.environ["ENCRYPTION_MASTER_PASSWORD"]) as ledger:
        db_password = ledger.get("db_password").value

The names below are imported on first use (PEP 562), so that importing one module of
the package (``ledger.crypto``, say) does not import them all: the command line derives
the master key on the second core while the rest of keyledger is being imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.errors import (
        ConcurrencyError,
        ConfirmationRequired,
        IntegrityError,
        InvalidCiphertext,
        InvalidInputError,
        KeyledgerError,
        LedgerBusyError,
        LedgerDatabaseError,
        LedgerFormatError,
        LedgerNotFoundError,
        LedgerReadOnlyError,
        LedgerStorageError,
        RollbackError,
        SigningKeyError,
        UnknownSecretError,
        VersionError,
        WrongPasswordError,
    )
    from ledger.events import StoredEvent
    from ledger.importing import ImportResult
    from ledger.migration import MigrationResult
    from ledger.service import (
        Ledger,
        RotationResult,
        SecretInfo,
        SecretValue,
    )
    from ledger.session import Session, VersionReport, default_actor
    from ledger.store import Projector
    from ledger.store_sqlite import SQLiteRecorder


# Where each name below lives: imported from there on first use.
_HOMES = {
    name: module
    for module, names in {
        "ledger.errors": (
            "ConcurrencyError", "ConfirmationRequired", "IntegrityError", "InvalidCiphertext",
            "InvalidInputError", "KeyledgerError", "LedgerBusyError", "LedgerFormatError",
            "LedgerDatabaseError", "LedgerNotFoundError", "LedgerReadOnlyError", "LedgerStorageError",
            "RollbackError",
            "SigningKeyError", "UnknownSecretError", "VersionError", "WrongPasswordError",
        ),
        "ledger.importing": ("ImportResult",),
        "ledger.migration": ("MigrationResult",),
        "ledger.service": (
            "Ledger", "RotationResult", "SecretInfo", "SecretValue",
        ),
        "ledger.session": ("Session", "VersionReport", "default_actor"),
        "ledger.store": ("Projector",),
        "ledger.store_sqlite": ("SQLiteRecorder",),
        "ledger.events": ("StoredEvent",),
    }.items()
    for name in names
}


if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any name

    def __getattr__(name: str) -> object:
        module = _HOMES.get(name)
        if module is None:
            raise AttributeError(f"module 'ledger' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


__all__ = [
    "ConcurrencyError",
    "ConfirmationRequired",
    "ImportResult",
    "IntegrityError",
    "InvalidCiphertext",
    "InvalidInputError",
    "KeyledgerError",
    "Ledger",
    "LedgerBusyError",
    "LedgerDatabaseError",
    "LedgerFormatError",
    "LedgerNotFoundError",
    "LedgerReadOnlyError",
    "LedgerStorageError",
    "MigrationResult",
    "Projector",
    "RollbackError",
    "RotationResult",
    "SQLiteRecorder",
    "SecretInfo",
    "SecretValue",
    "Session",
    "SigningKeyError",
    "StoredEvent",
    "UnknownSecretError",
    "VersionError",
    "VersionReport",
    "WrongPasswordError",
    "default_actor",
]
