"""Git objects for the refresh: blobs and trees in the scratch repository, read and written.

Everything is plumbing in the tool's scratch repository (``flagscale.overlay.layered_trees``),
which reads the objects of FlagScale and of every ``third_party/<backend>`` checkout: blobs are
read in batches, trees are written from entry maps through throw-away index files, and patches
are tried with ``git apply --cached`` against small indexes that hold only the files they touch.
Nothing here touches a user's branch, index or work tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.gitcli import clean_env
from flagscale.core.gitlisting import listed_entries
from flagscale.overlay.layered_trees import (
    EMPTY_TREE,
    TreeEntry,
    changed_entries,
    scratch_git,
    scratch_repo,
    tree_entries,
)
from flagscale.upstream.workspace import Workspace

__all__ = ["ApplyResult", "Objects", "Tree", "is_binary", "sparse"]

Tree = dict[str, TreeEntry]
_ABSENT = "0" * 40


def is_binary(data: bytes) -> bool:
    """git's own test: a NUL byte in the first 8000 bytes."""
    return b"\0" in data[:8000]


@dataclass(frozen=True)
class ApplyResult:
    """``git apply`` of a patch to a few files: the files after it, or git's error lines."""

    entries: Tree | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.entries is not None


class Objects:
    """Reading and writing git objects in the scratch repository of one workspace."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.repo = scratch_repo(ws)
        self._blobs: dict[str, bytes] = {}
        self._trees: dict[str, Tree] = {}
        self._changes: dict[tuple[str, str], frozenset[str]] = {}
        self._indexes: dict[str, Path] = {}
        self._folder: Path | None = None

    # --- blobs ------------------------------------------------------------------------------

    def read(self, oid: str) -> bytes:
        """The bytes of blob ``oid``."""
        if oid not in self._blobs:
            self.read_many([oid])
        return self._blobs[oid]

    def read_many(self, oids: Iterable[str]) -> dict[str, bytes]:
        """The bytes of several blobs, read in one ``git cat-file --batch``."""
        wanted = [oid for oid in dict.fromkeys(oids) if oid not in self._blobs]
        if wanted:
            output = scratch_git(
                self.ws, ["cat-file", "--batch"], stdin="\n".join(wanted).encode() + b"\n"
            )
            offset = 0
            for oid in wanted:
                header_end = output.index(b"\n", offset)
                size = int(output[offset:header_end].split()[2])
                start = header_end + 1
                self._blobs[oid] = output[start : start + size]
                offset = start + size + 1
        return {oid: self._blobs[oid] for oid in oids}

    def write(self, data: bytes) -> str:
        """Store ``data`` as a blob (no filters); its id."""
        oid = scratch_git(self.ws, ["hash-object", "-w", "--no-filters", "--stdin"], stdin=data)
        self._blobs[oid.decode().strip()] = data
        return oid.decode().strip()

    # --- trees ------------------------------------------------------------------------------

    def entries(self, tree: str) -> Tree:
        """Every file of ``tree`` by path (recursively)."""
        if tree not in self._trees:
            listed = tree_entries(self.repo, tree) if tree != EMPTY_TREE else []
            self._trees[tree] = {e.path: e for e in listed}
        return dict(self._trees[tree])

    def tree(self, entries: Iterable[TreeEntry]) -> str:
        """The id of a tree holding exactly ``entries``."""
        listed = sorted(entries, key=lambda e: e.path)
        if not listed:
            return EMPTY_TREE
        payload = b"".join(
            f"{e.mode} {e.oid}\t".encode() + e.path.encode("utf-8", "surrogateescape") + b"\0"
            for e in listed
        )
        with self.index() as index:
            scratch_git(self.ws, ["update-index", "-z", "--index-info"], stdin=payload, index=index)
            tree = scratch_git(self.ws, ["write-tree"], index=index).decode().strip()
        self._trees[tree] = {e.path: e for e in listed}
        return tree

    def changed_paths(self, old: str, new: str) -> frozenset[str]:
        """The paths whose entry differs between two trees."""
        key = (old, new)
        if key not in self._changes:
            changes = changed_entries(self.repo, old, new)
            self._changes[key] = frozenset(after.path for _before, after in changes)
        return self._changes[key]

    def renames(self, old: str, new: str, paths: Iterable[str]) -> dict[str, str]:
        """Files of ``paths`` that git's rename detection says moved between the trees."""
        wanted = set(paths)
        if not wanted:
            return {}
        raw = scratch_git(
            self.ws, ["diff-tree", "-r", "-z", "-M", "--diff-filter=R", "--name-status", old, new]
        )
        fields = [f.decode("utf-8", "surrogateescape") for f in raw.split(b"\0") if f]
        found: dict[str, str] = {}
        for index in range(0, len(fields) - 2, 3):
            _status, source, target = fields[index : index + 3]
            if source in wanted:
                found[source] = target
        return found

    # --- indexes and git apply ----------------------------------------------------------------

    @contextmanager
    def index(self) -> Iterator[Path]:
        """A path for a throw-away index file beside the scratch repository."""
        folder = Path(tempfile.mkdtemp(prefix="refresh-index-", dir=self.repo))
        try:
            yield folder / "index"
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def apply(
        self, patch: bytes, files: Mapping[str, TreeEntry], *, reverse: bool = False
    ) -> ApplyResult:
        """``git apply --cached`` of ``patch`` to an index holding only ``files``.

        The result holds the index afterwards; ``stderr`` keeps git's ``-v`` report (hunk
        offsets) on success and its error lines on failure.
        """
        with self.index() as index:
            self._fill(index, files.values())
            args = ["apply", "--cached", "-v"]
            if reverse:
                args.append("-R")
            result = self._run([*args, "-"], patch, index)
            if result.returncode != 0:
                return ApplyResult(None, "", result.stderr.decode("utf-8", "replace"))
            listed = scratch_git(self.ws, ["ls-files", "-s", "-z"], index=index)
        entries: Tree = {
            path: TreeEntry(mode, oid, path) for path, (mode, oid) in listed_entries(listed).items()
        }
        return ApplyResult(entries, "", result.stderr.decode("utf-8", "replace"))

    def check(self, patch: bytes, files: Mapping[str, TreeEntry]) -> ApplyResult:
        """Whether ``patch`` applies to ``files`` (``git apply --check``), with git's words."""
        with self.index() as index:
            self._fill(index, files.values())
            result = self._run(["apply", "--check", "--cached", "-"], patch, index)
        stderr = result.stderr.decode("utf-8", "replace")
        return ApplyResult(dict(files) if result.returncode == 0 else None, "", stderr)

    def _run(self, args: list[str], stdin: bytes, index: Path) -> subprocess.CompletedProcess:
        """git in the scratch repository with both output streams kept (``-v`` reports)."""
        env = clean_env(
            {
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_INDEX_FILE": str(index),
            }
        )
        return subprocess.run(
            ["git", "--git-dir", str(self.repo), *args],
            cwd=self.repo,
            input=stdin,
            capture_output=True,
            env=env,
            check=False,
        )

    def check_on(self, patch: bytes, tree: str) -> ApplyResult:
        """Whether ``patch`` applies to ``tree``: ``git apply --check`` on an index of the whole
        tree, read once and kept for every patch checked against the same tree."""
        if tree not in self._indexes:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="refresh-trees-", dir=self.repo))
                weakref.finalize(self, shutil.rmtree, self._folder, True)
            index = self._folder / f"index-{len(self._indexes)}"
            scratch_git(self.ws, ["read-tree", tree], index=index)
            self._indexes[tree] = index
        result = self._run(["apply", "--check", "--cached", "-"], patch, self._indexes[tree])
        stderr = result.stderr.decode("utf-8", "replace")
        return ApplyResult({} if result.returncode == 0 else None, "", stderr)

    def _fill(self, index: Path, entries: Iterable[TreeEntry]) -> None:
        payload = b"".join(
            f"{e.mode} {e.oid}\t".encode() + e.path.encode("utf-8", "surrogateescape") + b"\0"
            for e in entries
        )
        if payload:
            scratch_git(self.ws, ["update-index", "-z", "--index-info"], stdin=payload, index=index)
        else:
            scratch_git(self.ws, ["read-tree", "--empty"], index=index)


def sparse(tree: Mapping[str, TreeEntry], paths: Iterable[str]) -> Tree:
    """The entries of ``tree`` a patch of ``paths`` needs: each path and any file at a parent."""
    wanted: Tree = {}
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if prefix in tree:
                wanted[prefix] = tree[prefix]
    return wanted
