"""The ciphertext formats (JSON vectors) and the primitives of ``ledger.crypto``."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import crypto
from ledger.errors import InvalidCiphertext
from ledger.testing import seed_encrypt

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


BOUND = _load("bound_v1.json")
SEED = _load("seed.json")
INVALID = _load("invalid.json")


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["description"] for v in vectors]


@functools.cache
def _seed_key(password: str, version: int, salt_template: str) -> bytes:
    return crypto.derive_seed_key(password, version, salt_template)


def _key_for(vector: dict[str, Any]) -> Any:
    return lambda version: _seed_key(vector["password"], version, vector["salt_template"])


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_vectors", VECTORS / "generate_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_vectors", module)
    spec.loader.exec_module(module)
    return module


# -- keyledger's bound format: vectors ------------------------------------------------------


@pytest.mark.parametrize("vector", BOUND, ids=_ids(BOUND))
def test_bound_vector_decrypts_to_its_plaintext(vector: dict[str, Any]) -> None:
    """Every bound-v1 vector opens under its key and name to exactly its plaintext."""
    key = bytes.fromhex(vector["key"])
    plaintext = crypto.decrypt_secret_untrusted(key, vector["token"], vector["name"], crypto.SCHEME_BOUND)
    assert plaintext == vector["plaintext"].encode("utf-8")


@pytest.mark.parametrize("vector", BOUND, ids=_ids(BOUND))
def test_bound_vector_encrypts_to_its_token_with_the_same_nonce(vector: dict[str, Any]) -> None:
    """Encrypting a vector's plaintext with its key, version, name and nonce gives its token byte for byte."""
    token = crypto.encrypt_secret(
        bytes.fromhex(vector["key"]), vector["version"], vector["name"],
        vector["plaintext"].encode("utf-8"), nonce=bytes.fromhex(vector["nonce"]),
    )
    assert token == vector["token"]


@pytest.mark.parametrize("vector", BOUND, ids=_ids(BOUND))
def test_bound_vector_frame_holds_version_then_nonce(vector: dict[str, Any]) -> None:
    """A bound token's first byte is its key version and the next twelve its nonce."""
    frame = crypto.parse_frame_untrusted(vector["token"])
    assert frame.version == vector["version"]
    assert frame.nonce.hex() == vector["nonce"]
    assert len(frame.body) == len(vector["plaintext"].encode("utf-8")) + crypto.TAG_BYTES
    assert frame.encode() == vector["token"]


def test_bound_vectors_cover_the_required_versions_and_a_unicode_name() -> None:
    """The bound vectors include versions 1, 20, 99 and 255 and a non-ASCII name."""
    assert {1, 20, 99, 255} <= {v["version"] for v in BOUND}
    assert any(not v["name"].isascii() for v in BOUND)


# -- the old system's format: vectors --------------------------------------------------------


@pytest.mark.parametrize("vector", SEED, ids=_ids(SEED))
def test_seed_vector_opens_with_its_version_and_layout(vector: dict[str, Any]) -> None:
    """Each guide ciphertext opens to its plaintext, under its version, with legacy told apart by the tag."""
    opened = crypto.open_seed_ciphertext_untrusted(
        vector["token"], _key_for(vector), vector["legacy_version"]
    )
    assert opened.plaintext == vector["plaintext"].encode("utf-8")
    if vector["version"] is None:
        assert (opened.version, opened.legacy) == (vector["legacy_version"], True)
    else:
        assert (opened.version, opened.legacy) == (vector["version"], False)
    assert opened.frame.nonce.hex() == vector["nonce"]


@pytest.mark.parametrize("vector", SEED, ids=_ids(SEED))
def test_seed_vector_normalised_frame_reopens_without_associated_data(vector: dict[str, Any]) -> None:
    """The normalised frame kept for a guide ciphertext is versioned and opens under the seed scheme."""
    opened = crypto.open_seed_ciphertext_untrusted(
        vector["token"], _key_for(vector), vector["legacy_version"]
    )
    key = _seed_key(vector["password"], opened.version, vector["salt_template"])
    stored = opened.frame.encode()
    assert crypto.parse_frame_untrusted(stored).version == opened.version
    assert crypto.decrypt_secret_untrusted(key, stored, "any-name", crypto.SCHEME_SEED) == opened.plaintext


@pytest.mark.parametrize("vector", SEED, ids=_ids(SEED))
def test_testing_helper_writes_the_guides_format(vector: dict[str, Any]) -> None:
    """``ledger.testing.seed_encrypt`` with a vector's nonce reproduces the independently built token."""
    token = seed_encrypt(
        vector["password"], vector["version"], vector["plaintext"],
        salt_template=vector["salt_template"], legacy_key_version=vector["legacy_version"],
        nonce=bytes.fromhex(vector["nonce"]),
    )
    assert token == vector["token"]


def test_seed_vectors_cover_the_ambiguous_legacy_cases() -> None:
    """The seed vectors include versions 99 and 21 and legacy nonces starting with 1, 2, 20 and 99."""
    assert {21, 99} <= {v["version"] for v in SEED}
    legacy_first_bytes = {bytes.fromhex(v["nonce"])[0] for v in SEED if v["version"] is None}
    assert {1, 2, 20, 99} <= legacy_first_bytes


def test_seed_key_derivation_is_the_guides() -> None:
    """``derive_seed_key`` is PBKDF2-HMAC-SHA256, 100,000 rounds, salt ``mystocks-encryption-salt-v{v}``."""
    expected = hashlib.pbkdf2_hmac("sha256", b"pw", b"mystocks-encryption-salt-v99", 100_000, 32)
    assert crypto.derive_seed_key("pw", 99) == expected
    custom = hashlib.pbkdf2_hmac("sha256", b"pw", b"acme-3-salt", 100_000, 32)
    assert crypto.derive_seed_key("pw", 3, "acme-{v}-salt") == custom


def test_vector_files_are_what_the_generator_writes() -> None:
    """Re-running the generator's builders reproduces the committed JSON files exactly."""
    gen = _generator()
    assert gen.bound_vectors() == BOUND
    assert gen.seed_vectors() == SEED
    assert gen.invalid_vectors() == INVALID


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", INVALID["bound"], ids=_ids(INVALID["bound"]))
def test_invalid_bound_token_is_refused(vector: dict[str, Any]) -> None:
    """Every malformed, tampered or misaddressed bound token raises the one InvalidCiphertext."""
    with pytest.raises(InvalidCiphertext) as caught:
        crypto.decrypt_secret_untrusted(
            bytes.fromhex(vector["key"]), vector["token"], vector["name"], crypto.SCHEME_BOUND
        )
    assert type(caught.value) is InvalidCiphertext


@pytest.mark.parametrize("vector", INVALID["seed"], ids=_ids(INVALID["seed"]))
def test_invalid_seed_token_is_refused_with_its_reason(vector: dict[str, Any]) -> None:
    """Every bad guide ciphertext raises SeedDecodeError whose message names the reason."""
    with pytest.raises(crypto.SeedDecodeError) as caught:
        crypto.open_seed_ciphertext_untrusted(vector["token"], _key_for(vector), vector["legacy_version"])
    assert vector["reason"] in str(caught.value)


def test_every_fault_is_the_same_opaque_error() -> None:
    """Base64, length, version, tag, name and key faults all raise a bare InvalidCiphertext with no detail."""
    errors: list[InvalidCiphertext] = []
    for vector in INVALID["bound"]:
        try:
            crypto.decrypt_secret_untrusted(
                bytes.fromhex(vector["key"]), vector["token"], vector["name"], crypto.SCHEME_BOUND
            )
        except InvalidCiphertext as exc:
            errors.append(exc)
    assert len(errors) == len(INVALID["bound"])
    for error in errors:
        assert type(error) is InvalidCiphertext
        assert error.args == ()
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_bound_token_does_not_open_as_seed_scheme() -> None:
    """A bound token read without its associated data (seed scheme) fails: the binding is in the tag."""
    vector = BOUND[0]
    with pytest.raises(InvalidCiphertext):
        crypto.decrypt_secret_untrusted(
            bytes.fromhex(vector["key"]), vector["token"], vector["name"], crypto.SCHEME_SEED
        )


def test_seed_token_does_not_open_as_bound_scheme() -> None:
    """A ciphertext sealed without associated data does not open when read as bound to a name."""
    key = bytes(range(32))
    token = crypto.Frame(3, bytes(12), AESGCM(key).encrypt(bytes(12), b"v", None)).encode()
    assert crypto.decrypt_secret_untrusted(key, token, "n", crypto.SCHEME_SEED) == b"v"
    with pytest.raises(InvalidCiphertext):
        crypto.decrypt_secret_untrusted(key, token, "n", crypto.SCHEME_BOUND)


# -- associated data -------------------------------------------------------------------------


def test_associated_data_is_prefix_name_nul_version() -> None:
    """The associated data is ``keyledger/secret/v1\\0`` + UTF-8 name + ``\\0`` + the version byte."""
    assert crypto.secret_aad("é", 7) == b"keyledger/secret/v1\x00\xc3\xa9\x00\x07"


def test_ciphertext_is_bound_to_its_name() -> None:
    """A ciphertext written for one name does not decrypt as another name's, even a prefix of it."""
    key = crypto.generate_data_key()
    token = crypto.encrypt_secret(key, 4, "db_password", b"s3cret")
    for other in ("db_passwor", "db_password ", "DB_PASSWORD", "db_password\x00"):
        with pytest.raises(InvalidCiphertext):
            crypto.decrypt_secret_untrusted(key, token, other, crypto.SCHEME_BOUND)


def test_ciphertext_is_bound_to_its_version() -> None:
    """Rewriting a token's version byte, to any other version, makes it fail under the same key."""
    key = crypto.generate_data_key()
    token = crypto.encrypt_secret(key, 4, "n", b"value")
    raw = bytearray(base64.b64decode(token))
    for version in (1, 3, 5, 99, 255):
        raw[0] = version
        moved = base64.b64encode(bytes(raw)).decode()
        with pytest.raises(InvalidCiphertext):
            crypto.decrypt_secret_untrusted(key, moved, "n", crypto.SCHEME_BOUND)


@pytest.mark.parametrize("version", range(crypto.MIN_VERSION, crypto.MAX_VERSION + 1))
def test_every_version_encrypts_and_decrypts(version: int) -> None:
    """Every key version 1-255 seals into a frame carrying that version and opens to the same bytes."""
    key = hashlib.sha256(b"version key %d" % version).digest()
    token = crypto.encrypt_secret(key, version, f"secret-{version}", b"payload %d" % version)
    assert crypto.parse_frame_untrusted(token).version == version
    assert crypto.decrypt_secret_untrusted(key, token, f"secret-{version}", crypto.SCHEME_BOUND) == (
        b"payload %d" % version
    )


@pytest.mark.parametrize("version", [0, -1, 256, 1000])
def test_out_of_range_version_is_a_value_error(version: int) -> None:
    """Encrypting under a version outside 1-255 is misuse and raises ValueError, not a ciphertext."""
    with pytest.raises(ValueError):
        crypto.encrypt_secret(crypto.generate_data_key(), version, "n", b"v")


def test_each_encryption_uses_a_fresh_nonce() -> None:
    """Two encryptions of the same value differ, so a repeated value is not visible in the ledger."""
    key = crypto.generate_data_key()
    first = crypto.encrypt_secret(key, 1, "n", b"same")
    second = crypto.encrypt_secret(key, 1, "n", b"same")
    assert first != second
    assert crypto.parse_frame_untrusted(first).nonce != crypto.parse_frame_untrusted(second).nonce


@settings(max_examples=80)
@given(
    version=st.integers(crypto.MIN_VERSION, crypto.MAX_VERSION),
    name=st.text(min_size=1, max_size=40),
    other=st.text(min_size=1, max_size=40),
    plaintext=st.binary(max_size=200),
)
def test_bound_round_trip_and_binding_property(
    version: int, name: str, other: str, plaintext: bytes
) -> None:
    """Any version, name and bytes: a token opens under its name and fails under another name or version."""
    key = hashlib.sha256(name.encode("utf-8")).digest()
    token = crypto.encrypt_secret(key, version, name, plaintext)
    assert crypto.decrypt_secret_untrusted(key, token, name, crypto.SCHEME_BOUND) == plaintext
    if other != name:
        with pytest.raises(InvalidCiphertext):
            crypto.decrypt_secret_untrusted(key, token, other, crypto.SCHEME_BOUND)
    raw = bytearray(base64.b64decode(token))
    raw[0] = version % crypto.MAX_VERSION + 1
    moved = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(InvalidCiphertext):
        crypto.decrypt_secret_untrusted(key, moved, name, crypto.SCHEME_BOUND)


# -- guide ciphertexts, any nonce (fast stand-in keys: the layout logic, not PBKDF2) ---------

_FAST_KEYS = {v: hashlib.sha256(b"fast seed key %d" % v).digest() for v in range(256)}


@settings(max_examples=200)
@given(
    nonce=st.binary(min_size=12, max_size=12),
    version=st.integers(crypto.MIN_VERSION, crypto.MAX_VERSION),
    legacy_version=st.integers(crypto.MIN_VERSION, crypto.MAX_VERSION),
    legacy=st.booleans(),
    plaintext=st.binary(max_size=64),
)
def test_seed_layouts_are_never_confused_property(
    nonce: bytes, version: int, legacy_version: int, legacy: bool, plaintext: bytes
) -> None:
    """Whatever a legacy nonce's first byte, a guide ciphertext opens to its plaintext, version and layout."""
    key_version = legacy_version if legacy else version
    body = AESGCM(_FAST_KEYS[key_version]).encrypt(nonce, plaintext, None)
    raw = nonce + body if legacy else bytes([version]) + nonce + body
    opened = crypto.open_seed_ciphertext_untrusted(
        base64.b64encode(raw).decode(), _FAST_KEYS.__getitem__, legacy_version
    )
    assert (opened.plaintext, opened.version, opened.legacy) == (plaintext, key_version, legacy)
    assert opened.frame.nonce == nonce


# -- the key hierarchy -----------------------------------------------------------------------

LEDGER_A = "a" * 32
LEDGER_B = "b" * 32


def test_wrapped_key_unwraps_under_its_ledger_and_version() -> None:
    """A data key wrapped for (ledger, version) unwraps to the same key there."""
    kek, data_key = crypto.generate_data_key(), crypto.generate_data_key()
    wrapped = crypto.wrap_data_key(kek, data_key, LEDGER_A, 7)
    assert crypto.unwrap_data_key(kek, wrapped, LEDGER_A, 7) == data_key


def test_wrapped_key_moved_to_another_version_fails() -> None:
    """A wrapped key copied into another version's slot does not unwrap."""
    kek, data_key = crypto.generate_data_key(), crypto.generate_data_key()
    wrapped = crypto.wrap_data_key(kek, data_key, LEDGER_A, 7)
    for version in (1, 6, 8, 99, 255):
        with pytest.raises(InvalidCiphertext):
            crypto.unwrap_data_key(kek, wrapped, LEDGER_A, version)


def test_wrapped_key_moved_to_another_ledger_fails() -> None:
    """A wrapped key copied into another ledger (same KEK, same version) does not unwrap."""
    kek, data_key = crypto.generate_data_key(), crypto.generate_data_key()
    wrapped = crypto.wrap_data_key(kek, data_key, LEDGER_A, 7)
    with pytest.raises(InvalidCiphertext):
        crypto.unwrap_data_key(kek, wrapped, LEDGER_B, 7)


def test_wrapped_key_under_another_kek_or_tampered_fails() -> None:
    """A wrong KEK, a flipped bit, a truncation or an empty blob all raise the opaque error."""
    kek, data_key = crypto.generate_data_key(), crypto.generate_data_key()
    wrapped = crypto.wrap_data_key(kek, data_key, LEDGER_A, 2)
    flipped = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    cases = [
        (crypto.generate_data_key(), wrapped), (kek, flipped), (kek, wrapped[:-1]),
        (kek, wrapped[:5]), (kek, b""),
    ]
    for key, blob in cases:
        with pytest.raises(InvalidCiphertext):
            crypto.unwrap_data_key(key, blob, LEDGER_A, 2)


def test_wrapping_twice_gives_different_blobs() -> None:
    """Each wrap uses a fresh nonce, so re-wrapping the same key never repeats a blob."""
    kek, data_key = crypto.generate_data_key(), crypto.generate_data_key()
    first = crypto.wrap_data_key(kek, data_key, LEDGER_A, 1)
    second = crypto.wrap_data_key(kek, data_key, LEDGER_A, 1)
    assert first != second
    assert len(first) == crypto.NONCE_BYTES + crypto.KEY_BYTES + crypto.TAG_BYTES


def test_fingerprint_is_stable_and_pinned() -> None:
    """A key's fingerprint is 128 bits of HMAC-SHA256(key, label) in hex, the same on every call."""
    key = bytes(range(32))
    expected = hmac.new(key, b"keyledger/key-fingerprint/v1", hashlib.sha256).hexdigest()[:32]
    assert crypto.fingerprint(key) == expected
    assert crypto.fingerprint(key) == crypto.fingerprint(bytes(range(32)))
    assert len(expected) == 32 and int(expected, 16) >= 0


def test_fingerprints_of_different_keys_differ() -> None:
    """Distinct keys, even one bit apart, have distinct fingerprints."""
    key = bytes(range(32))
    near = bytes([key[0] ^ 1]) + key[1:]
    fps = {crypto.fingerprint(k) for k in (key, near, crypto.generate_data_key(), bytes(32))}
    assert len(fps) == 4


def test_kek_check_tells_the_right_kek_from_a_wrong_one() -> None:
    """The stored check value accepts the KEK it was made from and refuses any other."""
    salt = bytes(16)
    kek = crypto.derive_kek("right password", salt, 1_000)
    check = crypto.kek_check_value(kek)
    assert crypto.kek_matches(crypto.derive_kek("right password", salt, 1_000), check)
    assert not crypto.kek_matches(crypto.derive_kek("wrong password", salt, 1_000), check)
    assert not crypto.kek_matches(crypto.derive_kek("right password", b"\x01" * 16, 1_000), check)
    assert not crypto.kek_matches(crypto.derive_kek("right password", salt, 1_001), check)


def test_kek_check_does_not_reveal_the_kek() -> None:
    """The check value is an HMAC under the KEK, not the KEK or its fingerprint."""
    kek = crypto.derive_kek("pw", bytes(16), 1_000)
    check = crypto.kek_check_value(kek)
    assert check == hmac.new(kek, b"keyledger/kek-check/v1", hashlib.sha256).hexdigest()
    assert kek.hex() not in check
    assert check[:32] != crypto.fingerprint(kek)


def test_derive_kek_is_pbkdf2_sha256() -> None:
    """The KEK is PBKDF2-HMAC-SHA256 of the password over the ledger's salt, 32 bytes."""
    salt = b"0123456789abcdef"
    assert crypto.derive_kek("pässword", salt, 1_000) == hashlib.pbkdf2_hmac(
        "sha256", "pässword".encode(), salt, 1_000, 32
    )
