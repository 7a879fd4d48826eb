"""What is in an upstream checkout: its pin's tree, each path's actual state, and the laid index.

A path's state is a pair ``(kind, value)``: ``("file", oid)``, ``("exec", oid)``,
``("link", target)`` or ``("deleted", "")``; ``None`` means "as at the pin". Blob ids are
computed from the raw bytes (no filters), so states compare byte for byte.

The laid index is a git index file private to the tool (``GIT_INDEX_FILE``) that holds the tree
as unpatch laid it: pin entries plus layer entries. Git's own stat cache then finds every path
that differs from what was laid in one ``git ls-files`` scan; the user's index is never touched.
"""

from __future__ import annotations

import bisect
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.core.gitcli import git, git_text
from flagscale.core.gitlisting import listed_entries
from flagscale.overlay.layer_files import file_oid, link_oid

__all__ = [
    "DELETED",
    "LaidIndex",
    "PinTree",
    "State",
    "actual_state",
    "git_dir",
    "read_head",
    "state_to_index_line",
]

State = tuple[str, str]
DELETED: State = ("deleted", "")
_KIND_MODES = {"file": "100644", "exec": "100755", "link": "120000"}
_GITLINK = "160000"


@dataclass
class PinTree:
    """The files of a pin: path → (mode, blob id), read with one ``git ls-tree``."""

    commit: str
    entries: dict[str, tuple[str, str]]
    _folders: set[str] | None = field(default=None, repr=False)
    _sorted: list[str] | None = field(default=None, repr=False)

    @classmethod
    def read(cls, checkout: Path, commit: str) -> PinTree:
        raw = git(["ls-tree", "-r", "-z", "--full-tree", commit], checkout)
        return cls(commit, listed_entries(raw))

    @property
    def folders(self) -> set[str]:
        """Every folder that holds a file of the pin."""
        if self._folders is None:
            folders: set[str] = set()
            for path in self.entries:
                parent = os.path.dirname(path)
                while parent and parent not in folders:
                    folders.add(parent)
                    parent = os.path.dirname(parent)
            self._folders = folders
        return self._folders

    def files_under(self, folder: str) -> list[str]:
        """The pin's files inside ``folder``."""
        if self._sorted is None:
            self._sorted = sorted(self.entries)
        prefix = folder + "/"
        start = bisect.bisect_left(self._sorted, prefix)
        found = []
        for path in self._sorted[start:]:
            if not path.startswith(prefix):
                break
            if self.has_file(path):
                found.append(path)
        return found

    def has_file(self, path: str) -> bool:
        """True when the pin holds a file or symlink (not a submodule) at ``path``."""
        entry = self.entries.get(path)
        return entry is not None and entry[0] != _GITLINK

    def is_gitlink(self, path: str) -> bool:
        entry = self.entries.get(path)
        return entry is not None and entry[0] == _GITLINK

    def matches(self, path: str, state: State | None) -> bool:
        """True when ``state`` (None or DELETED meaning "no file") is what the pin has."""
        entry = self.entries.get(path)
        if state is None or state == DELETED:
            return entry is None
        if entry is None:
            return False
        mode, oid = entry
        kind, value = state
        if kind == "link":
            return mode == "120000" and oid == link_oid(value)
        return mode == _KIND_MODES[kind] and oid == value

    def normalize(self, path: str, state: State | None) -> State | None:
        """``state`` as a layer sees it: None when it equals the pin, DELETED for a removed file."""
        if self.matches(path, state):
            return None
        return DELETED if state is None else state


def actual_state(root: Path, relative: str, parents: dict[str, bool] | None = None) -> State | None:
    """The state of ``root/relative`` on disk; None when there is no file or symlink there.

    A path below a symlink or a file does not exist, as git sees it. ``parents`` caches folder
    checks across calls.
    """
    if not _parents_are_folders(root, relative, {} if parents is None else parents):
        return None
    path = root / relative
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(info.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISREG(info.st_mode):
        return ("exec" if info.st_mode & stat.S_IXUSR else "file", file_oid(path))
    return None


def _parents_are_folders(root: Path, relative: str, cache: dict[str, bool]) -> bool:
    parent = os.path.dirname(relative)
    chain: list[str] = []
    while parent and parent not in cache:
        chain.append(parent)
        parent = os.path.dirname(parent)
    ok = cache.get(parent, True) if parent else True
    for folder in reversed(chain):
        if ok:
            try:
                ok = stat.S_ISDIR(os.lstat(root / folder).st_mode)
            except OSError:
                ok = False
        cache[folder] = ok
    return ok


def state_to_index_line(path: str, state: State | None, pin: PinTree) -> bytes:
    """One ``git update-index --index-info`` line that sets ``path`` to ``state``."""
    name = path.encode("utf-8", "surrogateescape")
    if state is None:
        entry = pin.entries.get(path)
        if entry is None:
            return b"0 " + b"0" * 40 + b"\t" + name + b"\0"
        return f"{entry[0]} {entry[1]}".encode() + b"\t" + name + b"\0"
    kind, value = state
    if kind == "deleted":
        return b"0 " + b"0" * 40 + b"\t" + name + b"\0"
    oid = link_oid(value) if kind == "link" else value
    return f"{_KIND_MODES[kind]} {oid}".encode() + b"\t" + name + b"\0"


def git_dir(checkout: Path) -> Path:
    """The git folder of a checkout (``.git`` itself, or where a ``.git`` file points)."""
    dot_git = checkout / ".git"
    if dot_git.is_file():
        text = dot_git.read_text(encoding="utf-8").strip()
        if text.startswith("gitdir:"):
            return (checkout / text[len("gitdir:") :].strip()).resolve()
    return dot_git


def read_head(checkout: Path) -> str:
    """The commit the checkout's HEAD points at, read from files when it can be (no process)."""
    folder = git_dir(checkout)
    try:
        text = (folder / "HEAD").read_text(encoding="utf-8").strip()
        if text.startswith("ref: "):
            text = (folder / text[5:]).read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if _is_sha1(text):
        return text
    return git_text(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], checkout, check=False)


def _is_sha1(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


class LaidIndex:
    """The tool's private git index for one checkout: the tree as it was laid."""

    def __init__(self, checkout: Path, path: Path) -> None:
        self.checkout = checkout
        self.path = path

    def _git(self, args: list[str], stdin: bytes | None = None, check: bool = True) -> bytes:
        return git(
            args, self.checkout, stdin=stdin, env={"GIT_INDEX_FILE": str(self.path)}, check=check
        )

    def exists(self) -> bool:
        return self.path.is_file()

    def clear_stale_lock(self, others: tuple[Path, ...] = (), wait: float = 5.0) -> None:
        """Remove git's locks on this index and ``others`` left by a killed run's git (the
        caller holds the tool's own lock, so no run of the tool is using them).

        A git orphaned by ``kill -9`` of its parent may still be finishing: give it a moment.
        """
        locks = [Path(f"{index}.lock") for index in (self.path, *others)]
        deadline = time.monotonic() + wait
        while any(lock.exists() for lock in locks) and time.monotonic() < deadline:
            time.sleep(0.05)
        for lock in locks:
            lock.unlink(missing_ok=True)

    def rebuild(self, pin: PinTree, laid: dict[str, State]) -> None:
        """Make the index hold ``pin`` plus ``laid``, reusing the user's stat cache when it can."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".new")
        user_index = git_dir(self.checkout) / "index"
        env = {"GIT_INDEX_FILE": str(temp)}
        if user_index.is_file():
            shutil.copyfile(user_index, temp)
            git(["read-tree", "-m", pin.commit], self.checkout, env=env)
        else:
            temp.unlink(missing_ok=True)
            git(["read-tree", pin.commit], self.checkout, env=env)
        if laid:
            lines = b"".join(state_to_index_line(p, s, pin) for p, s in sorted(laid.items()))
            git(["update-index", "-z", "--index-info"], self.checkout, stdin=lines, env=env)
        git(["update-index", "-q", "--refresh"], self.checkout, env=env, check=False)
        os.replace(temp, self.path)

    def changed_paths(self) -> list[str]:
        """Paths whose file differs from the laid index, plus untracked files not ignored."""
        raw = self._git(["ls-files", "-z", "-m", "-d", "-o", "--exclude-standard"])
        names = {
            item.decode("utf-8", "surrogateescape").rstrip("/") for item in raw.split(b"\0") if item
        }
        return sorted(names)

    def restore(self, commit: str, paths: list[str]) -> None:
        """Write ``paths`` from ``commit`` into the work tree and the laid index."""
        if not paths:
            return
        stdin = _nul_list(paths)
        self._git(
            [
                "--literal-pathspecs",
                "checkout",
                "--quiet",
                commit,
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
            ],
            stdin=stdin,
        )

    def record(self, paths: list[str]) -> None:
        """Take ``paths`` as they are on disk into the laid index.

        Missing files, and paths below a symlink or a file (which git cannot name), are dropped.
        """
        present, gone = [], []
        parents: dict[str, bool] = {}
        for path in paths:
            on_disk = _parents_are_folders(self.checkout, path, parents) and _is_file_or_link(
                self.checkout / path
            )
            (present if on_disk else gone).append(path)
        if gone:
            self._git(["update-index", "--force-remove", "-z", "--stdin"], stdin=_nul_list(gone))
        if present:
            self._git(
                ["update-index", "--add", "--remove", "--replace", "-z", "--stdin"],
                stdin=_nul_list(present),
            )

    def write_tree(self) -> str:
        """The tree object of the index (writes the tree object into the checkout's store)."""
        return self._git(["write-tree"]).decode().strip()

    def copy_to(self, other: Path) -> LaidIndex:
        shutil.copyfile(self.path, other)
        return LaidIndex(self.checkout, other)


def _is_file_or_link(path: Path) -> bool:
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _nul_list(paths: list[str]) -> bytes:
    return b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in paths)
