"""``build/<V_M>.conflicts/``: what a failed ``--3way`` build leaves for a person to look at.

People resolve conflicts there, so the folder is never deleted or replaced once edited. It is
written with the same state file as a build tree (:mod:`flagscale.builds.fingerprint`: stat data
and blob ids), and the next build removes it only when nothing in it changed since. An edited
folder (or one without a readable state) is moved aside to a new name,
``<V_M>.conflicts-kept-<UTC time>[-N]``, and the build says where.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from flagscale.builds.fingerprint import StateFormatError, hand_changes, read_state
from flagscale.builds.lock import remove_tree

__all__ = ["clear_conflicts", "conflicts_path"]


def conflicts_path(target: Path) -> Path:
    """The conflicts folder of the build tree ``target``."""
    return target.with_name(f"{target.name}.conflicts")


def clear_conflicts(folder: Path, report: Callable[[str], None]) -> Path | None:
    """Remove ``folder`` if nothing in it changed; else move it aside and say so.

    Returns where an edited folder was kept (None when there was nothing to keep).
    """
    if not folder.exists() and not folder.is_symlink():
        return None
    if folder.is_dir() and not folder.is_symlink() and _unchanged(folder):
        remove_tree(folder)
        return None
    kept = _free_name(folder)
    os.rename(folder, kept)
    report(f"{folder.name}/ was edited since the build wrote it: kept as {kept}/")
    return kept


def _unchanged(folder: Path) -> bool:
    try:
        recorded = read_state(folder)
    except StateFormatError:
        return False
    return recorded is not None and not hand_changes(folder, recorded, limit=1)


def _free_name(folder: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = folder.with_name(f"{folder.name}-kept-{stamp}")
    counter = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder.with_name(f"{folder.name}-kept-{stamp}-{counter}")
        counter += 1
    return candidate
