"""What CI runs: the device types with a ``train`` entry in the history, their runner labels,
and the smoke cases every one of them runs.

The matrix holds every device type with a ``train`` entry in ``hardware/patch_history.yaml``
(the smoke job trains), with the runner labels from its patch sets' ``metadata.yaml``
``ci.runs_on`` (default ``ubuntu-latest``). The noxfile and the GitHub workflow
(ci/workflows/unpatch_and_test.yml) both read it from here; docs/ci.md explains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.upstream.workspace import Workspace, load_workspace

__all__ = [
    "DEFAULT_RUNS_ON",
    "SMOKE_CASES",
    "TASK",
    "CIDevice",
    "ci_devices",
    "device_types",
    "matrix",
    "matrix_command",
    "session_name",
    "smoke_cases",
]


DEFAULT_RUNS_ON = ("ubuntu-latest",)


SMOKE_CASES = "ci/smoke"


TASK = "train"


@dataclass(frozen=True)
class CIDevice:
    """A device type CI tests, and the runner labels its job asks for."""

    device_type: str
    runs_on: tuple[str, ...]

    def as_matrix_entry(self) -> dict[str, Any]:
        return {
            "device": self.device_type,
            "runs_on": list(self.runs_on),
            "session": session_name(self.device_type),
        }


def session_name(device_type: str) -> str:
    """The nox session of a device type, exactly as ``nox -l`` shows it."""
    return f"unpatch_and_test(device={device_type!r})"


def ci_devices(ws: Workspace) -> list[CIDevice]:
    """Device types with a ``train`` history entry, sorted, with their runner labels."""
    from flagscale.vendor.history import load_history

    history = load_history(ws)
    devices = []
    for device_type in sorted(history):
        keys = history[device_type].get(TASK)
        if not keys:
            continue
        backends = sorted({b for key in keys for b in key.split("+")})
        devices.append(CIDevice(device_type, _runs_on(ws, device_type, backends)))
    return devices


def _runs_on(ws: Workspace, device_type: str, backends: list[str]) -> tuple[str, ...]:
    """The ``ci.runs_on`` the device's patch sets agree on; the default when none sets it."""
    from flagscale.vendor.patchset import METADATA, parse_metadata, set_folder

    chosen: tuple[str, ...] | None = None
    chosen_from = ""
    for backend in backends:
        relative = f"{set_folder(device_type, backend)}/{METADATA}"
        path = ws.path(relative)
        if not path.is_file():
            continue
        ci = parse_metadata(path.read_bytes(), relative).ci
        if not ci:
            continue
        labels = tuple(ci["runs_on"])
        if chosen is not None and labels != chosen:
            raise FlagScaleError(
                f"{relative}: ci.runs_on {list(labels)} differs from {list(chosen)} in"
                f" {chosen_from}",
                hint=f"give every patch set of {device_type} the same ci.runs_on",
            )
        chosen, chosen_from = labels, relative
    return chosen or DEFAULT_RUNS_ON


def matrix(ws: Workspace) -> dict[str, Any]:
    """The GitHub Actions matrix: ``{"include": [{"device", "runs_on", "session"}, ...]}``."""
    return {"include": [device.as_matrix_entry() for device in ci_devices(ws)]}


def device_types(root: Path) -> list[str]:
    """The device types CI tests, for the noxfile; [] when the workspace has no history."""
    return [device.device_type for device in ci_devices(load_workspace(root))]


def smoke_cases(root: Path) -> list[Path]:
    """The smoke case files every device type runs: ``ci/smoke/*.yaml``, sorted."""
    return sorted((root / SMOKE_CASES).glob("*.yaml"))


def matrix_command(start: Path | None = None) -> str:
    """``inv ci-matrix``: print the matrix as one line of JSON; returns it."""
    from flagscale.upstream.workspace import find_workspace

    text = json.dumps(matrix(find_workspace(start)), sort_keys=True)
    print(text)
    return text
