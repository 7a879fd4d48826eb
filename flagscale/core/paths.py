"""Keeping every path inside its tree: patch targets, overlay entries, deletion lists, bundles."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from flagscale.core.errors import FlagScaleError

__all__ = ["UnsafePathError", "check_relative", "ensure_inside", "first_symlink"]


class UnsafePathError(FlagScaleError):
    """A path would escape the tree it belongs to."""


def check_relative(path: str, where: str) -> str:
    """Return ``path`` if it is a plain relative POSIX path inside its tree; raise otherwise.

    Rejected: empty names, absolute paths, ``..`` or ``.`` components, ``.git`` components,
    backslashes, NUL and newlines. ``where`` names the file the path came from.
    """
    reason = _unsafe_reason(path)
    if reason:
        raise UnsafePathError(f"{where}: unsafe path {path!r}: {reason}")
    return path


def _unsafe_reason(path: str) -> str | None:
    if not path:
        return "empty path"
    if "\0" in path or "\n" in path or "\r" in path:
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/") or PurePosixPath(path).is_absolute():
        return "absolute paths are not allowed"
    parts = path.split("/")
    if any(part in ("", ".") for part in parts):
        return "empty or '.' component"
    if ".." in parts:
        return "'..' leads outside the tree"
    if any(part.lower() == ".git" for part in parts):
        return "'.git' is not part of a tree"
    return None


def ensure_inside(root: Path, relative: str, where: str) -> Path:
    """The absolute path of ``relative`` under ``root``, refusing symlinked parents leading out.

    The final component may itself be a symlink (a tree may hold symlinks); only the folders
    on the way must stay inside ``root``.
    """
    check_relative(relative, where)
    real_root = Path(os.path.realpath(root))
    current = real_root
    parts = relative.split("/")
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            resolved = Path(os.path.realpath(current))
            if resolved != real_root and real_root not in resolved.parents:
                raise UnsafePathError(
                    f"{where}: {relative!r} goes through symlink {current} leading outside {root}"
                )
    return Path(root) / relative


def first_symlink(root: Path, relative: str) -> str | None:
    """The first of ``relative``'s folders (itself included) under ``root`` that is a symlink.

    Returns it relative to ``root``, or None when every component is a real folder or missing.
    """
    current = ""
    for part in relative.split("/"):
        current = f"{current}/{part}" if current else part
        if os.path.islink(root / current):
            return current
    return None
