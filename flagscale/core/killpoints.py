"""Named points where a run may be stopped with SIGKILL, to prove that every step survives it.

``FLAGSCALE_KILL_AT=<name>`` (or ``<name>:<n>``, the n-th time the point is reached) makes the
process kill itself there, exactly as ``kill -9`` would: no cleanup, no ``finally``. The tests
use it to stop ``inv unpatch`` and ``inv patch`` at every step without depending on timing.
Unset (always, outside the tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["KILL_AT", "killpoint"]

KILL_AT = "FLAGSCALE_KILL_AT"
_reached: dict[str, int] = {}


def killpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``FLAGSCALE_KILL_AT`` names this point (and count)."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
