"""Every error keyledger raises on purpose.

The CLI maps each class to one line on stderr and an exit code; nothing here may ever
carry a plaintext value, a key or a password in its message.
"""

from __future__ import annotations


class KeyledgerError(Exception):
    """Root of every error keyledger raises on purpose."""


class LedgerNotFoundError(KeyledgerError):
    """The ledger file does not exist or was never initialised."""


class LedgerFormatError(KeyledgerError):
    """The file is not a keyledger ledger, or was written by a newer keyledger."""


class LedgerReadOnlyError(KeyledgerError):
    """The ledger file (or its directory) cannot be written by this process."""


class LedgerStorageError(KeyledgerError):
    """The disk refused the ledger file a read or a write: it is full, or failing.

    ``reason`` says which, ``consequence`` what that left done and undone.
    """

    def __init__(self, reason: str, consequence: str) -> None:
        self.reason = reason
        self.consequence = consequence
        super().__init__(f"{reason}; {consequence}")


class LedgerDatabaseError(KeyledgerError):
    """The database refused a statement for a reason no other error here names: a file
    that is damaged, read-only or locked, in keyledger's words (the store's translation
    of every ``sqlite3.Error``)."""


class LedgerBusyError(KeyledgerError):
    """Another process held the write lock for longer than the retry budget."""


class WrongPasswordError(KeyledgerError):
    """The master password does not open this ledger."""


class UnknownSecretError(KeyledgerError):
    """No live secret has that name."""


class VersionError(KeyledgerError):
    """A key version cannot be used as asked (reused, unknown, out of range)."""


class ConcurrencyError(KeyledgerError):
    """A stream changed between the read and the append (optimistic concurrency).

    ``streams`` names every stream whose revision no longer matched.
    """

    def __init__(self, streams: list[str]) -> None:
        self.streams = streams
        shown = ", ".join(streams[:5]) + (" ..." if len(streams) > 5 else "")
        super().__init__(f"concurrent change to {len(streams)} stream(s): {shown}")


class IntegrityError(KeyledgerError):
    """Stored data does not match what the events recorded (substituted key, bad link)."""


class SigningKeyError(IntegrityError):
    """The ledger's wrapped checkpoint-signing key does not open with the master password,
    or is not the private half of the public key its events recorded."""


class RollbackError(IntegrityError):
    """The ledger is behind, or has another history than, the newest checkpoint this host
    verified: the file was put back to an older copy."""


class InvalidCiphertext(KeyledgerError):
    """A ciphertext could not be authenticated or parsed.

    Deliberately opaque, like Fernet's ``InvalidToken``: the caller never learns which
    check failed.
    """


class InvalidInputError(KeyledgerError):
    """A name, value or file given to keyledger is not acceptable."""


class ConfirmationRequired(KeyledgerError):
    """A destructive command needs --yes when no terminal can ask."""


def printable_ascii(text: str, limit: int = 120) -> str:
    """``text`` with everything but printable ASCII dropped, cut at ``limit``: for a message
    that quotes SQLite, whose own words may quote bytes of a damaged file."""
    kept = "".join(ch for ch in text if " " <= ch <= "~")
    return kept[:limit] + ("..." if len(kept) > limit else "")
