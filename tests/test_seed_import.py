"""Importing the old key-rotation system's ciphertexts through ``Ledger.import_seed``."""

from __future__ import annotations

import base64
import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import InvalidInputError, Ledger, UnknownSecretError, crypto
from ledger import events as ev
from ledger.domain import MAX_VALUE_BYTES
from ledger.testing import create_test_ledger, read_all, seed_encrypt
from projections import ReadModels, projector

SEED_PASSWORD = "the old system's master password"
CUSTOM_TEMPLATE = "acme-{v}-salt"


_real_derive_seed_key = crypto.derive_seed_key


@functools.cache
def _cached_seed_key(password: str, version: int, salt_template: str = crypto.SEED_SALT_TEMPLATE) -> bytes:
    return _real_derive_seed_key(password, version, salt_template)


@pytest.fixture
def fast_seed_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Memoise the guide's PBKDF2 (a pure function) so many imports stay fast."""
    monkeypatch.setattr(crypto, "derive_seed_key", _cached_seed_key)
    yield


def seed(version: int | None, plaintext: str, **kwargs: object) -> str:
    return seed_encrypt(SEED_PASSWORD, version, plaintext, **kwargs)  # type: ignore[arg-type]


def nonce_starting_with(first: int, filler: int = 0x5A) -> bytes:
    return bytes([first]) + bytes([filler]) * 11


def last_event(ledger: Ledger, name: str) -> ev.DomainEvent:
    return ledger.recorder.read_stream(ev.secret_stream(name))[-1].decode()


def keyring_events(ledger: Ledger) -> list[str]:
    return [e.type for e in ledger.recorder.read_stream(ev.KEYRING_STREAM)]


# -- (a) a version the ledger lacks ----------------------------------------------------------


def test_missing_version_becomes_a_seed_import_key_version(ledger: Ledger, views: ReadModels) -> None:
    """Seed versions the ledger lacks (3, 99) become key versions of origin seed-import; current stays."""
    result = ledger.import_seed({"a": seed(99, "alpha"), "b": seed(3, "beta")}, SEED_PASSWORD)
    assert sorted(result.created_versions) == [3, 99]
    keyring = ledger.keyring()
    assert keyring.current == 1
    for version in (3, 99):
        assert keyring.versions[version].origin == "seed-import"
        expected_fp = crypto.fingerprint(_real_derive_seed_key(SEED_PASSWORD, version))
        assert keyring.versions[version].fingerprint == expected_fp
    origins = {v.version: (v.origin, v.status) for v in views.keyring().versions}
    assert origins == {
        1: ("generated", "active"), 3: ("seed-import", "decrypt-only"), 99: ("seed-import", "decrypt-only"),
    }
    assert views.keyring().current_version == 1
    assert keyring_events(ledger).count("KeyRotated") == 1


def test_missing_version_ciphertexts_are_stored_as_is(ledger: Ledger) -> None:
    """A versioned ciphertext under a new version is stored byte for byte, scheme seed, not re-encrypted."""
    token = seed(99, "alpha")
    result = ledger.import_seed({"a": token}, SEED_PASSWORD)
    assert (result.imported, result.stored_as_is, result.reencrypted) == (1, 1, 0)
    state = ledger.secret("a")
    assert (state.key_version, state.scheme, state.ciphertext) == (99, crypto.SCHEME_SEED, token)
    event = last_event(ledger, "a")
    assert isinstance(event, ev.SecretImported)
    assert (event.reencrypted, event.source, event.seed_version, event.legacy) == (False, "seed", 99, False)
    assert event.ciphertext == token


def test_missing_version_keys_survive_reopening(ledger: Ledger, backend: Backend, password: str) -> None:
    """The imported key is wrapped into the ledger, so a fresh open reads the as-is ciphertext."""
    ledger.import_seed({"a": seed(42, "kept across opens")}, SEED_PASSWORD)
    with Ledger.open(backend.target, password) as reopened:
        assert reopened.get("a").value == "kept across opens"
        assert reopened.get("a").version == 42
        assert reopened.check_keys() == [1, 42]


# -- (b) a version the ledger holds with another key -----------------------------------------


def test_version_one_on_a_fresh_ledger_is_reencrypted(ledger: Ledger) -> None:
    """Seed v1 collides with the ledger's own random v1, so it is re-encrypted under the current key."""
    own_fp = ledger.keyring().versions[1].fingerprint
    token = seed(1, "from v1")
    result = ledger.import_seed({"a": token}, SEED_PASSWORD)
    assert (result.imported, result.reencrypted, result.stored_as_is, result.created_versions) == (
        1, 1, 0, [],
    )
    state = ledger.secret("a")
    assert (state.key_version, state.scheme) == (1, crypto.SCHEME_BOUND)
    assert state.ciphertext != token
    event = last_event(ledger, "a")
    assert isinstance(event, ev.SecretImported)
    assert (event.reencrypted, event.seed_version, event.legacy) == (True, 1, False)
    assert ledger.keyring().versions[1].fingerprint == own_fp
    assert ledger.keyring().versions[1].origin == "generated"


def test_colliding_version_is_reencrypted_under_the_current_version(ledger: Ledger) -> None:
    """After rotating to 2, seed v1 and v2 values land on version 2 (current), bound to their names."""
    ledger.rotate(2)
    result = ledger.import_seed({"one": seed(1, "x1"), "two": seed(2, "x2")}, SEED_PASSWORD)
    assert result.reencrypted == 2
    for name in ("one", "two"):
        state = ledger.secret(name)
        assert (state.key_version, state.scheme) == (2, crypto.SCHEME_BOUND)
    assert ledger.get("one").value == "x1"
    assert ledger.get("two").value == "x2"


def test_seed_emergency_version_collides_with_a_generated_99(ledger: Ledger) -> None:
    """If the ledger already generated its own v99, seed v99 data is re-encrypted, not trusted as-is."""
    ledger.rotate(99)
    ledger.rotate(3)
    result = ledger.import_seed({"e": seed(99, "emergency")}, SEED_PASSWORD)
    assert (result.reencrypted, result.created_versions) == (1, [])
    assert ledger.secret("e").key_version == 3
    assert ledger.get("e").value == "emergency"


def test_legacy_ciphertext_uses_the_version_one_key(ledger: Ledger) -> None:
    """A legacy (un-versioned) ciphertext is read with the v1 key and recorded as legacy."""
    result = ledger.import_seed({"old": seed(None, "legacy value")}, SEED_PASSWORD)
    assert result.reencrypted == 1
    event = last_event(ledger, "old")
    assert isinstance(event, ev.SecretImported)
    assert (event.legacy, event.seed_version, event.reencrypted) == (True, 1, True)
    assert ledger.get("old").value == "legacy value"


# -- (c) values read back --------------------------------------------------------------------


def _mixed_tokens() -> dict[str, tuple[str, str]]:
    """name -> (token, plaintext): versioned, legacy and the ambiguous legacy nonces."""
    cases: dict[str, tuple[int | None, str, bytes | None]] = {
        "v1": (1, "one", None),
        "v2": (2, "two ✓", None),
        "v20": (20, "twenty", None),
        "v21": (21, "twenty-one", None),
        "v99": (99, "ninety-nine", None),
        "v99-nonce-1": (99, "v99 whose nonce starts with 1", nonce_starting_with(1)),
        "empty": (3, "", None),
        "legacy": (None, "legacy", None),
        "legacy-nonce-1": (None, "looks like v1", nonce_starting_with(1)),
        "legacy-nonce-2": (None, "looks like v2", nonce_starting_with(2)),
        "legacy-nonce-20": (None, "looks like v20", nonce_starting_with(20)),
        "legacy-nonce-99": (None, "looks like v99", nonce_starting_with(99)),
        "legacy-nonce-0": (None, "starts with zero", nonce_starting_with(0)),
        "unicode": (99, "東京 🔑 ünï\nline two", None),
    }
    return {
        name: (seed(version, text, nonce=nonce), text) for name, (version, text, nonce) in cases.items()
    }


def test_every_imported_value_reads_back_exactly(ledger: Ledger) -> None:
    """Every versioned and legacy value, including legacy nonces that look like versions, reads back."""
    tokens = _mixed_tokens()
    result = ledger.import_seed({n: t for n, (t, _) in tokens.items()}, SEED_PASSWORD)
    assert result.failures == []
    assert result.imported == len(tokens)
    assert read_all(ledger) == {n: text for n, (_, text) in tokens.items()}


def test_ambiguous_legacy_nonces_are_recorded_as_legacy(ledger: Ledger) -> None:
    """A legacy ciphertext whose nonce starts with 1, 2, 20 or 99 is not mistaken for that version."""
    tokens = _mixed_tokens()
    ledger.import_seed({n: t for n, (t, _) in tokens.items()}, SEED_PASSWORD)
    for name in ("legacy-nonce-1", "legacy-nonce-2", "legacy-nonce-20", "legacy-nonce-99"):
        event = last_event(ledger, name)
        assert isinstance(event, ev.SecretImported)
        assert (event.legacy, event.seed_version) == (True, 1), name
    assert 20 in ledger.keyring().versions  # created by the real v20 entry, not the lookalike
    assert 2 in ledger.keyring().versions


# -- (d) the report --------------------------------------------------------------------------


def test_report_counts_each_secret_under_its_stored_version(ledger: Ledger, views: ReadModels) -> None:
    """The distribution counts as-is secrets under their seed version and re-encrypted ones under current."""
    ledger.set("native", "mine")
    ledger.import_seed(
        {"a": seed(99, "a"), "b": seed(99, "b"), "c": seed(3, "c"), "d": seed(1, "d"), "e": seed(None, "e")},
        SEED_PASSWORD,
    )
    report = views.report()
    assert report.distribution == {1: 3, 3: 1, 99: 2}
    assert (report.total_secrets, report.current_version, report.needing_migration) == (6, 1, 3)
    per_version = {v.version: v.secrets for v in views.keyring().versions}
    assert per_version == {1: 3, 3: 1, 99: 2}
    assert views.problems() == []


def test_report_after_rebuild_matches(ledger: Ledger, views: ReadModels) -> None:
    """Rebuilding the read models from events alone gives the same distribution after an import."""
    ledger.import_seed({"a": seed(99, "a"), "d": seed(1, "d")}, SEED_PASSWORD)
    before = views.report()
    views.rebuild()
    assert views.report() == before
    assert before.distribution == {1: 1, 99: 1}


# -- (e) migrate -----------------------------------------------------------------------------


def test_migrate_moves_seed_scheme_secrets_to_bound_on_current(ledger: Ledger, views: ReadModels) -> None:
    """A later migrate rewrites every seed-scheme secret as bound-v1 on the current version, values intact."""
    tokens = _mixed_tokens()
    ledger.import_seed({n: t for n, (t, _) in tokens.items()}, SEED_PASSWORD)
    as_is = [i.name for i in ledger.secrets() if i.scheme == crypto.SCHEME_SEED]
    assert as_is
    result = ledger.migrate()
    assert result.failures == []
    assert result.migrated == len(as_is)
    assert result.already_current == len(tokens) - len(as_is)
    for info in ledger.secrets():
        assert (info.key_version, info.scheme) == (1, crypto.SCHEME_BOUND)
    assert read_all(ledger) == {n: text for n, (_, text) in tokens.items()}
    report = views.report()
    assert (report.needing_migration, report.distribution) == (0, {1: len(tokens)})


def test_migrate_after_rotation_moves_everything(ledger: Ledger) -> None:
    """After a rotation every imported secret, as-is or re-encrypted, migrates to the new version."""
    ledger.import_seed({"a": seed(99, "a"), "d": seed(1, "d"), "l": seed(None, "l")}, SEED_PASSWORD)
    ledger.rotate(2)
    result = ledger.migrate()
    assert (result.migrated, result.failed) == (3, 0)
    assert {(i.key_version, i.scheme) for i in ledger.secrets()} == {(2, crypto.SCHEME_BOUND)}
    assert read_all(ledger) == {"a": "a", "d": "d", "l": "l"}


def test_migration_of_a_seed_secret_is_recorded(ledger: Ledger) -> None:
    """Migrating an as-is seed secret appends SecretMigrated from its seed version to bound-v1 on current."""
    ledger.import_seed({"a": seed(99, "value")}, SEED_PASSWORD)
    ledger.migrate()
    event = last_event(ledger, "a")
    assert isinstance(event, ev.SecretMigrated)
    assert (event.from_version, event.to_version, event.scheme) == (99, 1, crypto.SCHEME_BOUND)
    assert crypto.parse_frame_untrusted(event.ciphertext).version == 1
    assert ledger.get("a").value == "value"


# -- (f) failures ----------------------------------------------------------------------------


def test_bad_entries_are_listed_and_the_rest_imported(ledger: Ledger) -> None:
    """Bad base64, flipped tag, wrong password, short or non-string entries fail by name; others import."""
    good = seed(99, "good")
    raw = bytearray(base64.b64decode(seed(99, "tampered")))
    raw[-1] ^= 0x01
    entries: dict[str, object] = {
        "good": good,
        "legacy-good": seed(None, "also good"),
        "bad-base64": "this is %% not base64",
        "wrong-tag": base64.b64encode(bytes(raw)).decode(),
        "wrong-password": seed_encrypt("another password", 50, "x"),
        "too-short": base64.b64encode(b"\x05" + bytes(12)).decode(),
        "not-a-string": 12345,
    }
    result = ledger.import_seed(entries, SEED_PASSWORD)
    reasons = {f.name: f.reason for f in result.failures}
    assert set(reasons) == {"bad-base64", "wrong-tag", "wrong-password", "too-short", "not-a-string"}
    assert "base64" in reasons["bad-base64"]
    assert "authentication failed" in reasons["wrong-tag"]
    assert "authentication failed" in reasons["wrong-password"]
    assert "too short" in reasons["too-short"]
    assert "string" in reasons["not-a-string"]
    assert result.imported == 2
    assert read_all(ledger) == {"good": "good", "legacy-good": "also good"}
    for name in reasons:
        with pytest.raises(UnknownSecretError):
            ledger.get(name)


def test_failed_entries_create_no_key_version(ledger: Ledger) -> None:
    """A ciphertext that does not open under the seed password adds no key version for its version byte."""
    result = ledger.import_seed({"x": seed_encrypt("another password", 50, "x")}, SEED_PASSWORD)
    assert len(result.failures) == 1
    assert 50 not in ledger.keyring().versions
    assert result.created_versions == []


def test_all_entries_failing_appends_nothing(ledger: Ledger) -> None:
    """An import where every entry fails leaves the ledger's event log untouched."""
    head = ledger.recorder.head()
    result = ledger.import_seed({"a": "###", "b": seed_encrypt("wrong", 1, "v")}, SEED_PASSWORD)
    assert [f.name for f in result.failures] == ["a", "b"]
    assert result.imported == 0
    assert ledger.recorder.head() == head


def test_invalid_secret_name_is_a_listed_failure(ledger: Ledger) -> None:
    """An entry whose name keyledger refuses is reported with the reason, and the rest import."""
    result = ledger.import_seed({" padded": seed(99, "x"), "ok": seed(99, "y")}, SEED_PASSWORD)
    assert [f.name for f in result.failures] == [" padded"]
    assert "whitespace" in result.failures[0].reason
    assert read_all(ledger) == {"ok": "y"}


def test_failure_reasons_never_contain_the_value_or_password(ledger: Ledger) -> None:
    """Reasons are safe to print: no ciphertext, no password."""
    token = seed_encrypt("another password", 7, "do-not-print")
    result = ledger.import_seed({"x": token}, SEED_PASSWORD)
    reason = result.failures[0].reason
    assert SEED_PASSWORD not in reason and token not in reason and "do-not-print" not in reason


# -- (g) options -----------------------------------------------------------------------------


def test_salt_template_option_reads_another_deployments_data(ledger: Ledger) -> None:
    """With the matching salt template the data imports; with the default one it fails to authenticate."""
    tokens = {
        "a": seed(4, "custom v4", salt_template=CUSTOM_TEMPLATE),
        "b": seed(None, "custom legacy", salt_template=CUSTOM_TEMPLATE),
    }
    wrong = ledger.import_seed(tokens, SEED_PASSWORD)
    assert wrong.imported == 0
    assert all("authentication failed" in f.reason for f in wrong.failures)
    right = ledger.import_seed(tokens, SEED_PASSWORD, salt_template=CUSTOM_TEMPLATE)
    assert (right.imported, right.failures) == (2, [])
    assert read_all(ledger) == {"a": "custom v4", "b": "custom legacy"}
    expected_fp = crypto.fingerprint(_real_derive_seed_key(SEED_PASSWORD, 4, CUSTOM_TEMPLATE))
    assert ledger.keyring().versions[4].fingerprint == expected_fp


def test_salt_template_without_placeholder_is_refused(ledger: Ledger) -> None:
    """A salt template lacking ``{v}`` is refused before anything is read or written."""
    head = ledger.recorder.head()
    with pytest.raises(InvalidInputError):
        ledger.import_seed({"a": seed(99, "x")}, SEED_PASSWORD, salt_template="fixed-salt")
    assert ledger.recorder.head() == head


def test_legacy_version_option_chooses_the_legacy_key(ledger: Ledger) -> None:
    """With legacy_version=3, legacy data is read with the v3 key and kept as-is under a new version 3."""
    token = seed(None, "legacy under v3", legacy_key_version=3, nonce=nonce_starting_with(1))
    failed = ledger.import_seed({"l": token}, SEED_PASSWORD)
    assert [f.name for f in failed.failures] == ["l"]
    result = ledger.import_seed({"l": token}, SEED_PASSWORD, legacy_version=3)
    assert (result.imported, result.stored_as_is, result.created_versions) == (1, 1, [3])
    state = ledger.secret("l")
    assert (state.key_version, state.scheme) == (3, crypto.SCHEME_SEED)
    assert state.ciphertext == base64.b64encode(b"\x03" + base64.b64decode(token)).decode()
    event = last_event(ledger, "l")
    assert isinstance(event, ev.SecretImported)
    assert (event.legacy, event.seed_version, event.reencrypted) == (True, 3, False)
    assert ledger.get("l").value == "legacy under v3"


@pytest.mark.parametrize("legacy_version", [0, -1, 256])
def test_out_of_range_legacy_version_is_refused(ledger: Ledger, legacy_version: int) -> None:
    """A legacy version outside 1-255 is an input error."""
    with pytest.raises(InvalidInputError):
        ledger.import_seed({"a": seed(None, "x")}, SEED_PASSWORD, legacy_version=legacy_version)


# -- (h) any nonce, any text -----------------------------------------------------------------

_IN_USE = [1, 2, 20, 99]
_nonces = st.one_of(
    st.binary(min_size=12, max_size=12),
    st.tuples(st.sampled_from(_IN_USE), st.binary(min_size=11, max_size=11)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
)


@settings(max_examples=60)
@given(
    legacy_nonce=_nonces,
    versioned_nonce=_nonces,
    version=st.sampled_from([1, 2, 3, 20, 99, 255]),
    legacy_text=st.text(max_size=40),
    versioned_text=st.text(max_size=40),
)
def test_any_nonce_and_text_imports_and_reads_back_property(
    fast_seed_keys: None, legacy_nonce: bytes, versioned_nonce: bytes, version: int,
    legacy_text: str, versioned_text: str,
) -> None:
    """For any nonce (first byte a version in use or not) and any text, both layouts import and read back."""
    tokens = {
        "legacy": seed(None, legacy_text, nonce=legacy_nonce),
        "versioned": seed(version, versioned_text, nonce=versioned_nonce),
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        create_test_ledger(Path(tmp) / "p.db", "pw", projector=projector()) as ledger,
    ):
        ledger.rotate(2)  # the ledger's own v1 and v2 differ from the seed's
        result = ledger.import_seed(tokens, SEED_PASSWORD)
        assert result.failures == []
        assert read_all(ledger) == {"legacy": legacy_text, "versioned": versioned_text}
        legacy_event = last_event(ledger, "legacy")
        assert isinstance(legacy_event, ev.SecretImported)
        assert (legacy_event.legacy, legacy_event.seed_version) == (True, 1)
        versioned_event = last_event(ledger, "versioned")
        assert isinstance(versioned_event, ev.SecretImported)
        assert (versioned_event.legacy, versioned_event.seed_version) == (False, version)


# -- (i) importing twice ---------------------------------------------------------------------


def test_importing_the_same_file_twice_skips_existing_secrets(ledger: Ledger) -> None:
    """Without --overwrite a second import skips every name that already holds a secret."""
    tokens = {"a": seed(99, "alpha"), "b": seed(3, "beta")}
    ledger.import_seed(tokens, SEED_PASSWORD)
    ledger.rotate()
    ledger.migrate()
    head = ledger.recorder.head()
    again = ledger.import_seed(tokens, SEED_PASSWORD)
    assert (again.imported, sorted(again.skipped)) == (0, ["a", "b"])
    assert ledger.recorder.head() == head  # nothing re-imported, no migration undone
    assert {ledger.get(n).version for n in tokens} == {4}


def test_importing_the_same_file_twice_stores_as_is_again(ledger: Ledger) -> None:
    """With overwrite, a second import finds the seed key already there and stores as-is again."""
    tokens = {"a": seed(99, "alpha"), "b": seed(3, "beta"), "c": seed(1, "gamma")}
    first = ledger.import_seed(tokens, SEED_PASSWORD)
    assert sorted(first.created_versions) == [3, 99]
    keyring_before = keyring_events(ledger)
    second = ledger.import_seed(tokens, SEED_PASSWORD, overwrite=True)
    assert second.created_versions == []
    assert (second.imported, second.stored_as_is, second.reencrypted) == (3, 2, 1)
    assert keyring_events(ledger) == keyring_before
    for name, version in (("a", 99), ("b", 3)):
        state = ledger.secret(name)
        assert (state.revision, state.key_version, state.scheme) == (2, version, crypto.SCHEME_SEED)
        assert state.ciphertext == tokens[name]
        event = last_event(ledger, name)
        assert isinstance(event, ev.SecretImported) and not event.reencrypted
    assert read_all(ledger) == {"a": "alpha", "b": "beta", "c": "gamma"}


def test_import_replaces_an_existing_secret_value(ledger: Ledger) -> None:
    """With overwrite, importing an existing name records a new revision holding the imported value."""
    ledger.set("a", "old")
    ledger.import_seed({"a": seed(99, "new")}, SEED_PASSWORD, overwrite=True)
    assert ledger.secret("a").revision == 2
    assert ledger.get("a").value == "new"


# -- values the ledger could not hand back ---------------------------------------------------


def _seed_bytes(version: int, plaintext: bytes) -> str:
    nonce = nonce_starting_with(version, 0x11)
    key = _real_derive_seed_key(SEED_PASSWORD, version)
    return base64.b64encode(bytes([version]) + nonce + AESGCM(key).encrypt(nonce, plaintext, None)).decode()


def test_non_utf8_plaintext_is_a_listed_failure_not_an_unreadable_secret(ledger: Ledger) -> None:
    """A seed value that is not UTF-8 text is reported as a failure instead of imported and unreadable."""
    result = ledger.import_seed(
        {"binary": _seed_bytes(99, b"\xff\xfe not text"), "text": seed(99, "fine")}, SEED_PASSWORD
    )
    assert [f.name for f in result.failures] == ["binary"]
    assert read_all(ledger) == {"text": "fine"}


def test_oversized_plaintext_is_a_listed_failure(ledger: Ledger) -> None:
    """A seed value over the ledger's value limit is refused as ``set`` and ``import_values`` refuse it."""
    big = "x" * (MAX_VALUE_BYTES + 1)
    with pytest.raises(InvalidInputError):
        ledger.set("big", big)
    result = ledger.import_seed({"big": seed(99, big), "small": seed(99, "ok")}, SEED_PASSWORD)
    assert [f.name for f in result.failures] == ["big"]
    assert read_all(ledger) == {"small": "ok"}
