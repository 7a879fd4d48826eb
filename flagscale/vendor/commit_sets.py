"""Writing vendor patch sets into ``hardware/`` and committing them, all or nothing.

Each set is written to a hidden ``.<backend>.new-*`` folder beside its target and swapped in;
the previous set waits in ``.<backend>.old-*`` until the commit is made. A failure puts the
previous sets back; a run killed half way is finished or undone by the next (``recover``).

The user's index is never changed before the commit exists. The commit is made from private
index files in ``<git-dir>/flagscale/``: one holds ``HEAD`` plus the sets (its tree is the
commit's), the other the user's index plus the sets (the index to install). The second is
hard-linked to git's own lock, ``index.lock``, exactly as a git command takes the index (a
running git command makes that fail, and nothing has changed); ``HEAD`` moves by one
compare-and-swap ``git update-ref``; then ``index.lock`` is renamed over the index, as git
does. So the user's other staged changes stay staged, and on any failure before ``HEAD`` moved,
index, branch and work tree are exactly as they were.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.errors import FlagScaleError, writing
from flagscale.core.gitcli import GitError, git, git_text
from flagscale.core.pause import pause_point
from flagscale.upstream.workspace import Workspace
from flagscale.vendor.patchset import HARDWARE

__all__ = ["check_filters", "recover", "recover_interrupted", "write_and_commit"]


_NEW, _OLD = ".new-", ".old-"
_PREPARED = "index.new-"  # the index to install, before its commit exists
_FOR = "index.for-"  # the same file once its commit exists: index.for-<commit>
_TREE = "index.tree-"  # HEAD plus the sets: the commit's tree


def recover(ws: Workspace) -> None:
    """Finish or undo what a killed ``inv patch --device-type`` left (call under the
    repository lock): git's index first, then every device folder under ``hardware/``."""
    recover_index(ws)
    hardware = ws.path(HARDWARE)
    if hardware.is_dir():
        for folder in sorted(p for p in hardware.iterdir() if p.is_dir() and not p.is_symlink()):
            recover_interrupted(ws, folder)


def recover_index(ws: Workspace) -> None:
    """A run killed while holding git's ``index.lock``: install its index when its commit is
    ``HEAD`` (killed between the two steps), else drop the lock; drop every private index."""
    folder = ws.state_dir
    if not folder.is_dir():
        return
    lock = _lock_of(_index_path(ws))
    head = git_text(["rev-parse", "-q", "--verify", "HEAD"], ws.root)
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((_PREPARED, _FOR)) and _same_file(entry, lock):
            if entry.name == f"{_FOR}{head}":
                os.rename(lock, _index_path(ws))
            else:
                lock.unlink()
        if entry.name.startswith((_PREPARED, _FOR, _TREE)):
            entry.unlink(missing_ok=True)


def recover_interrupted(ws: Workspace, folder: Path) -> None:
    """Finish what a killed run left in ``hardware/<device>/`` (see ``_swap_in``).

    A ``.<backend>.new-*`` folder was never swapped in: dropped. A ``.<backend>.old-*`` folder
    holds the previous set (empty: there was none): if the new set was committed it is dropped,
    otherwise the previous set is put back. The index was never changed for an uncommitted set.
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
                _swap_back(entry, target)


def _status(ws: Workspace, relative: str) -> bytes:
    return git(["status", "--porcelain", "-z", "--untracked-files=all", "--", relative], ws.root)


def _stage_folder(folder: Path, backend: str, files: dict[str, bytes]) -> Path:
    with writing(folder / backend):
        folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{backend}{_NEW}{secrets.token_hex(4)}"
    try:
        staged.mkdir()
        for name, data in sorted(files.items()):
            with writing(folder / backend / name):
                (staged / name).write_bytes(data)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
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
        with contextlib.suppress(OSError):  # the device folder, when this run made it
            target.parent.rmdir()


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


# --- the commit ---------------------------------------------------------------------------------


def _index_path(ws: Workspace) -> Path:
    """The work tree's index file (``git rev-parse --git-path index``: per worktree)."""
    return ws.root / git_text(["rev-parse", "--git-path", "index"], ws.root)


def _lock_of(index: Path) -> Path:
    return index.with_name(index.name + ".lock")


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _add(ws: Workspace, index: Path, paths: list[str]) -> None:
    git([*_CONTENT, "add", "-A", "--", *paths], ws.root, env={"GIT_INDEX_FILE": str(index)})


@dataclass
class _HeldIndex:
    """Git's ``index.lock``, taken by a hard link to the index that will replace the index."""

    ws: Workspace
    index: Path
    lock: Path
    prepared: Path

    def rename_prepared(self, name: str) -> None:
        named = self.prepared.with_name(name)
        os.rename(self.prepared, named)
        self.prepared = named

    def release(self) -> None:
        """Give the lock back unused: the index stays as it was."""
        if _same_file(self.prepared, self.lock):
            self.lock.unlink()
        self.prepared.unlink(missing_ok=True)

    def install(self) -> None:
        """Make the prepared index the index (git's own last step)."""
        os.rename(self.lock, self.index)
        self.prepared.unlink(missing_ok=True)


def _take_index(ws: Workspace, paths: list[str]) -> _HeldIndex:
    """Prepare the user's index plus ``paths`` and take git's index lock with it."""
    folder = ws.state_dir
    folder.mkdir(parents=True, exist_ok=True)
    index = _index_path(ws)
    prepared = folder / f"{_PREPARED}{os.getpid()}"
    before = _read(index)
    if before is None:
        git(["read-tree", "HEAD"], ws.root, env={"GIT_INDEX_FILE": str(prepared)})
    else:
        prepared.write_bytes(before)
    try:
        _add(ws, prepared, paths)
        held = _HeldIndex(ws, index, _lock_of(index), prepared)
        try:
            os.link(prepared, held.lock)
        except FileExistsError:
            raise FlagScaleError(
                f"git's index is locked: {held.lock} exists (another git command is running in"
                f" {ws.root}, or one was killed)",
                hint=f"wait for it to finish; if no git command is running, remove {held.lock}."
                " Nothing was changed",
            ) from None
    except BaseException:
        prepared.unlink(missing_ok=True)
        raise
    if _read(index) != before:
        held.release()
        raise FlagScaleError(
            f"git's index in {ws.root} changed while the patch sets were being committed",
            hint="nothing was changed; run inv patch again",
        )
    return held


def _tree_with(ws: Workspace, head: str, paths: list[str]) -> str:
    """The tree of ``head`` with ``paths`` as they are in the work tree."""
    scratch = ws.state_dir / f"{_TREE}{os.getpid()}"
    env = {"GIT_INDEX_FILE": str(scratch)}
    try:
        git(["read-tree", head], ws.root, env=env)
        _add(ws, scratch, paths)
        return git_text(["write-tree"], ws.root, env=env)
    finally:
        scratch.unlink(missing_ok=True)


def _signing(ws: Workspace) -> list[str]:
    """``-S`` where the user has git sign commits (``commit-tree`` does not read the setting)."""
    value = git(["config", "--type=bool", "commit.gpgSign"], ws.root, check=False).strip()
    return ["-S"] if value == b"true" else []


def _commit_held(ws: Workspace, held: _HeldIndex, paths: list[str], message: str) -> bool:
    """Commit ``paths`` onto ``HEAD`` while holding the index; False when nothing changed."""
    head = git_text(["rev-parse", "--verify", "HEAD^{commit}"], ws.root)
    tree = _tree_with(ws, head, paths)
    if tree == git_text(["rev-parse", f"{head}^{{tree}}"], ws.root):
        return False
    text = git(["stripspace"], ws.root, stdin=message.encode("utf-8"))
    commit = git_text(
        ["-c", "user.useConfigOnly=true", "commit-tree", *_signing(ws), tree, "-p", head],
        ws.root,
        stdin=text,
    )
    held.rename_prepared(f"{_FOR}{commit}")
    pause_point("patch-sets:commit-made")
    subject = text.decode("utf-8", "replace").split("\n", 1)[0]
    git(["update-ref", "-m", f"commit: {subject}", "HEAD", commit, head], ws.root)
    return True


def write_and_commit(ws: Workspace, sets: dict[str, dict[str, bytes]], message: str) -> bool:
    """Swap the new sets in and commit them; on any failure put everything back as it was."""
    staged: list[tuple[Path, Path]] = []
    try:
        for folder, files in sets.items():
            target = ws.path(folder)
            staged.append((_stage_folder(target.parent, target.name, files), target))
    except BaseException:
        for temporary, _target in staged:
            shutil.rmtree(temporary, ignore_errors=True)
        for folder in sets:
            with contextlib.suppress(OSError):  # a device folder this run made, left empty
                ws.path(folder).parent.rmdir()
        raise
    paths = list(sets)
    swapped: list[tuple[Path, Path]] = []
    held: _HeldIndex | None = None
    try:
        for temporary, target in staged:
            swapped.append((_swap_in(temporary, target), target))
        pause_point("patch-sets:swapped")
        held = _take_index(ws, paths)
        pause_point("patch-sets:index-locked")
        committed = _commit_held(ws, held, paths, message)
    except BaseException as exc:
        if held is not None:
            held.release()
        for old, target in reversed(swapped):
            _swap_back(old, target)
        for temporary, _target in staged[len(swapped) :]:
            shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(exc, GitError):
            raise FlagScaleError(
                f"could not commit the patch sets: {exc}",
                hint="nothing was changed: the previous sets, git's index and the branch are as"
                " they were; fix that and run inv patch again",
            ) from exc
        raise
    # HEAD holds the sets (or nothing changed): from here on only renames and removals
    pause_point("patch-sets:head-moved")
    if committed:
        held.install()
    else:
        held.release()
    for old, _target in swapped:
        shutil.rmtree(old, ignore_errors=True)
    return committed
