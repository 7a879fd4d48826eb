"""Named points where a running command can be held, so that concurrency is tested exactly.

A test that needs a command stopped at a known moment (holding a lock, half-way through a
commit) while something else runs starts it with ``FLAGSCALE_PAUSE_AT=<point>`` and
``FLAGSCALE_PAUSE_FIFO=<a FIFO>``.
On reaching the point the command prints ``paused at <point>`` on stderr and opens the FIFO for
reading, which blocks until the test opens it for writing; it goes on when the test closes it.
No sleeps and no timing windows: the test runs whatever it wants between the two. Without the
variables a pause point does nothing. A pause point is a crash point as well
(``flagscale.core.crashpoints``): ``FLAGSCALE_CRASH_AT=<point>`` makes the command die there.
"""

from __future__ import annotations

import os
import sys

from flagscale.core.crashpoints import crash_point

__all__ = ["PAUSE_AT", "PAUSE_FIFO", "pause_point"]

PAUSE_AT = "FLAGSCALE_PAUSE_AT"
PAUSE_FIFO = "FLAGSCALE_PAUSE_FIFO"


def pause_point(name: str) -> None:
    """Die here when ``FLAGSCALE_CRASH_AT`` names this point; wait here for the test's signal
    when ``FLAGSCALE_PAUSE_AT`` does."""
    crash_point(name)
    if os.environ.get(PAUSE_AT) != name:
        return
    fifo = os.environ.get(PAUSE_FIFO)
    if not fifo:
        return
    print(f"paused at {name}", file=sys.stderr, flush=True)
    with open(fifo, "rb") as signal:
        signal.read()
