"""Bringing each upstream checkout in third_party/ to a state that holds its pin.

Only what is missing is fetched; an existing work tree is never touched here (laying the pin
and the base layer over it is the overlay's job).
"""

from __future__ import annotations

from pathlib import Path

from flagscale.errors import FlagScaleError
from flagscale.gitcli import git, git_ok
from flagscale.workspace import Backend, SubmoduleSource, Workspace

__all__ = ["ensure_checkout", "has_commit"]


def has_commit(repo: Path, commit: str) -> bool:
    """True when ``repo`` holds ``commit`` as a commit object."""
    return git_ok(["cat-file", "-e", f"{commit}^{{commit}}"], repo)


def ensure_checkout(workspace: Workspace, backend: Backend) -> Path:
    """Make ``third_party/<backend>`` a git repository that contains the backend's pin.

    Returns the checkout folder. A fresh checkout is left at the pin; an existing one keeps its
    work tree and only gains the missing commit.
    """
    checkout = workspace.path(backend.checkout)
    pin = workspace.pin(backend)
    if isinstance(backend.source, SubmoduleSource):
        if not (checkout / ".git").exists():
            git(["submodule", "update", "--init", "--", backend.checkout], workspace.root)
        elif not has_commit(checkout, pin):
            git(["fetch", "--quiet", "origin", pin], checkout)
        if not has_commit(checkout, pin):
            raise FlagScaleError(f"{backend.name}: pin {pin} not found in {backend.source.url}")
        return checkout
    raise FlagScaleError(f"{backend.name}: release sources are not implemented yet")
