"""What the command line takes from the environment: the variables' names and defaults."""

from __future__ import annotations

from ledger.passwords import NEW_PASSWORD_ENV, PASSWORD_ENV, is_utf8

DB_ENV = "KEYLEDGER_DB"
DEFAULT_DB = "keyledger.db"

__all__ = ["DB_ENV", "DEFAULT_DB", "NEW_PASSWORD_ENV", "PASSWORD_ENV", "is_utf8"]
