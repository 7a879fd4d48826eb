"""Trees as git objects: FlagScale's files, layered backends and work trees, and their diffs.

Everything here is git plumbing in a private bare *scratch* repository under the tool's state
folder (``.git/flagscale/scratch.git``; in a linked git worktree, under that worktree's own git
folder, since the checkouts it reads belong to one work tree). Its ``objects/info/alternates``
lists the superproject's object folder (shared by every worktree) and each
``third_party/<backend>`` checkout's, so every blob of both is readable without copying. Trees
are built through temporary index files (``GIT_INDEX_FILE``) and new objects are written into
the scratch repository (``GIT_OBJECT_DIRECTORY``): the user's branch, index, stash and work tree
are never touched, and no object lands in the user's repositories.

Returned oids are valid in the scratch repository (``scratch_repo(ws)``); pass that path as
``repo`` to ``diff_trees``, ``tree_entries`` and ``export_tree``.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import GitResult, commit_id, git, git_ok, git_result, git_text
from flagscale.core.gitlisting import listed_entries
from flagscale.core.paths import check_relative
from flagscale.core.schema import parse_document, validate
from flagscale.overlay.layer_shown import LayerPath
from flagscale.upstream.workspace import DECLARATION, Backend, Workspace

__all__ = [
    "EMPTY_TREE",
    "FLAGSCALE_EXCLUDES",
    "WORKTREE_EXCLUDES",
    "TreeEntry",
    "changed_entries",
    "diff_trees",
    "export_tree",
    "filter_tree",
    "flagscale_tree",
    "flagscale_worktree_tree",
    "layer_paths",
    "layered_tree",
    "pin_at",
    "pin_tree",
    "resolve_commit",
    "scratch_git",
    "scratch_git_result",
    "scratch_repo",
    "tree_entries",
    "worktree_tree",
]

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
FLAGSCALE_EXCLUDES = ("third_party", "build")
WORKTREE_EXCLUDES = ("third_party", "build", "hardware")
GITLINK = "160000"
SYMLINK = "120000"
_MISSING = "000000"  # the mode ``git diff-tree`` gives the side where a path does not exist

# Options that make every diff the same bytes whatever the user's configuration says.
_DIFF_OPTIONS = (
    "-r",
    "-p",
    "--binary",
    "--full-index",
    "--no-renames",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "-U3",
    "--inter-hunk-context=0",
    "--diff-algorithm=myers",
    "--indent-heuristic",
    "--ignore-submodules=none",
)
_CONTENT_CONFIG = ("-c", "core.autocrlf=false", "-c", "core.safecrlf=false")


@dataclass(frozen=True)
class TreeEntry:
    """One file of a tree: mode (``100644``, ``100755``, ``120000``, ``160000``), oid, path."""

    mode: str
    oid: str
    path: str


# --- the scratch repository -------------------------------------------------------------------


def scratch_repo(ws: Workspace) -> Path:
    """The scratch bare repository, created on first use, its alternates brought up to date."""
    path = _state_dir(ws.root) / "scratch.git"
    if not (path / "objects").is_dir():
        _create_scratch(path)
    _update_alternates(path, _object_dirs(ws))
    return path


@lru_cache(maxsize=64)
def _state_dir(root: Path) -> Path:
    return Workspace(root=root, backends={}).state_dir


def _hermetic_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """No user or system configuration: scratch operations give the same bytes everywhere."""
    env = {
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_COUNT": "0",
        "GIT_CONFIG_PARAMETERS": "",
    }
    env.update(extra or {})
    return env


def _create_scratch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".scratch-", dir=path.parent))
    try:
        git(["init", "--bare", "-q", str(temporary)], path.parent, env=_hermetic_env())
        try:
            os.rename(temporary, path)
        except OSError:
            if not (path / "objects").is_dir():  # not a concurrent creator winning the race
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _object_dirs(ws: Workspace) -> list[str]:
    folders = [_objects_of(ws.root)]
    for backend in ws.backends.values():
        checkout = ws.path(backend.checkout)
        if (checkout / ".git").exists():
            folders.append(_objects_of(checkout))
    return list(dict.fromkeys(folders))


@lru_cache(maxsize=256)
def _objects_of(repo: Path) -> str:
    return git_text(["rev-parse", "--path-format=absolute", "--git-path", "objects"], repo)


def _update_alternates(scratch: Path, folders: list[str]) -> None:
    alternates = scratch / "objects" / "info" / "alternates"
    wanted = "".join(f"{folder}\n" for folder in folders)
    try:
        if alternates.read_text(encoding="utf-8") == wanted:
            return
    except FileNotFoundError:
        pass
    write_atomically(alternates, wanted.encode("utf-8"))


@contextmanager
def _temporary_index(ws: Workspace) -> Iterator[Path]:
    """A path for a throw-away index file beside the scratch repository."""
    folder = Path(tempfile.mkdtemp(prefix="index-", dir=scratch_repo(ws)))
    try:
        yield folder / "index"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def scratch_git(
    ws: Workspace, args: Sequence[str], *, stdin: bytes | None = None, index: Path | None = None
) -> bytes:
    """Run git in the scratch repository, configuration-free, with ``index`` as its index."""
    extra = {"GIT_INDEX_FILE": str(index)} if index else None
    repo = scratch_repo(ws)
    return git(["--git-dir", str(repo), *args], repo, stdin=stdin, env=_hermetic_env(extra))


def scratch_git_result(
    ws: Workspace, args: Sequence[str], *, stdin: bytes | None = None, index: Path | None = None
) -> GitResult:
    """``scratch_git`` whose exit status and stderr the caller reads, whatever the status."""
    extra = {"GIT_INDEX_FILE": str(index)} if index else None
    repo = scratch_repo(ws)
    args = ["--git-dir", str(repo), *args]
    return git_result(args, repo, stdin=stdin, env=_hermetic_env(extra))


# --- reading trees ----------------------------------------------------------------------------


def resolve_commit(ws: Workspace, commit: str, *, what: str = "--commit") -> str:
    """The full 40-hex id of a FlagScale commit, or an error naming ``what``."""
    if not commit or commit.startswith("-"):
        raise FlagScaleError(f"{what}: {commit!r} is not a commit", hint="give a commit id or ref")
    oid = commit_id(ws.root, commit)
    if oid is None:
        raise FlagScaleError(
            f"{what}: commit {commit!r} does not exist in {ws.root}",
            hint="fetch it (git fetch) or check the id",
        )
    return oid


def tree_entries(repo: Path, tree: str, prefix: str = "") -> list[TreeEntry]:
    """Every file of ``tree`` (recursively), optionally only under folder ``prefix``.

    With ``prefix`` the returned paths are relative to it. ``repo`` is any git folder that can
    read the tree (the scratch repository reads them all).
    """
    args = ["--git-dir", str(repo), "ls-tree", "-r", "-z", "--full-tree", tree]
    if prefix:
        args += ["--", f"{prefix}/"]
    raw = git(args, repo, env=_hermetic_env())
    cut = len(prefix) + 1 if prefix else 0
    return [TreeEntry(mode, oid, path[cut:]) for path, (mode, oid) in listed_entries(raw).items()]


def _tree_from_entries(ws: Workspace, entries: Iterable[TreeEntry]) -> str:
    """Write a tree holding exactly ``entries`` (into the scratch repository)."""
    payload = b"".join(
        f"{e.mode} {e.oid}\t".encode() + e.path.encode("utf-8", "surrogateescape") + b"\0"
        for e in entries
    )
    with _temporary_index(ws) as index:
        if payload:
            scratch_git(ws, ["update-index", "-z", "--index-info"], stdin=payload, index=index)
        else:
            scratch_git(ws, ["read-tree", "--empty"], index=index)
        return scratch_git(ws, ["write-tree"], index=index).decode().strip()


def _excluded(path: str, folders: Sequence[str]) -> bool:
    return any(path == folder or path.startswith(f"{folder}/") for folder in folders)


def flagscale_tree(
    ws: Workspace, commit: str, *, exclude: Sequence[str] = FLAGSCALE_EXCLUDES
) -> str:
    """Tree of FlagScale's files at ``commit``, top folders in ``exclude`` and gitlinks dropped."""
    oid = resolve_commit(ws, commit)
    entries = [
        e
        for e in tree_entries(scratch_repo(ws), f"{oid}^{{tree}}")
        if e.mode != GITLINK and not _excluded(e.path, exclude)
    ]
    return _tree_from_entries(ws, entries)


def pin_at(ws: Workspace, backend: Backend | str, flagscale_commit: str) -> str:
    """The backend's pin as FlagScale recorded it at a commit: gitlink, else backends.yaml pin."""
    backend = _backend(ws, backend)
    oid = resolve_commit(ws, flagscale_commit)
    listing = git(["ls-tree", "-z", oid, "--", backend.checkout], ws.root).rstrip(b"\0")
    if listing.startswith(f"{GITLINK} commit ".encode()):
        return listing.split(b"\t")[0].split(b" ")[2].decode()
    declaration = _declaration_at(ws, oid)
    entry = declaration.get("backends", {}).get(backend.name)
    if entry is None or not entry.get("pin"):
        raise FlagScaleError(
            f"{backend.name}: FlagScale commit {oid} records no pin for it"
            f" (no gitlink at {backend.checkout}, no pin in {DECLARATION})",
            hint="choose a --commit at which the backend is declared",
        )
    return str(entry["pin"])


def release_version_at(ws: Workspace, backend: Backend | str, flagscale_commit: str) -> str | None:
    """The release version a backend is declared at in a FlagScale commit (None: no release)."""
    backend = _backend(ws, backend)
    declaration = _declaration_at(ws, resolve_commit(ws, flagscale_commit))
    source = declaration.get("backends", {}).get(backend.name, {}).get("source", {})
    return str(source["version"]) if source.get("kind") == "release" else None


def _declaration_at(ws: Workspace, commit: str) -> dict:
    spec = f"{commit}:{DECLARATION}"
    if not git_ok(["cat-file", "-e", spec], ws.root):
        return {}
    text = git(["cat-file", "blob", spec], ws.root).decode("utf-8", "replace")
    source = f"{DECLARATION} at {commit}"
    return validate(parse_document(text, source), "workspace", source)


def pin_tree(ws: Workspace, backend: Backend, pin: str) -> str:
    """The tree of upstream commit ``pin`` (which third_party/<backend> must hold)."""
    repo = scratch_repo(ws)
    found = git(
        ["--git-dir", str(repo), "rev-parse", "--verify", "-q", f"{pin}^{{tree}}"],
        repo,
        env=_hermetic_env(),
        check=False,
    )
    tree = found.decode().strip()
    if len(tree) != 40:
        raise FlagScaleError(
            f"{backend.name}: pin {pin} is not in {backend.checkout}",
            hint=f"run `inv unpatch --backend {backend.name}` to fetch it",
        )
    return tree


def layered_tree(ws: Workspace, backend: Backend | str, flagscale_commit: str) -> str:
    """The backend as FlagScale used it at a commit: pin + base layer files − deletions."""
    backend = _backend(ws, backend)
    commit = resolve_commit(ws, flagscale_commit)
    repo = scratch_repo(ws)
    files = {
        e.path: e for e in tree_entries(repo, pin_tree(ws, backend, pin_at(ws, backend, commit)))
    }
    where = f"{backend.layer} at {commit}"
    layer = tree_entries(repo, commit, backend.layer)
    for entry in layer:
        check_relative(entry.path, where)
        if entry.mode == GITLINK:
            raise FlagScaleError(f"{where}: {entry.path} is a submodule; a base layer holds files")
    files = _lay_over(files, layer)
    files = _lay_over(files, [], removed=_deletions_at(ws, backend, commit))
    return _tree_from_entries(ws, files.values())


def layer_paths(
    ws: Workspace, backend: Backend | str, flagscale_commit: str, work: str
) -> list[LayerPath]:
    """Every path FlagScale's base layer at a commit changes, and whether the tree ``work`` (a
    checkout as :func:`worktree_tree` reads it) shows the pin's version there instead.

    What ``inv patch --device-type`` hands to ``refuse_layer_at_pin``, as ``inv patch`` does.
    """
    backend = _backend(ws, backend)
    commit = resolve_commit(ws, flagscale_commit)
    repo = scratch_repo(ws)
    pin = pin_tree(ws, backend, pin_at(ws, backend, commit))
    in_work = {new.path for _old, new in changed_entries(repo, pin, work)}
    return [
        LayerPath(new.path, old.mode != _MISSING, new.path not in in_work)
        for old, new in changed_entries(repo, pin, layered_tree(ws, backend, commit))
    ]


def _lay_over(
    files: dict[str, TreeEntry], entries: Iterable[TreeEntry], removed: Iterable[str] = ()
) -> dict[str, TreeEntry]:
    """``files`` with ``removed`` paths (files or folders) cut out and ``entries`` laid over.

    A laid file replaces a folder of the same name and a file where it needs a folder.
    """
    laid = {e.path: e for e in entries}
    cut = set(laid) | set(removed)
    parents = {
        path.rsplit("/", depth)[0] for path in laid for depth in range(1, path.count("/") + 1)
    }
    kept = {
        name: entry
        for name, entry in files.items()
        if name not in parents and not _below_any(name, cut)
    }
    kept.update(laid)
    return kept


def _below_any(path: str, folders: set[str]) -> bool:
    """True when ``path`` or a folder above it is in ``folders``."""
    if path in folders:
        return True
    index = path.find("/")
    while index != -1:
        if path[:index] in folders:
            return True
        index = path.find("/", index + 1)
    return False


def _deletions_at(ws: Workspace, backend: Backend, commit: str) -> list[str]:
    spec = f"{commit}:{backend.deletions}"
    if not git_ok(["cat-file", "-e", spec], ws.root):
        return []
    source = f"{backend.deletions} at {commit}"
    text = git(["cat-file", "blob", spec], ws.root).decode("utf-8", "replace")
    data = validate(parse_document(text, source), "base-layer", source)
    return [check_relative(path, source) for path in data["deleted"]]


def _backend(ws: Workspace, backend: Backend | str) -> Backend:
    return ws.backend(backend) if isinstance(backend, str) else backend


def filter_tree(ws: Workspace, tree: str, exclude: Sequence[str]) -> str:
    """``tree`` without the paths in ``exclude`` (each a file or a folder)."""
    entries = tree_entries(scratch_repo(ws), tree)
    return _tree_from_entries(ws, [e for e in entries if not _excluded(e.path, exclude)])


# --- trees of the work tree -------------------------------------------------------------------


def _worktree_env(ws: Workspace, index: Path) -> dict[str, str]:
    return {
        "GIT_INDEX_FILE": str(index),
        "GIT_OBJECT_DIRECTORY": str(scratch_repo(ws) / "objects"),
    }


def _index_entries(repo: Path, env: dict[str, str]) -> list[TreeEntry]:
    listed = listed_entries(git(["ls-files", "-s", "-z"], repo, env=env))
    return [TreeEntry(mode, oid, path) for path, (mode, oid) in listed.items()]


def worktree_tree(ws: Workspace, backend: Backend | str) -> str:
    """The vendor's ``third_party/<backend>`` as a tree, as ``git add -A`` would record it.

    The index is seeded from the pin (so tracked-but-ignored upstream files stay), .gitignore is
    honoured, and overlay symlinks into ``backends/<backend>/`` count as the content they point
    to (edits made through them included).
    """
    backend = _backend(ws, backend)
    checkout = ws.path(backend.checkout)
    if not (checkout / ".git").exists():
        raise FlagScaleError(
            f"{backend.checkout} is not checked out", hint="run `inv unpatch` first"
        )
    pin = ws.pin(backend)
    pin_tree(ws, backend, pin)
    with _temporary_index(ws) as index:
        env = _worktree_env(ws, index)
        git(["read-tree", pin], checkout, env=env)
        git([*_CONTENT_CONFIG, "add", "-A", "--", "."], checkout, env=env)
        files = {e.path: e for e in _index_entries(checkout, env)}
    layer = Path(os.path.realpath(ws.path(backend.layer)))
    replacements: list[tuple[str, list[tuple[Path, str]]]] = []
    for path in [p for p, e in files.items() if e.mode == SYMLINK]:
        target = _overlay_target(checkout / path, layer)
        if target is not None:
            replacements.append((path, _sources_under(target, path)))
    blobs = _hash_sources(ws, [source for _, sources in replacements for source, _ in sources])
    laid = [
        TreeEntry(_mode_of(source), blobs[source], path)
        for _link, sources in replacements
        for source, path in sources
    ]
    files = _lay_over(files, laid, removed=[link for link, _sources in replacements])
    return _tree_from_entries(ws, files.values())


def _overlay_target(link: Path, layer: Path) -> Path | None:
    """Where an overlay symlink points inside the base layer folder, or None for other links."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    resolved = Path(os.path.normpath(os.path.join(os.path.realpath(link.parent), target)))
    if layer not in resolved.parents:
        return None
    folder = Path(os.path.realpath(resolved.parent))  # no way out through a linked folder
    return resolved if folder == layer or layer in folder.parents else None


def _sources_under(source: Path, path: str) -> list[tuple[Path, str]]:
    """(file or symlink, tree path) for what ``source`` holds, placed at ``path``.

    A folder gives its contents; a dangling overlay link (the layer file is gone) gives nothing.
    """
    if source.is_symlink() or source.is_file():
        return [(source, path)]
    if source.is_dir():
        found: list[tuple[Path, str]] = []
        for child in sorted(source.iterdir()):
            found += _sources_under(child, f"{path}/{child.name}")
        return found
    return []


def _mode_of(source: Path) -> str:
    if source.is_symlink():
        return SYMLINK
    return "100755" if source.stat().st_mode & stat.S_IXUSR else "100644"


def _hash_sources(ws: Workspace, sources: list[Path]) -> dict[Path, str]:
    """Blob ids of files (one batched call) and symlink targets, written to the scratch repo."""
    blobs: dict[Path, str] = {}
    files = [s for s in dict.fromkeys(sources) if not s.is_symlink() and "\n" not in str(s)]
    if files:
        listing = "".join(f"{f}\n" for f in files).encode("utf-8", "surrogateescape")
        command = ["hash-object", "-w", "--no-filters", "--stdin-paths"]
        oids = scratch_git(ws, command, stdin=listing).decode().split()
        blobs.update(zip(files, oids, strict=True))
    for source in sources:
        if source not in blobs:
            data = os.fsencode(os.readlink(source)) if source.is_symlink() else source.read_bytes()
            command = ["hash-object", "-w", "--no-filters", "--stdin"]
            blobs[source] = scratch_git(ws, command, stdin=data).decode().strip()
    return blobs


def flagscale_worktree_tree(ws: Workspace, *, exclude: Sequence[str] = WORKTREE_EXCLUDES) -> str:
    """FlagScale's own files in the work tree (uncommitted and untracked-not-ignored included).

    Seeded from HEAD, then ``git add -A`` into a temporary index; top folders in ``exclude``
    and gitlinks are dropped. The user's index is never read or written.
    """
    with _temporary_index(ws) as index:
        env = _worktree_env(ws, index)
        if git_ok(["rev-parse", "--verify", "-q", "HEAD^{commit}"], ws.root):
            git(["read-tree", "HEAD"], ws.root, env=env)
        git([*_CONTENT_CONFIG, "add", "-A", "--", *_add_pathspec(ws, exclude)], ws.root, env=env)
        entries = [
            e
            for e in _index_entries(ws.root, env)
            if e.mode != GITLINK and not _excluded(e.path, exclude)
        ]
    return _tree_from_entries(ws, entries)


def _add_pathspec(ws: Workspace, exclude: Sequence[str]) -> list[str]:
    """``.`` minus the excluded paths, as far as naming them is allowed.

    git refuses an exclude pathspec that names an ignored path, so those are left out here
    (ignored paths are not added anyway) and every exclusion is applied again afterwards.
    """
    ignored = git(
        ["check-ignore", "-z", "--stdin"],
        ws.root,
        stdin=b"".join(path.encode() + b"\0" for path in exclude),
        check=False,
    ).split(b"\0")
    skip = {name.decode() for name in ignored if name}
    return [".", *(f":(exclude){path}" for path in exclude if path not in skip)]


# --- comparing and exporting ------------------------------------------------------------------


def diff_trees(repo: Path, a: str, b: str) -> bytes:
    """The patch from tree ``a`` to tree ``b``: binary, full index, no rename detection.

    Renames appear as a deletion plus an addition: bigger, but independent of similarity
    heuristics and rename limits, so the bytes depend only on the two trees and git's diff
    format. User and system configuration are switched off.
    """
    return git(
        ["--git-dir", str(repo), "-c", "core.quotepath=true", "diff-tree", *_DIFF_OPTIONS, a, b],
        repo,
        env=_hermetic_env(),
    )


def changed_entries(repo: Path, a: str, b: str) -> list[tuple[TreeEntry, TreeEntry]]:
    """(old, new) per path that differs between trees; a missing side has mode ``000000``."""
    raw = git(
        ["--git-dir", str(repo), "diff-tree", "-r", "-z", "--no-renames", a, b],
        repo,
        env=_hermetic_env(),
    )
    fields = raw.split(b"\0")
    changes = []
    for meta, name in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, old_oid, new_oid, _status = meta[1:].decode().split(" ")
        path = name.decode("utf-8", "surrogateescape")
        changes.append((TreeEntry(old_mode, old_oid, path), TreeEntry(new_mode, new_oid, path)))
    return changes


def export_tree(ws: Workspace, tree: str, destination: Path) -> None:
    """Write ``tree`` as plain files into the empty or new folder ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    repo = scratch_repo(ws)
    with _temporary_index(ws) as index:
        env = _hermetic_env({"GIT_INDEX_FILE": str(index)})
        base = ["--git-dir", str(repo), "--work-tree", str(destination), *_CONTENT_CONFIG]
        git([*base, "read-tree", tree], destination, env=env)
        git([*base, "checkout-index", "-a", "-f"], destination, env=env)
