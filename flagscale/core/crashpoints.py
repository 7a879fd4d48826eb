"""Named points where the tool can be made to die at once, for the interruption tests.

``FLAGSCALE_CRASH_AT=build:tree-written inv build --device V_M`` makes that build ``SIGKILL``
itself at the point named ``build:tree-written``: the same death as ``kill -9`` at exactly that
step, with no timing involved. Unset (always, outside the tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_VARIABLE", "crash_point"]

CRASH_VARIABLE = "FLAGSCALE_CRASH_AT"


def crash_point(name: str) -> None:
    """Die by ``SIGKILL`` here when ``FLAGSCALE_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
