"""The scratch checkout where a person settles a refresh's conflicts, in place, the git way.

A stopped refresh writes the tree it could not finish into a folder (``build/refresh`` unless
``--checkout`` names another) as a small git repository of its own:

* ``HEAD`` is the new tree the change is carried onto (new pin + base layer, or FlagScale's
  files), so ``git diff HEAD`` shows everything the refresh carries;
* the index holds the cleanly carried files, and each conflict as git records one (base, the
  new side, the carried side: ``git checkout --theirs`` works);
* the work tree holds the cleanly carried files and each conflict with diff3 markers (text) or
  the new side's version (binary files, deletions).

The person edits, marks each file settled with ``git add`` (or ``git rm``), and runs
``inv refresh --continue``, which reads the folder back as a tree (``read_checkout``). Its
objects live in the tool's scratch repository (the checkout borrows them as alternates), so the
folder holds only what the person adds. The folder is written beside its place and renamed in.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.crashpoints import crash_point
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git
from flagscale.refresh.carry import Conflict
from flagscale.refresh.merge3 import Labels, has_markers
from flagscale.refresh.objects import Objects

__all__ = [
    "MARK",
    "ConflictCheckout",
    "is_ours",
    "read_checkout",
    "remove_checkout",
    "write_checkout",
]

MARK = "flagscale-refresh.json"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "FlagScale refresh",
    "GIT_AUTHOR_EMAIL": "refresh@flagscale.invalid",
    "GIT_COMMITTER_NAME": "FlagScale refresh",
    "GIT_COMMITTER_EMAIL": "refresh@flagscale.invalid",
    "GIT_AUTHOR_DATE": "@0 +0000",
    "GIT_COMMITTER_DATE": "@0 +0000",
}
_PLAIN = ("-c", "core.autocrlf=false", "-c", "core.safecrlf=false", "-c", "core.symlinks=true")


@dataclass(frozen=True)
class ConflictCheckout:
    """What is needed to read a checkout back: where, its new tree, the conflicts' paths."""

    folder: Path
    stage: str
    base_tree: str
    conflicted: tuple[str, ...]
    text: tuple[str, ...]
    labels: Labels


def is_ours(folder: Path) -> bool:
    """True when ``folder`` is a scratch checkout a refresh wrote."""
    return (folder / ".git" / MARK).is_file()


def write_checkout(
    objects: Objects,
    folder: Path,
    *,
    stage: str,
    title: str,
    base_tree: str,
    carried_tree: str,
    conflicts: list[Conflict],
) -> None:
    """Write the checkout of a stopped stage (see the module doc); refuse a folder not ours."""
    if folder.exists() and not is_ours(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise FlagScaleError(
            f"{folder} exists and was not made by inv refresh: not writing the conflicts there",
            hint="move it away, or start the refresh with --checkout <another folder>",
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.refresh-new-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        _fill(objects, temporary, stage, title, base_tree, carried_tree, conflicts)
        crash_point("refresh:checkout")
        if folder.exists():
            shutil.rmtree(folder)  # an earlier stage's checkout, already read back
        os.rename(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _fill(
    objects: Objects,
    folder: Path,
    stage: str,
    title: str,
    base_tree: str,
    carried_tree: str,
    conflicts: list[Conflict],
) -> None:
    folder.mkdir(parents=True)
    git(["-c", "init.defaultBranch=refresh", "init", "-q", "."], folder)
    alternates = folder / ".git" / "objects" / "info" / "alternates"
    alternates.write_text(str(objects.repo / "objects") + "\n", encoding="utf-8")
    commit = git(["commit-tree", base_tree, "-m", title], folder, env=_IDENTITY).decode().strip()
    git(["update-ref", "HEAD", commit], folder)
    git(["read-tree", carried_tree], folder)
    if conflicts:
        git(["update-index", "-z", "--index-info"], folder, stdin=_unmerged(conflicts))
    git([*_PLAIN, "checkout-index", "-a", "-f"], folder)
    for conflict in conflicts:
        _write_worktree(objects, folder, conflict)
    mark = {"stage": stage, "title": title}
    (folder / ".git" / MARK).write_text(json.dumps(mark) + "\n", encoding="utf-8")


def _unmerged(conflicts: list[Conflict]) -> bytes:
    lines = []
    for conflict in conflicts:
        name = conflict.path.encode("utf-8", "surrogateescape")
        lines.append(b"0 " + b"0" * 40 + b"\t" + name + b"\0")
        for stage, entry in ((1, conflict.base), (2, conflict.ours), (3, conflict.theirs)):
            if entry is not None:
                lines.append(f"{entry.mode} {entry.oid} {stage}\t".encode() + name + b"\0")
    return b"".join(lines)


def _write_worktree(objects: Objects, folder: Path, conflict: Conflict) -> None:
    entry = conflict.worktree
    path = folder / conflict.path
    if entry is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    data = objects.read(entry.oid)
    if entry.mode == "120000":
        os.symlink(os.fsdecode(data), path)
        return
    path.write_bytes(data)
    path.chmod(0o755 if entry.mode == "100755" else 0o644)


def read_checkout(objects: Objects, checkout: ConflictCheckout) -> str:
    """The settled checkout as a tree (in the scratch repository); refuse one left unsettled."""
    folder = checkout.folder
    if not is_ours(folder):
        raise FlagScaleError(
            f"{folder} is not the refresh's checkout any more (it was moved or deleted)",
            hint="run `inv refresh --abort` and start the refresh again",
        )
    unmerged = git(["ls-files", "-u", "-z"], folder).split(b"\0")
    open_paths = sorted(
        {r.partition(b"\t")[2].decode("utf-8", "surrogateescape") for r in unmerged if r}
    )
    if open_paths:
        shown = ", ".join(open_paths[:5]) + (" ..." if len(open_paths) > 5 else "")
        raise FlagScaleError(
            f"{len(open_paths)} conflict(s) in {folder} are not marked settled: {shown}",
            hint=f"edit each, then `git -C {folder} add <path>` (or `git -C {folder} rm <path>`"
            " to drop it), and run `inv refresh --continue`",
        )
    for relative in checkout.text:
        path = folder / relative
        if path.is_file() and not path.is_symlink():
            line = has_markers(path.read_bytes(), checkout.labels)
            if line:
                raise FlagScaleError(
                    f"{path}:{line}: a conflict marker is still there",
                    hint="settle the conflict in the file, then run `inv refresh --continue`",
                )
    return _tree_of(objects, folder, checkout.base_tree)


def _tree_of(objects: Objects, folder: Path, base_tree: str) -> str:
    """``git add -A`` of the folder, every blob hashed into the scratch repository.

    The index starts from the checkout's new tree without stat data, so each file is hashed
    again here: what the person staged in the checkout's own object folder is copied over.
    """
    with objects.index() as index:
        env = {
            "GIT_INDEX_FILE": str(index),
            "GIT_OBJECT_DIRECTORY": str(objects.repo / "objects"),
        }
        git(["read-tree", base_tree], folder, env=env)
        git([*_PLAIN, "add", "-A", "--", "."], folder, env=env)
        return git(["write-tree"], folder, env=env).decode().strip()


def remove_checkout(folder: Path) -> bool:
    """Remove a scratch checkout this tool wrote (and a half-written sibling); True if removed."""
    removed = False
    for leftover in (
        folder.parent.glob(f".{folder.name}.refresh-new-*") if folder.parent.is_dir() else []
    ):
        shutil.rmtree(leftover, ignore_errors=True)
        removed = True
    if is_ours(folder):
        shutil.rmtree(folder)
        removed = True
    return removed
