"""Forensic review, read straight from the events: the audit log, replay, incidents.

Nothing here reads the read models: every answer is folded afresh from the events, in
seq order and streamed, so it stays true even if the read models were edited behind
keyledger's back. What is held in memory is what the answer itself needs (the secrets map
of a replay, the secrets and events of an incident), never a copy of the ledger.
"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger import events as ev
from ledger.domain import (
    ACTIVE,
    DECRYPT_ONLY,
    DESTROYED,
    RETIRED,
    KeyringState,
    parse_moment,
    secret_state,
    validate_name,
)
from ledger.errors import InvalidInputError, LedgerFormatError, VersionError
from ledger.events import StoredEvent
from ledger.store import Recorder

# Event fields left out of every audit document: ciphertexts are not secret, but they are
# noise to a reader and nothing an auditor checks by eye (the hash chain covers them).
OMITTED_FIELDS = frozenset({"ciphertext"})
# Row columns every audit document starts with; the rest are the event's own fields.
ROW_FIELDS = ("seq", "type", "occurred_at", "actor", "origin", "stream")
# Left out of the one-line summaries too: long, and read in the JSON if at all.
_UNSUMMARIZED = frozenset({"scheme", "fingerprints", "failures", "public_key", "sha256",
                           "head_hash", "ledger_id", "name"})
SUMMARY_WIDTH = 100
# The event fields that name a key version (SecretImported's seed_version names a key
# of the old system, not one of ours).
_VERSION_FIELDS = ("version", "from_version", "to_version", "key_version",
                   "requested_version", "target_version")


def event_document(stored: StoredEvent) -> dict[str, Any]:
    """One event as the audit commands show it: its position, who, when, where from, and
    the event's own fields (never a plaintext value: events hold none)."""
    fields = stored.decode().model_dump(mode="json")
    return {
        "seq": stored.seq, "type": stored.type, "occurred_at": stored.occurred_at,
        "actor": stored.actor, "origin": stored.origin, "stream": stored.stream,
        **{k: v for k, v in fields.items() if k not in OMITTED_FIELDS},
    }


def event_summary(document: dict[str, Any]) -> str:
    """A short line about an event document for people: the secret it names first, then
    its other small fields as ``key=value``."""
    parts = [] if "name" not in document else [str(document["name"])]
    for key, value in document.items():
        if key in ROW_FIELDS or key in _UNSUMMARIZED or key in OMITTED_FIELDS or value is None:
            continue
        shown = value if isinstance(value, str) and value and " " not in value else json.dumps(
            value, ensure_ascii=False)
        parts.append(f"{key}={shown}")
    line = " ".join(parts)
    return line if len(line) <= SUMMARY_WIDTH else line[: SUMMARY_WIDTH - 1] + "…"


# -- time windows --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Inclusive bounds on ``occurred_at`` (the ledger's sortable UTC text); None: open."""

    since: str | None = None
    until: str | None = None

    @classmethod
    def parse(cls, since: str | None, until: str | None, now: datetime | None = None) -> Window:
        """Bounds from ``--since``/``--until`` text (see :func:`ledger.domain.parse_moment`).

        :raises InvalidInputError: a bound does not parse, or ``since`` is after ``until``.
        """
        moment = now or datetime.now(UTC)
        window = cls(None if since is None else parse_moment(since, moment),
                     None if until is None else parse_moment(until, moment))
        if window.since is not None and window.until is not None and window.since > window.until:
            raise InvalidInputError(f"--since ({window.since}) is after --until ({window.until})")
        return window

    def contains(self, occurred_at: str) -> bool:
        return ((self.since is None or occurred_at >= self.since)
                and (self.until is None or occurred_at <= self.until))


# -- the audit log -------------------------------------------------------------------------


def audit_log(
    recorder: Recorder, *, secret: str | None = None, types: Sequence[str] = (),
    actor: str | None = None, since: str | None = None, until: str | None = None,
    now: datetime | None = None, after_seq: int = 0, through_seq: int | None = None,
) -> Iterator[StoredEvent]:
    """The events meeting every filter, in seq order, streamed.

    ``secret`` selects the events about one secret: its stream, and any other event
    whose payload names it (its reads, a migration run that failed on it). The filters
    are checked before the first event is read.

    :raises InvalidInputError: an unknown event type, a bad secret name or time bound.
    """
    unknown = sorted(set(types) - ev.EVENT_TYPES.keys())
    if unknown:
        raise InvalidInputError(
            f"unknown event type {', '.join(unknown)}; valid types: {', '.join(sorted(ev.EVENT_TYPES))}"
        )
    if secret is not None:
        validate_name(secret)
    window = Window.parse(since, until, now)
    return recorder.query_events(
        types=frozenset(types), actor=actor, since=window.since, until=window.until,
        stream=None if secret is None else ev.secret_stream(secret), named=secret,
        after_seq=after_seq, through_seq=through_seq,
    )


#: How often :func:`follow` looks for new events, and the most it reads at once.
FOLLOW_INTERVAL = 0.2
FOLLOW_PAGE = 1000


def follow(
    recorder: Recorder, *, after_seq: int = 0, stopped: Callable[[float], bool],
    interval: float = FOLLOW_INTERVAL, **filters: Any,
) -> Iterator[StoredEvent]:
    """The events meeting ``filters`` (as :func:`audit_log`) past ``after_seq``, then each
    one appended from then on, by any process, until ``stopped(seconds)`` (which waits up
    to that long for a stop) says so.

    Each look is one short read (the head, then the events up to it, a page at a time),
    never a transaction held open between looks: writers never wait for it, and SQLite's
    WAL can be checkpointed meanwhile. Filters are checked before the first look.

    :raises InvalidInputError: ``after_seq`` is past the ledger's head.
    :raises LedgerFormatError: the ledger went back under it (restored, or rolled back):
        what was printed past the new head is no longer its history, and what takes its
        place would otherwise be skipped unseen.
    """
    audit_log(recorder, through_seq=0, **filters)  # refuse bad filters now
    seen, seen_hash = after_seq, None
    top, top_hash = recorder.head()
    if after_seq > top:
        raise InvalidInputError(f"--after-seq {after_seq} is past the ledger's head (seq {top})")
    while True:
        if seen_hash is not None and _hash_at(recorder, seen) != seen_hash:
            raise LedgerFormatError(
                f"the ledger's history changed under --follow (restored or rolled back: "
                f"seq {seen} is not the event printed, and the head is seq {top}); the lines "
                "printed past the point it went back to are not its history. Find that point "
                "(keyledger audit log --type LedgerRestored), then follow again with "
                "--after-seq")
        while seen < top:
            page = list(itertools.islice(
                audit_log(recorder, after_seq=seen, through_seq=top, **filters), FOLLOW_PAGE))
            yield from page
            seen = page[-1].seq if len(page) == FOLLOW_PAGE else top
        seen_hash = top_hash if seen == top else _hash_at(recorder, seen)
        if stopped(interval):
            return
        top, top_hash = recorder.head()


def _hash_at(recorder: Recorder, seq: int) -> str | None:
    """The hash of the event at ``seq`` (None if there is none), one indexed read."""
    if seq == 0:
        return ""
    found = next(iter(recorder.query_events(after_seq=seq - 1, through_seq=seq)), None)
    return None if found is None else found.hash


# -- replay --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyMetadata:
    created_at: str
    rotated_at: str | None
    status: str
    origin: str
    fingerprint: str
    algorithm: str


@dataclass(frozen=True, slots=True)
class ReplayState:
    """The ledger as it stood after event ``seq``, folded from events 1..seq alone."""

    seq: int
    head: str  # the hash of event seq
    occurred_at: str  # when event seq was recorded
    current_version: int | None
    available_versions: list[int]  # can decrypt then: active or decrypt-only
    key_metadata: dict[int, KeyMetadata]
    secrets: dict[str, int]  # live secret -> the key version it was stored under


def replay(
    recorder: Recorder, *, seq: int | None = None, as_of: str | None = None,
    now: datetime | None = None,
) -> ReplayState:
    """Replay the events from seq 1 up to ``seq``, or up to ``as_of`` (a time as
    ``--since`` takes it: events are replayed in order, stopping before the first one
    recorded after it). Exactly one of the two.

    :raises InvalidInputError: neither or both given, ``seq`` is outside 1..head, or no
        event was recorded by ``as_of``.
    """
    if (seq is None) == (as_of is None):
        raise InvalidInputError("give exactly one of --as-of TIME or --seq N")
    head_seq, _ = recorder.head()
    if seq is not None and not 1 <= seq <= head_seq:
        raise InvalidInputError(f"--seq must be between 1 and the ledger's head ({head_seq}), got {seq}")
    moment = None if as_of is None else parse_moment(as_of, now or datetime.now(UTC))
    keyring = KeyringState()
    algorithms: dict[int, str] = {}
    secrets: dict[str, int] = {}
    last: StoredEvent | None = None
    for stored in recorder.read_events():
        if (seq is not None and stored.seq > seq) or (moment is not None and stored.occurred_at > moment):
            break
        if stored.stream == ev.KEYRING_STREAM:
            event = stored.decode()
            keyring.apply(event, stored.occurred_at)
            if isinstance(event, ev.KeyVersionCreated):
                algorithms[event.version] = event.algorithm
        elif stored.stream.startswith(ev.SECRET_STREAM_PREFIX):
            name = stored.stream.removeprefix(ev.SECRET_STREAM_PREFIX)
            state = secret_state(name, stored.stream_rev, stored.decode())
            if state.deleted or state.key_version is None:
                secrets.pop(name, None)
            else:
                secrets[name] = state.key_version
        last = stored
    if last is None:
        first = recorder.event_at(1)
        raise InvalidInputError(
            f"no event was recorded by {moment}"
            + ("" if first is None else f"; the first was at {first.occurred_at}")
        )
    metadata = {
        v: KeyMetadata(s.created_at, s.rotated_at, keyring.status(v), s.origin, s.fingerprint,
                       algorithms[v])
        for v, s in sorted(keyring.versions.items())
    }
    return ReplayState(
        seq=last.seq, head=last.hash, occurred_at=last.occurred_at,
        current_version=keyring.current,
        available_versions=[v for v, m in metadata.items() if m.status in (ACTIVE, DECRYPT_ONLY)],
        key_metadata=metadata, secrets=dict(sorted(secrets.items())),
    )


# -- incident ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentReport:
    """The blast radius of one key version, and what to do about it."""

    version: int
    status: str  # the version's status now
    secrets_currently_on_version: list[str]  # live secrets stored under it now
    secrets_ever_on_version: list[str]  # stored under it at some time in the window
    events: list[dict[str, Any]]  # event documents touching it, in the window
    window: Window
    remediation: list[str]
    as_of: dict[str, Any]  # {"seq", "head_hash"} of the last event read


def incident(
    recorder: Recorder, version: int, *, since: str | None = None,
    until: str | None = None, now: datetime | None = None,
) -> IncidentReport:
    """Which secrets were ever under key ``version``, what touched it, how to recover.

    The events touching it are its creation, rotations from or to it, its lifecycle
    (retired, reinstated, destruction scheduled or cancelled, destroyed), refused
    rotations to it, re-wraps of it, secrets written, imported or migrated under it or
    moved off it (re-written under another key, migrated, deleted), migration runs to
    it, and reads of secrets while on it. ``since``/``until`` narrow the events and
    the secrets "ever" on it to those in that window; "currently" is always now.

    :raises VersionError: the ledger never had that key version.
    :raises InvalidInputError: a time bound does not parse.
    """
    window = Window.parse(since, until, now)
    with recorder.snapshot():  # the keyring, the events and the head of one moment
        keyring = KeyringState()
        for stored in recorder.read_stream(ev.KEYRING_STREAM):  # small: one stream
            keyring.apply(stored.decode(), stored.occurred_at)
        if version not in keyring.versions:
            raise VersionError(f"the ledger has no key version {version}")
        position = recorder.head()
        scan = _IncidentScan(version, window)
        for stored in recorder.read_events():
            scan.read(stored)
    exposed = sorted(scan.exposed)
    return IncidentReport(
        version=version, status=keyring.status(version),
        secrets_currently_on_version=sorted(scan.on_version),
        secrets_ever_on_version=exposed, events=scan.documents, window=window,
        remediation=remediation(keyring, version, bool(scan.on_version), exposed, scan.deleted),
        as_of={"seq": position[0], "head_hash": position[1]},
    )


class _IncidentScan:
    """Folds the events, in order, into what an incident report needs about one version."""

    def __init__(self, version: int, window: Window) -> None:
        self.version, self.window = version, window
        self.on_version: set[str] = set()  # live secrets under it, as of the last event read
        self.ever: set[str] = set()  # on it at some time in the window
        self.deleted: set[str] = set()  # of those, the ones deleted since
        self.documents: list[dict[str, Any]] = []
        # The secrets on it when the window opens are added once, at its first event
        # (or at the end, when the window opens after the last event).
        self.entered = window.since is None

    def read(self, stored: StoredEvent) -> None:
        window, version = self.window, self.version
        if not self.entered and window.since is not None and stored.occurred_at >= window.since:
            self.ever |= self.on_version
            self.entered = True
        inside = window.contains(stored.occurred_at)
        event = stored.decode()
        touches = version in _versions_named(event)
        if stored.stream.startswith(ev.SECRET_STREAM_PREFIX):
            name = stored.stream.removeprefix(ev.SECRET_STREAM_PREFIX)
            touches |= name in self.on_version  # moved off it (or kept on it)
            state = secret_state(name, stored.stream_rev, event)
            if not state.deleted and state.key_version == version:
                self.on_version.add(name)
                if inside:
                    self.ever.add(name)
            else:
                self.on_version.discard(name)
            if state.deleted and name in self.ever:
                self.deleted.add(name)
            else:
                self.deleted.discard(name)
        if touches and inside:
            self.documents.append(event_document(stored))

    @property
    def exposed(self) -> set[str]:
        return self.ever if self.entered else self.ever | self.on_version


def _versions_named(event: ev.DomainEvent) -> set[int]:
    found = {value for field in _VERSION_FIELDS
             if isinstance(value := getattr(event, field, None), int)}
    if isinstance(event, ev.MasterKeyRewrapped):
        found |= {int(v) for v in event.fingerprints}
    return found


def remediation(
    keyring: KeyringState, version: int, live_on_it: bool, exposed: list[str],
    deleted: set[str],
) -> list[str]:
    """The commands that take a compromised key version out of use, in order, then a
    credential change for every secret whose value it could read."""
    status = keyring.status(version)
    steps = []
    if version == keyring.current:
        steps.append(f'keyledger rotate --reason "key version {version} compromised"')
    if status == RETIRED and live_on_it:  # forced retirement: migrate cannot read them
        steps.append(f'keyledger keys reinstate {version} --reason "migrating off a compromised key"')
    if live_on_it or version == keyring.current:
        steps.append("keyledger migrate")
    if status in (ACTIVE, DECRYPT_ONLY) or (status == RETIRED and live_on_it):
        steps.append(f'keyledger keys retire {version} --reason "compromised"')
    if status != DESTROYED:
        steps.append(f"keyledger keys destroy {version} --confirm-version {version}")
    for name in exposed:
        quoted = shlex.quote(name)
        if name in deleted:
            steps.append(f"revoke the credential {quoted} held: deleted from the ledger, "
                         f"its value was still readable with key version {version}")
        else:
            steps.append(f"change the credential itself, then `keyledger secrets reset {quoted}`")
    return steps
