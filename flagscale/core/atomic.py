"""Writing a file all or nothing: the bytes go to a hidden sibling that is renamed into place.

A reader sees the old file or the new one, never a part; a crash or ``kill -9`` leaves at most
the sibling ``.<name>.tmp-<pid>`` behind (``buildlock.clean_stale`` removes those of the files a
build writes in ``build/``). Work-tree files laid from a base layer have their own writer
(``layerfiles.write_file``: modes from the umask, as git gives them), and so do key files
(``keyfiles``: 0600 from the first byte, never clobbered).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TEMP_MARK", "temporary_sibling", "write_atomically"]

TEMP_MARK = ".tmp-"


def temporary_sibling(path: Path) -> Path:
    """This process's temporary name beside ``path``: ``.<name>.tmp-<pid>``."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` with exactly ``mode``, on disk before it is renamed in.

    The parent folder is created when missing. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
