"""Turning library errors into what a command-line user sees: one line and an exit code."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

from invoke.exceptions import Exit

from flagscale.errors import FlagScaleError

__all__ = ["report_errors", "split_names"]

T = TypeVar("T")

INTERRUPTED = 130


def report_errors(verbose: bool, action: Callable[[], T]) -> T:
    """Run ``action``; a FlagScaleError becomes ``error: <one line>`` and exit status 1.

    With ``verbose`` the traceback is printed as well. Ctrl-C exits 130 without a traceback.
    """
    try:
        return action()
    except FlagScaleError as exc:
        if verbose:
            traceback.print_exc()
        raise Exit(f"error: {exc}", code=1) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", code=INTERRUPTED) from None
    except Exception as exc:  # an unexpected failure still gets one line unless --verbose
        if verbose:
            traceback.print_exc()
            raise
        print(
            f"error: internal error: {type(exc).__name__}: {exc} (rerun with --verbose)",
            file=sys.stderr,
        )
        raise Exit(code=2) from None


def split_names(values: list[str] | None) -> list[str]:
    """Flags given as repeated options or space/comma-separated lists, flattened, order kept."""
    names: list[str] = []
    for value in values or []:
        names.extend(part for part in value.replace(",", " ").split() if part)
    return list(dict.fromkeys(names))
