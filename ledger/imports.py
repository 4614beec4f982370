"""Imports: parse the files ``secrets import`` and ``import-seed`` read, and record them.

The parsers read untrusted input; their errors name the file, line or entry, never a
value, since a malformed line may hold a secret. The importers turn parsed entries into
events appended in one transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ledger import crypto
from ledger import events as ev
from ledger.domain import ACTIVE, DECRYPT_ONLY, validate_name, validate_value
from ledger.errors import ConcurrencyError, InvalidInputError
from ledger.migration import CONFLICT_RETRIES
from ledger.store import NewEvent

if TYPE_CHECKING:
    from ledger.service import Ledger

ImportFormat = Literal["json", "dotenv"]

_DOTENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(.*)$")
_DOUBLE_QUOTE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def read_text_untrusted(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")  # a BOM is not a name
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not valid UTF-8") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def detect_format(path: Path, text: str) -> ImportFormat:
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return "json"
    return "dotenv"


def parse_json_object_untrusted(path: Path, text: str) -> dict[str, object]:
    """A JSON object, or one clear error."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_names)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidInputError(f"{path} is nested too deeply to be an import file") from None
    except _DuplicateName as dup:
        raise InvalidInputError(f"{path}: the name {dup.name!r} appears more than once") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object of name -> value")
    return data


class _DuplicateName(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _no_duplicate_names(pairs: list[tuple[str, object]]) -> dict[str, object]:
    data: dict[str, object] = {}
    for name, value in pairs:
        if name in data:
            raise _DuplicateName(name)
        data[name] = value
    return data


def parse_values_untrusted(path: Path) -> tuple[ImportFormat, dict[str, str]]:
    """Read ``name -> plaintext`` from a JSON object or a ``.env`` file."""
    text = read_text_untrusted(path)
    fmt = detect_format(path, text)
    if fmt == "dotenv":
        return fmt, parse_dotenv_untrusted(path, text)
    data = parse_json_object_untrusted(path, text)
    bad = [name for name, value in data.items() if not isinstance(value, str)]
    if bad:
        raise InvalidInputError(f"{path}: the value of {bad[0]!r} is not a string")
    return fmt, {name: str(value) for name, value in data.items()}


def parse_dotenv_untrusted(path: Path, text: str) -> dict[str, str]:
    """``KEY=value`` lines; ``export``, comments, blank lines and quotes as shells allow."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if match is None:
            raise InvalidInputError(f"{path}: line {number} is not KEY=value")
        name, rest = match.groups()
        if name in values:
            raise InvalidInputError(f"{path}: line {number} sets {name} a second time")
        values[name] = _dotenv_value(rest, path, number)
    return values


def _dotenv_value(rest: str, path: Path, number: int) -> str:
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        end = _closing_quote(rest, quote)
        if end is None:
            raise InvalidInputError(f"{path}: line {number} has an unclosed quote")
        trailing = rest[end + 1 :].strip()
        if trailing and not trailing.startswith("#"):
            raise InvalidInputError(f"{path}: line {number} has text after the closing quote")
        body = rest[1:end]
        if quote == "'":
            return body
        return re.sub(r"\\(.)", lambda m: _DOUBLE_QUOTE_ESCAPES.get(m[1], "\\" + m[1]), body)
    return re.split(r"\s+#", rest, maxsplit=1)[0].strip()


def _closing_quote(rest: str, quote: str) -> int | None:
    i = 1
    while i < len(rest):
        if rest[i] == "\\" and quote == '"':
            i += 2
            continue
        if rest[i] == quote:
            return i
        i += 1
    return None


def parse_seed_untrusted(path: Path) -> dict[str, object]:
    """The guide's export: a JSON object ``name -> base64 ciphertext``.

    Non-string entries are passed on as they are, for the importer to report by name.
    """
    return parse_json_object_untrusted(path, read_text_untrusted(path))


# -- recording imports -----------------------------------------------------------------


@dataclass(slots=True)
class ImportEntryFailure:
    name: str
    reason: str


@dataclass(slots=True)
class ImportResult:
    imported: int = 0
    reencrypted: int = 0
    stored_as_is: int = 0
    created_versions: list[int] = field(default_factory=list)
    failures: list[ImportEntryFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def import_values(
    ledger: Ledger, values: Mapping[str, str], *, source: Literal["json", "dotenv"],
    overwrite: bool = False,
) -> ImportResult:
    """Encrypt and record many plaintext values in one transaction (all or nothing).

    A name that already holds a live secret is skipped (listed in ``skipped``) unless
    ``overwrite``: re-running an import never silently reverts a newer value.

    :raises InvalidInputError: a name or value is invalid (named); nothing was written.
    """
    checked = [(name, _checked_entry(name, value)) for name, value in values.items()]
    for _ in range(CONFLICT_RETRIES):
        keyring = ledger.keyring()
        version = keyring.require_current()
        key = ledger._keys.data_key(version)
        result = ImportResult()
        new = []
        for name, plaintext in checked:
            state = ledger.secret(name)
            if not state.deleted and not overwrite:
                result.skipped.append(name)
                continue
            token = crypto.encrypt_secret(key, version, name, plaintext)
            new.append(NewEvent(
                ev.secret_stream(name), state.revision + 1,
                ev.SecretImported(name=name, key_version=version, ciphertext=token,
                                  scheme=crypto.SCHEME_BOUND, source=source),
            ))
        try:
            ledger._append(new, expect={ev.KEYRING_STREAM: keyring.revision})
        except ConcurrencyError:
            continue
        result.imported = len(new)
        return result
    raise ConcurrencyError(["secrets being imported"])

def import_seed(
    ledger: Ledger, tokens: Mapping[str, object], password: str, *,
    salt_template: str = crypto.SEED_SALT_TEMPLATE, legacy_version: int = 1,
    overwrite: bool = False,
) -> ImportResult:
    """Import ciphertexts written by the guide's system under ``password``.

    A version this ledger lacks becomes a key version holding the guide's derived key,
    and its ciphertexts are kept as they are; where this ledger's version is another
    key, the value is re-encrypted under the current version. Unreadable entries are
    listed in the result with their reason; the others are imported. As with
    :func:`import_values`, existing secrets are skipped unless ``overwrite``.
    """
    if not 1 <= legacy_version <= crypto.MAX_VERSION:
        raise InvalidInputError("--legacy-version must be 1-255")
    if "{v}" not in salt_template:
        raise InvalidInputError("the salt template must contain {v}")
    seed_keys: dict[int, bytes] = {}

    def seed_key(version: int) -> bytes:
        if version not in seed_keys:
            seed_keys[version] = crypto.derive_seed_key(password, version, salt_template)
        return seed_keys[version]

    opened: list[tuple[str, crypto.SeedPlaintext]] = []
    result = ImportResult()
    for name, token in tokens.items():
        try:
            validate_name(name)
            if not isinstance(token, str):
                raise InvalidInputError("the ciphertext must be a string")
            sp = crypto.open_seed_ciphertext_untrusted(token, seed_key, legacy_version)
            validate_value(_utf8_untrusted(sp.plaintext))
            opened.append((name, sp))
        except (InvalidInputError, crypto.SeedDecodeError) as exc:
            result.failures.append(ImportEntryFailure(name, str(exc)))
    for _ in range(CONFLICT_RETRIES):
        try:
            _append_seed(ledger, opened, seed_key, result, overwrite)
            return result
        except ConcurrencyError:
            result.imported = result.reencrypted = result.stored_as_is = 0
            result.created_versions, result.skipped = [], []
    raise ConcurrencyError(["secrets being imported"])

def _append_seed(
    ledger: Ledger, opened: list[tuple[str, crypto.SeedPlaintext]],
    seed_key: Callable[[int], bytes], result: ImportResult, overwrite: bool,
) -> None:
    keyring = ledger.keyring()
    current = keyring.require_current()
    keyring_events: list[ev.DomainEvent] = []
    wrapped: dict[int, bytes] = {}
    secrets: list[NewEvent] = []
    for name, sp in opened:
        state = ledger.secret(name)
        if not state.deleted and not overwrite:
            result.skipped.append(name)
            continue
        version = sp.version
        fp = crypto.fingerprint(seed_key(version))
        if version not in keyring.versions and version not in wrapped:
            keyring_events.append(
                ev.KeyVersionCreated(version=version, fingerprint=fp, origin="seed-import")
            )
            wrapped[version] = ledger._keys.wrap(version, seed_key(version))
            result.created_versions.append(version)
        # Kept as is only under a key that is ours, the same, and still usable: never
        # under a retired or destroyed version, where the value would be lost.
        same_key = version in wrapped or (
            keyring.versions[version].fingerprint == fp
            and keyring.status(version) in (ACTIVE, DECRYPT_ONLY)
        )
        if same_key:
            event = ev.SecretImported(
                name=name, key_version=version, ciphertext=sp.frame.encode(),
                scheme=crypto.SCHEME_SEED, source="seed", seed_version=version,
                legacy=sp.legacy,
            )
            result.stored_as_is += 1
        else:
            token = crypto.encrypt_secret(
                ledger._keys.data_key(current), current, name, sp.plaintext
            )
            event = ev.SecretImported(
                name=name, key_version=current, ciphertext=token,
                scheme=crypto.SCHEME_BOUND, source="seed", seed_version=version,
                legacy=sp.legacy, reencrypted=True,
            )
            result.reencrypted += 1
        secrets.append(NewEvent(ev.secret_stream(name), state.revision + 1, event))
    new = [
        NewEvent(ev.KEYRING_STREAM, keyring.revision + i, e)
        for i, e in enumerate(keyring_events, 1)
    ]
    ledger._append(
        new + secrets, keys=wrapped or None,
        expect=None if new else {ev.KEYRING_STREAM: keyring.revision},
    )
    result.imported = len(secrets)
    if new:
        ledger._refresh_keyring()


def _checked_entry(name: str, value: str) -> bytes:
    """An import entry's value as bytes, or an error that names the entry (not the value)."""
    try:
        validate_name(name)
        return validate_value(value)
    except InvalidInputError as exc:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidInputError(f"entry {shown!r}: {exc}") from None


def _utf8_untrusted(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("the decrypted value is not UTF-8 text") from None
