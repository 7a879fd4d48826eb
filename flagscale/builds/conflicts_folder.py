"""``build/<V_M>.conflicts/``: what a failed ``--3way`` build leaves for a person to look at.

People resolve conflicts there, so the folder is never deleted or replaced once edited: it is
written with a list of what it held (``.flagscale-conflicts.json``: path → sha256 of the bytes,
or of the target for a symlink), and the next build removes it only when it still holds exactly
that. An edited folder (or one without the list) is moved aside to a new name,
``<V_M>.conflicts-kept-<UTC time>[-N]``, and the build says where.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from flagscale.builds.lock import remove_tree

__all__ = ["MANIFEST", "clear_conflicts", "conflicts_path", "record_contents"]

MANIFEST = ".flagscale-conflicts.json"


def conflicts_path(target: Path) -> Path:
    """The conflicts folder of the build tree ``target``."""
    return target.with_name(f"{target.name}.conflicts")


def record_contents(folder: Path) -> None:
    """Write the list of what ``folder`` holds now (before it is put in place)."""
    text = json.dumps(_contents(folder), indent=1, sort_keys=True) + "\n"
    (folder / MANIFEST).write_text(text, encoding="utf-8")


def clear_conflicts(folder: Path, report: Callable[[str], None]) -> Path | None:
    """Remove ``folder`` if it holds what was written; else move it aside and say so.

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
        written = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return written == _contents(folder)


def _contents(folder: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for base, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(base, d))]:
            path = os.path.join(base, name)
            relative = os.path.relpath(path, folder)
            if relative == MANIFEST:
                continue
            if os.path.islink(path):
                data = b"link:" + os.fsencode(os.readlink(path))
            else:
                data = Path(path).read_bytes()
            found[relative] = hashlib.sha256(data).hexdigest()
    return found


def _free_name(folder: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = folder.with_name(f"{folder.name}-kept-{stamp}")
    counter = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder.with_name(f"{folder.name}-kept-{stamp}-{counter}")
        counter += 1
    return candidate
