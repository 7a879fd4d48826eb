"""Writing a file all or nothing: the bytes go to a hidden sibling that is renamed into place.

A reader sees the old file or the new one, never a part; a crash or ``kill -9`` leaves at most
the sibling ``.<name>.tmp-<pid>`` behind (``buildlock.clean_stale`` removes those of the files a
build writes in ``build/``). Work-tree files laid from a base layer have their own writer
(``layerfiles.write_file``: modes from the umask, as git gives them), and so do key files
(``keyfiles``: 0600 from the first byte, never clobbered).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from flagscale.core.errors import FlagScaleError, writing

__all__ = ["TEMP_MARK", "temporary_sibling", "write_atomically"]

TEMP_MARK = ".tmp-"


def temporary_sibling(path: Path) -> Path:
    """This process's temporary name beside ``path``: ``.<name>.tmp-<pid>``."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` with exactly ``mode``, on disk before it is renamed in.

    The parent folder is created when missing. Returns ``path``. A failure (permissions, a full
    or read-only disk, a path through a file) is a FlagScaleError naming ``path`` and leaves the
    previous file as it was. An existing device or FIFO (``/dev/stdout``, ``>(jq .)``) is
    written into, not replaced; a folder is refused.
    """
    path = Path(path)
    if _is_stream(path):
        with writing(path), path.open("wb") as stream:
            stream.write(data)
        return path
    with writing(path):
        _make_parent(path)
        temporary = temporary_sibling(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(temporary, flags, mode)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                os.fchmod(handle.fileno(), mode)  # the umask may have taken bits away
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return path


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None


def _is_stream(path: Path) -> bool:
    """True for an existing character device or FIFO; a folder is refused."""
    try:
        info = path.stat()
    except OSError:
        return False  # missing (or unreachable: writing says why)
    if stat.S_ISDIR(info.st_mode):
        raise FlagScaleError(f"cannot write {path}: it is a folder", hint="give a file's path")
    return stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)
