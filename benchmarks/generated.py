"""A generated workspace's pieces, shared by the matrix and refresh benchmarks: a git helper,
synthetic Python modules, writing files, committing, and a work tree's changes as a patch."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

BACKEND = "Megatron-LM"


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {cwd}: {result.stderr.decode()}")
    return result.stdout.decode("utf-8", "surrogateescape").strip()


def module(index: int, tag: str = "", lines: int = 40) -> str:
    body = "".join(f"    value_{i} = {index} * {i}  # {tag}\n" for i in range(lines))
    return f'"""Module {index}."""\n\n\ndef compute_{index}():\n{body}    return value_0\n'


def write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def diff(repo: Path) -> bytes:
    """The work tree's changes as a binary, full-index patch; the work tree is reset after."""
    command = ["git", "diff", "--binary", "--full-index"]
    patch = subprocess.run(command, cwd=repo, capture_output=True, check=True).stdout
    git(repo, "checkout", "-q", "--", ".")
    return patch


def upstream_path(index: int) -> str:
    return f"megatron/core/pkg{index // 100:02d}/mod{index:04d}.py"


def timed(action):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result
