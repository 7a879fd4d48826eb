"""Commits made without touching the work tree, and moving the branch to them safely.

A commit is built in a temporary index from its parent's tree and a list of changes, with blobs
written into the workspace repository first; nothing is checked out while it is made. The
branch then moves with ``move_branch``: the files that differ are updated by
``git read-tree -m -u`` (which refuses to overwrite a user's changes), then the ref, guarded by
its old value. A record of the move in the state folder lets a rerun after ``kill -9`` finish
the move whatever point it had reached: files half written by the killed run hold exactly the
old or the new commit's bytes, and those are put back before ``read-tree`` runs again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.atomic import write_atomically
from flagscale.core.crashpoints import crash_point
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import GitError, git, git_ok, git_text
from flagscale.core.gitlisting import listed_entries
from flagscale.upstream.workspace import Workspace

__all__ = ["Change", "Commit", "finish_move", "make_commit", "move_branch", "write_blobs"]


@dataclass(frozen=True)
class Change:
    """A file to put at a path (mode, blob id), or None to remove the path (a file or folder)."""

    mode: str
    oid: str


@dataclass(frozen=True)
class Commit:
    id: str
    tree: str


def write_blobs(ws: Workspace, contents: list[bytes]) -> list[str]:
    """Write ``contents`` as blobs into the workspace repository; their ids in order."""
    if not contents:
        return []
    folder = Path(tempfile.mkdtemp(prefix="blobs-", dir=ws.state_dir))
    try:
        paths = []
        for index, data in enumerate(contents):
            path = folder / f"{index}"
            path.write_bytes(data)
            paths.append(str(path))
        listing = "".join(f"{p}\n" for p in paths).encode()
        command = ["hash-object", "-w", "--no-filters", "--stdin-paths"]
        return git(command, ws.root, stdin=listing).decode().split()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def make_commit(
    ws: Workspace,
    parent: str,
    changes: Mapping[str, Change | None],
    message: str,
    *,
    date: str | None = None,
) -> Commit:
    """A new commit on ``parent``: its tree with ``changes`` (path → Change, or None to remove
    the path and everything under it), dated ``date`` (git's raw ``<seconds> <zone>``) when given,
    so that the same inputs give the same commit. The work tree, the index and the branch stay
    as they were."""
    folder = Path(tempfile.mkdtemp(prefix="commit-", dir=ws.state_dir))
    env = {"GIT_INDEX_FILE": str(folder / "index")}
    try:
        git(["read-tree", parent], ws.root, env=env)
        removed = [path for path, change in changes.items() if change is None]
        if removed:
            listed = git(["ls-files", "-z", "--", *removed], ws.root, env=env)
            paths = [p for p in listed.split(b"\0") if p]
            if paths:
                payload = b"".join(p + b"\0" for p in paths)
                update = ["update-index", "-z", "--force-remove", "--stdin"]
                git(update, ws.root, stdin=payload, env=env)
        added = b"".join(
            f"{change.mode} {change.oid}\t".encode()
            + path.encode("utf-8", "surrogateescape")
            + b"\0"
            for path, change in sorted(changes.items())
            if change is not None
        )
        if added:
            git(["update-index", "-z", "--add", "--index-info"], ws.root, stdin=added, env=env)
        tree = git(["write-tree"], ws.root, env=env).decode().strip()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    dates = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else None
    command = ["commit-tree", tree, "-p", parent, "-m", message]
    commit = git(command, ws.root, env=dates).decode().strip()
    return Commit(commit, tree)


def _move_record(ws: Workspace) -> Path:
    return ws.state_dir / "import" / "move.json"


def move_branch(ws: Workspace, old: str, new: str) -> None:
    """Move HEAD's branch from ``old`` to ``new``, the index and work tree following."""
    record = _move_record(ws)
    write_atomically(record, json.dumps({"from": old, "to": new}).encode())
    finish_move(ws)


def finish_move(ws: Workspace) -> None:
    """Complete a recorded branch move (after a kill, or right away); no record: nothing to do."""
    record = _move_record(ws)
    if not record.is_file():
        return
    move = json.loads(record.read_text(encoding="utf-8"))
    old, new = move["from"], move["to"]
    head = git_text(["rev-parse", "HEAD"], ws.root)
    if head == old:
        if not _index_holds(ws, new):
            _restore_half_written(ws, old, new)
            crash_point("import:move:before-read-tree")
            _read_tree(ws, old, new)
        crash_point("import:move:before-ref")
        git(["update-ref", "-m", "import-flagscale", "HEAD", new, old], ws.root)
    elif head != new:
        raise FlagScaleError(
            f"the branch moved to {head[:12]} while the import was moving it from {old[:12]}"
            f" to {new[:12]}",
            hint=f"check out {old[:12]} again and rerun, or remove {record} to give up",
        )
    record.unlink()


def _index_holds(ws: Workspace, tree_of: str) -> bool:
    return git_ok(
        ["diff-index", "--cached", "--quiet", "--ignore-submodules=none", tree_of], ws.root
    )


def _changed_paths(ws: Workspace, old: str, new: str) -> list[str]:
    raw = git(["diff-tree", "-r", "-z", "--name-only", "--no-renames", old, new], ws.root)
    return [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0") if p]


def _restore_half_written(ws: Workspace, old: str, new: str) -> None:
    """Files a killed ``read-tree`` already wrote hold ``new``'s bytes: put ``old``'s back (or
    remove a file ``old`` lacks) so that ``read-tree`` finds a clean tree. A file holding other
    bytes is a user's change: left alone, and ``read-tree`` refuses to overwrite it."""
    changed = _changed_paths(ws, old, new)
    before, after = _blobs_at(ws, old, changed), _blobs_at(ws, new, changed)
    present = [p for p in changed if ws.path(p).is_file() and not ws.path(p).is_symlink()]
    listing = "".join(f"{p}\n" for p in present).encode("utf-8", "surrogateescape")
    command = ["hash-object", "--no-filters", "--stdin-paths"]
    hashes = git(command, ws.root, stdin=listing).decode().split() if present else []
    on_disk = dict(zip(present, hashes, strict=True))
    restore, remove = [], []
    for path in changed:
        written = on_disk.get(path)
        if written is None or written != after.get(path) or written == before.get(path):
            continue
        (restore if path in before else remove).append(path)
    if restore:
        git(["checkout", old, "--", *restore], ws.root)
    for path in remove:
        ws.path(path).unlink()


def _blobs_at(ws: Workspace, commit: str, paths: list[str]) -> dict[str, str]:
    """path → blob id at ``commit`` (regular files only)."""
    if not paths:
        return {}
    raw = git(["ls-tree", "-r", "-z", commit, "--", *paths], ws.root)
    listed = listed_entries(raw)
    return {path: oid for path, (mode, oid) in listed.items() if mode in ("100644", "100755")}


def _read_tree(ws: Workspace, old: str, new: str) -> None:
    try:
        git(["read-tree", "-m", "-u", old, new], ws.root)
    except GitError as exc:
        raise FlagScaleError(
            f"cannot update the work tree to the import's commit {new[:12]}: {exc}",
            hint="commit or stash your changes to the files named, then run the import again",
        ) from None
