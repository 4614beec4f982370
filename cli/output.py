"""How the CLI speaks: rich text for people, exactly one JSON document for machines.

Errors go to stderr as one line. ``NO_COLOR`` is honoured by rich itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer

from ledger import errors

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A rich ``Console`` made on first use, so a command that prints only JSON never
    imports rich (about 40 ms of every start-up otherwise)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def print(self, *objects: Any, **options: Any) -> None:
        self.rich.print(*objects, **options)


console = LazyConsole(highlight=False, soft_wrap=True)
err_console = LazyConsole(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Faults the user fixes by changing the command line rather than the system.
_USAGE_ERRORS = (errors.InvalidInputError, errors.ConfirmationRequired)


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (dataclasses become objects)."""
    sys.stdout.write(json.dumps(to_jsonable(document), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def printable(value: Any) -> str:
    """Text from the ledger with control characters escaped, so that an actor, an origin
    or a reason cannot drive the terminal."""
    text = str(to_jsonable(value))
    return "".join(ch if unicodedata.category(ch)[0] != "C" else f"\\u{ord(ch):04x}" for ch in text)


# Said by keys destroy and rekey-master when another process's older snapshot kept them
# from rewriting the database file (ledger.service.Ledger.finish_erasure).
ERASE_PENDING_WARNING = (
    "{what} is still in the database file: another process is reading an older state of "
    "the ledger. It is erased by the next keyledger command that unlocks the ledger once "
    "that process is done; `keyledger health-check` reports it until then"
)


def warn(message: str) -> None:
    err_console.print(f"⚠️  {message}", markup=False)


def note(message: str) -> None:
    err_console.print(f"🔄 {message}", markup=False)


def fail(message: str, *, code: int = EXIT_FAILED, as_json: bool = False) -> NoReturn:
    """One line on stderr (and an error document on stdout under ``--json``), then exit."""
    if as_json:
        emit_json({"ok": False, "error": message})
    err_console.print(f"❌ Error: {message}", markup=False)
    raise typer.Exit(code)


def usage_error(message: str, *, as_json: bool) -> NoReturn:
    """A command line that does not parse: one line, exit 2 (``fail`` for the rest).

    Stray arguments are not echoed: the usual one is a value typed where ``--value`` (or
    better, stdin) belonged, and stderr ends up in logs.
    """
    if message.startswith("Got unexpected extra argument"):
        message = ("unexpected extra argument(s), not shown as they may be a secret; "
                   "pass values on stdin")
    try:
        fail(f"{message.strip()} (see --help)", code=EXIT_USAGE, as_json=as_json)
    except typer.Exit as done:
        sys.exit(done.exit_code)


P = ParamSpec("P")
R = TypeVar("R")


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn keyledger's errors (and the ledger file's) into one line and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json", False))
        try:
            return command(*args, **kwargs)
        except _USAGE_ERRORS as exc:
            fail(str(exc), code=EXIT_USAGE, as_json=as_json)
        except errors.KeyledgerError as exc:
            fail(str(exc), as_json=as_json)
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), as_json=as_json)
        except KeyboardInterrupt:
            fail("interrupted", as_json=as_json)

    return wrapper
