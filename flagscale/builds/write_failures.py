"""A build that cannot write (read-only folder, full disk, no permission): one line, not a crash.

Python's own writes fail with an OSError naming the path; git's fail with a message on stderr
that ends in the system's reason (``No space left on device``). Both become a FlagScaleError
that names the path, the cause, and says that the previous build was left as it was (it is: the
new tree is written beside it and only renamed in once complete).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flagscale.core.errors import FlagScaleError

__all__ = ["WriteFailure", "disk_cause", "failure_from_git", "reported_write_failures"]

_CAUSES = {
    errno.ENOSPC: "free some space on the disk that holds build/",
    errno.EDQUOT: "free some space within your disk quota",
    errno.EFBIG: "raise the file size limit (ulimit -f)",
    errno.EROFS: "build in a clone on a writable file system",
    errno.EACCES: "make build/ writable for you (or build in a clone of your own)",
    errno.EPERM: "make build/ writable for you (or build in a clone of your own)",
    errno.EIO: "check the disk",
}
_STRERRORS = {os.strerror(code): code for code in _CAUSES}
_GIT_PATH = re.compile(
    r"(?:unable to (?:create|write|open)(?: file| temporary file| new index file)?"
    r"|could not (?:create|write|open)(?: file)?)\s*'?(?P<path>/[^':]+)'?",
)


class WriteFailure(FlagScaleError):
    """Writing ``path`` failed for ``cause`` (the system's reason, e.g. 'Read-only file system')."""

    def __init__(self, path: Path | str, cause: str, code: int | None = None) -> None:
        super().__init__(f"cannot write {path}: {cause}")
        self.path = Path(path)
        self.cause = cause
        self.code = code


def disk_cause(stderr: str) -> str | None:
    """The system's reason in a git message when it is one a full or read-only disk gives."""
    for text in _STRERRORS:
        if text in stderr:
            return text
    return None


def failure_from_git(stderr: str, fallback: Path) -> WriteFailure | None:
    """A WriteFailure for git output that reports a disk problem (None for other failures)."""
    cause = disk_cause(stderr)
    if cause is None:
        return None
    found = _GIT_PATH.search(stderr)
    return WriteFailure(found["path"] if found else fallback, cause, _STRERRORS[cause])


@contextmanager
def reported_write_failures(target: Path, shown: Callable[[Path], str]) -> Iterator[None]:
    """Turn OSError and WriteFailure raised inside into one line about building ``target``."""
    try:
        yield
    except WriteFailure as exc:
        raise _one_line(target, exc.path, exc.cause, exc.code, shown) from None
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else target
        cause = exc.strerror or type(exc).__name__
        raise _one_line(target, where, cause, exc.errno, shown) from None


def _one_line(
    target: Path, path: Path, cause: str, code: int | None, shown: Callable[[Path], str]
) -> FlagScaleError:
    advice = _CAUSES.get(code or 0, "remove the cause")
    return FlagScaleError(
        f"cannot build {shown(target)}: {shown(path)}: {cause}; {shown(target)} was left as it was",
        hint=f"{advice}, then build again",
    )
