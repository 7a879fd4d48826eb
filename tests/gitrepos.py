"""Building real git repositories in temporary folders for the tests.

Nothing here mocks git: repositories, submodules and commits are made by the git command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TOOL_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Link:
    """A symlink to ``target`` in a file map."""

    target: str


@dataclass(frozen=True)
class Exec:
    """An executable file with ``content`` in a file map."""

    content: bytes


FileMap = dict[str, "bytes | str | Link | Exec"]


def run_git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    """Run git in ``cwd`` and return stripped stdout; fail the test on error."""
    result = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} failed in {cwd}: {result.stderr.decode(errors='replace')}"
        )
    return result.stdout.decode("utf-8", "surrogateescape").strip()


def write_files(root: Path, files: FileMap) -> None:
    """Write a file map under ``root`` (str → UTF-8 text, bytes as is, Link, Exec)."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        if isinstance(content, Link):
            os.symlink(content.target, path)
        elif isinstance(content, Exec):
            path.write_bytes(content.content)
            path.chmod(0o755)
        elif isinstance(content, str):
            path.write_bytes(content.encode("utf-8"))
        else:
            path.write_bytes(content)


def commit_all(repo: Path, message: str = "change") -> str:
    """Stage everything and commit; return the new commit id."""
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return run_git(repo, "rev-parse", "HEAD")


def make_repo(path: Path, files: FileMap, message: str = "initial") -> str:
    """A new repository at ``path`` holding ``files`` in one commit; returns the commit id."""
    path.mkdir(parents=True, exist_ok=True)
    run_git(path, "init", "-q", "-b", "main")
    write_files(path, files)
    return commit_all(path, message)


def snapshot(root: Path, *, skip: tuple[str, ...] = (".git",)) -> dict[str, tuple[str, bytes]]:
    """Every entry under ``root``: path → (kind, content) with kind 'link', 'exec' or 'file'."""
    entries: dict[str, tuple[str, bytes]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        here = Path(folder)
        for name in sorted(files) + [d for d in dirs if (here / d).is_symlink()]:
            path = here / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[relative] = ("link", os.readlink(path).encode())
            elif os.access(path, os.X_OK):
                entries[relative] = ("exec", path.read_bytes())
            else:
                entries[relative] = ("file", path.read_bytes())
    return entries


def declare_backends(root: Path, backends: dict[str, dict]) -> None:
    """Write ``backends/backends.yaml`` declaring ``backends`` (name → entry)."""
    import yaml

    (root / "backends").mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"version": 1, "backends": backends}, sort_keys=True)
    (root / "backends" / "backends.yaml").write_text(text, encoding="utf-8")


def make_workspace(
    tmp: Path, upstreams: dict[str, FileMap], *, extra: FileMap | None = None
) -> tuple[Path, dict[str, Path]]:
    """A FlagScale superproject with each upstream as a real submodule at third_party/<name>.

    Returns (superproject root, name → upstream repository path).
    """
    upstream_paths: dict[str, Path] = {}
    for name, files in upstreams.items():
        upstream_paths[name] = tmp / "upstreams" / name
        make_repo(upstream_paths[name], files, f"{name} upstream")
    root = tmp / "FlagScale"
    make_repo(root, {"README.md": "FlagScale\n", ".gitignore": "/build/\n", **(extra or {})})
    for name, path in upstream_paths.items():
        run_git(root, "submodule", "add", "-q", path.as_uri(), f"third_party/{name}")
        run_git(
            root, "config", "-f", ".gitmodules", f"submodule.third_party/{name}.ignore", "dirty"
        )
    declare_backends(root, {name: {"source": {"kind": "submodule"}} for name in upstreams})
    commit_all(root, "declare backends")
    return root, upstream_paths


def inv(
    cwd: Path, *args: str, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run this tool's ``inv`` as a real process in ``cwd`` (a workspace under test)."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT), *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        check=False,
    )
    completed = subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"inv {' '.join(args)} exited {completed.returncode}:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return completed
