"""The wrapped signing key in ``meta``: ``health-check`` (which has the master password)
names one that does not open or is another key's private half, with the rule every
unlock uses; ``audit verify`` (which has not) names one that cannot be a wrapped key."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cli_support import PASSWORD, VALUE, document, error_line, invoke
from tamper_support import plain_rows

from ledger import crypto
from ledger.copying import copy_ledger
from ledger.keyring import unlock_kek
from ledger.locations import open_recorder
from ledger.signing import SigningKey


def set_wrapped_key(db: Path, wrapped: bytes) -> None:
    plain_rows(db, "UPDATE meta SET value = ? WHERE key = 'signing_key' RETURNING key",
               (base64.b64encode(wrapped).decode("ascii"),))


def another_keys_private_half(db: Path) -> bytes:
    """A fresh Ed25519 key wrapped exactly as keyledger wraps its own, under the real KEK:
    what someone who holds the master password could put in meta."""
    with open_recorder(db) as recorder:
        meta = recorder.read_meta()
    return crypto.wrap_signing_key(unlock_kek(meta, PASSWORD), SigningKey.generate().private_bytes(),
                                   meta.ledger_id)


def checks(result: object) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["status"], c["detail"]) for c in document(result)["checks"]}


def test_a_sound_ledger_reports_its_signing_key(filled: Path) -> None:
    """health-check names the signing key check and the public key it checked against, the
    one `audit pubkey` prints."""
    result = invoke(filled, "health-check", "--json")
    assert result.exit_code == 0
    status, detail = checks(result)["signing_key"]
    pubkey = invoke(filled, "audit", "pubkey", password=None).stdout.strip()
    assert status == "ok" and pubkey in detail


@pytest.mark.parametrize("deep", [False, True], ids=["plain", "deep"])
def test_health_check_names_a_signing_key_that_does_not_open(filled: Path, deep: bool) -> None:
    """A wrapped key of the right size that the master password does not open (damaged or
    replaced): the password check passes, the signing_key check fails, exit 1."""
    set_wrapped_key(filled, os.urandom(crypto.WRAPPED_SIGNING_KEY_BYTES))
    result = invoke(filled, "health-check", "--json", *(["--deep"] if deep else []))
    assert result.exit_code == 1 and document(result)["healthy"] is False
    found = checks(result)
    assert found["master_password"][0] == "ok"
    assert found["signing_key"] == ("fail", "the ledger's wrapped signing key (meta.signing_key) "
                                    "does not open with the master password: it was damaged or "
                                    "replaced")
    assert PASSWORD not in result.stdout + result.stderr


def test_another_keys_private_half_is_named_by_every_command_that_unlocks(
    filled: Path, tmp_path: Path
) -> None:
    """A wrapped key that opens but is not the private half of the recorded public key is
    refused by one rule: health-check, secrets get and verify-backup give the same words."""
    recorded = invoke(filled, "audit", "pubkey", password=None).stdout.strip()
    set_wrapped_key(filled, another_keys_private_half(filled))
    expected = ("the ledger's wrapped signing key (meta.signing_key) is not the private half of "
                f"the public key its events recorded ({recorded}): it was replaced")
    health = invoke(filled, "health-check", "--json", "--deep")
    assert health.exit_code == 1
    assert checks(health)["signing_key"] == ("fail", expected)
    get = invoke(filled, "secrets", "get", "db_password")
    assert get.exit_code == 1 and expected in error_line(get)
    assert VALUE not in get.stdout + get.stderr
    copy = tmp_path / "copy.db"
    copy_ledger(filled, copy)
    backup = invoke(filled, "verify-backup", str(copy))
    assert backup.exit_code == 1 and expected in error_line(backup)


def test_a_wrapped_key_that_opens_to_no_ed25519_key_is_one_line(filled: Path) -> None:
    """31 bytes wrapped under the real KEK open, but are no Ed25519 key: health-check names
    it (no traceback), and audit verify already tells by the size."""
    with open_recorder(filled) as recorder:
        meta = recorder.read_meta()
    set_wrapped_key(filled, crypto.wrap_signing_key(unlock_kek(meta, PASSWORD), os.urandom(31),
                                                    meta.ledger_id))
    health = invoke(filled, "health-check", "--json")
    assert health.exit_code == 1
    assert checks(health)["signing_key"] == ("fail", "the ledger's wrapped signing key "
                                             "(meta.signing_key) opens but holds no Ed25519 "
                                             "private key")
    assert invoke(filled, "audit", "verify", password=None).exit_code == 1


@pytest.mark.parametrize("size", [0, 5, crypto.WRAPPED_SIGNING_KEY_BYTES + 1])
def test_audit_verify_names_a_wrapped_key_that_cannot_be_one(filled: Path, size: int) -> None:
    """Without the password audit verify can tell a wrapped key of the wrong size: exit 1,
    named, blaming no seq. (One of the right size takes the password: health-check.)"""
    set_wrapped_key(filled, os.urandom(size))
    result = invoke(filled, "audit", "verify", "--json", password=None)
    assert result.exit_code == 1
    doc = document(result)
    assert doc["first_bad_seq"] is None
    assert doc["problems"] == [
        f"the ledger's wrapped signing key (meta.signing_key) is {size} bytes, not the "
        f"{crypto.WRAPPED_SIGNING_KEY_BYTES} of a wrapped Ed25519 key: it was damaged or replaced"]
