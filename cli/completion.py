"""Shell completion of secret names and key versions (typer's own completion machinery:
``keyledger --install-completion``), read from the ledger without a password.

Completing never prompts, never writes and never fails: the ledger is opened read-only
where ``--db`` (or ``KEYLEDGER_DB``) points, and anything that goes wrong completes
nothing. Names are the heads of the secrets' streams (one indexed lookup by prefix, whether
or not the read models are current), versions the keyring's events. Nothing is proven: a
completion is a suggestion, and the command it completes checks what it acts on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import typer

from cli.env import DB_ENV, DEFAULT_DB

#: The most names offered at once (a shell shows no more usefully).
MAX_OFFERED = 200
#: Seconds a completion waits for a ledger another process holds locked.
COMPLETION_WAIT = 0.2


def secret_names(ctx: typer.Context, incomplete: str) -> list[str]:
    from ledger import events as ev

    def read(recorder: Any) -> list[str]:
        heads = recorder.stream_heads(ev.SECRET_STREAM_PREFIX + incomplete, "", MAX_OFFERED)
        return [h.stream.removeprefix(ev.SECRET_STREAM_PREFIX) for h in heads
                if h.type != "SecretDeleted"]

    return _read(ctx, read)


def key_versions(ctx: typer.Context, incomplete: str) -> list[str]:
    from ledger import events as ev

    def read(recorder: Any) -> list[str]:
        created = [e.decode() for e in recorder.read_stream(ev.KEYRING_STREAM)
                   if e.type == "KeyVersionCreated"]
        return sorted({str(e.version) for e in created}, key=int)

    return [v for v in _read(ctx, read) if v.startswith(incomplete)]


def _read(ctx: typer.Context, read: Callable[[Any], list[str]]) -> list[str]:
    try:
        from ledger.locations import open_recorder

        db = ctx.find_root().params.get("db") or os.environ.get(DB_ENV) or DEFAULT_DB
        if not isinstance(db, str) or not (os.path.exists(db) or "://" in db or "=" in db):
            return []  # never create a file by completing
        # A ledger locked by a long write completes nothing at once, rather than after
        # the lock timeout.
        with open_recorder(db, read_only=True, lock_timeout=COMPLETION_WAIT) as recorder:
            return read(recorder)
    except Exception:  # a completion never fails the shell
        return []
