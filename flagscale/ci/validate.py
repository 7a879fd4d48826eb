"""Checking every file the tool reads against its schema (``python -m flagscale.ci validate``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from flagscale.ci.devices import smoke_cases
from flagscale.core.schema import SchemaError, load_document, validate
from flagscale.upstream.workspace import load_workspace

__all__ = ["WORKFLOW", "load_workflow", "validate_workspace"]


WORKFLOW = "ci/workflows/unpatch_and_test.yml"


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
    metadata (``diff.yaml`` of sets in FlagScale's older layout too), the smoke cases, the golden
    files, the device environment files and the CI
    workflow. Raises on the first error.
    """
    from flagscale.runner.config import load_config
    from flagscale.runner.golden import load_golden
    from flagscale.runner.hooks import ENV_FILE, parse_env_file
    from flagscale.vendor.history import HISTORY, load_history
    from flagscale.vendor.legacy import DIFF_YAML, is_metadata_name, parse_diff_yaml
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
    for path in sorted(hardware.glob("*/*/*.yaml")):  # FlagScale's older layout, kept as is
        if path.name != "metadata.yaml" and is_metadata_name(path.name):
            short = None if path.name == DIFF_YAML else path.name.removesuffix(".yaml")
            parse_diff_yaml(path.read_bytes(), _relative(path, root), name_commit=short)
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


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
