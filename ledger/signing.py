"""Signed checkpoints: what shows that a ledger's tail was not cut or rewritten.

A hash chain proves that nothing inside it changed, but a chain whose last events were
cut off still verifies. So each ledger has an Ed25519 key, made at ``init``: its private
half is wrapped under the KEK like the data keys (only the master password unlocks it),
and its public half is recorded in the ``SigningKeyCreated`` event. Every append made
through an unlocked ledger also stores a checkpoint, ``(seq, head hash, time)`` signed
with that key, in the same transaction.

An *anchor* is the latest checkpoint written to a file kept somewhere else. Verifying a
ledger against it detects truncation, rollback or rewriting of anything up to the
anchored seq; pinning the public key catches a ledger rewritten wholesale with a new key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ledger import crypto
from ledger import events as ev
from ledger.errors import InvalidCiphertext, InvalidInputError, SigningKeyError

if TYPE_CHECKING:
    from ledger.store import Recorder

SIGNATURE_ALGORITHM = "Ed25519"
PUBLIC_KEY_PREFIX = "ed25519:"
ANCHOR_FORMAT = "keyledger-anchor/v1"
_CHECKPOINT_LABEL = "keyledger/checkpoint/v1"
# A checkpoint that also signs the root of the stream heads (ledger.heads): format 4 on.
_CHECKPOINT_LABEL_HEADS = "keyledger/checkpoint/v2"
# ... and the tally of live secrets and encryptions (ledger.tally): format 5 on.
_CHECKPOINT_LABEL_TALLY = "keyledger/checkpoint/v3"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The ledger ``ledger_id`` had ``seq`` events ending in ``head`` at ``signed_at``."""

    ledger_id: str
    seq: int
    head: str
    signed_at: str
    signature: bytes
    heads_root: str | None = None
    tally: str | None = None

    def message(self) -> bytes:
        return checkpoint_message(self.ledger_id, self.seq, self.head, self.signed_at,
                                  self.heads_root, self.tally)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "ledger_id": self.ledger_id, "seq": self.seq, "head": self.head,
            "signed_at": self.signed_at,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }
        if self.heads_root is not None:
            document["heads_root"] = self.heads_root
        if self.tally is not None:
            document["tally"] = self.tally
        return document


def checkpoint_message(ledger_id: str, seq: int, head: str, signed_at: str,
                       heads_root: str | None = None, tally: str | None = None) -> bytes:
    """The exact bytes a checkpoint signs: one JSON array, so fields cannot shift. Each
    form (with a heads root; with a root and a tally) signs under a label of its own, so
    no signature over one form can be read as another."""
    fields: list[object]
    if heads_root is None:
        fields = [_CHECKPOINT_LABEL, ledger_id, seq, head, signed_at]
    elif tally is None:
        fields = [_CHECKPOINT_LABEL_HEADS, ledger_id, seq, head, signed_at, heads_root]
    else:
        fields = [_CHECKPOINT_LABEL_TALLY, ledger_id, seq, head, signed_at, heads_root, tally]
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


class SigningKey:
    """The ledger's Ed25519 private key, unwrapped in memory for as long as it is open."""

    def __init__(self, private_bytes: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(private_bytes)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(os.urandom(32))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public_key(self) -> str:
        """The public half as text: ``ed25519:`` and the raw 32 bytes in base64."""
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")

    def sign(self, ledger_id: str, seq: int, head: str, signed_at: str,
             heads_root: str | None = None, tally: str | None = None) -> bytes:
        return self._key.sign(checkpoint_message(ledger_id, seq, head, signed_at, heads_root,
                                                 tally))


class CheckpointSigner:
    """Signs and checks the checkpoints of one ledger with its unwrapped key (the
    ``Signer`` the recorder calls inside each append)."""

    def __init__(self, key: SigningKey, ledger_id: str) -> None:
        self._key = key
        self._ledger_id = ledger_id
        self._public = parse_public_key(key.public_key)

    def sign(self, seq: int, head: str, signed_at: str, heads_root: str | None,
             tally: str | None = None) -> bytes:
        return self._key.sign(self._ledger_id, seq, head, signed_at, heads_root, tally)

    def holds(self, seq: int, head: str, signed_at: str, signature: bytes,
              heads_root: str | None, tally: str | None = None) -> bool:
        return signature_holds(self._public, Checkpoint(
            self._ledger_id, seq, head, signed_at, signature, heads_root, tally))


def open_signing_key(kek: bytes, wrapped: bytes, ledger_id: str, recorded: str | None) -> SigningKey:
    """The ledger's checkpoint-signing key: ``wrapped`` (``meta.signing_key``) opened with
    the KEK, and shown to be the private half of ``recorded``, the public key the ledger's
    events recorded (:func:`recorded_public_key`). The one rule for both, wherever the
    key is used: every unlock, ``health-check``, ``verify-backup`` and restores.

    :raises SigningKeyError: it does not open, holds no Ed25519 key, or is another key's.
    """
    try:
        key = SigningKey(crypto.unwrap_signing_key(kek, wrapped, ledger_id))
    except InvalidCiphertext:
        raise SigningKeyError(
            "the ledger's wrapped signing key (meta.signing_key) does not open with the "
            "master password: it was damaged or replaced"
        ) from None
    except ValueError:
        raise SigningKeyError("the ledger's wrapped signing key (meta.signing_key) opens "
                              "but holds no Ed25519 private key") from None
    if key.public_key != recorded:
        raise SigningKeyError(
            "the ledger's wrapped signing key (meta.signing_key) is not the private half of "
            f"the public key its events recorded ({recorded or 'none'}): it was replaced"
        )
    return key


def wrapped_key_problem(wrapped: bytes) -> str | None:
    """What can be told wrong with ``meta.signing_key`` without the master password: a
    wrapped Ed25519 key has one length. (Whether it opens, and is the recorded key's
    private half, takes the password: :func:`open_signing_key`.)"""
    if len(wrapped) != crypto.WRAPPED_SIGNING_KEY_BYTES:
        return (f"the ledger's wrapped signing key (meta.signing_key) is {len(wrapped)} bytes, "
                f"not the {crypto.WRAPPED_SIGNING_KEY_BYTES} of a wrapped Ed25519 key: it was "
                "damaged or replaced")
    return None


class CheckpointVerifier:
    """Checks the checkpoints of one ledger against a public key, without the master
    password (``audit verify``, ``verify-backup``): a ``Signer`` that never signs."""

    def __init__(self, public_key: Ed25519PublicKey, ledger_id: str) -> None:
        self._public = public_key
        self._ledger_id = ledger_id

    def sign(self, seq: int, head: str, signed_at: str, heads_root: str | None,
             tally: str | None = None) -> bytes:
        raise TypeError("a CheckpointVerifier checks checkpoints; it cannot sign one")

    def holds(self, seq: int, head: str, signed_at: str, signature: bytes,
              heads_root: str | None, tally: str | None = None) -> bool:
        return signature_holds(self._public, Checkpoint(
            self._ledger_id, seq, head, signed_at, signature, heads_root, tally))


def recorded_public_key(recorder: Recorder) -> str | None:
    """The public half of the ledger's signing key: the one recorded when it was created.
    A ledger keeps one key for life; a later ``SigningKeyCreated`` is never trusted."""
    keys = recorded_signing_keys(recorder)
    return keys[0][1] if keys else None


def recorded_verifier(recorder: Recorder) -> CheckpointVerifier | None:
    """A verifier of the ledger's checkpoints under its recorded public key (the file's
    own word: for the checks that take no password), or None if it records none."""
    public_key = recorded_public_key(recorder)
    if public_key is None:
        return None
    return CheckpointVerifier(parse_public_key(public_key), recorder.ledger_id())


def recorded_signing_keys(recorder: Recorder) -> list[tuple[int, str]]:
    """Every ``(seq, public key)`` a ``SigningKeyCreated`` event recorded, in order."""
    found = []
    for stored in recorder.read_stream(ev.LEDGER_STREAM):
        event = stored.decode()
        if isinstance(event, ev.SigningKeyCreated):
            found.append((stored.seq, event.public_key))
    return found


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key as ``audit pubkey`` prints it.

    :raises InvalidInputError: it is not an Ed25519 public key in that form.
    """
    body = text.strip().removeprefix(PUBLIC_KEY_PREFIX)
    try:
        raw = base64.b64decode(body, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise InvalidInputError(
            f"not an Ed25519 public key (expected {PUBLIC_KEY_PREFIX}<base64 of 32 bytes>)"
        ) from None


def signature_holds(public_key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    try:
        public_key.verify(checkpoint.signature, checkpoint.message())
    except InvalidSignature:
        return False
    return True


def same_key(a: Ed25519PublicKey, b: Ed25519PublicKey) -> bool:
    raw = Encoding.Raw, PublicFormat.Raw
    return a.public_bytes(*raw) == b.public_bytes(*raw)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A checkpoint kept outside the ledger, with the public key that signed it."""

    checkpoint: Checkpoint
    public_key: str

    def to_json(self) -> dict[str, Any]:
        return {"format": ANCHOR_FORMAT, "algorithm": SIGNATURE_ALGORITHM,
                "public_key": self.public_key, **self.checkpoint.to_json()}


def write_anchor(path: Path, anchor: Anchor) -> None:
    """Write ``anchor`` to a new file (never over an existing one)."""
    text = json.dumps(anchor.to_json(), indent=2) + "\n"
    try:
        with open(path, "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise InvalidInputError(f"{path} exists; an anchor is never overwritten") from None


def read_anchor(path: Path) -> Anchor:
    """The anchor stored at ``path``.

    :raises InvalidInputError: the file is missing or is not an anchor.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"no anchor file at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidInputError(f"{path} is not a keyledger anchor (not JSON)") from None
    try:
        if not isinstance(data, dict) or data.get("format") != ANCHOR_FORMAT:
            raise ValueError
        checkpoint = Checkpoint(
            ledger_id=_text(data["ledger_id"], _HEX_32), seq=_count(data["seq"]),
            head=_text(data["head"], _HEX_64), signed_at=_text(data["signed_at"], _TIME),
            signature=base64.b64decode(_text(data["signature"]), validate=True),
            heads_root=(None if data.get("heads_root") is None
                        else _text(data["heads_root"], _HEX_64)),
            tally=None if data.get("tally") is None else _text(data["tally"], _TALLY),
        )
        public_key = _text(data["public_key"])
    except (KeyError, ValueError, TypeError, binascii.Error):
        raise InvalidInputError(f"{path} is not a keyledger anchor ({ANCHOR_FORMAT})") from None
    parse_public_key(public_key)
    return Anchor(checkpoint, public_key)


_HEX_32 = re.compile(r"[0-9a-f]{32}")
_HEX_64 = re.compile(r"[0-9a-f]{64}")
_TALLY = re.compile(r'\{[-0-9a-z",:{}/]{0,65536}\}')
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _text(value: object, shape: re.Pattern[str] | None = None) -> str:
    """A field of an untrusted anchor: printable ASCII, and of ``shape`` when given."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise TypeError
    if shape is not None and not shape.fullmatch(value):
        raise ValueError
    return value


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError
    return value
