"""Named points at which a crash test kills the running process, to prove a command resumes.

A long command that promises "kill -9 at any moment, run again, same result" names its steps
with ``reached("<command>:<step>")``. When the environment variable ``FLAGSCALE_KILL_AT`` holds
that name, the process sends itself SIGKILL there: no cleanup, no ``finally``, exactly what a
``kill -9`` or a power cut does. The variable is never set outside those tests; unset, a
kill point does nothing.
"""

from __future__ import annotations

import os
import signal

__all__ = ["KILL_AT", "reached"]

KILL_AT = "FLAGSCALE_KILL_AT"


def reached(name: str) -> None:
    """Die by SIGKILL here if ``FLAGSCALE_KILL_AT`` names this point."""
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
