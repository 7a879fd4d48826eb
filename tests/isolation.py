"""Keeping tests away from the real home: a private HOME, git identity and FlagScale cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["isolated_git"]

_GITCONFIG = (
    "[user]\n\tname = FlagScale Test\n\temail = test@flagscale.invalid\n"
    "[init]\n\tdefaultBranch = main\n"
    '[protocol "file"]\n\tallow = always\n'
    "[advice]\n\tdetachedHead = false\n"
)

# Inherited from a git hook or a shell inside a repository, these would point git elsewhere.
_INHERITED = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "XDG_CONFIG_HOME")


@contextmanager
def isolated_git(home: Path) -> Iterator[Path]:
    """Make ``home`` HOME, with its own git config and cache, and file-protocol submodules."""
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(_GITCONFIG, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
        patch.setenv("GIT_CONFIG_NOSYSTEM", "1")
        patch.setenv("GIT_ALLOW_PROTOCOL", "file")
        patch.setenv("FLAGSCALE_CACHE", str(home / "cache"))
        for name in _INHERITED:
            patch.delenv(name, raising=False)
        yield home
