"""Publishing the refresh's commits: the branch moves, then exactly the changed paths follow.

The branch (or a detached ``HEAD``) moves from the old commit to the new one in one
``git update-ref`` that checks the old value. Then the paths the commits changed, and only
those, are brought up to date in the index (``git reset <new> -- paths``) and the work tree
(``git checkout-index``; files the commits removed are deleted). Those paths were checked to
hold no uncommitted change, so nothing a user wrote is lost; every other staged or unstaged
change, the stash and the submodule checkouts stay as they were. Both steps can be redone, so a
run killed between them is finished by the next; ``unpublish`` is the same move backwards.
"""

from __future__ import annotations

import os
from pathlib import Path

from flagscale.core.crashpoints import crash_point
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, git_text
from flagscale.core.gitlisting import listed_entries
from flagscale.upstream.workspace import Workspace

__all__ = [
    "changed_paths",
    "check_clean",
    "check_untouched",
    "head_of",
    "publish",
    "sync_paths",
    "unpublish",
]

GITLINK = "160000"


def head_of(ws: Workspace) -> str:
    """The commit ``HEAD`` points at."""
    return git_text(["rev-parse", "--verify", "HEAD^{commit}"], ws.root)


def changed_paths(ws: Workspace, old: str, new: str) -> list[str]:
    """The paths whose entry differs between two commits."""
    raw = git(["diff-tree", "-r", "-z", "--no-renames", "--name-only", old, new], ws.root)
    return [name.decode("utf-8", "surrogateescape") for name in raw.split(b"\0") if name]


def check_clean(ws: Workspace, paths: list[str], *, submodules: list[str] = ()) -> None:
    """Refuse when any of ``paths`` has a staged, unstaged or untracked change.

    ``submodules`` (gitlink paths) are checked in the index only: their checkouts are the
    user's and are never touched.
    """
    if paths:
        status = git(
            [
                "status",
                "--porcelain",
                "-z",
                "--untracked-files=all",
                "--ignore-submodules=all",
                "--",
                *paths,
            ],
            ws.root,
        )
        dirty = [r[3:].decode("utf-8", "replace") for r in status.split(b"\0") if len(r) > 3]
        if dirty:
            shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
            raise FlagScaleError(
                f"uncommitted changes where the refresh writes: {shown}",
                hint="commit or stash them first (the refresh commits there)",
            )
    for path in submodules:
        staged = git(["diff", "--cached", "--name-only", "HEAD", "--", path], ws.root).strip()
        if staged:
            raise FlagScaleError(
                f"{path}: a pin change is staged (git add {path})",
                hint=f"commit it or unstage it (`git restore --staged {path}`) first",
            )


def check_untouched(ws: Workspace, paths: list[str], commits: tuple[str, str]) -> None:
    """Refuse when a path's index entry or file matches neither commit's version of it.

    Between moving the branch and syncing its paths (or half way through the sync) each path
    holds the old or the new version; anything else is a person's edit, which must not be lost.
    """
    if not paths:
        return
    versions = [_entries(ws, ["ls-tree", "-r", "-z", commit, "--", *paths]) for commit in commits]
    index = _entries(ws, ["ls-files", "-s", "-z", "--", *paths])
    links = set().union(*(_gitlinks(ws, commit, paths) for commit in commits))
    edited = []
    for path in paths:
        allowed = {v.get(path) for v in versions}
        files = {e[1] if e else None for e in allowed}
        if index.get(path) not in allowed or (
            path not in links and _worktree_entry(ws, path) not in files
        ):
            edited.append(path)
    if edited:
        shown = ", ".join(edited[:3]) + (f" and {len(edited) - 3} more" if len(edited) > 3 else "")
        raise FlagScaleError(
            f"{shown} changed since the refresh wrote there: not overwriting",
            hint="commit or stash those changes, then run the command again",
        )


def _entries(ws: Workspace, args: list[str]) -> dict[str, tuple[str, str]]:
    return listed_entries(git(args, ws.root))


def _worktree_entry(ws: Workspace, path: str) -> str | None:
    """The blob id of the file at ``path`` as git would store it (None when it is absent)."""
    full = ws.root / path
    if full.is_symlink():
        target = os.fsencode(os.readlink(full))
        return git(["hash-object", "--stdin"], ws.root, stdin=target).decode().strip()
    if not full.is_file():
        return None
    return git(["hash-object", "--", path], ws.root).decode().strip()


def _gitlinks(ws: Workspace, commit: str, paths: list[str]) -> set[str]:
    if not paths:
        return set()
    raw = git(["ls-tree", "-z", "-r", commit, "--", *paths], ws.root)
    links = set()
    for record in filter(None, raw.split(b"\0")):
        meta, _, name = record.partition(b"\t")
        if meta.split()[0].decode() == GITLINK:
            links.add(name.decode("utf-8", "surrogateescape"))
    return links


def publish(ws: Workspace, old: str, new: str, paths: list[str], message: str) -> None:
    """Move ``HEAD``'s branch from ``old`` to ``new``, then sync ``paths``."""
    current = head_of(ws)
    if current == old:
        git(["update-ref", "-m", message, "HEAD", new, old], ws.root)
    elif current != new:
        raise FlagScaleError(
            f"HEAD moved while the refresh was publishing ({old[:12]} -> {current[:12]})",
            hint="run `inv refresh --abort` and start again",
        )
    crash_point("refresh:publish")
    sync_paths(ws, new, paths)


def unpublish(ws: Workspace, old: str, new: str, paths: list[str]) -> None:
    """The same move backwards (``--abort`` after publishing): ``HEAD`` back to ``old``."""
    current = head_of(ws)
    if current == new:
        git(["update-ref", "-m", "refresh: aborted", "HEAD", old, new], ws.root)
    elif current != old:
        raise FlagScaleError(
            f"HEAD is at {current[:12]}, neither before ({old[:12]}) nor after ({new[:12]}) the"
            " refresh: not moving it",
            hint="undo by hand with `git reset --keep " + old + "`",
        )
    sync_paths(ws, old, paths)


def sync_paths(ws: Workspace, commit: str, paths: list[str]) -> None:
    """Make the index and work tree hold ``commit``'s version of ``paths`` (and only those)."""
    if not paths:
        return
    links = _gitlinks(ws, commit, paths)
    half = len(paths) // 2
    for number, chunk in enumerate((paths[:half], paths[half:])):
        if number == 1:
            crash_point("refresh:sync")
        if not chunk:
            continue
        listing = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in chunk)
        git(
            ["reset", "-q", commit, "--pathspec-from-file=-", "--pathspec-file-nul"],
            ws.root,
            stdin=listing,
        )
        present = _present(ws, commit, chunk)
        files = [p for p in chunk if p in present and p not in links]
        if files:
            names = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in files)
            git(["checkout-index", "-f", "-q", "-z", "--stdin"], ws.root, stdin=names)
        for path in chunk:
            if path not in present:
                _remove(ws.root, path)


def _present(ws: Workspace, commit: str, paths: list[str]) -> set[str]:
    raw = git(["ls-tree", "-z", "-r", "--name-only", commit, "--", *paths], ws.root)
    return {name.decode("utf-8", "surrogateescape") for name in raw.split(b"\0") if name}


def _remove(root: Path, relative: str) -> None:
    path = root / relative
    if os.path.lexists(path) and not (path.is_dir() and not path.is_symlink()):
        path.unlink()
    parent = path.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
