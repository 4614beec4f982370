"""What the command line takes from the environment: the variables' names and defaults."""

from __future__ import annotations

PASSWORD_ENV = "ENCRYPTION_MASTER_PASSWORD"
DB_ENV = "KEYLEDGER_DB"
DEFAULT_DB = "keyledger.db"


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 arrive as surrogates
        return False
    return True
