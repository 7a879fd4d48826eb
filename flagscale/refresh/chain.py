"""The refresh's commits, made as objects in the user's repository before anything is published.

Each commit is the previous one's tree with some paths replaced: written through a throw-away
index (``GIT_INDEX_FILE``) and ``git commit-tree`` with the user's own identity, so they are
ordinary commits. Until ``flagscale.refresh.publish`` moves the branch onto them, only the
private ref ``refs/flagscale/refresh/work`` points at the newest (it keeps them from garbage
collection while a refresh waits for a person); ``--abort`` deletes it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.gitcli import git
from flagscale.refresh.state import refresh_dir
from flagscale.upstream.workspace import Workspace

__all__ = ["WORK_REF", "Put", "drop_work_ref", "make_commit", "paths_under", "write_blobs"]

WORK_REF = "refs/flagscale/refresh/work"
_CONTENT = ("-c", "core.autocrlf=false", "-c", "core.safecrlf=false")


@dataclass(frozen=True)
class Put:
    """A path's new entry: ``data`` (written as a blob) or an existing ``oid`` (a gitlink)."""

    mode: str
    data: bytes | None = None
    oid: str | None = None


def write_blobs(ws: Workspace, blobs: list[bytes]) -> list[str]:
    """Store ``blobs`` in the user's repository (one ``hash-object`` call); their ids."""
    if not blobs:
        return []
    folder = _scratch_folder(ws, "refresh-blobs-")
    try:
        paths = []
        for number, data in enumerate(blobs):
            path = folder / str(number)
            path.write_bytes(data)
            paths.append(str(path))
        listing = "".join(f"{p}\n" for p in paths).encode()
        output = git(["hash-object", "-w", "--no-filters", "--stdin-paths"], ws.root, stdin=listing)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return output.decode().split()


def paths_under(ws: Workspace, commit: str, folder: str) -> list[str]:
    """Every file under ``folder`` at ``commit``."""
    raw = git(["ls-tree", "-r", "-z", "--name-only", commit, "--", f"{folder}/"], ws.root)
    return [name.decode("utf-8", "surrogateescape") for name in raw.split(b"\0") if name]


def make_commit(
    ws: Workspace, parent: str, changes: dict[str, Put | None], message: str, *, keep: bool = True
) -> str:
    """A commit on ``parent`` whose tree has ``changes`` (None removes a path); its id.

    With ``keep`` the private ref is moved to it, so it survives garbage collection until
    published (``inv bisect-upstream`` makes throw-away commits without it).
    """
    puts = [
        (path, put) for path, put in changes.items() if put is not None and put.data is not None
    ]
    oids = dict(
        zip([p for p, _ in puts], write_blobs(ws, [put.data for _, put in puts]), strict=True)
    )
    lines = []
    for path, put in sorted(changes.items()):
        name = path.encode("utf-8", "surrogateescape")
        if put is None:
            lines.append(b"0 " + b"0" * 40 + b"\t" + name + b"\0")
        else:
            oid = oids.get(path) or put.oid
            lines.append(f"{put.mode} {oid}\t".encode() + name + b"\0")
    folder = _scratch_folder(ws, "refresh-index-")
    try:
        env = {"GIT_INDEX_FILE": str(folder / "index")}
        git(["read-tree", parent], ws.root, env=env)
        git(
            [*_CONTENT, "update-index", "-z", "--index-info"],
            ws.root,
            stdin=b"".join(lines),
            env=env,
        )
        tree = git(["write-tree"], ws.root, env=env).decode().strip()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    commit = (
        git(
            ["-c", "user.useConfigOnly=true", "commit-tree", tree, "-p", parent, "-F", "-"],
            ws.root,
            stdin=message.encode("utf-8"),
        )
        .decode()
        .strip()
    )
    if keep:
        git(["update-ref", WORK_REF, commit], ws.root)
    return commit


def drop_work_ref(ws: Workspace) -> None:
    """Forget the private ref (the commits are published, or the refresh is given up)."""
    git(["update-ref", "-d", WORK_REF], ws.root, check=False)


def _scratch_folder(ws: Workspace, prefix: str) -> Path:
    folder = refresh_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
