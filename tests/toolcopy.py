"""A copy of this repository in a temporary folder: its own git repository, one commit.

For tests that run the tool's ecosystem files (noxfile, pre-commit hooks) as a consumer would,
without touching this checkout (no .nox/ here, no shadow commits of uncommitted work).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.gitrepos import TOOL_ROOT, commit_all, run_git

__all__ = ["copy_tool"]


def copy_tool(dest: Path) -> Path:
    """This checkout's files (tracked and new, not ignored) in a new repository at ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=TOOL_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in sorted({n for n in listed.decode("utf-8", "surrogateescape").split("\0") if n}):
        source, target = TOOL_ROOT / name, dest / name
        if source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source.readlink())
        elif source.is_file():  # deleted files and submodule folders are left out
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    run_git(dest, "init", "-q", "-b", "main")
    commit_all(dest, "the tool")
    return dest
