"""Import formats: the untrusted ``.env`` and JSON files ``secrets import`` reads.

A file of any size is read in two passes, neither holding more than a buffer of it.
:func:`check_import_file_untrusted` reads it whole and refuses it at the first fault,
before a password is asked or anything written; :meth:`ImportFile.entries` reads it
again, entry by entry, while the entries are recorded. The second pass trusts the first
only for the same bytes: it compares their digest at the end (inside the transaction, so
a file changed in between writes nothing).

Neither pass holds more than a buffer and one entry, whatever the file holds: a line (of a
``.env`` file) or a token (of a JSON one) longer than :data:`MAX_ENTRY_CHARS`, more than
any valid entry takes, is refused where it starts, the rest of the file unread (whatever
other fault it may hold). A pipe, which can be read only once, is kept in memory, so it
is read only up to :data:`MAX_PIPED_BYTES`.

Errors name the file, line or entry, never a value: a malformed line may hold a secret.
Which fault is reported, and where, is what reading the whole file at once reports
(decoding it, ``json.loads`` or the ``.env`` lines, then the entries in order), however
the file falls into pieces; the tests hold the two readings side by side.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Literal, NoReturn

from ledger.domain import validate_name, validate_value
from ledger.errors import InvalidInputError

ImportFormat = Literal["json", "dotenv"]

READ_BYTES = 1 << 20
#: The longest line or JSON token read: a 64 KiB value written as JSON \u escapes (six
#: characters a byte) with its name still fits, with room to spare.
MAX_ENTRY_CHARS = 1 << 20
#: The most read from a pipe (``/dev/stdin``, ``<(...)``), whose content is kept in memory.
MAX_PIPED_BYTES = 64 << 20
# A JSON token cut by the end of the buffer fails, or ends, within this many characters
# of it ("-Infinity" is the longest literal; a cut \uXXXX escape is reported a few back;
# "1.5e" of "1.5e3" scans as 1.5).
_CUT_MARGIN = 16
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
# "name": "value", its delimiter and any white space after it; neither string holding an
# escape or a control character (which json refuses in a string).
_SIMPLE_MEMBER = re.compile(
    r'"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*([,}])[ \t\n\r]*'
)
_DOTENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=(.*)$", re.DOTALL)
# The escapes python-dotenv decodes in each kind of quote; any other backslash is kept.
_SINGLE_QUOTE_ESCAPES = {"'": "'", "\\": "\\"}
_DOUBLE_QUOTE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "'": "'", "\\": "\\",
                         "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
# Where a line of a .env file ends (as python-dotenv reads it).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


# -- whole files (small ones, and the old system's export) ------------------------------------


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
        raise _not_json(path, exc.lineno, exc.colno) from None
    except RecursionError:
        raise _too_deep(path) from None
    except _DuplicateName as dup:
        raise _duplicate(path, dup.name) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object of name -> value")
    return data


def parse_dotenv_untrusted(path: Path, text: str) -> dict[str, str]:
    """``KEY=value`` lines; ``export``, comments, blank lines and quotes as shells allow."""
    return dict(_dotenv_entries(path, _lines(path, [text]), seen=set()))


def parse_seed_untrusted(path: Path) -> dict[str, object]:
    """The old system's export: a JSON object ``name -> base64 ciphertext``.

    Non-string entries are passed on as they are, for the importer to report by name.
    """
    return parse_json_object_untrusted(path, read_text_untrusted(path))


def checked_entry(name: str, value: str) -> bytes:
    """An import entry's value as bytes, or an error that names the entry (not the value)."""
    try:
        validate_name(name)
        return validate_value(value)
    except InvalidInputError as exc:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidInputError(f"entry {shown!r}: {exc}") from None


# -- streamed files -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportFile:
    """An import file that :func:`check_import_file_untrusted` found valid: its format,
    its number of entries, and what it takes to read the same entries again."""

    path: Path
    format: ImportFormat
    count: int
    digest: bytes = field(repr=False)
    identity: tuple[int, int, int] | None = field(repr=False)  # a regular file's inode, size, mtime
    content: bytes | None = field(repr=False)  # a pipe's bytes (plaintext!), read only once

    def entries(self) -> Iterator[tuple[str, bytes]]:
        """Every ``(name, plaintext)`` in file order, read from the file again.

        :raises InvalidInputError: the file is no longer the one checked; when it was
            changed in place, that may only be found after its last entry.
        """
        try:
            for name, value in self.values():
                yield name, validate_value(value)
        except InvalidInputError:
            raise self._changed() from None

    def values(self) -> Iterator[tuple[str, str]]:
        """Every ``(name, value)`` as text; see :meth:`entries`."""
        if self.identity is not None and _identity(self.path) != self.identity:
            raise self._changed()
        digest = _new_digest()
        chunks = _text_chunks(self.path, self.content, digest)
        try:
            if self.format == "json":
                for name, value in _JsonObjectReader(self.path, chunks).pairs():
                    if not isinstance(value, str):
                        raise self._changed()
                    yield name, value
            else:
                yield from _dotenv_entries(self.path, _lines(self.path, chunks), seen=None)
            for _ in chunks:  # the digest covers every byte
                pass
        except InvalidInputError:
            raise self._changed() from None
        if digest.digest() != self.digest:
            raise self._changed()

    def _changed(self) -> InvalidInputError:
        return InvalidInputError(
            f"{self.path} changed while it was being imported; nothing was imported"
        )


def check_import_file_untrusted(path: Path) -> ImportFile:
    """Read a whole import file once, keeping none of its values, and refuse it at the
    first fault (see the module's docstring for which fault wins).

    Holds the set of names seen, to refuse a name given twice; nothing else grows with
    the file.

    :raises InvalidInputError: the file cannot be read or is not a valid import file.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    content = None
    if not stat.S_ISREG(info.st_mode):  # a pipe (`<(...)`, /dev/stdin): keep its bytes
        content = _read_piped(path)
    identity = _identity(path) if content is None else None
    digest = _new_digest()
    chunks = _text_chunks(path, content, digest)
    fmt, chunks = _detect_format_streamed(path, chunks)
    check = _check_json if fmt == "json" else _check_dotenv
    try:
        count = check(path, chunks)
    except _TooLong:
        raise
    except InvalidInputError:
        for _ in chunks:  # text that is not UTF-8, anywhere, outranks the fault found
            pass
        raise
    return ImportFile(path, fmt, count, digest.digest(), identity, content)


def _check_json(path: Path, chunks: Iterator[str]) -> int:
    seen: set[str] = set()
    duplicate = not_string = None
    invalid: str | None = None
    count = 0

    def closed() -> None:
        if duplicate is not None:
            raise duplicate

    for name, value in _JsonObjectReader(path, chunks).pairs(closed):
        count += 1
        if duplicate is None:
            if name in seen:
                duplicate = _duplicate(path, name)
                seen.clear()  # one duplicate is all that is reported
            else:
                seen.add(name)
        if not isinstance(value, str):
            not_string = not_string or InvalidInputError(
                f"{path}: the value of {name!r} is not a string"
            )
        elif invalid is None:
            try:
                checked_entry(name, value)
            except InvalidInputError as exc:
                invalid = str(exc)  # not the exception: its traceback would keep `seen` alive
    if not_string is not None:
        raise not_string
    if invalid is not None:
        raise InvalidInputError(invalid)
    return count


def _check_dotenv(path: Path, chunks: Iterator[str]) -> int:
    invalid: str | None = None
    count = 0
    for name, value in _dotenv_entries(path, _lines(path, chunks), seen=set()):
        count += 1
        if invalid is None:
            try:
                checked_entry(name, value)
            except InvalidInputError as exc:
                invalid = str(exc)
    if invalid is not None:
        raise InvalidInputError(invalid)
    return count


def _detect_format_streamed(
    path: Path, chunks: Iterator[str]
) -> tuple[ImportFormat, Iterator[str]]:
    """:func:`detect_format` from the first characters that are not white space."""
    head: list[str] = []
    for text in chunks:
        head.append(text)
        if text.strip():
            break
    starts = next((t.lstrip()[:1] for t in head if t.strip()), "")
    fmt: ImportFormat = "json" if path.suffix.lower() == ".json" or starts == "{" else "dotenv"
    return fmt, chain(head, chunks)


# -- reading: bytes, text, lines --------------------------------------------------------


def _new_digest() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=32)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _read_piped(path: Path) -> bytes:
    """A pipe's bytes, read one byte past :data:`MAX_PIPED_BYTES` at most."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PIPED_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PIPED_BYTES:
        raise InvalidInputError(
            f"{path} is a pipe holding more than {MAX_PIPED_BYTES >> 20} MiB, the most keyledger "
            "keeps in memory; import a larger file from a regular file"
        )
    return data


def _raw_chunks(path: Path, content: bytes | None) -> Iterator[bytes]:
    if content is not None:
        view = memoryview(content)
        for start in range(0, len(view), READ_BYTES):
            yield bytes(view[start:start + READ_BYTES])
        return
    try:
        with path.open("rb") as file:
            while raw := file.read(READ_BYTES):
                yield raw
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _text_chunks(path: Path, content: bytes | None, digest: hashlib.blake2b) -> Iterator[str]:
    """The file's text piece by piece, strictly UTF-8, without a leading BOM (a BOM is
    not a name); every byte read also goes into ``digest``."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    started = False
    try:
        for raw in _raw_chunks(path, content):
            digest.update(raw)
            text = decoder.decode(raw)
            if text and not started:
                text, started = text.removeprefix("\ufeff"), True
            if text:
                yield text
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not valid UTF-8") from None


def _lines(path: Path, chunks: Iterable[str]) -> Iterator[str]:
    r"""The lines of the text, each with its line break: ``\n``, ``\r\n`` or ``\r``, the
    only breaks python-dotenv knows (a form feed or U+2028 is part of a line, not the end).

    :raises InvalidInputError: a line is longer than :data:`MAX_ENTRY_CHARS`.
    """
    pending = ""
    number = 0  # lines yielded
    for text in chunks:
        buffer, start = pending + text, 0
        for found in _LINE_BREAK.finditer(buffer):
            if found.group() == "\r" and found.end() == len(buffer):
                break  # a "\r" whose "\n" may come with the next chunk
            number += 1
            if found.start() - start > MAX_ENTRY_CHARS:
                raise _too_long(path, number)
            yield buffer[start:found.end()]
            start = found.end()
        pending = buffer[start:]
        if len(pending) > MAX_ENTRY_CHARS + 1:
            raise _too_long(path, number + 1)
    if pending:
        yield pending


class _TooLong(InvalidInputError):
    """A line or token past :data:`MAX_ENTRY_CHARS`: reading stops there, the rest of the
    file unread (it may be endless)."""


def _too_long(path: Path, line: int, column: int | None = None) -> InvalidInputError:
    where = f"line {line}" if column is None else f"the token at line {line}, column {column}"
    return _TooLong(f"{path}: {where} is longer than {MAX_ENTRY_CHARS:,} characters, more "
                    "than any entry takes")


# -- .env -----------------------------------------------------------------------------


def _dotenv_entries(
    path: Path, lines: Iterable[str], *, seen: set[str] | None
) -> Iterator[tuple[str, str]]:
    """``(name, value)`` per ``KEY=value`` entry, read as python-dotenv reads them (without
    its ``${VAR}`` expansion): a quoted value may run over several lines, up to its closing
    quote. With ``seen``, a name set twice is refused.

    ``lines`` are the file's lines with their line breaks (:func:`_lines`)."""
    numbered = enumerate(lines, 1)
    for number, raw in numbered:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if match is None:
            raise InvalidInputError(f"{path}: line {number} is not KEY=value")
        name, after = match.groups()
        rest = after.lstrip()
        if seen is not None:
            if name in seen:
                raise InvalidInputError(f"{path}: line {number} sets {name} a second time")
            seen.add(name)
        if rest[:1] in ("'", '"') and _closing_quote(rest, rest[0]) is None:
            # The value goes on past this line: from its quote, as written (the line
            # break and every character up to the closing quote are the value's).
            start = raw.index(line) + len(line) - len(rest)
            rest = _quoted_over_lines(raw[start:], numbered, path, number)
        if rest[:1] not in ("'", '"'):
            # Bare: up to a "#" after white space, that before the value included
            # (`KEY= # note` is empty, `KEY=#x` is "#x"), as python-dotenv reads it.
            yield name, re.sub(r"\s+#.*", "", after, flags=re.DOTALL).strip()
            continue
        yield name, _quoted_value(rest, path, number)


def _quoted_over_lines(first: str, numbered: Iterator[tuple[int, str]], path: Path,
                       number: int) -> str:
    """A quoted value that runs over several lines, joined as written up to the end of the
    line that closes it (kept to :data:`MAX_ENTRY_CHARS` in all). Each line is scanned
    once, so a value over many lines costs time in proportion to its length.

    :raises InvalidInputError: the file ends before the quote closes, or the entry is too
        long."""
    quote = first[0]
    parts, size = [_newline_as_read(first)], len(first)
    escaped = _ends_escaping(first[1:])
    for _, raw in numbered:
        part = _newline_as_read(raw)
        parts.append(part)
        size += len(raw)
        if size > MAX_ENTRY_CHARS + 2:
            raise _too_long(path, number)
        if _closing_in(part, quote, escaped) is not None:
            return "".join(parts).rstrip("\r\n")
        escaped = _ends_escaping(part, escaped)
    raise InvalidInputError(f"{path}: line {number} has an unclosed quote")


def _ends_escaping(text: str, escaped: bool = False) -> bool:
    """Whether a backslash at the end of ``text`` (scanned from a state where the previous
    character ``escaped`` or not) escapes the first character of what follows."""
    for char in text:
        escaped = not escaped if char == "\\" else False
    return escaped


def _newline_as_read(line: str) -> str:
    r"""A line's break as a text-mode read gives it (``\r\n`` and ``\r`` become ``\n``),
    as python-dotenv sees a value's line breaks."""
    if line.endswith("\r\n"):
        return line[:-2] + "\n"
    return line[:-1] + "\n" if line.endswith("\r") else line


def _quoted_value(rest: str, path: Path, number: int) -> str:
    r"""The value of an entry whose text after the ``=`` opens with a quote, python-dotenv's
    escapes decoded: ``\\`` and ``\'`` in single quotes; those, ``\"`` and ``\a \b \f \n
    \r \t \v`` in double quotes; any other backslash kept."""
    quote = rest[0]
    end = _closing_quote(rest, quote)
    if end is None:
        raise InvalidInputError(f"{path}: line {number} has an unclosed quote")
    trailing = rest[end + 1 :].strip()
    if trailing and not trailing.startswith("#"):
        raise InvalidInputError(f"{path}: line {number} has text after the closing quote")
    escapes = _SINGLE_QUOTE_ESCAPES if quote == "'" else _DOUBLE_QUOTE_ESCAPES
    return re.sub(r"\\(.)", lambda m: escapes.get(m[1], m[0]), rest[1:end], flags=re.DOTALL)


def _closing_quote(rest: str, quote: str) -> int | None:
    """Where the quote that opens ``rest`` closes (a backslash escapes the character after
    it, in either kind of quote); None if it does not."""
    found = _closing_in(rest[1:], quote)
    return None if found is None else found + 1


def _closing_in(text: str, quote: str, escaped: bool = False) -> int | None:
    """The index of the first unescaped ``quote`` in ``text``, the first character escaped
    if ``escaped``; None if there is none."""
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == quote:
            return i
    return None


# -- JSON -----------------------------------------------------------------------------


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


def _not_json(path: Path, line: int, column: int) -> InvalidInputError:
    return InvalidInputError(f"{path} is not valid JSON (line {line}, column {column})")


def _too_deep(path: Path) -> InvalidInputError:
    return InvalidInputError(f"{path} is nested too deeply to be an import file")


def _duplicate(path: Path, name: str) -> InvalidInputError:
    return InvalidInputError(f"{path}: the name {name!r} appears more than once")


Scan = Callable[[str, int], tuple[object, int]]


class _JsonObjectReader:
    """The members of a top-level JSON object, one at a time, from pieces of its text.

    Each member is parsed by the standard library's own scanner over a buffer that is
    refilled when a token reaches its end, so faults are those, and at the line and
    column, that ``json.loads`` reports for the whole text.
    """

    def __init__(self, path: Path, chunks: Iterator[str]) -> None:
        self.path = path
        self.chunks = chunks
        self.buf = ""
        self.eof = False
        self.lines = 0  # line breaks in the text already dropped from the buffer
        self.column = 0  # characters after the last of them
        # json's own scanners (undocumented, so untyped): the C ones where CPython has them
        decoder = json.JSONDecoder(object_pairs_hook=_no_duplicate_names)
        self._scan_value: Scan = decoder.scan_once  # type: ignore[attr-defined]
        scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
        self._scan_name: Scan = lambda text, quote: scanstring(text, quote + 1)

    def pairs(self, closed: Callable[[], None] = lambda: None) -> Iterator[tuple[str, object]]:
        """``(name, value)`` per member, in file order; the value as ``json`` decodes it.
        ``closed`` is called at the object's closing brace, before any text after it is
        looked at (where ``json.loads`` checks the names of a whole object).

        :raises InvalidInputError: the text is not one JSON object.
        """
        p = self._skip(0)
        if self.buf[p : p + 1] != "{":
            self._not_an_object()
        p = self._skip(p + 1)
        if self.buf[p : p + 1] == "}":
            p += 1
        else:
            while True:
                # Most members are a name and a value without escapes: one regex match,
                # which yields exactly what json would. Anything else takes the slow path.
                simple = _SIMPLE_MEMBER.match(self.buf, p)
                if simple is not None:
                    name, value, delimiter = simple.groups()
                    self._bounded(simple.start(1) - 1, simple.end(1) + 1)
                    self._bounded(simple.start(2) - 1, simple.end(2) + 1)
                    yield name, value
                    if delimiter == "}":
                        p = simple.end(3)
                        break
                    p = simple.end()
                    if p == len(self.buf):
                        p = self._skip(p)
                    continue
                if self.buf[p : p + 1] != '"':
                    raise self._fault(p)  # expecting a property name
                name, p = self._token(p, self._scan_name)
                assert isinstance(name, str)
                p = self._skip(p)
                if self.buf[p : p + 1] != ":":
                    raise self._fault(p)  # expecting ':'
                p = self._skip(p + 1)
                value, p = self._token(p, self._scan_value)
                yield name, value
                p = self._skip(p)
                if self.buf[p : p + 1] == "}":
                    p += 1
                    break
                if self.buf[p : p + 1] != ",":
                    raise self._fault(p)  # expecting ','
                p = self._skip(p + 1)
        closed()
        p = self._skip(p)
        if p < len(self.buf):
            raise self._fault(p)  # extra data

    def _not_an_object(self) -> NoReturn:
        """Anything but an object is refused as ``json.loads`` of the whole text would;
        past :data:`MAX_ENTRY_CHARS`, by what ``json.loads`` finds in that much of it."""
        # Only white space was dropped so far: stand-ins keep the lines and columns.
        pieces, size = [self.buf], len(self.buf)
        while size <= MAX_ENTRY_CHARS and (text := next(self.chunks, None)) is not None:
            pieces.append(text)
            size += len(text)
        text = "\n" * self.lines + " " * self.column + "".join(pieces)
        if size <= MAX_ENTRY_CHARS:
            parse_json_object_untrusted(self.path, text)
        else:
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:  # a fault the cut made is not one
                if exc.pos < len(text) - _CUT_MARGIN and not exc.msg.startswith("Unterminated"):
                    raise _not_json(self.path, exc.lineno, exc.colno) from None
            except RecursionError:
                raise _too_deep(self.path) from None
        raise InvalidInputError(f"{self.path} must hold a JSON object of name -> value")

    def _token(self, p: int, scan: Scan) -> tuple[object, int]:
        """The token at ``p`` and the position after it, reading on while it may be cut."""
        while True:
            # Only the fault's position and wording are kept: an exception held in a local
            # would tie this frame, and its callers' (the set of names seen), into a cycle.
            try:
                value, end = scan(self.buf, p)
            except StopIteration as stop:  # no value starts here
                pos, message = stop.value, "Expecting value"
            except json.JSONDecodeError as exc:
                pos, message = exc.pos, exc.msg
            except RecursionError:
                raise _too_deep(self.path) from None
            except _DuplicateName as dup:  # in a nested object
                raise _duplicate(self.path, dup.name) from None
            except ValueError:  # a number too long for int(): certainly not a string
                raise InvalidInputError(
                    f"{self.path}: a value near line {self._where(p)[0]} is not a string"
                ) from None
            else:
                # A number cut by the buffer's end ("1.5e" of "1.5e3") scans as a shorter one.
                if end <= len(self.buf) - _CUT_MARGIN or self.eof:
                    self._bounded(p, end)
                    return value, end
                p = self._more(p)
                continue
            may_be_cut = pos >= len(self.buf) - _CUT_MARGIN or message.startswith("Unterminated")
            if self.eof or not may_be_cut:
                raise self._fault(pos)
            p = self._more(p)

    def _bounded(self, start: int, end: int) -> None:
        """Refuse the token from ``start`` to ``end`` if it is longer than any entry needs."""
        if end - start > MAX_ENTRY_CHARS:
            raise _too_long(self.path, *self._where(start))

    def _skip(self, p: int) -> int:
        """The position of the first non-white-space character from ``p`` on (the end of
        the buffer only at the end of the text)."""
        while True:
            match = _JSON_WHITESPACE.match(self.buf, p)
            assert match is not None
            p = match.end()
            if p < len(self.buf) or self.eof:
                return p
            p = self._more(p)

    def _more(self, keep: int) -> int:
        """Drop the text before ``keep`` and read on: at least as much again as is left,
        so a long token is read in a few steps. The new position of ``keep`` (0)."""
        self._bounded(keep, len(self.buf))  # a token still going: as long at least
        breaks = self.buf.count("\n", 0, keep)
        if breaks:
            self.lines += breaks
            self.column = keep - self.buf.rfind("\n", 0, keep) - 1
        else:
            self.column += keep
        pieces = [self.buf[keep:]]
        wanted = max(len(pieces[0]), 1)
        got = 0
        while got < wanted:
            text = next(self.chunks, None)
            if text is None:
                self.eof = True
                break
            pieces.append(text)
            got += len(text)
        self.buf = "".join(pieces)
        return 0

    def _where(self, pos: int) -> tuple[int, int]:
        """Line and column of buffer position ``pos`` in the whole text, as ``json`` counts."""
        breaks = self.buf.count("\n", 0, pos)
        if breaks:
            return self.lines + breaks + 1, pos - self.buf.rfind("\n", 0, pos)
        return self.lines + 1, self.column + pos + 1

    def _fault(self, pos: int) -> InvalidInputError:
        return _not_json(self.path, *self._where(pos))
