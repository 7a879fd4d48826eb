"""One writer at a time in a user's repository: the lock that says who holds it.

Commands that write a user's work tree, index or branch (``inv patch --device-type``, ``inv
patch``, ``inv unpatch``, ``inv record-history``, ``inv check-history --repair``, ``inv
import-flagscale``, ``inv refresh``, ``inv bisect-upstream``) hold
``<git-dir>/flagscale/repository.lock`` while they run. ``<git-dir>`` is the work tree's own git
folder (``git rev-parse --absolute-git-dir``), so each worktree of a repository, which has its
own index and ``HEAD``, has its own lock.

The lock is an advisory ``flock``: the kernel drops it when its holder exits, even by
``kill -9``, so the lock of a dead holder is simply taken over. The file records the holder
(pid, command, since when) for the message a second command prints; it is never removed, since
removing it would race with the next taker. Taking it never waits: a second command refuses at
once and names the holder. A process may take the lock again while it holds it (nested calls).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git_text

__all__ = ["RepositoryLockedError", "git_dir", "repository_lock", "repository_lock_path"]

_held: dict[Path, int] = {}  # lock path -> nesting depth, for this process


class RepositoryLockedError(FlagScaleError):
    """Another live process is writing in the same work tree."""


def git_dir(root: Path) -> Path:
    """The work tree's own git folder (per worktree: ``.git`` or ``.git/worktrees/<name>``)."""
    return Path(git_text(["rev-parse", "--absolute-git-dir"], root))


def repository_lock_path(root: Path) -> Path:
    """The lock file guarding the work tree at ``root``."""
    return git_dir(root) / "flagscale" / "repository.lock"


@contextmanager
def repository_lock(root: Path, command: str) -> Iterator[Path]:
    """Hold the work tree's lock while the block runs; ``command`` is told to a second taker."""
    path = repository_lock_path(root)
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    descriptor = _take(path, root, command)
    _held[path] = 1
    try:
        yield path
    finally:
        del _held[path]
        os.close(descriptor)  # closing the last descriptor drops the flock


def _take(path: Path, root: Path, command: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(descriptor)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise RepositoryLockedError(
            f"another command is writing in {root}: {_holder(path)}",
            hint=f"wait for it to finish, then run this again; the lock {path} is released"
            " when that process exits, however it ends",
        ) from None
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    record = {"pid": os.getpid(), "command": command, "since": since}
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(record) + "\n").encode("utf-8"), 0)
    return descriptor


def _holder(path: Path) -> str:
    """``inv patch ... (pid 123, since ...)`` from the lock file, as far as it can be read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return f"`{record['command']}` (pid {int(record['pid'])}, since {record['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said which (pid unknown)"
