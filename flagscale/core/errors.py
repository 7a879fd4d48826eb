"""The one error type the tool reports to its user."""

from __future__ import annotations

__all__ = ["FlagScaleError", "NotInWorkspaceError"]


class FlagScaleError(Exception):
    """A failure told to the user in one line: what failed, where, and what to do next."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class NotInWorkspaceError(FlagScaleError):
    """The current folder (or the one given) is in no workspace; the command line names the
    clone whose ``tasks.py`` runs (``inv -r <clone>`` from elsewhere: ``cd`` there)."""
