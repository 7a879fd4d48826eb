"""The CI workflow audited by zizmor, offline, as people audit GitHub workflows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from flagscale.ci.validate import WORKFLOW
from tests.gitrepos import TOOL_ROOT
from tests.toolcopy import copy_tool


def zizmor() -> str:
    """The zizmor binary (a console script of the test extra's ``zizmor``); skip without it."""
    found = shutil.which("zizmor", path=sysconfig.get_path("scripts")) or shutil.which("zizmor")
    if not found:
        pytest.skip("zizmor is not installed (python -m pip install -e '.[test]' brings it)")
    return found


def audit(*workflows: Path) -> tuple[int, list[dict]]:
    result = subprocess.run(
        [zizmor(), "--offline", "--format", "json", *map(str, workflows)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout or "[]")


def test_zizmor_finds_nothing_in_the_shipped_workflows() -> None:
    workflows = sorted((TOOL_ROOT / WORKFLOW).parent.glob("*.yml"))
    assert TOOL_ROOT / WORKFLOW in workflows
    returncode, findings = audit(*workflows)
    assert [(f["ident"], f["locations"][0]["concrete"]["feature"]) for f in findings] == []
    assert returncode == 0


@pytest.mark.parametrize(
    ("old", "new", "ident"),
    [
        (
            "${{ secrets.FLAGSCALE_KEY }}",
            "${{ secrets[format('FLAGSCALE_KEY_{0}', matrix.device)] }}",
            "overprovisioned-secrets",
        ),
        (
            "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02 # v4.6.2",
            "actions/upload-artifact@v4",
            "unpinned-uses",
        ),
        (
            "fetch-depth: 0\n          persist-credentials: false\n",
            "fetch-depth: 0\n",
            "artipacked",
        ),
    ],
)
def test_zizmor_catches_what_the_workflow_was_fixed_for(
    tmp_path: Path, old: str, new: str, ident: str
) -> None:
    text = (TOOL_ROOT / WORKFLOW).read_text()
    assert old in text
    broken = tmp_path / "unpatch_and_test.yml"
    broken.write_text(text.replace(old, new))
    returncode, findings = audit(broken)
    assert returncode != 0
    assert ident in {finding["ident"] for finding in findings}


@pytest.mark.slow
def test_nox_lint_session_installs_zizmor_and_fails_on_a_finding(tmp_path: Path) -> None:
    root = copy_tool(tmp_path / "FlagScale")
    workflow = root / WORKFLOW
    pinned = "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02 # v4.6.2"
    workflow.write_text(workflow.read_text().replace(pinned, "actions/upload-artifact@v4"))
    result = subprocess.run(
        [sys.executable, "-m", "nox", "-s", "lint", "-f", str(root / "noxfile.py")],
        cwd=root,
        env={k: v for k, v in os.environ.items() if not k.startswith("NOX")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    audit = [line for line in output.splitlines() if line.startswith("nox > zizmor --offline ")]
    assert audit and str(workflow) in audit[0], output  # ruff and lint-imports passed
    assert "unpinned-uses" in output
    assert "nox > Session lint failed." in output
