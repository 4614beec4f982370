"""The ciphertext format and the key hierarchy's primitives, all from ``cryptography``.

Wire format (the old system's, kept byte for byte)::

    base64( version: 1 byte | nonce: 12 bytes | AES-256-GCM ciphertext | tag: 16 bytes )

What keyledger adds is associated data: every ciphertext it writes is bound to the
secret's name and key version (``SCHEME_BOUND``). Ciphertexts imported from the old system's
system carry no associated data (``SCHEME_SEED``) until ``migrate`` rewrites them.

Functions whose name ends in ``_untrusted`` parse bytes that came from outside; every
fault in them raises the one opaque :class:`InvalidCiphertext`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ledger.errors import InvalidCiphertext

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SALT_BYTES = 16
MIN_VERSION = 1
MAX_VERSION = 255

#: Our KEK derivation: OWASP's 2023 floor for PBKDF2-HMAC-SHA256.
KEK_ITERATIONS = 600_000
KDF_ALGORITHM = "PBKDF2-HMAC-SHA256"  # how derive_kek makes the KEK, as the ledger records it
#: The old system's per-version key derivation, kept only to read its data.
SEED_ITERATIONS = 100_000
SEED_SALT_TEMPLATE = "mystocks-encryption-salt-v{v}"

SCHEME_BOUND = "bound-v1"
SCHEME_SEED = "seed"
SCHEMES = (SCHEME_BOUND, SCHEME_SEED)

_SECRET_AAD_PREFIX = b"keyledger/secret/v1\x00"
_WRAP_AAD_PREFIX = b"keyledger/data-key/v1\x00"
_FINGERPRINT_LABEL = b"keyledger/key-fingerprint/v1"
_KEK_CHECK_LABEL = b"keyledger/kek-check/v1"
_SIGNING_WRAP_AAD_PREFIX = b"keyledger/signing-key/v1\x00"


def generate_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return AESGCM.generate_key(bit_length=256)


def derive_kek(password: str, salt: bytes, iterations: int) -> bytes:
    """The key-encryption key for ``password``: PBKDF2-HMAC-SHA256, 32 bytes. (An unlock
    goes through :func:`ledger.early.derive_kek`, which may have started it already.)"""
    return _pbkdf2(password, salt, iterations)


def derive_seed_key(
    password: str, version: int, salt_template: str = SEED_SALT_TEMPLATE
) -> bytes:
    """The old system's data key for ``version``: PBKDF2 over a fixed, public salt."""
    salt = salt_template.replace("{v}", str(version)).encode("utf-8")
    return _pbkdf2(password, salt, SEED_ITERATIONS)


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=iterations)
    return kdf.derive(password.encode("utf-8"))


def fingerprint(key: bytes) -> str:
    """A public identifier of a key: HMAC-SHA256 under the key itself, 128 bits in hex.

    Recorded in the event that creates or re-wraps a key, so a substituted key is caught
    when it is unwrapped. It reveals nothing usable about a random 256-bit key.
    """
    return hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]


def kek_check_value(kek: bytes) -> str:
    """What the ledger stores to tell a wrong master password before touching anything."""
    return hmac.new(kek, _KEK_CHECK_LABEL, hashlib.sha256).hexdigest()


def kek_matches(kek: bytes, stored_check: str) -> bool:
    return hmac.compare_digest(kek_check_value(kek), stored_check)


def wrap_data_key(kek: bytes, data_key: bytes, ledger_id: str, version: int) -> bytes:
    """Encrypt a data key under the KEK, bound to this ledger and this version."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, data_key, _wrap_aad(ledger_id, version))


def unwrap_data_key(kek: bytes, wrapped: bytes, ledger_id: str, version: int) -> bytes:
    """The data key inside ``wrapped``; :class:`InvalidCiphertext` if it does not open."""
    try:
        return AESGCM(kek).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(ledger_id, version)
        )
    except (InvalidTag, ValueError):
        raise InvalidCiphertext from None


#: The length of a wrapped Ed25519 private key: nonce, the 32-byte key, the GCM tag.
WRAPPED_SIGNING_KEY_BYTES = NONCE_BYTES + 32 + TAG_BYTES


def wrap_signing_key(kek: bytes, private_key: bytes, ledger_id: str) -> bytes:
    """Encrypt the ledger's raw Ed25519 private key under the KEK, bound to this ledger."""
    nonce = os.urandom(NONCE_BYTES)
    aad = _SIGNING_WRAP_AAD_PREFIX + ledger_id.encode("ascii")
    return nonce + AESGCM(kek).encrypt(nonce, private_key, aad)


def unwrap_signing_key(kek: bytes, wrapped: bytes, ledger_id: str) -> bytes:
    """The raw private key inside ``wrapped``; :class:`InvalidCiphertext` if it does not open."""
    try:
        return AESGCM(kek).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
            _SIGNING_WRAP_AAD_PREFIX + ledger_id.encode("ascii"),
        )
    except (InvalidTag, ValueError):
        raise InvalidCiphertext from None


def _wrap_aad(ledger_id: str, version: int) -> bytes:
    return _WRAP_AAD_PREFIX + ledger_id.encode("ascii") + b"\x00" + bytes([version])


def secret_aad(name: str, version: int) -> bytes:
    """Associated data binding a ciphertext to its secret's name and key version."""
    return _SECRET_AAD_PREFIX + name.encode("utf-8") + b"\x00" + bytes([version])


@dataclass(frozen=True, slots=True)
class Frame:
    """One parsed ciphertext: the version byte, the nonce and the sealed body."""

    version: int
    nonce: bytes
    body: bytes

    def encode(self) -> str:
        return base64.b64encode(bytes([self.version]) + self.nonce + self.body).decode("ascii")


#: A data key, or the AES-GCM instance built from it once (:func:`cipher`): building one
#: costs about as much as sealing a short value, so a caller that seals many keeps it.
Key = bytes | AESGCM


def cipher(key: bytes) -> AESGCM:
    """The AES-GCM instance of a 256-bit data key, to pass wherever a :data:`Key` goes."""
    return AESGCM(key)


def encrypt_secret(
    key: Key, version: int, name: str, plaintext: bytes, nonce: bytes | None = None
) -> str:
    """Seal ``plaintext`` under ``key`` in keyledger's bound format; returns base64 text.

    ``nonce`` is for test vectors only: a repeated nonce under one key breaks AES-GCM.
    """
    _check_version(version)
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    body = _aead(key).encrypt(nonce, plaintext, secret_aad(name, version))
    return base64.b64encode(bytes([version]) + nonce + body).decode("ascii")


def decrypt_secret_untrusted(
    key: Key, token: str, name: str, scheme: str, *, version: int | None = None
) -> bytes:
    """Open a stored ciphertext of secret ``name``; one opaque error for every fault.

    ``version``, when given, is the key version the ciphertext must name in its header.
    """
    frame = parse_frame_untrusted(token)
    if version is not None and frame.version != version:
        raise InvalidCiphertext
    aad = secret_aad(name, frame.version) if scheme == SCHEME_BOUND else None
    return open_frame(key, frame, aad)


def open_frame(key: Key, frame: Frame, aad: bytes | None) -> bytes:
    try:
        return _aead(key).decrypt(frame.nonce, frame.body, aad)
    except (InvalidTag, ValueError):
        raise InvalidCiphertext from None


def _aead(key: Key) -> AESGCM:
    return key if isinstance(key, AESGCM) else AESGCM(key)


def decode_base64_untrusted(token: str) -> bytes:
    try:
        return base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCiphertext from None


def parse_frame_untrusted(token: str) -> Frame:
    """Split a versioned ciphertext into its parts, without opening it."""
    raw = decode_base64_untrusted(token)
    if len(raw) < 1 + NONCE_BYTES + TAG_BYTES or raw[0] < MIN_VERSION:
        raise InvalidCiphertext
    return Frame(raw[0], raw[1 : 1 + NONCE_BYTES], raw[1 + NONCE_BYTES :])


@dataclass(frozen=True, slots=True)
class SeedPlaintext:
    """A ciphertext of the old system, opened: which key version it was under and whether it was legacy."""

    version: int
    legacy: bool
    plaintext: bytes
    frame: Frame  # normalised to the versioned layout, the same nonce and body


class SeedDecodeError(ValueError):
    """Why one entry of the old system's data could not be read (safe to show)."""


def open_seed_ciphertext_untrusted(
    token: str, key_for_version: Callable[[int], bytes], legacy_version: int
) -> SeedPlaintext:
    """Open a ciphertext written by the old system.

    The old system told its two layouts apart by the first byte alone, so a legacy ciphertext
    whose random nonce began with 1-20 was misread. Here the authentication tag decides:
    the versioned reading is tried when the first byte is a version, then the legacy one.
    A wrong reading passes GCM's check with probability 2^-128, so no input reads back
    wrong, and none that either layout explains fails.

    :raises SeedDecodeError: with a reason fit to print.
    """
    try:
        raw = decode_base64_untrusted(token)
    except InvalidCiphertext:
        raise SeedDecodeError("not valid base64") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise SeedDecodeError("too short to be a ciphertext")
    if raw[0] >= MIN_VERSION and len(raw) >= 1 + NONCE_BYTES + TAG_BYTES:
        frame = Frame(raw[0], raw[1 : 1 + NONCE_BYTES], raw[1 + NONCE_BYTES :])
        try:
            plaintext = open_frame(key_for_version(frame.version), frame, None)
            return SeedPlaintext(frame.version, False, plaintext, frame)
        except InvalidCiphertext:
            pass
    legacy = Frame(legacy_version, raw[:NONCE_BYTES], raw[NONCE_BYTES:])
    try:
        plaintext = open_frame(key_for_version(legacy_version), legacy, None)
    except InvalidCiphertext:
        if raw[0] == 0:
            raise SeedDecodeError(
                "unknown version 0 and not a legacy ciphertext under the legacy key"
            ) from None
        raise SeedDecodeError(
            "authentication failed (wrong tag): wrong password, salt template or corrupted"
        ) from None
    return SeedPlaintext(legacy_version, True, plaintext, legacy)


def _check_version(version: int) -> None:
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ValueError(f"key version must be {MIN_VERSION}-{MAX_VERSION}, got {version}")
