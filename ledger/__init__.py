"""keyledger's core: events, crypto, the event store and the operations.

An application reads its secrets with::

    from ledger import Ledger

    with Ledger.open("keyledger.db", os.environ["ENCRYPTION_MASTER_PASSWORD"]) as ledger:
        db_password = ledger.get("db_password").value
"""

from ledger.errors import (
    ConcurrencyError,
    ConfirmationRequired,
    IntegrityError,
    InvalidCiphertext,
    InvalidInputError,
    KeyledgerError,
    LedgerBusyError,
    LedgerFormatError,
    LedgerNotFoundError,
    LedgerReadOnlyError,
    UnknownSecretError,
    VersionError,
    WrongPasswordError,
)
from ledger.imports import ImportResult
from ledger.migration import MigrationResult
from ledger.service import (
    Ledger,
    RotationResult,
    SecretInfo,
    SecretValue,
    VersionReport,
    default_actor,
)
from ledger.store import Projector, SQLiteRecorder, StoredEvent

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
    "LedgerFormatError",
    "LedgerNotFoundError",
    "LedgerReadOnlyError",
    "MigrationResult",
    "Projector",
    "RotationResult",
    "SQLiteRecorder",
    "SecretInfo",
    "SecretValue",
    "StoredEvent",
    "UnknownSecretError",
    "VersionError",
    "VersionReport",
    "WrongPasswordError",
    "default_actor",
]
