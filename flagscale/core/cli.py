"""Turning library errors into what a command-line user sees: one line and an exit code."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from typing import TypeVar

from invoke.exceptions import Exit

from flagscale.core.errors import FlagScaleError, os_error

__all__ = ["accept_space_separated_values", "report_errors", "split_names"]

T = TypeVar("T")

INTERRUPTED = 130


def report_errors(verbose: bool, action: Callable[[], T]) -> T:
    """Run ``action``; a FlagScaleError becomes ``error: <one line>`` and exit status 1.

    An OSError that reaches here (permissions, a read-only or full disk, a missing folder) is
    the same: one line naming the path and the cause, exit 1. Anything else is an internal
    error, exit 2. With ``verbose`` the traceback is printed as well. Ctrl-C exits 130 without a
    traceback.
    """
    try:
        return action()
    except FlagScaleError as exc:
        if verbose:
            traceback.print_exc()
        raise Exit(f"error: {exc}", code=1) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", code=INTERRUPTED) from None
    except OSError as exc:  # the environment, not the tool: a path and its cause, exit 1
        if verbose:
            traceback.print_exc()
        raise Exit(f"error: {os_error(exc)}", code=1) from None
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


MULTI_VALUE_FLAGS = ("--backend", "--task", "--device", "--models")


def spread_values(argv: list[str], task_names: Iterable[str]) -> list[str]:
    """Seed 000's spelling ``--backend Megatron-LM FlagScale`` as repeated flags.

    Words after a multi-value flag, up to the next flag or task name, become one flag each:
    ``--backend A B`` → ``--backend A --backend B``.
    """
    stop = set(task_names)
    spread: list[str] = []
    flag: str | None = None
    for word in argv:
        if word.startswith("-") or word in stop:
            flag = word if word in MULTI_VALUE_FLAGS else None
            spread.append(word)
        elif flag and spread[-1] != flag:
            spread.extend([flag, word])
        else:
            spread.append(word)
    return spread


def accept_space_separated_values(task_names: Iterable[str]) -> None:
    """Let ``inv`` take several values after one flag, as FlagScale's tools always did.

    invoke reads task arguments after it has imported tasks.py; this rewrites the words it has
    not parsed yet. Without a running invoke program (imported from a test) it does nothing.
    """
    from invoke.program import Program

    frame = sys._getframe(1)
    while frame is not None:
        program = frame.f_locals.get("self")
        if isinstance(program, Program) and getattr(program, "core", None) is not None:
            unparsed = program.core.unparsed
            unparsed[:] = spread_values(list(unparsed), task_names)
            return
        frame = frame.f_back
