"""The smoke extra: the packages a smoke job needs beyond the build system, checked up front.

``pip install -e '.[smoke]'`` installs them (pyproject.toml, ``[project.optional-dependencies]``).
The build system itself works without them, so ``inv smoke`` checks for every module of the
extra that the smoke path imports before importing any of it, and says what to install, as a
command that works when pasted (this interpreter, this checkout), instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError

__all__ = [
    "SMOKE_MODULES",
    "install_command",
    "missing_smoke_modules",
    "require_smoke_extra",
    "smoke_command",
]

# module the smoke path imports -> the distribution of the smoke extra that provides it
SMOKE_MODULES = {
    "psutil": "psutil",  # processes, the system monitor
    "packaging": "packaging",  # device requirements.txt
    "numpy": "numpy",  # matplotlib's own dependency
    "matplotlib": "matplotlib",  # loss.png
    "torch": "torch",  # the training job (torchrun, train_gpt.py)
}
EXTRA = "smoke"
_PROJECT = "flagscale-build"


def missing_smoke_modules() -> list[str]:
    """The modules of the smoke extra this interpreter cannot import (nothing is imported)."""
    missing = []
    for module in SMOKE_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def install_command(extra: str = EXTRA, cwd: Path | None = None) -> str:
    """``<this python> -m pip install -e '<checkout>[extra]'``: what installs ``extra`` here.

    The checkout is the one this package is installed from (an editable install, as the README
    says); ``.`` when that is the current folder. Without a checkout, the package by name.
    """
    python = shlex.quote(sys.executable)
    source = _source_checkout()
    if source is None:
        return f"{python} -m pip install {shlex.quote(f'{_PROJECT}[{extra}]')}"
    here = (cwd or Path.cwd()).resolve()
    where = "." if source == here else os.fspath(source)
    return f"{python} -m pip install -e {shlex.quote(f'{where}[{extra}]')}"


def _source_checkout() -> Path | None:
    import flagscale

    root = Path(flagscale.__file__).resolve().parent.parent
    try:
        declared = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if f'name = "{_PROJECT}"' in declared else None


def require_smoke_extra(command: str = "inv smoke") -> None:
    """Refuse with the install command when a module of the smoke extra is missing."""
    missing = missing_smoke_modules()
    if missing:
        raise FlagScaleError(
            f"{command} needs the smoke extra, and {', '.join(missing)}"
            f" {'is' if len(missing) == 1 else 'are'} not installed for {sys.executable}",
            hint=f"install it: {install_command()}",
        )


def smoke_command(*args: Any, **kwargs: Any) -> Any:
    """``inv smoke``: the extra checked first, then ``flagscale.runner.smoke.smoke_command``."""
    require_smoke_extra()
    from flagscale.runner.smoke import smoke_command as run

    return run(*args, **kwargs)
