"""The state of a refresh in progress: one JSON file in the tool's private folder.

``.git/flagscale/refresh/state.json`` (schema ``refresh-state``) records what the refresh was
asked, what it has done and what it is waiting for. It is rewritten whole (sibling + rename)
after every step that changed anything, so a refresh killed at any moment finds, on
``--continue`` or ``--abort``, the last completed step and nothing half-recorded. A refresh
holds the work tree's repository lock while it runs (:mod:`flagscale.core.repository_lock`), so
no other command writes the branch, index or files under it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import validate
from flagscale.upstream.workspace import Workspace

__all__ = [
    "REPORT_NAME",
    "STATE_NAME",
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
    return ws.state_dir / "refresh"


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
