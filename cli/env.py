"""What the command line takes from the environment: the variables' names and defaults
(:mod:`ledger.environment`, shared with the library's ``Ledger.from_env``)."""

from __future__ import annotations

from ledger.environment import (
    ACTOR_ENV,
    DB_ENV,
    DEFAULT_DB,
    LOCK_TIMEOUT_ENV,
    NEW_PASSWORD_ENV,
    PASSWORD_ENV,
    is_utf8,
)

__all__ = ["ACTOR_ENV", "DB_ENV", "DEFAULT_DB", "LOCK_TIMEOUT_ENV", "NEW_PASSWORD_ENV",
           "PASSWORD_ENV", "is_utf8"]
