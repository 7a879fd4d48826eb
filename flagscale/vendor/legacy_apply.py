"""Applying a set in FlagScale's older layout exactly as FlagScale's ``tools/patch`` applies it.

``tools/patch/unpatch.py`` runs, for each stored patch file in turn, ``git apply --whitespace
warn <file>``, and only when that fails, ``git apply --whitespace fix <file>`` for that file. So
added lines keep their trailing spaces, CRs and blank lines at the end of a file, except in a file
whose strict apply failed (its context differed in whitespace): there the fix also strips them.
A section git cannot read is skipped by git with an error message but exit status 0; the tool
went on, and so does this (the caller reports it).

One strict ``git apply`` of all the files at once gives the same result as one per file whenever
it succeeds without skipping anything; only otherwise are the files applied one by one.
Callers run git against their own index: ``Apply`` runs ``git apply <args> -`` with a patch on
standard input and returns (exit status, standard error); ``Reset`` puts the index back to the
tree it started from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flagscale.core.errors import FlagScaleError

__all__ = [
    "STRICT",
    "WHITESPACE_FIX",
    "Applied",
    "LegacyApplyError",
    "Piece",
    "apply_like_flagscale",
    "skipped_sections",
]

STRICT = "--whitespace=warn"
WHITESPACE_FIX = "--whitespace=fix"

Apply = Callable[[list[str], bytes], tuple[int, str]]
Reset = Callable[[], None]


@dataclass(frozen=True)
class Piece:
    """One stored patch file (decrypted): ``label`` names it in messages."""

    label: str
    text: bytes


@dataclass
class Applied:
    """What applying needed: the files that took the whitespace fallback, the skipped sections."""

    fixed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "<label>: <git's words>"

    def notes(self) -> list[str]:
        """One line per file that applied differently from a plain strict ``git apply``."""
        lines = [
            f"{label}: strict git apply failed; applied with {WHITESPACE_FIX} (as FlagScale's"
            " tool does), which also strips trailing whitespace from its added lines"
            for label in self.fixed
        ]
        lines += [
            f"{item}: git skips this part (as it did in FlagScale's tool); ask the vendor to"
            " regenerate the patch set to include it"
            for item in self.skipped
        ]
        return lines


class LegacyApplyError(FlagScaleError):
    """A stored patch file applies neither strictly nor with the whitespace fix."""

    def __init__(self, piece: Piece, stderr: str) -> None:
        self.piece = piece
        self.stderr = stderr
        super().__init__(
            f"{piece.label}: does not apply, neither strictly nor with {WHITESPACE_FIX}"
            f" ({_first_error(stderr)})",
            hint="FlagScale's tool fails on it too: ask the vendor for a patch set made against"
            " this base",
        )


def skipped_sections(stderr: str) -> list[str]:
    """git's error lines for sections it skipped while still exiting 0."""
    found = [line for line in stderr.splitlines() if line.startswith("error:")]
    return [line.removeprefix("error: ").rstrip(": ") for line in found]


def apply_like_flagscale(apply: Apply, reset: Reset, pieces: Sequence[Piece]) -> Applied:
    """Apply ``pieces`` in order as FlagScale's tool does; raise LegacyApplyError on a file that
    applies neither way."""
    if not pieces:
        return Applied()
    status, stderr = apply([STRICT], b"".join(piece.text for piece in pieces))
    if status == 0 and not skipped_sections(stderr):
        return Applied()
    if status == 0:
        reset()
    applied = Applied()
    for piece in pieces:
        status, stderr = apply([STRICT], piece.text)
        if status != 0:
            status, stderr = apply([WHITESPACE_FIX], piece.text)
            if status != 0:
                raise LegacyApplyError(piece, stderr)
            applied.fixed.append(piece.label)
        applied.skipped += [f"{piece.label}: {line}" for line in skipped_sections(stderr)]
    return applied


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    return "; ".join((errors or lines or ["git apply failed"])[:2])
