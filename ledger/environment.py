"""What keyledger takes from the environment: the ledger's place, the actor, and the
master password from a variable or from a file a variable names.

``ENCRYPTION_MASTER_PASSWORD`` holds the password itself; ``ENCRYPTION_MASTER_PASSWORD_FILE``
names a file that holds it, the way Docker and Kubernetes hand secrets to a process (the
``*_FILE`` convention of the official images). One of the two, never both: a process that
has both set was configured twice, and guessing which one was meant could unlock with a
stale password. The same goes for ``ENCRYPTION_NEW_MASTER_PASSWORD`` and its ``_FILE``.

A file's content is the password once one trailing newline is taken off (``\\n`` or
``\\r\\n``, as an editor or ``echo`` leaves it); anything else, spaces included, is part
of the password. It must be UTF-8 text, not empty, and at most :data:`MAX_FILE_BYTES`.
A file that group or others may read still works, with a warning: the password is then
readable by more than the process that needs it.

Errors name the variable and the file, never the content.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping

from ledger.errors import WrongPasswordError

DB_ENV = "KEYLEDGER_DB"
DEFAULT_DB = "keyledger.db"
ACTOR_ENV = "KEYLEDGER_ACTOR"
LOCK_TIMEOUT_ENV = "KEYLEDGER_LOCK_TIMEOUT"
PASSWORD_ENV = "ENCRYPTION_MASTER_PASSWORD"
NEW_PASSWORD_ENV = "ENCRYPTION_NEW_MASTER_PASSWORD"
FILE_SUFFIX = "_FILE"
#: Far above any password, far below anything that is not one (a key file, a log).
MAX_FILE_BYTES = 64 * 1024

logger = logging.getLogger("keyledger")


def from_environment(
    name: str = PASSWORD_ENV, environ: Mapping[str, str] | None = None, *,
    warn: Callable[[str], None] | None = None,
) -> str | None:
    """The password the variable ``name`` holds, or the one in the file ``name_FILE``
    names; None when neither is set. ``warn`` hears of a file others may read (by default
    the ``keyledger`` logger).

    :raises WrongPasswordError: both are set; the value or the file is empty or not UTF-8;
        the file cannot be read or is too large to be a password.
    """
    environ = os.environ if environ is None else environ
    file_name = name + FILE_SUFFIX
    value, path = environ.get(name), environ.get(file_name)
    if value is not None and path is not None:
        raise WrongPasswordError(f"both {name} and {file_name} are set; set one of them")
    if path is not None:
        return read_password_file(path, file_name, warn=warn or logger.warning)
    if value is None:
        return None
    if not value:
        raise WrongPasswordError(f"{name} is set but empty")
    if not is_utf8(value):
        raise WrongPasswordError(f"{name} is not valid UTF-8 text")
    return value


def read_password_file(path: str, variable: str, *,
                       warn: Callable[[str], None] | None = None) -> str:
    """The password in the file at ``path`` (named by ``variable``), see the module's rules.

    :raises WrongPasswordError: as :func:`from_environment`.
    """
    if not path:
        raise WrongPasswordError(f"{variable} is set but empty")
    shown = printable(path)
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise WrongPasswordError(f"{variable}: {shown} is a directory")
            data = handle.read(MAX_FILE_BYTES + 1)
    except WrongPasswordError:
        raise
    except IsADirectoryError:
        raise WrongPasswordError(f"{variable}: {shown} is a directory") from None
    except FileNotFoundError:
        raise WrongPasswordError(f"{variable}: no file at {shown}") from None
    except PermissionError:
        raise WrongPasswordError(f"{variable}: {shown} is not readable by this user") from None
    except OSError as exc:
        raise WrongPasswordError(f"{variable}: cannot read {shown} ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise WrongPasswordError(
            f"{variable}: {shown} is larger than {MAX_FILE_BYTES} bytes; not a password file")
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    if not data:
        raise WrongPasswordError(f"{variable}: {shown} is empty")
    try:
        password = data.decode("utf-8")
    except UnicodeDecodeError:
        raise WrongPasswordError(f"{variable}: {shown} is not UTF-8 text") from None
    if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        (warn or logger.warning)(
            f"{variable}: {shown} is readable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 it")
    return password


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 arrive as surrogates
        return False
    return True


def printable(path: str) -> str:
    """A path as it can be shown on one line (a name that came in as bytes, or holds a
    control character, is escaped)."""
    return path if path.isprintable() and is_utf8(path) else ascii(path)
