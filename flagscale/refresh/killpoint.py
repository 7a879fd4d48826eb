"""Named points where a refresh kills itself, to test that a ``kill -9`` at any step is safe.

``FLAGSCALE_REFRESH_KILL_AT=<point>`` makes the process send itself SIGKILL when it reaches that
point (no timing, no races: the test names the step). Unset, a point costs one dictionary read.
The points are listed in ``POINTS`` and in docs/refresh.md.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENVIRONMENT", "POINTS", "reached"]

ENVIRONMENT = "FLAGSCALE_REFRESH_KILL_AT"

POINTS = (
    "started",  # the state file is written, nothing else done
    "pin",  # the new pin is imported or fetched and recorded
    "layer",  # the base layer is carried over (no conflict)
    "checkout",  # a conflict checkout is written beside its place, not yet renamed in
    "stopped",  # a conflict checkout is in place and recorded
    "resolved",  # a resolved conflict is read back, the checkout still there
    "pin-commit",  # the pin and base layer commit exists
    "device",  # one device type's commit exists
    "history",  # the history commit exists
    "proved",  # one device type's smoke jobs ran
    "publish",  # the branch points at the new commits; index and work tree not yet updated
    "sync",  # half of the paths are updated in the index and work tree
    "abort",  # an abort has undone part of its work
)


def reached(point: str) -> None:
    """SIGKILL this process if ``FLAGSCALE_REFRESH_KILL_AT`` names ``point``."""
    if os.environ.get(ENVIRONMENT) == point:
        os.kill(os.getpid(), signal.SIGKILL)
