"""What this host has seen of each ledger: the newest signed checkpoint it verified.

Someone who can write the ledger file but lacks the master password cannot forge a
checkpoint, yet can put back an older, genuine copy of the whole file. Nothing inside the
file can show that; only a memory kept outside it can (an anchor, or this). Every command
that unlocks a ledger compares the ledger's verified tip with the checkpoint this host
verified last at that place, and refuses a ledger that is behind it or has another
history at it, the way immudb's client keeps its last verified state. It is keyed by the
ledger's id and its location (a file's absolute path): a backup elsewhere is an older copy
by design, and opening it is not a rollback.

The memory is a small JSON file, ``$KEYLEDGER_STATE_DIR/seen.json`` (default
``$XDG_STATE_HOME/keyledger``, else ``~/.local/state/keyledger``).
``KEYLEDGER_STATE_DIR=off`` turns it off. A memory that cannot be written is a warning,
never a failure: it narrows rollback, it is not what keeps values right.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ledger.errors import RollbackError

STATE_DIR_ENV = "KEYLEDGER_STATE_DIR"
OFF = "off"
FILE_NAME = "seen.json"

log = logging.getLogger("keyledger")


@dataclass(frozen=True, slots=True)
class Seen:
    """A checkpoint this host verified: its seq, the head hash it signs and when."""

    seq: int
    head_hash: str
    signed_at: str


def memory_key(ledger_id: str, location: str) -> str:
    """What the memory is keyed by: the ledger's id at the place it is used."""
    return f"{ledger_id} {location}"


def default_state_dir() -> Path | None:
    """Where the memory lives, from the environment; None when turned off."""
    configured = os.environ.get(STATE_DIR_ENV)
    if configured is not None:
        return None if configured.strip().lower() in (OFF, "") else Path(configured)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    return Path(base) / "keyledger"


class SeenCheckpoints:
    """The host's memory of the newest checkpoint verified per ledger id."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / FILE_NAME
        self._warned = False

    @classmethod
    def from_environment(cls) -> SeenCheckpoints | None:
        state_dir = default_state_dir()
        return None if state_dir is None else cls(state_dir)

    def get(self, key: str) -> Seen | None:
        return self._read().get(key)

    @staticmethod
    def check(seen: Seen | None, seq: int, head_hash: str, hash_at: str | None,
              restored_at: str | None) -> None:
        """Refuse a ledger whose verified tip (``seq``, ``head_hash``) is behind ``seen``
        (what this host remembered, read before the tip), or whose event at the
        remembered seq (``hash_at``) is another one.

        ``restored_at`` is when the ledger's newest proven ``LedgerRestored`` was signed
        (None: never restored): a restore after what this host saw explains a shorter or
        different history, since only the master password can sign one.

        :raises RollbackError: the ledger went back or sideways.
        """
        if seen is None or (restored_at is not None and restored_at > seen.signed_at):
            return
        if seq < seen.seq:
            raise RollbackError(
                f"the ledger ends at seq {seq}, but this host verified seq {seen.seq} "
                f"(signed {seen.signed_at}): it was rolled back to an older copy. Check it "
                "with `keyledger audit verify --anchor`; if you put it back on purpose, "
                "`keyledger audit seen --forget`"
            )
        if (seq == seen.seq and head_hash != seen.head_hash) or (
                seq > seen.seq and hash_at != seen.head_hash):
            raise RollbackError(
                f"the ledger's event at seq {seen.seq} is not the one this host verified "
                f"there (signed {seen.signed_at}): its history was replaced. Check it with "
                "`keyledger audit verify --anchor`; if you replaced it on purpose, "
                "`keyledger audit seen --forget`"
            )

    def record(self, key: str, seen: Seen, *, replace: bool = False,
               durable: bool = True, best_effort: bool = True) -> None:
        """Remember ``seen`` under ``key`` if it is newer (``replace``: whatever it is,
        as after a restore). Best effort unless told: a failure to write is logged, once.
        ``durable=False`` skips the fsync, for the record after each append: losing it
        to a power cut only leaves the memory one step behind."""
        try:
            with self._locked():
                entries = self._read()
                old = entries.get(key)
                if old is not None and not replace and old.seq >= seen.seq:
                    return
                entries[key] = seen
                self._write(entries, durable=durable)
        except OSError as exc:
            if not best_effort:
                raise
            self._warn(exc)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.state_dir / (FILE_NAME + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Seen]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(k): Seen(int(v["seq"]), str(v["head_hash"]), str(v["signed_at"]))
                    for k, v in raw.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # A damaged memory protects nothing; say so, and start again from what is
            # verified next rather than refusing every ledger.
            self._warn(exc)
            return {}

    def _write(self, entries: dict[str, Seen], *, durable: bool = True) -> None:
        body = json.dumps({k: asdict(v) for k, v in sorted(entries.items())}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".seen-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("keyledger: cannot use this host's memory of checkpoints at %s "
                        "(%s); rollback of the file goes unnoticed", self.path,
                        type(exc).__name__)


@dataclass(frozen=True, slots=True)
class SeenReview:
    """What ``keyledger audit seen`` shows: the memory's file, what it holds for this
    ledger, the ledger's verified tip now, and how the two compare."""

    state_file: str | None
    remembered: Seen | None
    current: Seen
    verdict: str  # "off", "first contact", "current", "ahead", "behind", "replaced"
    forgotten: bool

    def to_json(self) -> dict[str, object]:
        return {
            "state_file": self.state_file, "verdict": self.verdict, "forgotten": self.forgotten,
            "remembered": None if self.remembered is None else asdict(self.remembered),
            "current": asdict(self.current),
        }


def review(key: str, current: Seen, *, forget: bool = False) -> SeenReview:
    """Compare this host's memory under ``key`` with the ledger's verified tip; with
    ``forget``, replace the memory with that tip (the operator put an older copy back
    on purpose, or replaced the ledger)."""
    memory = SeenCheckpoints.from_environment()
    if memory is None:
        return SeenReview(None, None, current, "off", False)
    remembered = memory.get(key)
    if remembered is None:
        verdict = "first contact"
    elif (remembered.seq, remembered.head_hash) == (current.seq, current.head_hash):
        verdict = "current"
    elif current.seq > remembered.seq:
        verdict = "ahead"
    elif current.seq == remembered.seq:
        verdict = "replaced"
    else:
        verdict = "behind"
    if forget:
        memory.record(key, current, replace=True, best_effort=False)
    return SeenReview(str(memory.path), remembered, current, verdict, forget)

