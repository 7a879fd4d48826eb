"""The user's FlagScale cache folder: downloaded releases and remembered schema checks."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$FLAGSCALE_CACHE``, else ``~/.cache/flagscale`` (it may not exist yet)."""
    configured = os.environ.get("FLAGSCALE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "flagscale"
