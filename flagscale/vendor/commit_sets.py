"""Writing vendor patch sets into ``hardware/`` and committing them, all or nothing.

Each set is written to a hidden ``.<backend>.new-*`` folder beside its target and swapped in;
the previous set waits in ``.<backend>.old-*`` until the commit is made. A failure puts the
previous sets back; a run killed half way is finished by the next (``recover_interrupted``).
Only the sets' paths are committed (``git commit --only``): the user's staged changes stay staged.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import GitError, git, git_text
from flagscale.upstream.workspace import Workspace
from flagscale.vendor.patchset import HARDWARE

__all__ = ["check_filters", "recover_interrupted", "write_and_commit"]


_NEW, _OLD = ".new-", ".old-"


def recover_interrupted(ws: Workspace, folder: Path) -> None:
    """Finish what a killed run left in ``hardware/<device>/`` (see ``_swap_in``).

    A ``.<backend>.new-*`` folder was never swapped in: dropped. A ``.<backend>.old-*`` folder
    holds the previous set (empty: there was none): if the new set was committed it is dropped,
    otherwise the previous set is put back and the new one unstaged.
    """
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith(".") and _NEW in name:
            shutil.rmtree(entry, ignore_errors=True)
        elif name.startswith(".") and _OLD in name:
            target = folder / name[1:].split(_OLD)[0]
            relative = target.relative_to(ws.root).as_posix()
            if target.exists() and not _status(ws, relative):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                git(["reset", "-q", "--", relative], ws.root, check=False)
                _swap_back(entry, target)


def _status(ws: Workspace, relative: str) -> bytes:
    return git(["status", "--porcelain", "-z", "--untracked-files=all", "--", relative], ws.root)


def _stage_folder(folder: Path, backend: str, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{backend}{_NEW}{secrets.token_hex(4)}"
    staged.mkdir()
    for name, data in sorted(files.items()):
        (staged / name).write_bytes(data)
    return staged


def _swap_in(staged: Path, target: Path) -> Path:
    """Move ``staged`` to ``target``, keeping the previous set beside it until committed."""
    old = target.parent / f".{target.name}{_OLD}{secrets.token_hex(4)}"
    if target.exists():
        os.rename(target, old)
    else:
        old.mkdir()  # an empty old folder: there was no previous set
    os.rename(staged, target)
    return old


def _swap_back(old: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    if any(old.iterdir()):
        os.rename(old, target)
    else:
        old.rmdir()


_CONTENT = ("-c", "core.autocrlf=false", "-c", "core.safecrlf=false")


def check_filters(ws: Workspace, written: dict[str, bytes]) -> None:
    """Refuse before writing when a git filter (eol, clean) would change a set file's bytes."""
    for path, data in written.items():
        raw = git(["hash-object", "--no-filters", "--stdin"], ws.root, stdin=data)
        filtered = git([*_CONTENT, "hash-object", "--path", path, "--stdin"], ws.root, stdin=data)
        if raw != filtered:
            raise FlagScaleError(
                f"git would change the bytes of {path} when committing (an eol or filter"
                " attribute applies to it)",
                hint=f"add `{HARDWARE}/** -text -filter` to .gitattributes and run inv patch again",
            )


def _commit(ws: Workspace, paths: list[str], message: str) -> bool:
    """Commit exactly ``paths``; other staged changes stay staged. False when nothing changed."""
    git([*_CONTENT, "add", "-A", "--", *paths], ws.root)
    if not git(["diff", "--cached", "--name-only", "HEAD", "--", *paths], ws.root).strip():
        return False
    git(
        [
            *_CONTENT,
            "-c",
            "user.useConfigOnly=true",
            "commit",
            "--no-verify",
            "-q",
            "--only",
            "-m",
            message,
            "--",
            *paths,
        ],
        ws.root,
    )
    return True


def write_and_commit(ws: Workspace, sets: dict[str, dict[str, bytes]], message: str) -> bool:
    """Swap the new sets in and commit them; on any failure put the previous sets back."""
    staged: list[tuple[Path, Path]] = []
    try:
        for folder, files in sets.items():
            target = ws.path(folder)
            staged.append((_stage_folder(target.parent, target.name, files), target))
    except BaseException:
        for temporary, _target in staged:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    head = git_text(["rev-parse", "HEAD"], ws.root)
    swapped: list[tuple[Path, Path]] = []
    try:
        for temporary, target in staged:
            swapped.append((_swap_in(temporary, target), target))
        committed = _commit(ws, list(sets), message)
    except BaseException as exc:
        if git_text(["rev-parse", "HEAD"], ws.root) != head:
            raise
        git(["reset", "-q", "--", *sets], ws.root, check=False)
        for old, target in reversed(swapped):
            _swap_back(old, target)
        for temporary, _target in staged[len(swapped) :]:
            shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(exc, GitError):
            raise FlagScaleError(
                f"could not commit the patch sets: {exc}",
                hint="the previous sets are back in place; fix that and run inv patch again",
            ) from exc
        raise
    for old, _target in swapped:
        shutil.rmtree(old, ignore_errors=True)
    return committed
