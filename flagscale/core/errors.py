"""The one error type the tool reports to its user, and operating-system errors told as one."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FlagScaleError", "NotInWorkspaceError", "os_error", "writing"]


class FlagScaleError(Exception):
    """A failure told to the user in one line: what failed, where, and what to do next."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class NotInWorkspaceError(FlagScaleError):
    """The current folder (or the one given) is in no workspace; the command line names the
    clone whose ``tasks.py`` runs (``inv -r <clone>`` from elsewhere: ``cd`` there)."""


_HINTS = {
    errno.EACCES: "check its permissions and owner, then run the command again",
    errno.EPERM: "check its permissions and owner, then run the command again",
    errno.EROFS: "make that file system writable, or work in a writable copy",
    errno.ENOSPC: "free some space on that disk and run the command again",
    errno.EDQUOT: "free some space (or raise the quota) and run the command again",
    errno.ENOENT: "create the missing folder or give another path",
    errno.ENOTDIR: "a part of that path is a file, not a folder: give another path",
    errno.EISDIR: "give the path of a file",
    errno.EEXIST: "move what is there away, or give another path",
}


def os_error(
    exc: OSError, path: os.PathLike[str] | str | None = None, action: str | None = None
) -> FlagScaleError:
    """``exc`` as one line naming the path and the cause: ``cannot write P: No space left ...``.

    ``path`` is the file the user knows (not a temporary sibling the error may name); without
    it the error's own file names (both, for a rename) are used.
    """
    cause = exc.strerror or str(exc) or type(exc).__name__
    if path is not None:
        where = os.fspath(path)
    elif exc.filename is not None and exc.filename2 is not None:
        where = f"{os.fsdecode(exc.filename)} -> {os.fsdecode(exc.filename2)}"
    elif exc.filename is not None:
        where = os.fsdecode(exc.filename)
    else:
        where = None
    if where is None:
        message = cause
    elif action:
        message = f"cannot {action} {where}: {cause}"
    else:
        message = f"{where}: {cause}"
    return FlagScaleError(message, hint=_HINTS.get(exc.errno or 0))


@contextmanager
def writing(path: os.PathLike[str] | str) -> Iterator[None]:
    """Turn an OSError while writing ``path`` (or its temporary sibling) into one that names it."""
    try:
        yield
    except OSError as exc:
        raise os_error(exc, path, "write") from exc
