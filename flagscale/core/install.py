"""The command that installs one of this tool's extras, as it works when pasted."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

__all__ = ["PROJECT", "install_command"]

PROJECT = "flagscale-build"  # the distribution name in pyproject.toml


def install_command(extra: str, cwd: Path | None = None) -> str:
    """``<this python> -m pip install -e '<checkout>[extra]'``: what installs ``extra`` here.

    The checkout is the one this package is installed from (an editable install, as the README
    says); ``.`` when that is the current folder. Without a checkout, the package by name. The
    interpreter is the one running now, so the packages land where this tool looks for them.
    """
    python = shlex.quote(sys.executable)
    source = _source_checkout()
    if source is None:
        return f"{python} -m pip install {shlex.quote(f'{PROJECT}[{extra}]')}"
    here = (cwd or Path.cwd()).resolve()
    where = "." if source == here else os.fspath(source)
    return f"{python} -m pip install -e {shlex.quote(f'{where}[{extra}]')}"


def _source_checkout() -> Path | None:
    root = Path(__file__).resolve().parent.parent.parent
    try:
        declared = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if f'name = "{PROJECT}"' in declared else None
