"""Progress for long operations: a live line on a terminal, one plain line per step in CI logs."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Reports steps of a long operation to stderr.

    On a terminal the current step rewrites one line; elsewhere (CI logs, pipes) every step is
    its own line with the elapsed time, so a log shows where a run spent its time.
    """

    def __init__(
        self, title: str, total: int | None = None, *, stream: TextIO | None = None
    ) -> None:
        self.title = title
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() and not os.environ.get("CI")
        self.started = time.monotonic()

    def step(self, message: str) -> None:
        """Announce the next step."""
        self.done += 1
        counter = f"[{self.done}/{self.total}] " if self.total else ""
        if self.live:
            line = f"{self.title}: {counter}{message}"
            self.stream.write("\r\x1b[2K" + line[: _width()])
        else:
            elapsed = time.monotonic() - self.started
            self.stream.write(f"{self.title}: {counter}{message} (+{elapsed:.1f}s)\n")
        self.stream.flush()

    def finish(self, message: str = "done") -> None:
        """Close the live line and print a summary."""
        elapsed = time.monotonic() - self.started
        if self.live:
            self.stream.write("\r\x1b[2K")
        self.stream.write(f"{self.title}: {message} in {elapsed:.1f}s\n")
        self.stream.flush()


def _width() -> int:
    try:
        return os.get_terminal_size().columns - 1
    except OSError:
        return 119
