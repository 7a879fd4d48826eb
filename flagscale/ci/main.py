"""CI for flow 4: the device matrix, workspace validation, and one device's unpatch_and_test.

    python -m flagscale.ci matrix                      # {"include": [{"device": ..., ...}]}
    python -m flagscale.ci validate                    # every schema-described file, checked
    python -m flagscale.ci unpatch-and-test --device V_M

The matrix holds every device type with a ``train`` entry in ``hardware/patch_history.yaml``
(the smoke job trains), with the runner labels from its patch sets' ``metadata.yaml``
``ci.runs_on`` (default ``ubuntu-latest``). The noxfile and the GitHub workflow
(ci/workflows/unpatch_and_test.yml) both read it from here; docs/ci.md explains.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import SchemaError, load_document, validate
from flagscale.upstream.workspace import Workspace, load_workspace

__all__ = [
    "DEFAULT_RUNS_ON",
    "SMOKE_CASES",
    "TASK",
    "WORKFLOW",
    "CIDevice",
    "ci_devices",
    "device_types",
    "fresh_build",
    "load_workflow",
    "main",
    "matrix",
    "matrix_command",
    "session_name",
    "smoke_cases",
    "unpatch_and_test",
    "validate_workspace",
]

DEFAULT_RUNS_ON = ("ubuntu-latest",)
SMOKE_CASES = "ci/smoke"
WORKFLOW = "ci/workflows/unpatch_and_test.yml"
TASK = "train"
KEY_PATHS_ENV = "FLAGSCALE_KEY_PATHS"  # key files for encrypted patch sets in CI


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


# --- validation ---------------------------------------------------------------------------------


class _WorkflowLoader(yaml.SafeLoader):
    """YAML as GitHub reads it: ``on``/``off``/``yes``/``no`` stay strings (YAML 1.2 booleans)."""


_WorkflowLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_WorkflowLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_workflow(path: Path, *, display: str | None = None) -> dict[str, Any]:
    """Read a GitHub Actions workflow and check it against schemas/github-workflow.schema.json."""
    source = display or str(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_WorkflowLoader)  # noqa: S506
    except FileNotFoundError as exc:
        raise SchemaError(f"{source}: file not found") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise SchemaError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return validate(data, "github-workflow", source)


def validate_workspace(root: Path) -> list[str]:
    """Check every file the tool reads against its schema; returns the files checked.

    The workspace declaration, the base layers' deletion lists, the history, every patch set's
    metadata, the smoke cases, the golden files, the device environment files and the CI
    workflow. Raises on the first error.
    """
    from flagscale.runner.config import load_config
    from flagscale.runner.golden import load_golden
    from flagscale.runner.hooks import ENV_FILE, parse_env_file
    from flagscale.vendor.history import HISTORY, load_history
    from flagscale.vendor.patchset import HARDWARE, parse_metadata

    ws = load_workspace(root)
    checked = ["backends/backends.yaml"]
    for backend in ws.backends.values():
        if ws.path(backend.deletions).is_file():
            load_document(ws.path(backend.deletions), "base-layer", display=backend.deletions)
            checked.append(backend.deletions)
    if ws.path(HISTORY).is_file():
        load_history(ws)
        checked.append(HISTORY)
    hardware = root / HARDWARE
    for path in sorted(hardware.glob("*/*/metadata.yaml")):
        parse_metadata(path.read_bytes(), _relative(path, root))
        checked.append(_relative(path, root))
    for path in sorted(hardware.glob(f"*/{ENV_FILE}")):
        parse_env_file(path, {}, display=_relative(path, root))
        checked.append(_relative(path, root))
    for path in sorted(hardware.glob("*/smoke/*.golden.json")):
        load_golden(path, display=_relative(path, root))
        checked.append(_relative(path, root))
    for path in smoke_cases(root):
        load_config(path, display=_relative(path, root))
        checked.append(_relative(path, root))
    if (root / WORKFLOW).is_file():
        load_workflow(root / WORKFLOW, display=WORKFLOW)
        checked.append(WORKFLOW)
    return checked


# --- unpatch_and_test ---------------------------------------------------------------------------


def ci_key_paths() -> tuple[Path, ...]:
    """Key files for encrypted patch sets, from ``$FLAGSCALE_KEY_PATHS`` (os.pathsep-separated).

    CI hosts write each vendor's key from a secret into a 0600 file and name it here.
    """
    value = os.environ.get(KEY_PATHS_ENV, "")
    return tuple(Path(part) for part in value.split(os.pathsep) if part.strip())


def fresh_build(
    root: Path, device_type: str, folder: Path, *, key_paths: tuple[Path, ...] = ()
) -> Path:
    """Clone the workspace's committed state into ``folder`` and build ``device_type`` there.

    The build comes from the history and patch sets as committed; nothing in the developer's
    ``build/`` or ``third_party/`` is used or touched. Returns the build tree.
    """
    from flagscale.build.builder import BuildRequest, build_devices
    from flagscale.core.gitcli import git

    clone = folder / "workspace"
    git(["clone", "--quiet", "--shared", "--no-recurse-submodules", str(root), str(clone)], folder)
    request = BuildRequest(devices=(device_type,), task=TASK, key_paths=key_paths)
    return build_devices(load_workspace(clone), request)[device_type]


def unpatch_and_test(
    root: Path,
    device_type: str,
    *,
    work: Path | None = None,
    report: Callable[[str], None] = print,
) -> list[Any]:
    """CI for one device type: validate, fresh build, then every smoke case against its golden.

    Returns the SmokeOutcome of each case; raises on the first failure.
    """
    from flagscale.runner.smoke import describe, run_smoke
    from flagscale.vendor.patchset import check_device_type

    check_device_type(device_type)
    root = root.resolve()
    checked = validate_workspace(root)
    report(f"validated {len(checked)} files")
    cases = smoke_cases(root)
    if not cases:
        raise FlagScaleError(f"no smoke cases in {SMOKE_CASES}/", hint="add ci/smoke/<case>.yaml")
    with tempfile.TemporaryDirectory(prefix=f"flagscale-ci-{device_type}-", dir=work) as temp:
        build = fresh_build(root, device_type, Path(temp), key_paths=ci_key_paths())
        report(f"built {device_type} in a fresh clone: {build}")
        outcomes = []
        for case in cases:
            outcome = run_smoke(root, device_type, case, build_dir=build)
            outcomes.append(outcome)
            report(describe(device_type, outcome))
    return outcomes


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def matrix_command(start: Path | None = None) -> str:
    """``inv ci-matrix``: print the matrix as one line of JSON; returns it."""
    from flagscale.upstream.workspace import find_workspace

    text = json.dumps(matrix(find_workspace(start)), sort_keys=True)
    print(text)
    return text


# --- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flagscale.ci", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--root", type=Path, default=None, help="workspace (default: this one)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("matrix", help="print the device matrix as JSON")
    commands.add_parser("validate", help="check every schema-described file")
    one = commands.add_parser("unpatch-and-test", help="fresh build + smoke job of one device")
    one.add_argument("--device", required=True, help="device type, Vendor_Model")
    args = parser.parse_args(argv)
    try:
        root = _root(args.root)
        if args.command == "matrix":
            print(json.dumps(matrix(load_workspace(root)), sort_keys=True))
        elif args.command == "validate":
            print(f"checked {len(validate_workspace(root))} files")
        else:
            unpatch_and_test(root, args.device)
    except FlagScaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _root(given: Path | None) -> Path:
    from flagscale.upstream.workspace import find_workspace

    return (given or find_workspace().root).resolve()


if __name__ == "__main__":
    sys.exit(main())
