"""Output folders the tool empties before each run, but only when the tool made them."""

from __future__ import annotations

import shutil
from pathlib import Path

from flagscale.core.errors import FlagScaleError

__all__ = ["fresh_folder"]


def fresh_folder(path: Path, *, mark: str, maker: str, hint: str) -> Path:
    """``path`` as an empty folder holding the file ``mark`` (which says ``maker`` made it).

    An existing folder is cleared only when it holds ``mark`` or nothing: a folder of the user's
    is never emptied (``hint`` says what to do instead).
    """
    path = path.resolve()
    if path.exists():
        if not (path / mark).is_file() and any(path.iterdir()):
            raise FlagScaleError(
                f"folder {path} exists and was not made by {maker}; not clearing it", hint=hint
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / mark).write_text(f"made by {maker}; cleared on the next run\n", encoding="utf-8")
    return path
