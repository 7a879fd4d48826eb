"""The smoke extra: the packages a smoke job needs beyond the build system, checked up front.

``pip install -e '.[smoke]'`` installs them (pyproject.toml, ``[project.optional-dependencies]``).
The build system itself works without them, so ``inv smoke`` checks for every module of the
extra that the smoke path imports before importing any of it, and says what to install, as a
command that works when pasted (this interpreter, this checkout), instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.install import install_command

__all__ = [
    "SMOKE_MODULES",
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


def require_smoke_extra(command: str = "inv smoke") -> None:
    """Refuse with the install command when a module of the smoke extra is missing."""
    missing = missing_smoke_modules()
    if missing:
        raise FlagScaleError(
            f"{command} needs the smoke extra, and {', '.join(missing)}"
            f" {'is' if len(missing) == 1 else 'are'} not installed for {sys.executable}",
            hint=f"install it: {install_command(EXTRA)}",
        )


def smoke_command(*args: Any, **kwargs: Any) -> Any:
    """``inv smoke``: the extra checked first, then ``flagscale.runner.smoke.smoke_command``."""
    require_smoke_extra()
    from flagscale.runner.smoke import smoke_command as run

    return run(*args, **kwargs)
