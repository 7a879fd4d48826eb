"""What a refresh checks before it starts or resumes: a refresh in progress (or none), no git
operation under way, the device types it concerns, and a clean tree where it will write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git_ok, git_text
from flagscale.refresh.publish import check_clean
from flagscale.refresh.set_carry import devices_of
from flagscale.refresh.state import load_state
from flagscale.upstream.workspace import (
    DECLARATION,
    Backend,
    ReleaseSource,
    Workspace,
)
from flagscale.vendor.committed import CommittedState
from flagscale.vendor.history import HISTORY
from flagscale.vendor.patchset import HARDWARE

__all__ = [
    "DEFAULT_CHECKOUT",
    "check_no_operation",
    "checkout_folder",
    "gitlink_paths",
    "preflight",
    "refresh_devices",
    "state_or_error",
]

DEFAULT_CHECKOUT = "build/refresh"  # where a stopped stage's conflicts are written


def state_or_error(ws: Workspace) -> dict[str, Any]:
    state = load_state(ws)
    if state is None:
        raise FlagScaleError(
            "no refresh is in progress",
            hint="start one with `inv refresh --backend <name> --to <version or commit>`",
        )
    return state


def check_no_operation(ws: Workspace) -> None:
    for marker in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge", "rebase-apply"):
        path = git_text(["rev-parse", "--git-path", marker], ws.root)
        if (ws.root / path).exists():
            raise FlagScaleError(
                f"a git operation is in progress in {ws.root} ({marker})",
                hint="finish or abort it first",
            )


def refresh_devices(ws: Workspace, head: str, backend: str) -> list[str]:
    if not git_ok(["cat-file", "-e", f"{head}:{HISTORY}"], ws.root):
        return []
    return devices_of(CommittedState(ws.root, head), backend)


def checkout_folder(ws: Workspace, checkout: str | None) -> Path:
    folder = Path(checkout).expanduser() if checkout else ws.path(DEFAULT_CHECKOUT)
    return folder if folder.is_absolute() else (Path.cwd() / folder).resolve()


def _written_paths(ws: Workspace, backend: Backend, devices: list[str]) -> list[str]:
    paths = [backend.layer, backend.deletions, HISTORY]
    paths += [f"{HARDWARE}/{device}" for device in devices]
    if isinstance(backend.source, ReleaseSource):
        paths.append(DECLARATION)
    return paths


def preflight(ws: Workspace, backend: Backend, devices: list[str], folder: Path) -> None:
    from flagscale.refresh.checkout import is_ours

    submodules = [] if isinstance(backend.source, ReleaseSource) else [backend.checkout]
    check_clean(ws, _written_paths(ws, backend, devices), submodules=submodules)
    if folder.exists() and not is_ours(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise FlagScaleError(
            f"{folder} exists: the refresh writes its conflict checkout there",
            hint="move it away, or pass --checkout <another folder>",
        )


def gitlink_paths(ws: Workspace, state: dict[str, Any]) -> set[str]:
    backend = ws.backends.get(state["backend"])
    if backend is None or isinstance(backend.source, ReleaseSource):
        return set()
    return {backend.checkout}
