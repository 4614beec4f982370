"""Handing secrets to other programs: which secrets, under which variable names, written
how (``keyledger run`` and ``keyledger secrets export``).

Selection: ``--only NAME`` (repeatable) names secrets, each of which must exist;
``--prefix P`` takes every live secret whose name starts with ``P``; with neither, every
live secret. Naming: a secret's variable is its name, ``P`` taken off the front. A
variable must be a portable environment name (``[A-Za-z_][A-Za-z0-9_]*``, what POSIX
shells accept); any that is not is refused with the list, unless ``rename``: then it is
upper-cased, each character outside ``A-Z 0-9 _`` becomes ``_``, and one that would start
with a digit gets a ``_`` in front (``app/db-password`` → ``APP_DB_PASSWORD``). Two
secrets that end up under one variable are refused. A value holding a NUL character
cannot be in an environment and is refused too.

Formats (each read back as written, tested in ``tests/test_export.py``):

- ``dotenv``: ``NAME='value'`` with ``\\`` and ``'`` escaped by a backslash, the way
  python-dotenv's own ``set_key`` writes and both it and ``secrets import`` read, line
  breaks kept inside the quotes; a value holding a carriage return goes in double quotes
  with ``\\r`` and ``\\n`` escaped (a text-mode reader would turn a raw one into a line
  feed). python-dotenv expands ``${VAR}`` in any value unless it is loaded with
  ``interpolate=False``; keyledger never expands.
- ``shell``: ``export NAME='value'``, POSIX single quotes (``'`` written as ``'\\''``),
  for ``. ./file`` in ``sh``, ``bash`` or ``zsh``.
- ``json``: one object, variable to value, sorted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ledger.errors import InvalidInputError

if TYPE_CHECKING:
    from ledger.service import Ledger

ExportFormat = Literal["dotenv", "shell", "json"]
FORMATS: tuple[ExportFormat, ...] = ("dotenv", "shell", "json")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHOWN = 10


def variable_names(names: Sequence[str], *, prefix: str = "", rename: bool = False
                   ) -> dict[str, str]:
    """Secret name to variable name, by the module's rule.

    :raises InvalidInputError: a variable is no environment name (without ``rename``), or
        two secrets land on one variable.
    """
    chosen = {name: name.removeprefix(prefix) for name in names}
    if rename:
        chosen = {name: _renamed(variable) for name, variable in chosen.items()}
    bad = sorted(name for name, variable in chosen.items() if not _ENV_NAME.fullmatch(variable))
    if bad:
        raise InvalidInputError(
            f"{len(bad)} secret name(s) are not environment variable names: {_listed(bad)}; "
            "--rename maps them (upper case, other characters to _), or leave them out")
    by_variable: dict[str, list[str]] = {}
    for name, variable in chosen.items():
        by_variable.setdefault(variable, []).append(name)
    clashes = sorted(v for v, owners in by_variable.items() if len(owners) > 1)
    if clashes:
        raise InvalidInputError(
            "two or more secrets would be one variable: " + "; ".join(
                f"{v} <- {_listed(sorted(by_variable[v]))}" for v in clashes[:_SHOWN]))
    return chosen


def _renamed(name: str) -> str:
    upper = re.sub(r"[^A-Z0-9_]", "_", name.upper())
    return f"_{upper}" if not upper or upper[0].isdigit() else upper


def check_values(values: Mapping[str, str]) -> None:
    """:raises InvalidInputError: a value holds a NUL, which no environment can carry."""
    bad = sorted(variable for variable, value in values.items() if "\0" in value)
    if bad:
        raise InvalidInputError(
            f"the value(s) of {_listed(bad)} hold a NUL character, which an environment "
            "variable cannot carry")


def render(values: Mapping[str, str], fmt: ExportFormat) -> str:
    """``values`` (variable to value) written in ``fmt``."""
    ordered = sorted(values.items())
    if fmt == "json":
        return json.dumps(dict(ordered), ensure_ascii=False, indent=2) + "\n"
    if fmt == "dotenv":
        return "".join(f"{name}={_dotenv_quoted(value)}\n" for name, value in ordered)
    return "".join(f"export {name}={shell_quoted(value)}\n" for name, value in ordered)


def _dotenv_quoted(value: str) -> str:
    r"""Single quotes; a value holding a carriage return (which a reader in text mode turns
    into a line feed) in double quotes, its ``\r`` and ``\n`` written as escapes."""
    if "\r" not in value:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "\\r").replace("\n", "\\n") + '"'


def shell_quoted(value: str) -> str:
    """``value`` as one POSIX shell word: single quotes, each ``'`` as ``'\\''``."""
    return "'" + value.replace("'", "'\\''") + "'"


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(ascii(n)[1:-1] if not n.isprintable() else n for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def plan(ledger: Ledger, *, only: Sequence[str] = (), prefix: str = "",
         rename: bool = False) -> dict[str, str]:
    """Secret name to variable name for the secrets chosen (the module's rules), from the
    proven heads: nothing is decrypted, so nothing is recorded yet.

    :raises InvalidInputError: by :func:`variable_names`.
    """
    names = (sorted(set(only)) if only
             else [info.name for info in ledger.secrets() if info.name.startswith(prefix)])
    return variable_names(names, prefix=prefix, rename=rename)


def fetch(ledger: Ledger, chosen: Mapping[str, str]) -> dict[str, str]:
    """Variable to value for a :func:`plan`, decrypted in one unlock; each secret handed
    out is a recorded ``SecretRead`` when read auditing is on, and a value that cannot be
    handed out (:func:`check_values`) is refused before anything is recorded.

    :raises UnknownSecretError: a name is no live secret.
    :raises InvalidInputError: by :func:`check_values`.
    """
    def handable(found: Mapping[str, Any]) -> None:
        check_values({chosen[name]: secret.value for name, secret in found.items()})

    found = ledger.get_many(chosen, before_recording=handable)
    return {chosen[name]: secret.value for name, secret in found.items()}
