"""The state of a refresh in progress: one JSON file in the tool's private folder, and a lock.

``.git/flagscale/refresh/state.json`` (schema ``refresh-state``) records what the refresh was
asked, what it has done and what it is waiting for. It is rewritten whole (sibling + rename)
after every step that changed anything, so a refresh killed at any moment finds, on
``--continue`` or ``--abort``, the last completed step and nothing half-recorded. Only one
refresh runs at a time per repository (``RefreshLock``).
"""

from __future__ import annotations

import fcntl
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git_text
from flagscale.core.schema import validate
from flagscale.upstream.workspace import Workspace

__all__ = [
    "REPORT_NAME",
    "STATE_NAME",
    "RefreshLock",
    "clear_state",
    "load_state",
    "refresh_dir",
    "save_state",
]

STATE_NAME = "state.json"
REPORT_NAME = "report.json"
STATE_VERSION = 1


def refresh_dir(ws: Workspace) -> Path:
    """``.git/flagscale/refresh``: the refresh's private folder (never committed).

    A refresh belongs to one work tree (its branch, index and files), so each of several
    ``git worktree`` checkouts of a repository has its own (``.git/worktrees/<name>/...``).
    """
    return _git_dir(ws.root) / "flagscale" / "refresh"


@lru_cache(maxsize=16)
def _git_dir(root: Path) -> Path:
    return Path(git_text(["rev-parse", "--absolute-git-dir"], root))


def load_state(ws: Workspace) -> dict[str, Any] | None:
    """The state of the refresh in progress, checked against its schema; None when there is none."""
    path = refresh_dir(ws) / STATE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlagScaleError(
            f"{path}: the refresh state is not valid JSON ({exc.msg})",
            hint="it is written whole or not at all, so something else changed it; run"
            " `inv refresh --abort` to give up the refresh",
        ) from None
    return validate(data, "refresh-state", str(path))


def save_state(ws: Workspace, state: dict[str, Any]) -> None:
    """Write the state whole, beside the file, then renamed into place.

    It is checked against its schema when read (``load_state``); written compact, since it is
    rewritten after every step and read by the tool only.
    """
    state["version"] = STATE_VERSION
    text = json.dumps(state, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
    write_atomically(refresh_dir(ws) / STATE_NAME, text.encode("utf-8"))


def clear_state(ws: Workspace) -> None:
    """Remove the state: the refresh is finished or given up."""
    (refresh_dir(ws) / STATE_NAME).unlink(missing_ok=True)


class RefreshLock:
    """One refresh (or bisect) at a time in a repository: an exclusive ``flock``.

    The lock dies with its process, so a refresh killed with ``kill -9`` never leaves it held.
    """

    def __init__(self, ws: Workspace) -> None:
        self.path = refresh_dir(ws) / "lock"
        self._descriptor: int | None = None

    def __enter__(self) -> RefreshLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise FlagScaleError(
                "another inv refresh or inv bisect-upstream is running in this repository",
                hint="wait for it to finish, then run your command again",
            ) from None
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc: object) -> None:
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None
