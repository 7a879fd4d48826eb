"""Keeping build trees whole: one builder per device type, staging beside the target, atomic swap.

A build of ``build/<V_M>`` holds ``build/.<V_M>.lock`` (an advisory ``flock``; the kernel drops it
when its holder dies, even by ``kill -9``, so a stale lock is simply taken over; the file records
the holder's pid for the message a second builder sees). The new tree is written to
``build/.<V_M>.tmp-<pid>`` and exchanged with the old one in one ``renameat2(RENAME_EXCHANGE)``
call where the kernel has it, or by two renames otherwise; an interrupted two-rename swap is
repaired by the next builder before it does anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from flagscale.core.crashpoints import crash_point
from flagscale.core.errors import FlagScaleError

__all__ = [
    "BuildLockedError",
    "DeviceLock",
    "clean_stale",
    "lock_path",
    "remove_tree",
    "replace_directory",
    "stale_leftovers",
    "staging_path",
]

_OLD_MARK = ".old-"


class BuildLockedError(FlagScaleError):
    """Another live process is building the same device type."""


def lock_path(build_root: Path, name: str) -> Path:
    """The lock file guarding ``build_root/<name>``."""
    return build_root / f".{name}.lock"


def staging_path(build_root: Path, name: str, purpose: str = "tmp") -> Path:
    """A private sibling of ``build_root/<name>`` for this process (``.<name>.tmp-<pid>``)."""
    return build_root / f".{name}.{purpose}-{os.getpid()}"


class DeviceLock:
    """An exclusive, non-blocking lock on one build folder, released when the holder exits."""

    def __init__(self, build_root: Path, name: str) -> None:
        self.path = lock_path(build_root, name)
        self.name = name
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise BuildLockedError naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never through a symlink: the pid would be written wherever it points
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise FlagScaleError(
                f"build/{self.path.name} is a symlink; the build's lock file must be a plain file",
                hint=f"remove it (rm build/{self.path.name}) and build again",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_holder(self.path)
            raise BuildLockedError(
                f"build/{self.name} is being built by another process ({holder})",
                hint="wait for it to finish, then run the build again",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the next builder in; the file stays (removing it would race with a waiter)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DeviceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "pid unknown"
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


def clean_stale(build_root: Path, name: str) -> None:
    """Repair an interrupted swap and remove leftovers of killed builds of ``name``.

    Call only while holding the device lock: every staging or retired folder of ``name`` then
    belongs to a dead process.
    """
    target = build_root / name
    leftovers = sorted(_siblings(build_root, name))
    if not target.exists() and not target.is_symlink():
        retired = [p for p in leftovers if _OLD_MARK in p.name]
        if retired:  # killed between "old away" and "new in": put the previous build back
            os.rename(retired[-1], target)
            leftovers.remove(retired[-1])
    for leftover in leftovers:
        crash_point("build:cleaning")
        remove_tree(leftover)


def stale_leftovers(build_root: Path, name: str) -> list[Path]:
    """The staging, retired and temporary siblings of ``build_root/<name>`` (alive or dead)."""
    return sorted(_siblings(build_root, name))


def _siblings(build_root: Path, name: str) -> Iterator[Path]:
    if not build_root.is_dir():
        return
    # a saved-edits file's temporary name is .<name>.edits-<stamp>.patch.tmp-<pid>
    marks = ("tmp-", "old-", "conflicts-tmp-", "edits-", "edits.patch.tmp-", "json.tmp-")
    prefixes = tuple(f".{name}.{mark}" for mark in marks)
    for entry in build_root.iterdir():
        if entry.name.startswith(prefixes):
            yield entry


def replace_directory(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target`` atomically; a previous ``target`` is removed afterwards."""
    if not target.exists() and not target.is_symlink():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        crash_point("build:swapped")
        _remove_after_swap(staging)  # now holds the previous tree
        return
    retired = target.with_name(f".{target.name}{_OLD_MARK}{os.getpid()}")
    os.rename(target, retired)
    crash_point("build:swap-halfway")
    os.rename(staging, target)
    _remove_after_swap(retired)


def _remove_after_swap(previous: Path) -> None:
    """Remove the tree the swap replaced; if that fails the next build removes it (the new tree
    is in place either way, so a failure here is no failure of the build)."""
    with contextlib.suppress(OSError):
        remove_tree(previous)


def remove_tree(path: Path, attempts: int = 5) -> None:
    """Remove a folder (or a file or link) that this tool made; missing is fine.

    A git process orphaned by a killed build may still be writing into a staging folder for a
    moment, so removal is retried a few times before the error is let through.
    """
    for attempt in range(attempts):
        try:
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
            elif path.exists():
                shutil.rmtree(path, onerror=_make_writable_and_retry)
            return
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _make_writable_and_retry(function, path, _excinfo) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o755)
        os.chmod(path, 0o755)
    function(path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step with Linux's renameat2; False where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))
