"""Files only their owner may read, written whole or not at all: exported secrets and
metrics for a collector."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ledger.errors import InvalidInputError


def check_writable(path: Path, *, replace: bool = False) -> None:
    """What :func:`write_private` would refuse, checked before anything is done for it.

    :raises InvalidInputError: ``path`` exists (without ``replace``), is a directory, or
        its folder is missing or not writable.
    """
    if path.is_dir():
        raise InvalidInputError(f"{path} is a directory")
    if os.path.lexists(path) and not replace:
        raise InvalidInputError(f"{path} exists; --force replaces it")
    folder = path.parent
    if not folder.is_dir():
        raise InvalidInputError(f"no folder {folder} to write {path.name} in")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{folder} is not writable by this user")


def write_private(path: Path, text: str, *, replace: bool = False, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` (``mode``, 0600 by default, whatever the umask), whole or
    not at all: it goes to a temporary file beside ``path`` first (created with ``mode``,
    fsynced), which then takes its place in one step: a hard link that fails if ``path``
    exists (nothing existing is ever touched) or, with ``replace``, a rename over it (a
    symbolic link at ``path`` is replaced, never written through). A reader, or a crash,
    sees the old file or the new one, never a part; the folder is fsynced after.

    :raises InvalidInputError: as :func:`check_writable`.
    """
    check_writable(path, replace=replace)
    data = text.encode("utf-8")
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".keyledger-tmp",
                                         dir=path.parent)
    except PermissionError:
        raise InvalidInputError(f"{path.parent} is not writable by this user") from None
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise InvalidInputError(f"{path} exists; --force replaces it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
