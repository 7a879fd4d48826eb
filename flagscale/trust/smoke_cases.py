"""What a trust command works on: the device type's workspace, and which smoke cases it runs
(``--case``, a name or a file, or every case in CI)."""

from __future__ import annotations

from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.upstream.workspace import Workspace, find_workspace
from flagscale.vendor.patchset import check_device_type

__all__ = ["SMOKE_CASES", "device_workspace", "resolve_cases"]

SMOKE_CASES = "ci/smoke"  # flagscale.ci.devices.SMOKE_CASES: what CI runs for every device


def resolve_cases(root: Path, case: str | None, *, here: Path | None = None) -> list[Path]:
    """``case`` as a file (relative to ``here`` or ``root``) or a name in ``ci/smoke/``;
    without it, every ``ci/smoke/*.yaml`` in name order."""
    folder = root / SMOKE_CASES
    known = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if case is None:
        if not known:
            raise FlagScaleError(
                f"no smoke cases in {SMOKE_CASES}/", hint="add ci/smoke/<case>.yaml"
            )
        return known
    given = Path(case).expanduser()
    for candidate in (
        given if given.is_absolute() else (here or Path.cwd()) / given,
        root / given,
        folder / f"{case}.yaml",
    ):
        if candidate.is_file():
            return [candidate.resolve()]
    names = ", ".join(p.stem for p in known) or "none"
    raise FlagScaleError(
        f"smoke case {case!r} not found (as a file, or in {SMOKE_CASES}/: {names})",
        hint="pass --case with a case name or file, e.g. --case gpt_tiny_tp2",
    )


def device_workspace(device_type: str | None, start: Path | None) -> tuple[Workspace, Path]:
    """The workspace of a trust command on ``device_type`` (checked), and the folder the paths
    the user gave are relative to."""
    if not device_type:
        raise FlagScaleError(
            "no --device given", hint="name a device type, e.g. --device Generic_CPU"
        )
    check_device_type(device_type)
    return find_workspace(start), (start or Path.cwd()).resolve()
