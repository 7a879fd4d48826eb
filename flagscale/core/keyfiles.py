"""Secret key files on disk: written 0600 all at once, read only when nobody else can read them.

Shared by patch encryption (``crypto``), release signing (``signing``) and FlagScale's older
encrypted patch format (``legacy_crypto``). Nothing here ever puts a key's bytes into a message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flagscale.core.errors import FlagScaleError

__all__ = [
    "KeyFileError",
    "SECRET_MODE",
    "check_private_permissions",
    "read_key_file",
    "write_public_file",
    "write_secret_file",
]

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


class KeyFileError(FlagScaleError):
    """A key file is missing, unreadable, malformed, too open, or would be overwritten."""


def read_key_file(path: Path, what: str, *, missing_hint: str, secret: bool) -> bytes:
    """The bytes of key file ``path``; ``what`` names it in messages ("encryption key").

    A secret key file must not be readable or writable by group or others (POSIX only).
    """
    path = Path(path)
    if not path.exists():
        raise KeyFileError(f"{what} {path} not found", hint=missing_hint)
    if path.is_dir():
        raise KeyFileError(f"{what} {path} is a directory; give the path of the key file itself")
    if secret:
        check_private_permissions(path, what)
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise KeyFileError(f"cannot read {what} {path}: {reason}") from None


def check_private_permissions(path: Path, what: str) -> None:
    """Refuse a secret key file that group or others may read or write (like ssh does)."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{what} {path} is accessible by other users (mode {mode:04o}); refusing to use it",
            hint=f"run: chmod 600 {path}",
        )


def write_secret_file(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write ``data`` to ``path`` with mode 0600 from its first byte, all or nothing.

    The bytes go to a sibling temporary file created 0600 and are then moved into place. With
    ``replace`` false an existing ``path`` is never overwritten, not even by a concurrent writer:
    the function returns False and leaves both files as they were. Returns True when written.
    """
    path = Path(path)
    _make_parent(path)
    temporary = _write_sibling(path, data, SECRET_MODE)
    try:
        if replace:
            os.replace(temporary, path)
            return True
        return _move_without_clobbering(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _move_without_clobbering(temporary: Path, path: Path) -> bool:
    try:
        os.link(temporary, path)  # fails if path exists: no clobbering, even in a race
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: a plain rename, after a last look
        if path.exists():
            return False
        os.replace(temporary, path)
    return True


def write_public_file(path: Path, data: bytes) -> None:
    """Write a non-secret key file (mode 0644) all at once, replacing any previous one."""
    path = Path(path)
    _make_parent(path)
    temporary = _write_sibling(path, data, PUBLIC_MODE)
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise KeyFileError(f"cannot create folder {path.parent} for key file: {reason}") from None
    if path.is_dir():
        raise KeyFileError(f"{path} is a directory; give the path of the key file itself")


def _write_sibling(path: Path, data: bytes, mode: int) -> Path:
    for attempt in range(100):
        temporary = path.with_name(f".{path.name}.tmp{os.getpid()}.{attempt}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise KeyFileError(f"cannot write key file {path}: {reason}") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)  # the umask may have taken bits away
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary
    raise KeyFileError(f"cannot write key file {path}: too many leftover temporary files beside it")
