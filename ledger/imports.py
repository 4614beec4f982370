"""Parsers for the files ``secrets import`` and ``import-seed`` read (untrusted input).

Errors name the file and line, never a value: a malformed line may hold a secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from ledger.errors import InvalidInputError

ImportFormat = Literal["json", "dotenv"]

_DOTENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(.*)$")
_DOUBLE_QUOTE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def read_text_untrusted(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
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
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object of name -> value")
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
