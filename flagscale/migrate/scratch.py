"""The import's private scratch repository: trees of FlagScale and of this workspace side by side.

A bare repository in the workspace's state folder (``.git/flagscale/import/scratch.git``) whose
``objects/info/alternates`` lists the workspace's object folders (its own, its scratch
repository's, its ``third_party/<backend>`` checkouts') and the FlagScale checkout's (its own and
its submodules'). Every tree the import compares is readable there; the objects the import makes
(FlagScale's trees after applying patches) are written there only. Nothing is written into the
FlagScale checkout or into the workspace's own object folder. Git runs configuration-free.

``work_tree`` gives a real folder holding a tree, for applying patches the way FlagScale's tool
does: ``git apply`` in a work tree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.atomic import write_atomically
from flagscale.core.gitcli import GitResult, git, git_result, git_text
from flagscale.overlay.layered_trees import TreeEntry, scratch_repo, tree_entries
from flagscale.upstream.workspace import Workspace

__all__ = ["ImportScratch", "WorkTree", "git_tree_id"]

_NEUTRAL = ("-c", "core.autocrlf=false", "-c", "core.safecrlf=false", "-c", "core.symlinks=true")


def _hermetic(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_COUNT": "0"}
    env.update(extra or {})
    return env


class ImportScratch:
    """The scratch repository; ``folders`` are extra object folders to read from."""

    def __init__(self, ws: Workspace, folders: Sequence[str]) -> None:
        self.ws = ws
        self.path = ws.state_dir / "import" / "scratch.git"
        if not (self.path / "objects").is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".scratch-", dir=self.path.parent))
            git(["init", "--bare", "-q", str(staging)], staging.parent, env=_hermetic())
            os.replace(staging, self.path)
        self.refresh(folders)

    def refresh(self, folders: Sequence[str] = ()) -> None:
        """Bring the alternates up to date (the workspace's checkouts may have appeared)."""
        own = [_objects(self.ws.root), str(scratch_repo(self.ws) / "objects")]
        for backend in self.ws.backends.values():
            checkout = self.ws.path(backend.checkout)
            if (checkout / ".git").exists():
                own.append(_objects(checkout))
        self._extra = list(dict.fromkeys([*getattr(self, "_extra", []), *folders]))
        wanted = "".join(f"{f}\n" for f in dict.fromkeys([*own, *self._extra]))
        alternates = self.path / "objects" / "info" / "alternates"
        if not alternates.is_file() or alternates.read_text(encoding="utf-8") != wanted:
            write_atomically(alternates, wanted.encode())

    def git(
        self, args: Sequence[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None
    ) -> bytes:
        command = ["--git-dir", str(self.path), *_NEUTRAL, *args]
        return git(command, self.path, stdin=stdin, env=_hermetic(env))

    def tree_of(self, commit: str) -> str:
        """The tree id of ``commit`` (an upstream pin, a FlagScale commit)."""
        return self.git(["rev-parse", f"{commit}^{{tree}}"]).decode().strip()

    def entries(self, tree: str) -> list[TreeEntry]:
        """Every file of ``tree``."""
        return tree_entries(self.path, tree)

    def has(self, oid: str) -> bool:
        result = git_result(["--git-dir", str(self.path), "cat-file", "-e", oid], self.path)
        return result.returncode == 0

    def blobs(self, oids: Sequence[str]) -> dict[str, bytes]:
        """The contents of blobs ``oids`` (one ``cat-file --batch``)."""
        unique = list(dict.fromkeys(oids))
        if not unique:
            return {}
        raw = self.git(["cat-file", "--batch"], stdin="".join(f"{o}\n" for o in unique).encode())
        found: dict[str, bytes] = {}
        position = 0
        for oid in unique:
            end = raw.index(b"\n", position)
            size = int(raw[position:end].split()[2])
            found[oid] = raw[end + 1 : end + 1 + size]
            position = end + 1 + size + 1
        return found

    def filtered(self, tree: str, exclude: Sequence[str]) -> str:
        """``tree`` without the paths (files or folders) in ``exclude``."""
        kept = [e for e in self.entries(tree) if not _below(e.path, exclude)]
        return self.write_tree(kept)

    def write_tree(self, entries: Sequence[TreeEntry]) -> str:
        """A tree holding exactly ``entries`` (written into the scratch repository)."""
        payload = b"".join(
            f"{e.mode} {e.oid}\t".encode() + e.path.encode("utf-8", "surrogateescape") + b"\0"
            for e in entries
        )
        with self._index() as env:
            if payload:
                self.git(["update-index", "-z", "--index-info"], stdin=payload, env=env)
            else:
                self.git(["read-tree", "--empty"], env=env)
            return self.git(["write-tree"], env=env).decode().strip()

    def hash_blobs(self, contents: Sequence[bytes]) -> list[str]:
        """Write blobs into the scratch repository; their ids in order."""
        return [
            self.git(["hash-object", "-w", "--stdin"], stdin=data).decode().strip()
            for data in contents
        ]

    @contextmanager
    def _index(self) -> Iterator[dict[str, str]]:
        folder = Path(tempfile.mkdtemp(prefix="index-", dir=self.path))
        try:
            yield {"GIT_INDEX_FILE": str(folder / "index")}
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def work_tree(self, tree: str) -> Iterator[WorkTree]:
        """A temporary folder holding ``tree`` as plain files, with git pointed at it."""
        folder = Path(tempfile.mkdtemp(prefix="work-", dir=self.path.parent))
        try:
            work = WorkTree(self, folder / "tree", {"GIT_INDEX_FILE": str(folder / "index")})
            work.folder.mkdir()
            work.run(["read-tree", tree])
            work.run(["checkout-index", "-a", "-f"])
            yield work
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class WorkTree:
    """A folder holding a tree, and git commands run in it against the scratch repository."""

    scratch: ImportScratch
    folder: Path
    env: dict[str, str]

    def _env(self) -> dict[str, str]:
        return _hermetic(
            {**self.env, "GIT_DIR": str(self.scratch.path), "GIT_WORK_TREE": str(self.folder)}
        )

    def run(self, args: Sequence[str], *, stdin: bytes | None = None) -> bytes:
        return git([*_NEUTRAL, *args], self.folder, stdin=stdin, env=self._env())

    def result(self, args: Sequence[str]) -> GitResult:
        return git_result([*_NEUTRAL, *args], self.folder, env=self._env())

    def tree(self) -> str:
        """The tree the folder holds now, as ``git add -A -f`` records it."""
        self.run(["add", "-A", "-f", "--", "."])
        return self.run(["write-tree"]).decode().strip()


def git_tree_id(entries: dict[str, tuple[str, str]]) -> str:
    """The id git gives the tree of ``entries`` (path → (mode, blob id)), computed, not written:
    a hash over every file's path, mode and content."""
    import hashlib

    root: dict = {}
    for path, (mode, oid) in entries.items():
        *folders, name = path.split("/")
        node = root
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = (mode, oid)

    def tree(node: dict) -> str:
        items = []
        for name, value in node.items():
            raw = name.encode("utf-8", "surrogateescape")
            if isinstance(value, dict):
                items.append((raw + b"/", b"40000 " + raw + b"\0" + bytes.fromhex(tree(value))))
            else:
                mode, oid = value
                items.append((raw, mode.encode() + b" " + raw + b"\0" + bytes.fromhex(oid)))
        body = b"".join(item for _key, item in sorted(items))
        return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()

    return tree(root)


def _below(path: str, folders: Sequence[str]) -> bool:
    return any(path == folder or path.startswith(f"{folder}/") for folder in folders)


def _objects(repo: Path) -> str:
    return git_text(["rev-parse", "--path-format=absolute", "--git-path", "objects"], repo)
