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
        self._shown_at = float("-inf")
        self._shown_mark = -1

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

    def transfer(self, message: str, done: int, total: int | None) -> None:
        """How much of a download has arrived: ``12.0 MiB of 48.0 MiB (25%)``.

        On a terminal the live line follows the bytes (at most ten times a second); in logs a
        line is written at the start, at each quarter (each 64 MiB when the size is unknown)
        and at the end.
        """
        amount = (
            f"{_size(done)} of {_size(total)} ({done * 100 // total}%)" if total else _size(done)
        )
        finished = total is not None and done >= total
        if self.live:
            now = time.monotonic()
            if now - self._shown_at < 0.1 and not finished:
                return
            self._shown_at = now
            line = f"{self.title}: {message}: {amount}"
            self.stream.write("\r\x1b[2K" + line[: _width()])
        else:
            mark = done * 4 // total if total else done >> 26
            if mark == self._shown_mark:
                return
            self._shown_mark = mark
            elapsed = time.monotonic() - self.started
            self.stream.write(f"{self.title}: {message}: {amount} (+{elapsed:.1f}s)\n")
        self.stream.flush()

    def finish(self, message: str = "done") -> None:
        """Close the live line and print a summary."""
        elapsed = time.monotonic() - self.started
        if self.live:
            self.stream.write("\r\x1b[2K")
        self.stream.write(f"{self.title}: {message} in {elapsed:.1f}s\n")
        self.stream.flush()


def _size(count: int) -> str:
    """A byte count as people read it: ``512 B``, ``3.4 KiB``, ``48.0 MiB``, ``1.2 GiB``."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _width() -> int:
    try:
        return os.get_terminal_size().columns - 1
    except OSError:
        return 119
