"""Regenerate the ciphertext test vectors: ``python tests/vectors/generate_vectors.py``.

Everything is deterministic (fixed keys, nonces and passwords), so running it again must
leave the JSON files unchanged. It imports nothing from keyledger: the old system's
ciphertexts are built exactly as its guide describes (PBKDF2-HMAC-SHA256, 100,000
iterations, salt ``mystocks-encryption-salt-v{v}``, AES-256-GCM without associated data),
and keyledger's bound format from its written definition, so a change in ``ledger/`` that
alters either format makes the tests fail instead of silently regenerating new truth.

Formats:

* seed, versioned: ``base64(version: 1 byte | nonce: 12 | ciphertext | tag: 16)``
* seed, legacy:    ``base64(nonce: 12 | ciphertext | tag: 16)``, under the version-1 key
* bound-v1:        the versioned layout, with associated data
  ``b"keyledger/secret/v1\\x00" + utf8(name) + b"\\x00" + bytes([version])``
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

HERE = Path(__file__).resolve().parent

SEED_PASSWORD = "mystocks master password 2025"
SEED_SALT_TEMPLATE = "mystocks-encryption-salt-v{v}"
SEED_ITERATIONS = 100_000
BOUND_AAD_PREFIX = b"keyledger/secret/v1\x00"

_seed_keys: dict[tuple[str, str, int], bytes] = {}


def seed_key(password: str, version: int, salt_template: str = SEED_SALT_TEMPLATE) -> bytes:
    """The guide's per-version key, as its "Key Derivation" section writes it."""
    cache_key = (password, salt_template, version)
    if cache_key not in _seed_keys:
        kdf = PBKDF2HMAC(
            algorithm=hashes.SHA256(),
            length=32,
            salt=salt_template.replace("{v}", str(version)).encode(),
            iterations=SEED_ITERATIONS,
        )
        _seed_keys[cache_key] = kdf.derive(password.encode())
    return _seed_keys[cache_key]


def fixed_bytes(label: str, size: int, first: int | None = None) -> bytes:
    """``size`` bytes that depend only on ``label``; optionally with a chosen first byte."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"keyledger-vectors/{label}/{counter}".encode()).digest()
        counter += 1
    out = out[:size]
    if first is not None:
        out = bytes([first]) + out[1:]
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seed_token(
    password: str, version: int | None, plaintext: str, nonce: bytes,
    salt_template: str = SEED_SALT_TEMPLATE, legacy_version: int = 1,
) -> str:
    key = seed_key(password, legacy_version if version is None else version, salt_template)
    body = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), None)
    header = b"" if version is None else bytes([version])
    return b64(header + nonce + body)


def bound_aad(name: str, version: int) -> bytes:
    return BOUND_AAD_PREFIX + name.encode("utf-8") + b"\x00" + bytes([version])


def bound_token(key: bytes, version: int, name: str, plaintext: str, nonce: bytes) -> str:
    body = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), bound_aad(name, version))
    return b64(bytes([version]) + nonce + body)


def flip_bit(token: str, index: int, mask: int = 0x01) -> str:
    raw = bytearray(base64.b64decode(token))
    raw[index] ^= mask
    return b64(bytes(raw))


def set_byte(token: str, index: int, value: int) -> str:
    raw = bytearray(base64.b64decode(token))
    raw[index] = value
    return b64(bytes(raw))


# -- keyledger's bound format ------------------------------------------------------------

BOUND_CASES: list[tuple[str, int, str, str]] = [
    # (label, version, name, plaintext)
    ("v1", 1, "db_password", "hunter2"),
    ("v20", 20, "api/stripe/secret_key", "sk_live_0123456789abcdef"),
    ("v99", 99, "emergency.token", "rotated after the incident"),
    ("v255", 255, "last-version", "the highest version a byte can hold"),
    ("unicode-name", 2, "mot_de_passe_ÉTÉ/東京/🔑", "valeur: ünïcødé ✓"),
    ("empty-plaintext", 7, "empty", ""),
    ("multiline", 21, "tls/private_key", "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n"),
]


def bound_vectors() -> list[dict[str, Any]]:
    vectors = []
    for label, version, name, plaintext in BOUND_CASES:
        key = fixed_bytes(f"bound/{label}/key", 32)
        nonce = fixed_bytes(f"bound/{label}/nonce", 12)
        vectors.append({
            "description": label,
            "key": key.hex(),
            "version": version,
            "name": name,
            "nonce": nonce.hex(),
            "plaintext": plaintext,
            "token": bound_token(key, version, name, plaintext, nonce),
        })
    return vectors


# -- the old system's format -------------------------------------------------------------

SEED_CASES: list[tuple[str, int | None, str, int | None, str]] = [
    # (label, version or None for legacy, plaintext, first nonce byte or None, salt template)
    ("versioned v1", 1, "postgres://app:pw@db/app", None, SEED_SALT_TEMPLATE),
    ("versioned v2", 2, "smtp-password", None, SEED_SALT_TEMPLATE),
    ("versioned v20, the last regular version", 20, "redis-secret", None, SEED_SALT_TEMPLATE),
    ("versioned v21, outside the guide's 1-20 detection", 21, "reserved-range value", None,
     SEED_SALT_TEMPLATE),
    ("versioned v99, the guide's emergency version", 99, "emergency value", None,
     SEED_SALT_TEMPLATE),
    ("versioned v99 whose nonce starts with 1", 99, "nonce looks like v1", 1, SEED_SALT_TEMPLATE),
    ("versioned v1, empty plaintext", 1, "", None, SEED_SALT_TEMPLATE),
    ("versioned v3, unicode plaintext", 3, "pässwörd ✓ 東京", None, SEED_SALT_TEMPLATE),
    ("legacy, nonce starts with 1 (misread as v1 by the guide)", None, "legacy one", 1,
     SEED_SALT_TEMPLATE),
    ("legacy, nonce starts with 2 (misread as v2 by the guide)", None, "legacy two", 2,
     SEED_SALT_TEMPLATE),
    ("legacy, nonce starts with 20 (misread as v20 by the guide)", None, "legacy twenty", 20,
     SEED_SALT_TEMPLATE),
    ("legacy, nonce starts with 99", None, "legacy ninety-nine", 99, SEED_SALT_TEMPLATE),
    ("legacy, nonce starts with 0", None, "legacy zero", 0, SEED_SALT_TEMPLATE),
    ("legacy, nonce starts with 255", None, "legacy max", 255, SEED_SALT_TEMPLATE),
    ("legacy, empty plaintext, nonce starts with 1", None, "", 1, SEED_SALT_TEMPLATE),
    ("versioned v4 under a custom salt template", 4, "custom salt", None, "acme-salt/{v}/prod"),
    ("legacy under a custom salt template", None, "custom legacy", 4, "acme-salt/{v}/prod"),
]


def seed_vectors() -> list[dict[str, Any]]:
    vectors = []
    for label, version, plaintext, first, template in SEED_CASES:
        nonce = fixed_bytes(f"seed/{label}/nonce", 12, first)
        vectors.append({
            "description": label,
            "password": SEED_PASSWORD,
            "salt_template": template,
            "version": version,
            "legacy_version": 1,
            "nonce": nonce.hex(),
            "plaintext": plaintext,
            "token": seed_token(SEED_PASSWORD, version, plaintext, nonce, template),
        })
    return vectors


# -- tokens that must be refused ---------------------------------------------------------


def invalid_vectors() -> dict[str, list[dict[str, Any]]]:
    key = fixed_bytes("invalid/bound/key", 32)
    nonce = fixed_bytes("invalid/bound/nonce", 12)
    name, version, plaintext = "db_password", 5, "hunter2"
    good = bound_token(key, version, name, plaintext, nonce)
    raw_len = len(base64.b64decode(good))
    bound_bad = [
        ("bad base64", "not base64 at all!!"),
        ("bad base64 padding", good[:-1]),
        ("empty token", ""),
        ("too short: header and nonce only", b64(base64.b64decode(good)[:13])),
        ("too short: one byte short of a tag", b64(base64.b64decode(good)[: 1 + 12 + 15])),
        ("flipped tag bit", flip_bit(good, raw_len - 1)),
        ("flipped ciphertext bit", flip_bit(good, 13)),
        ("flipped nonce bit", flip_bit(good, 1)),
        ("version byte changed", set_byte(good, 0, version + 1)),
        ("version byte zero", set_byte(good, 0, 0)),
        ("truncated tag", b64(base64.b64decode(good)[:-1])),
    ]
    bound = [
        {"description": d, "key": key.hex(), "name": name, "token": t} for d, t in bound_bad
    ]
    bound.append({
        "description": "wrong name for a bound token", "key": key.hex(),
        "name": "db_password2", "token": good,
    })
    bound.append({
        "description": "right token under another key", "key": fixed_bytes("other", 32).hex(),
        "name": name, "token": good,
    })

    seed_nonce = fixed_bytes("invalid/seed/nonce", 12, 7)
    v99 = seed_token(SEED_PASSWORD, 99, "emergency value", seed_nonce)
    legacy = seed_token(SEED_PASSWORD, None, "legacy value", fixed_bytes("invalid/legacy", 12, 1))
    auth = "authentication failed"
    seed_bad = [
        ("bad base64", "@@@ definitely not base64 @@@", "not valid base64"),
        ("too short", b64(b"\x63" + seed_nonce + b"short"), "too short"),
        ("empty token", "", "too short"),
        ("flipped tag bit of a versioned token", flip_bit(v99, len(base64.b64decode(v99)) - 1), auth),
        ("flipped tag bit of a legacy token", flip_bit(legacy, len(base64.b64decode(legacy)) - 1),
         auth),
        ("flipped ciphertext bit", flip_bit(v99, 14), auth),
        ("version byte changed from 99 to 98", set_byte(v99, 0, 98), auth),
        ("version byte changed from 99 to 0", set_byte(v99, 0, 0), "unknown version 0"),
        ("encrypted under another password",
         seed_token("not the master password", 99, "x", seed_nonce), auth),
        ("legacy under another password",
         seed_token("not the master password", None, "x", fixed_bytes("invalid/pw", 12, 3)), auth),
    ]
    seed = [
        {"description": d, "password": SEED_PASSWORD, "salt_template": SEED_SALT_TEMPLATE,
         "legacy_version": 1, "token": t, "reason": r}
        for d, t, r in seed_bad
    ]
    seed.append({
        "description": "right token, wrong salt template", "password": SEED_PASSWORD,
        "salt_template": "another-salt-v{v}", "legacy_version": 1, "token": v99, "reason": auth,
    })
    return {"bound": bound, "seed": seed}


def write(name: str, data: object) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    (HERE / name).write_text(text, encoding="utf-8")


def main() -> None:
    write("bound_v1.json", bound_vectors())
    write("seed.json", seed_vectors())
    write("invalid.json", invalid_vectors())


if __name__ == "__main__":
    main()
