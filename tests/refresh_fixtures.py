"""Workspaces for the refresh tests: an upstream that moves, a base layer, vendor sets.

``make_refreshable`` builds a FlagScale superproject with Megatron-LM as a real submodule, a
committed base layer, and patch sets for any number of device types, each made with plain git
(``git diff --binary --full-index`` between the layered tree and the vendor's tree, in a clone):
an independent computation, not the tool's. ``move_upstream`` then commits an upstream change
and returns the commit a refresh moves to. ``local_index`` serves source releases through a
package index on disk, so release refreshes and bisections run offline through real pip.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.vendor.history import HISTORY, dump_history
from tests.gitrepos import FileMap, Link, commit_all, make_workspace, run_git, write_files
from tests.release_fixtures import ReleaseWorkspace, run_git_bytes, write_patch_set

BACKEND = "Megatron-LM"
LAYER = f"backends/{BACKEND}"
DELETIONS = f"backends/{BACKEND}.layer.yaml"
GITIGNORE = "/build/\n/logs/\n"

Changes = dict[str, "bytes | str | Link | None"]  # None deletes the file


def lines(tag: str, count: int = 30) -> str:
    """A text file of ``count`` numbered lines."""
    return "".join(f"{tag} line {i}\n" for i in range(1, count + 1))


def edit(text: str, number: int, new: str) -> str:
    """``text`` with line ``number`` (1-based) replaced by ``new``."""
    rows = text.splitlines(keepends=True)
    rows[number - 1] = new + "\n"
    return "".join(rows)


def insert(text: str, number: int, new: list[str]) -> str:
    """``text`` with ``new`` lines inserted before line ``number``."""
    rows = text.splitlines(keepends=True)
    return "".join(rows[: number - 1] + [line + "\n" for line in new] + rows[number - 1 :])


@dataclass
class Refreshable:
    """A FlagScale workspace whose sets a refresh can carry."""

    root: Path
    upstream: Path
    base: str
    tmp: Path
    keys: dict[str, Path] = field(default_factory=dict)

    @property
    def checkout(self) -> Path:
        return self.root / "third_party" / BACKEND

    @property
    def pin(self) -> str:
        return run_git(self.root, "rev-parse", f"HEAD:third_party/{BACKEND}")

    def head(self) -> str:
        return run_git(self.root, "rev-parse", "HEAD")


def apply_changes(folder: Path, changes: Changes) -> None:
    """Write or delete (None) files under ``folder``."""
    for path, content in changes.items():
        target = folder / path
        if content is None:
            if target.is_symlink() or target.exists():
                target.unlink()
            continue
        write_files(folder, {path: content})


def layered_patch(
    upstream: Path, pin: str, layer: FileMap, deletions: list[str], changes: Changes
) -> bytes:
    """The vendor's patch, made with plain git: a clone at ``pin`` + layer − deletions, then
    ``changes``; ``git diff --cached --binary --full-index``."""
    work = Path(tempfile.mkdtemp(prefix="layered-", dir=upstream.parent)) / "clone"
    run_git(upstream.parent, "clone", "-q", "--no-checkout", str(upstream), str(work))
    run_git(work, "checkout", "-q", "--force", pin)
    write_files(work, layer)
    for path in deletions:
        (work / path).unlink()
    commit_all(work, "layered")
    apply_changes(work, changes)
    run_git(work, "add", "-A")
    patch = run_git_bytes(work, "diff", "--cached", "--binary", "--full-index")
    shutil.rmtree(work.parent)
    return patch


def flagscale_patch(root: Path, base: str, changes: Changes) -> bytes:
    """A FlagScale set's patch: a clone of FlagScale at ``base`` with ``changes``."""
    work = Path(tempfile.mkdtemp(prefix="fs-", dir=root.parent)) / "clone"
    run_git(root.parent, "clone", "-q", "--no-checkout", str(root), str(work))
    run_git(work, "checkout", "-q", "--force", base)
    apply_changes(work, changes)
    run_git(work, "add", "-A")
    patch = run_git_bytes(work, "diff", "--cached", "--binary", "--full-index")
    shutil.rmtree(work.parent)
    return patch


def make_refreshable(
    tmp: Path,
    *,
    upstream: FileMap,
    layer: FileMap | None = None,
    deletions: list[str] | None = None,
    devices: dict[str, dict[str, Changes]] | None = None,
    encrypted: tuple[str, ...] = (),
    extra: FileMap | None = None,
    tasks: dict[str, tuple[str, ...]] | None = None,
) -> Refreshable:
    """FlagScale + Megatron-LM submodule + base layer + each device's sets (committed, recorded).

    ``devices``: device type → backend (``Megatron-LM`` or ``FlagScale``) → changes. Device types
    in ``encrypted`` get their sets encrypted with a new key each (``Refreshable.keys``).
    """
    layer = dict(layer or {})
    deletions = list(deletions or [])
    root, upstreams = make_workspace(
        tmp, {BACKEND: upstream}, extra={".gitignore": GITIGNORE, **(extra or {})}
    )
    files: FileMap = {f"{LAYER}/{path}": content for path, content in layer.items()}
    if deletions:
        files[DELETIONS] = "version: 1\ndeleted:\n" + "".join(f"- {p}\n" for p in deletions)
    write_files(root, files)
    base = commit_all(root, "base layer")
    found = Refreshable(root, upstreams[BACKEND], base, tmp)
    if not devices:
        return found
    workspace = ReleaseWorkspace(root=root, upstream=found.upstream, tmp=tmp)
    history: dict = {}
    for device, sets in devices.items():
        key_path = tmp / "keys" / f"{device}.key" if device in encrypted else None
        if key_path is not None:
            found.keys[device] = key_path
        for backend, changes in sets.items():
            if backend == "FlagScale":
                patch = flagscale_patch(root, base, changes)
            else:
                patch = layered_patch(found.upstream, found.pin, layer, deletions, changes)
            device_tasks = (tasks or {}).get(device, ("train",))
            write_patch_set(
                workspace, device, backend, patch, base=base, tasks=device_tasks, key_path=key_path
            )
    sets_commit = commit_all(root, "vendor patch sets")
    for device, sets in devices.items():
        key = "+".join(sorted(sets))
        for task in (tasks or {}).get(device, ("train",)):
            history.setdefault(device, {}).setdefault(task, {})[key] = [sets_commit]
    write_files(root, {HISTORY: dump_history(history)})
    commit_all(root, "record patch history")
    return found


def move_upstream(
    found: Refreshable,
    changes: Changes,
    renames: dict[str, str] | None = None,
    *,
    branch: str | None = None,
) -> str:
    """Commit ``changes`` (and ``git mv`` renames) upstream; the new commit (FlagScale's pin
    stays where it is: a refresh moves it). With ``branch``, on that branch, made from the pin
    the first time (so that other tests' upstream commits are not in its history)."""
    if branch is not None:
        known = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
            cwd=found.upstream,
            capture_output=True,
            check=False,
        )
        start = [branch] if known.returncode == 0 else ["-b", branch, found.pin]
        run_git(found.upstream, "checkout", "-q", *start)
        try:
            return move_upstream(found, changes, renames)
        finally:
            run_git(found.upstream, "checkout", "-q", "main")
    for old, new in (renames or {}).items():
        (found.upstream / new).parent.mkdir(parents=True, exist_ok=True)
        run_git(found.upstream, "mv", old, new)
    apply_changes(found.upstream, changes)
    return commit_all(found.upstream, "upstream moves on")


def user_state(root: Path) -> dict[str, str]:
    """What must not change under a user: branch, HEAD, index, work tree, stash, refs."""
    gitdir = Path(run_git(root, "rev-parse", "--absolute-git-dir"))
    return {
        "branch": run_git(root, "symbolic-ref", "-q", "HEAD"),
        "head": run_git(root, "rev-parse", "HEAD"),
        "status": run_git(root, "status", "--porcelain=v2", "-z", "--untracked-files=all"),
        "staged": run_git(root, "diff", "--cached", "--binary"),
        "unstaged": run_git(root, "diff", "--binary"),
        "stash": run_git(root, "stash", "list"),
        "refs": run_git(root, "for-each-ref", "--format=%(refname) %(objectname)"),
        "index entries": run_git(root, "ls-files", "-s"),
        "checkout refs": run_git(root / "third_party" / BACKEND, "for-each-ref"),
        "checkout head": run_git(root / "third_party" / BACKEND, "rev-parse", "HEAD"),
        "files": repr(sorted(_files(root))),
        "gitdir files": repr(sorted(p.name for p in gitdir.iterdir() if p.name != "flagscale")),
    }


def _files(root: Path) -> list[tuple[str, bytes]]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            path = Path(folder) / name
            if path.is_symlink():
                found.append((str(path.relative_to(root)), os.readlink(path).encode()))
            else:
                found.append((str(path.relative_to(root)), path.read_bytes()))
    return found


# --- a package index on disk, for release backends ---------------------------------------------

_BACKEND_PY = """
import os

NAME, VERSION = {name!r}, {version!r}


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    folder = NAME.replace("-", "_") + "-" + VERSION + ".dist-info"
    os.makedirs(os.path.join(metadata_directory, folder))
    with open(os.path.join(metadata_directory, folder, "METADATA"), "w") as stream:
        stream.write("Metadata-Version: 2.1\\nName: " + NAME + "\\nVersion: " + VERSION + "\\n")
    return folder


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise NotImplementedError("source only")
"""


def sdist(folder: Path, package: str, version: str, files: FileMap) -> Path:
    """A source archive ``<package>-<version>.tar.gz`` pip can read metadata from, offline."""
    stem = f"{package.replace('-', '_')}-{version}"
    members: dict[str, bytes] = {
        "pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "backend"\n'
        b'backend-path = ["."]\n',
        "backend.py": _BACKEND_PY.format(name=package, version=version).encode(),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
    }
    for path, content in files.items():
        members[path] = content.encode() if isinstance(content, str) else content  # type: ignore[assignment]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(members.items()):
            info = tarfile.TarInfo(f"{stem}/{path}")
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    archive = folder / f"{stem}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(raw.getvalue())
    return archive


def local_index(folder: Path, package: str, releases: dict[str, FileMap]) -> str:
    """A simple package index on disk serving ``releases`` (version → files); its URL."""
    links = []
    for version, files in releases.items():
        archive = sdist(folder / "files", package, version, files)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        links.append(f'<a href="../../files/{archive.name}#sha256={digest}">{archive.name}</a><br>')
    page = folder / "simple" / package / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    (folder / "simple" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{package}/">{package}</a></body></html>\n'
    )
    return (folder / "simple").as_uri()


def use_index(monkeypatch, url: str) -> None:  # type: ignore[no-untyped-def]
    """Make pip use only ``url`` (no configuration files, no find-links)."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_NO_INPUT", "1")
