"""Files only their owner may read, written whole or not at all: exported secrets and
metrics for a collector."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ledger.errors import InvalidInputError


def write_private(path: Path, text: str, *, replace: bool = False, mode: int = 0o600) -> None:
    """Write ``text`` to a new file at ``path`` (``mode``, 0600 by default, whatever the
    umask allows beyond it), fsynced. An existing file is never touched unless ``replace``:
    then the text goes to a temporary file beside it first, which takes its place in one
    rename, so a reader (or a crash) sees the old file or the new one, never a part.

    :raises InvalidInputError: ``path`` exists (without ``replace``), is a directory, or
        its folder cannot be written.
    """
    data = text.encode("utf-8")
    if path.is_dir():
        raise InvalidInputError(f"{path} is a directory")
    target = path.with_name(f".{path.name}.tmp-{os.getpid()}") if replace else path
    try:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except FileExistsError:
        raise InvalidInputError(f"{path} exists; --force replaces it") from None
    except FileNotFoundError:
        raise InvalidInputError(f"no folder {path.parent} to write {path.name} in") from None
    except PermissionError:
        raise InvalidInputError(f"{path.parent} is not writable by this user") from None
    try:
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is only what the umask leaves of it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(target, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
