"""The command-line side of builds: ``inv build`` and ``inv unpatch --device-type``.

Kept out of ``tasks.py`` so the tasks stay one library call each and tests reach everything.
Importing this module is cheap (``inv --list`` does it); the build machinery loads on use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flagscale.core.errors import FlagScaleError

if TYPE_CHECKING:
    from flagscale.vendor.stored_sets import SetSource

__all__ = ["build_command", "unpatch_device_command"]


def build_command(
    devices: Sequence[str],
    *,
    task: str | None = None,
    commit: str | None = None,
    key_paths: Sequence[str] = (),
    backends: Sequence[str] = (),
    three_way: bool = False,
    jobs: int = 0,
    force: bool = False,
    start: Path | None = None,
    source: SetSource | None = None,
    work_tree: bool = False,
) -> dict[str, Path]:
    """``inv build --device V_M ...``: build the device types' trees in the workspace.

    ``source`` says where the patch sets come from (default: the history commit's git objects;
    ``flagscale.release.bundle_build`` passes a verified bundle's). ``work_tree`` builds the
    unrecorded sets in the work tree's ``hardware/<V_M>/`` (``inv build --work-tree``).
    """
    from flagscale.builds.builder import BuildRequest, build_devices
    from flagscale.upstream.workspace import find_workspace
    from flagscale.vendor.stored_sets import GIT_SETS

    if work_tree:
        from flagscale.vendor.worktree_sets import WorkTreeSets

        if source is not None:
            raise FlagScaleError("--work-tree and --bundle exclude each other")
        source = WorkTreeSets()

    if jobs < 0:
        raise FlagScaleError(f"--jobs {jobs}: must be 0 (automatic) or more")
    ws = find_workspace(start)
    request = BuildRequest(
        devices=tuple(devices),
        task=task or None,
        commit=commit or None,
        backends=tuple(backends),
        key_paths=tuple(Path(p).expanduser() for p in key_paths),
        three_way=three_way,
        jobs=jobs or None,
        force=force,
        source=source or GIT_SETS,
    )
    return build_devices(ws, request)


def unpatch_device_command(
    device_type: str,
    *,
    task: Sequence[str] | str | None,
    backends: Sequence[str],
    commit: str | None = None,
    key_paths: Sequence[str] = (),
    three_way: bool = False,
    force: bool = False,
    start: Path | None = None,
) -> Path:
    """``inv unpatch --device-type V_M --task T --backend B ...`` (FlagScale's older spelling).

    Builds ``build/<V_M>/`` exactly like ``inv build --device V_M``; the workspace itself is not
    changed. Several tasks are allowed as in the older tool: the first with patch sets is used.
    """
    tasks = [task] if isinstance(task, str) else list(task or [])
    failure: FlagScaleError | None = None
    for name in tasks or [None]:
        try:
            built = build_command(
                [device_type],
                task=name,
                commit=commit,
                key_paths=key_paths,
                backends=backends,
                three_way=three_way,
                force=force,
                start=start,
            )
        except FlagScaleError as exc:
            if len(tasks) < 2 or "has no entry" not in str(exc):
                raise
            failure = failure or exc
            continue
        return built[device_type]
    assert failure is not None
    raise failure
