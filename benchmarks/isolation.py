"""Benchmarks run with a private HOME, git identity and FlagScale cache: nothing of the user's
is read or written."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["isolate"]


def isolate(home: Path) -> None:
    """Private HOME and git config so nothing touches the user's."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / ".gitconfig"
    config.write_text(
        "[user]\n\tname = Bench\n\temail = bench@flagscale.invalid\n"
        '[init]\n\tdefaultBranch = main\n[protocol "file"]\n\tallow = always\n'
        "[advice]\n\tdetachedHead = false\n",
        encoding="utf-8",
    )
    os.environ.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=str(config),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_ALLOW_PROTOCOL="file",
        FLAGSCALE_CACHE=str(home / "cache"),
    )
