"""Storing, reading and deleting secrets through the library API."""

from __future__ import annotations

import base64

import pytest

from ledger import IntegrityError, InvalidInputError, Ledger, UnknownSecretError
from ledger.domain import MAX_VALUE_BYTES


def test_set_then_get_returns_the_value(ledger: Ledger) -> None:
    """A value written is the value read back, under the current key version."""
    ledger.set("db_password", "hunter2")
    secret = ledger.get("db_password")
    assert (secret.value, secret.version) == ("hunter2", 1)


def test_set_overwrites_and_bumps_revision(ledger: Ledger) -> None:
    """A second write replaces the value and moves the secret's stream revision on."""
    ledger.set("token", "one")
    state = ledger.set("token", "two")
    assert state.revision == 2
    assert ledger.get("token").value == "two"


def test_get_unknown_secret_raises(ledger: Ledger) -> None:
    """Reading a name that was never written is an UnknownSecretError."""
    with pytest.raises(UnknownSecretError):
        ledger.get("nope")


def test_delete_hides_secret_but_keeps_history(ledger: Ledger) -> None:
    """After delete the secret is gone from reads and lists; its events remain."""
    ledger.set("old", "v")
    ledger.delete("old")
    with pytest.raises(UnknownSecretError):
        ledger.get("old")
    assert [s.name for s in ledger.secrets()] == []
    assert [e.type for e in ledger.recorder.read_stream("secret:old")] == [
        "SecretWritten", "SecretDeleted",
    ]


def test_delete_unknown_secret_raises(ledger: Ledger) -> None:
    """Deleting what does not exist is an error, and appends nothing."""
    head = ledger.recorder.head()
    with pytest.raises(UnknownSecretError):
        ledger.delete("ghost")
    assert ledger.recorder.head() == head


@pytest.mark.parametrize("name", ["", " padded", "tab\there", "nul\x00", "x" * 257])
def test_invalid_names_are_refused(ledger: Ledger, name: str) -> None:
    """Names that are empty, padded, too long or hold control characters are refused."""
    with pytest.raises(InvalidInputError):
        ledger.set(name, "v")


def test_odd_but_valid_names_round_trip(ledger: Ledger) -> None:
    """Unicode, slashes, colons and quotes are fine in names."""
    names = ["app/db:primary", "clé-secrète", "emoji🔑", "quote'\"name", "a b"]
    for name in names:
        ledger.set(name, name[::-1])
    assert {n: ledger.get(n).value for n in names} == {n: n[::-1] for n in names}


def test_oversized_value_is_refused(ledger: Ledger) -> None:
    """A value above the documented limit is refused before anything is written."""
    head = ledger.recorder.head()
    with pytest.raises(InvalidInputError):
        ledger.set("big", "x" * (MAX_VALUE_BYTES + 1))
    assert ledger.recorder.head() == head


def _append_raw(ledger: Ledger, name: str, token: str) -> None:
    """Record a SecretWritten carrying ``token`` as is, bypassing encryption."""
    from ledger import events as ev
    from ledger.events import NewEvent

    revision = ledger.secret(name).revision
    ledger.session.append(
        [NewEvent(ev.secret_stream(name), revision + 1, ev.SecretWritten(
            name=name, key_version=1, ciphertext=token, scheme="bound-v1"))],
    )


def test_ciphertext_copied_to_another_name_does_not_decrypt(ledger: Ledger) -> None:
    """The name is bound as associated data: a ciphertext moved onto another name fails."""
    ledger.set("a", "secret-a")
    token = ledger.secret("a").ciphertext
    assert token is not None
    _append_raw(ledger, "b", token)
    with pytest.raises(IntegrityError):
        ledger.get("b")
    assert ledger.get("a").value == "secret-a"


def test_tampered_ciphertext_is_an_integrity_error(ledger: Ledger) -> None:
    """A stored ciphertext with one flipped bit surfaces as IntegrityError, never garbage."""
    ledger.set("a", "value")
    token = ledger.secret("a").ciphertext
    assert token is not None
    raw = bytearray(base64.b64decode(token))
    raw[-1] ^= 1
    _append_raw(ledger, "a", base64.b64encode(bytes(raw)).decode())
    with pytest.raises(IntegrityError):
        ledger.get("a")
