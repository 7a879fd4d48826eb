"""Saving a user's edits as a binary git patch before a forced command discards them.

The patch is ``git diff-tree -p --binary --full-index`` between two tree objects built with a
temporary index (never the user's), so ``git apply <file>`` in the same repository restores the
edits byte for byte: modes, symlinks, binary files, deletions and additions included.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from flagscale.core.atomic import temporary_sibling
from flagscale.core.crashpoints import crash_point
from flagscale.core.gitcli import git

__all__ = [
    "save_new_patch",
    "save_tree_diff",
    "tree_from_entries",
    "write_blobs",
]


def save_new_patch(folder: Path, label: str, data: bytes, *, mode: int = 0o600) -> Path:
    """Write ``data`` to a new ``<label>-<UTC time>[-N].patch`` in ``folder``; return its path.

    A saved patch is never replaced, not even by a run started in the same second or by another
    process: the bytes go to a temporary sibling first (on disk, with ``mode``), which is then
    hard-linked to the first free name (a link fails rather than replace), so the name appears
    with its whole content or not at all.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    temporary = temporary_sibling(folder / f"{label}-{stamp}.patch")
    temporary.unlink(missing_ok=True)  # a leftover of a killed process that had our pid
    try:
        _create_new(temporary, data, mode)
        crash_point("save:temporary-written")
        for counter in range(1, 10_000):
            suffix = "" if counter == 1 else f"-{counter}"
            candidate = folder / f"{label}-{stamp}{suffix}.patch"
            try:
                os.link(temporary, candidate)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if not _create_new(candidate, data, mode):  # no hard links on this file system
                    continue
            return candidate
        raise FileExistsError(errno.EEXIST, "no free name", str(folder / f"{label}-{stamp}.patch"))
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _create_new(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` unless it exists (False then)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, mode)
    except FileExistsError:
        return False
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)  # never a partial file under a saved name
        raise
    return True


def save_tree_diff(repo: Path, old_tree: str, new_tree: str, folder: Path, label: str) -> Path:
    """Save the binary diff from ``old_tree`` to ``new_tree`` of ``repo`` as a new patch in
    ``folder`` (``save_new_patch``: a name of its own, never replacing another)."""
    data = git(
        ["diff-tree", "-p", "--binary", "--full-index", "--no-renames", old_tree, new_tree], repo
    )
    return save_new_patch(folder, label, data)


def write_blobs(repo: Path, files: list[Path]) -> list[str]:
    """Store each file's raw bytes (symlinks: their target) as blobs; return the ids."""
    plain = [f for f in files if not f.is_symlink()]
    ids: dict[Path, str] = {}
    if plain:
        stdin = b"".join(os.fsencode(f) + b"\n" for f in plain)
        out = git(["hash-object", "-w", "--no-filters", "--stdin-paths"], repo, stdin=stdin)
        ids.update(zip(plain, out.decode().split(), strict=True))
    for link in (f for f in files if f.is_symlink()):
        target = os.fsencode(os.readlink(link))
        ids[link] = git(["hash-object", "-w", "--stdin"], repo, stdin=target).decode().strip()
    return [ids[f] for f in files]


def tree_from_entries(repo: Path, entries: dict[str, tuple[str, str]], index_file: Path) -> str:
    """A tree object holding ``entries`` (path → (mode, blob id)), built in ``index_file``."""
    env = {"GIT_INDEX_FILE": str(index_file)}
    index_file.unlink(missing_ok=True)
    git(["read-tree", "--empty"], repo, env=env)
    lines = b"".join(
        f"{mode} {oid}".encode() + b"\t" + path.encode("utf-8", "surrogateescape") + b"\0"
        for path, (mode, oid) in sorted(entries.items())
    )
    if lines:
        git(["update-index", "-z", "--index-info"], repo, stdin=lines, env=env)
    tree = git(["write-tree"], repo, env=env).decode().strip()
    index_file.unlink(missing_ok=True)
    return tree
