"""The pre-commit hooks (.pre-commit-hooks.yaml) as a consumer repository runs them.

A copy of this repository is the hook repository; a vendor's FlagScale with plain patch
sets and a recorded history is the consumer. Real pre-commit installs the tool into its own
environment (language: python) and runs its hooks: try-repo, a pasted configuration, a commit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.build_fixtures import DEVICE, make_origin
from tests.gitrepos import TOOL_ROOT, run_git
from tests.toolcopy import copy_tool

pytestmark = pytest.mark.slow

HOOKS = ["flagscale-validate", "flagscale-check-history", "flagscale-check-sets"]
SET = f"hardware/{DEVICE}/Megatron-LM"
REPORT_LINE = re.compile(r"^(?P<name>[^.].*?)\.{3,}.*(?P<status>Passed|Failed|Skipped)$")


@pytest.fixture
def pre_commit_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pre-commit's store in the test's folder; pip's cache shared by the tests of this worker."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed tool runs
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    env["PIP_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "pip-cache")
    return env


def pre_commit(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def hook_lines(output: str) -> dict[str, str]:
    """``{hook name, up to " (": Passed|Failed|Skipped}`` from pre-commit's report."""
    results = {}
    for line in output.splitlines():
        found = REPORT_LINE.match(line)
        if found:
            results[found["name"].split(" (")[0]] = found["status"]
    return results


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


def test_manifest_hooks_run_the_installed_command_line() -> None:
    manifest = yaml.safe_load((TOOL_ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [hook["id"] for hook in manifest] == HOOKS
    assert 'flagscale-ci = "flagscale.ci.main:main"' in (TOOL_ROOT / "pyproject.toml").read_text()
    for hook in manifest:
        assert hook["language"] == "python" and hook["pass_filenames"] is False
        assert hook["entry"].split()[0] == "flagscale-ci"


def test_try_repo_runs_every_hook_on_a_sound_workspace(
    tmp_path: Path, pre_commit_env: dict[str, str]
) -> None:
    tool = copy_tool(tmp_path / "tool")
    consumer = make_origin(tmp_path / "origin").vendor.root
    result = pre_commit(consumer, pre_commit_env, "try-repo", str(tool), "--all-files")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert hook_lines(output) == {
        "flagscale validate": "Passed",
        "flagscale check-history": "Passed",
        "flagscale check-sets": "Passed",
    }


def test_hooks_pasted_into_a_consumer_config_stop_broken_workspaces(
    tmp_path: Path, pre_commit_env: dict[str, str]
) -> None:
    tool = copy_tool(tmp_path / "tool")
    origin = make_origin(tmp_path / "origin")
    consumer = origin.vendor.root
    config = {
        "repos": [
            {
                "repo": str(tool),
                "rev": run_git(tool, "rev-parse", "HEAD"),
                "hooks": [{"id": hook} for hook in HOOKS],
            }
        ]
    }
    (consumer / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_git(consumer, "add", ".pre-commit-config.yaml")
    run_git(consumer, "commit", "-q", "-m", "pre-commit")

    def run_all() -> tuple[int, str]:
        result = pre_commit(consumer, pre_commit_env, "run", "--all-files")
        return result.returncode, result.stdout + result.stderr

    code, output = run_all()
    assert code == 0, output
    assert set(hook_lines(output).values()) == {"Passed"}

    # A metadata.yaml that breaks its schema: one line naming the file, the key and the value.
    metadata = consumer / SET / "metadata.yaml"
    good = metadata.read_text()
    metadata.write_text(good.replace("device_type: Metax_C550", "device_type: metax"))
    code, output = run_all()
    assert code == 1
    assert hook_lines(output)["flagscale validate"] == "Failed"
    line = (
        f"error: {SET}/metadata.yaml: at device_type: 'metax' does not match"
        " ^[A-Z][A-Za-z0-9]*_[A-Za-z0-9]+$ (schema patch-metadata)"
    )
    assert errors(output) == [line, line]  # validate and check-sets
    metadata.write_text(good)

    # A patch file changed by hand, and a file the metadata does not list.
    patch = consumer / SET / "Megatron-LM.patch"
    original = patch.read_bytes()
    patch.write_bytes(original + b"\n")
    (consumer / SET / "notes.txt").write_text("left behind\n")
    code, output = run_all()
    assert code == 1
    assert hook_lines(output) == {
        "flagscale validate": "Passed",
        "flagscale check-history": "Passed",
        "flagscale check-sets": "Failed",
    }
    assert errors(output) == [
        f"error: {SET}/Megatron-LM.patch: sha256 does not match {SET}/metadata.yaml"
        " (restore it from git or re-run inv patch)"
    ]
    patch.write_bytes(original)
    code, output = run_all()
    assert errors(output) == [
        f"error: {SET}/notes.txt is not listed in {SET}/metadata.yaml"
        f" (remove it (git rm -- {SET}/notes.txt) or re-run inv patch)"
    ]
    (consumer / SET / "notes.txt").unlink()

    # A history entry naming a commit this repository does not have.
    history = consumer / "hardware" / "patch_history.yaml"
    recorded = history.read_text()
    assert origin.commit in recorded
    lost = "0123456789abcdef0123456789abcdef01234567"
    history.write_text(recorded.replace(origin.commit, lost))
    code, output = run_all()
    assert code == 1
    assert hook_lines(output)["flagscale check-history"] == "Failed"
    assert [line for line in errors(output) if lost in line], output
    history.write_text(recorded)

    # Installed as the git hook: a commit of a broken metadata.yaml is refused.
    assert pre_commit(consumer, pre_commit_env, "install").returncode == 0
    metadata.write_text(good.replace("device_type: Metax_C550", "device_type: metax"))
    run_git(consumer, "add", str(metadata.relative_to(consumer)))
    before = run_git(consumer, "rev-parse", "HEAD")
    commit = subprocess.run(
        ["git", "commit", "-q", "-m", "broken"],
        cwd=consumer,
        env=pre_commit_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert commit.returncode != 0
    assert "flagscale validate" in commit.stdout + commit.stderr
    assert run_git(consumer, "rev-parse", "HEAD") == before


def test_this_repositorys_own_hooks_install_offline_and_stop_a_lint_error(
    tmp_path: Path, pre_commit_env: dict[str, str]
) -> None:
    tool = copy_tool(tmp_path / "tool")
    (tool / "flagscale" / "core" / "unused.py").write_text('"""Unused."""\n\nimport os\n')
    run_git(tool, "add", "flagscale/core/unused.py")
    env = {
        **pre_commit_env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{pre_commit_env['PATH']}",
        "SKIP": "flagscale-check-history",  # the copy has one commit, not the recorded ones
    }
    result = pre_commit(tool, env, "run", "--all-files")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert hook_lines(output) == {
        "ruff check": "Failed",
        "ruff format": "Passed",
        "import layers": "Passed",
        "zizmor": "Passed",
        "flagscale validate": "Passed",
        "flagscale check-history": "Skipped",
        "flagscale check-sets": "Passed",
    }
    assert "F401 [*] `os` imported but unused" in output
    assert "--> flagscale/core/unused.py:3:8" in output
