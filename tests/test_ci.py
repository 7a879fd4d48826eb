"""The CI device matrix, workspace validation and the workflow, checked offline."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flagscale.ci.devices import ci_devices, matrix, session_name
from flagscale.ci.unpatch_and_test import ci_key_paths, fresh_build
from flagscale.ci.validate import WORKFLOW, load_workflow, validate_workspace
from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import SchemaError, validate
from flagscale.upstream.workspace import load_workspace
from flagscale.vendor.patchset import PatchMetadata, dump_metadata
from tests.build_fixtures import DEVICE as VENDOR_DEVICE
from tests.build_fixtures import make_origin
from tests.gitrepos import TOOL_ROOT, inv, make_repo, write_files

COMMIT = "1" * 40
PIN = "2" * 40


def metadata(device: str, backend: str, runs_on: list[str] | None) -> bytes:
    return dump_metadata(
        PatchMetadata(
            device_type=device,
            backend=backend,
            flagscale_base=COMMIT,
            backend_pin=None if backend == "FlagScale" else PIN,
            backend_version="0.16.1",
            models=("gpt",),
            tasks=("train",),
            contact="CI <ci@flagscale.invalid>",
            tool_version="0.1.0",
            patches=({"file": f"{backend}.patch", "sha256": "0" * 64, "encrypted": False},),
            encryption=None,
            ci={"runs_on": runs_on} if runs_on else None,
        )
    )


def ci_workspace(tmp: Path) -> Path:
    """A git workspace with a history of three device types (one of them inference-only)."""
    root = tmp / "ws"
    history = {
        "Metax_C550": {"train": {"FlagScale+Megatron-LM": [COMMIT]}},
        "Generic_CPU": {"train": {"Megatron-LM": [COMMIT]}},
        "Kunlun_P800": {"inference": {"vllm": [COMMIT]}},
    }
    files = {
        "backends/backends.yaml": (TOOL_ROOT / "backends" / "backends.yaml").read_text(),
        "hardware/patch_history.yaml": yaml.safe_dump(history),
        "hardware/Metax_C550/FlagScale/metadata.yaml": metadata(
            "Metax_C550", "FlagScale", ["self-hosted", "metax"]
        ),
        "hardware/Metax_C550/Megatron-LM/metadata.yaml": metadata(
            "Metax_C550", "Megatron-LM", ["self-hosted", "metax"]
        ),
        "hardware/Generic_CPU/Megatron-LM/metadata.yaml": metadata(
            "Generic_CPU", "Megatron-LM", None
        ),
        "ci/smoke/gpt_tiny_tp2.yaml": (
            TOOL_ROOT / "ci" / "smoke" / "gpt_tiny_tp2.yaml"
        ).read_text(),
        WORKFLOW: (TOOL_ROOT / WORKFLOW).read_text(),
    }
    make_repo(root, files)
    return root


EXPECTED_MATRIX = {
    "include": [
        {
            "device": "Generic_CPU",
            "runs_on": ["ubuntu-latest"],
            "session": "unpatch_and_test(device='Generic_CPU')",
        },
        {
            "device": "Metax_C550",
            "runs_on": ["self-hosted", "metax"],
            "session": "unpatch_and_test(device='Metax_C550')",
        },
    ]
}


def test_matrix_from_history_and_metadata(tmp_path: Path) -> None:
    root = ci_workspace(tmp_path)
    assert matrix(load_workspace(root)) == EXPECTED_MATRIX
    assert [d.device_type for d in ci_devices(load_workspace(root))] == [
        "Generic_CPU",
        "Metax_C550",
    ]
    assert session_name("Generic_CPU") == "unpatch_and_test(device='Generic_CPU')"


def test_matrix_commands_print_the_same_json(tmp_path: Path) -> None:
    root = ci_workspace(tmp_path)
    command = [sys.executable, "-m", "flagscale.ci", "--root", str(root), "matrix"]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == EXPECTED_MATRIX
    assert printed.count("\n") == 1  # one line, as $GITHUB_OUTPUT needs it
    assert json.loads(inv(root, "ci-matrix").stdout) == EXPECTED_MATRIX


def test_matrix_without_history_is_empty(tmp_path: Path) -> None:
    root = ci_workspace(tmp_path)
    (root / "hardware" / "patch_history.yaml").unlink()
    assert matrix(load_workspace(root)) == {"include": []}


def test_disagreeing_runner_labels_are_refused(tmp_path: Path) -> None:
    root = ci_workspace(tmp_path)
    write_files(
        root,
        {
            "hardware/Metax_C550/Megatron-LM/metadata.yaml": metadata(
                "Metax_C550", "Megatron-LM", ["metax-big"]
            )
        },
    )
    with pytest.raises(FlagScaleError) as failure:
        matrix(load_workspace(root))
    assert str(failure.value) == (
        "hardware/Metax_C550/Megatron-LM/metadata.yaml: ci.runs_on ['metax-big'] differs from"
        " ['self-hosted', 'metax'] in hardware/Metax_C550/FlagScale/metadata.yaml"
        " (give every patch set of Metax_C550 the same ci.runs_on)"
    )


def test_validate_workspace_checks_every_described_file(tmp_path: Path) -> None:
    root = ci_workspace(tmp_path)
    write_files(root, {"hardware/Generic_CPU/environment_variables.sh": "export A=1\n"})
    write_files(root, {"backends/Megatron-LM.layer.yaml": "version: 1\ndeleted: [a.txt]\n"})
    assert validate_workspace(root) == [
        "backends/backends.yaml",
        "backends/Megatron-LM.layer.yaml",
        "hardware/patch_history.yaml",
        "hardware/Generic_CPU/Megatron-LM/metadata.yaml",
        "hardware/Metax_C550/FlagScale/metadata.yaml",
        "hardware/Metax_C550/Megatron-LM/metadata.yaml",
        "hardware/Generic_CPU/environment_variables.sh",
        "ci/smoke/gpt_tiny_tp2.yaml",
        WORKFLOW,
    ]
    write_files(root, {"backends/Megatron-LM.layer.yaml": "version: 1\ndeleted: a.txt\n"})
    with pytest.raises(SchemaError, match=r"^backends/Megatron-LM.layer.yaml: at deleted: 'a.txt'"):
        validate_workspace(root)
    write_files(root, {"backends/Megatron-LM.layer.yaml": "version: 1\ndeleted: []\n"})
    write_files(root, {"hardware/Generic_CPU/smoke/gpt_tiny_tp2.golden.json": '{"version": 1}'})
    with pytest.raises(SchemaError, match=r"^hardware/Generic_CPU/smoke/gpt_tiny_tp2.golden.json"):
        validate_workspace(root)
    write_files(root, {"hardware/patch_history.yaml": "Generic_CPU:\n  training: {}\n"})
    with pytest.raises(SchemaError, match=r"^hardware/patch_history.yaml: at Generic_CPU"):
        validate_workspace(root)


def test_validate_command_on_this_repository() -> None:
    command = [sys.executable, "-m", "flagscale.ci", "--root", str(TOOL_ROOT), "validate"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("checked ")


def test_shipped_workflow_is_valid_and_wired_to_the_matrix() -> None:
    workflow = load_workflow(TOOL_ROOT / WORKFLOW)
    assert set(workflow["on"]) == {"push", "pull_request", "workflow_dispatch"}
    first, test = workflow["jobs"]["matrix"], workflow["jobs"]["unpatch_and_test"]
    commands = "\n".join(step.get("run", "") for step in first["steps"])
    assert "python -m flagscale.ci matrix" in commands and "$GITHUB_OUTPUT" in commands
    assert first["outputs"]["matrix"] == "${{ steps.matrix.outputs.matrix }}"
    assert test["needs"] == "matrix"
    assert test["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    assert test["runs-on"] == "${{ matrix.runs_on }}"
    runs = [step["run"] for step in test["steps"] if "run" in step]
    # The README's main command: the tool (it brings nox, uv and what the noxfile imports), nox.
    assert runs.index("python -m pip install -e .") < runs.index(
        "nox -s \"unpatch_and_test(device='${DEVICE}')\""
    )
    assert test["env"]["DEVICE"] == "${{ matrix.device }}"
    # The entries the matrix command prints carry every key the workflow reads.
    for entry in EXPECTED_MATRIX["include"]:
        assert {"device", "runs_on", "session"} <= set(entry)


def test_each_device_types_job_gets_only_its_own_environments_key() -> None:
    test = load_workflow(TOOL_ROOT / WORKFLOW)["jobs"]["unpatch_and_test"]
    assert test["environment"] == "${{ matrix.device }}"
    text = (TOOL_ROOT / WORKFLOW).read_text()
    assert "secrets[" not in text  # an indexed secrets context hands every secret to every job
    [key_step] = [step for step in test["steps"] if "PATCH_KEY" in step.get("env", {})]
    assert key_step["env"]["PATCH_KEY"] == "${{ secrets.FLAGSCALE_KEY }}"
    assert "FLAGSCALE_KEY_PATHS=" in key_step["run"]


def _broken(change) -> dict:  # type: ignore[no-untyped-def]
    workflow = copy.deepcopy(load_workflow(TOOL_ROOT / WORKFLOW))
    change(workflow)
    return workflow


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda w: w["jobs"]["matrix"].update({"runs_on": "x"}), "at jobs.matrix"),
        (lambda w: w["jobs"]["matrix"]["steps"][0].update({"run": "echo"}), "at jobs.matrix"),
        (lambda w: w.update({"on": {"pushh": None}}), "at on"),
        (lambda w: w.pop("jobs"), "at (top level)"),
        (
            lambda w: w["jobs"]["unpatch_and_test"]["strategy"].update({"fail_fast": False}),
            "at jobs",
        ),
        (lambda w: w.update({"permissions": {"contents": "admin"}}), "at permissions"),
    ],
)
def test_workflow_schema_catches_mistakes(change, where: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SchemaError) as failure:
        validate(_broken(change), "github-workflow", "unpatch_and_test.yml")
    assert str(failure.value).startswith(f"unpatch_and_test.yml: {where}")


def test_workflow_yaml_keeps_on_as_a_key(tmp_path: Path) -> None:
    path = tmp_path / "w.yml"
    path.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'yes'\n"
    )
    assert load_workflow(path)["on"] == "push"
    path.write_text("on: push\njobs: [\n")
    with pytest.raises(SchemaError, match=r"w.yml:\d+: not valid YAML"):
        load_workflow(path)


def test_inv_smoke_reports_one_line_errors(tmp_path: Path) -> None:
    root = ci_workspace(tmp_path)
    missing = inv(root, "smoke", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: no --device given (name a device type, e.g. --device Generic_CPU)"
    )
    no_build = inv(root / "hardware", "smoke", "--device", "Generic_CPU", check=False)
    assert no_build.returncode == 1
    assert no_build.stderr.strip() == (
        f"error: build tree {root / 'build' / 'Generic_CPU'} does not exist"
        " (run `inv build --device Generic_CPU` first)"
    )
    bad_case = inv(root, "smoke", "--device", "Generic_CPU", "--config", "nope.yaml", check=False)
    assert bad_case.returncode == 1
    assert bad_case.stderr.strip() == (
        f"error: smoke case nope.yaml not found in {root}"
        " (pass --config with a case file, e.g. ci/smoke/gpt_tiny_tp2.yaml)"
    )


def test_ci_builds_encrypted_sets_with_keys_named_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = make_origin(tmp_path / "origin", encrypt=True)
    assert origin.key is not None
    (tmp_path / "without").mkdir()
    with pytest.raises(FlagScaleError, match="no key file in FLAGSCALE_KEY_PATHS"):
        fresh_build(origin.root, VENDOR_DEVICE, tmp_path / "without", key_paths=ci_key_paths())
    monkeypatch.setenv("FLAGSCALE_KEY_PATHS", f"{tmp_path / 'other.key'}{os.pathsep}{origin.key}")
    assert ci_key_paths() == (tmp_path / "other.key", origin.key)
    (tmp_path / "with").mkdir()
    build = fresh_build(origin.root, VENDOR_DEVICE, tmp_path / "with", key_paths=ci_key_paths())
    assert (build / ".flagscale-build.json").is_file()


def test_tests_workflow_runs_the_whole_suite_and_lint() -> None:
    """The kill, concurrency and bad-input tests run in CI: the suite runs on every push."""
    workflow = load_workflow(TOOL_ROOT / "ci/workflows/tests.yml")
    assert set(workflow["on"]) == {"push", "pull_request", "workflow_dispatch"}
    runs = [step.get("run", "") for step in workflow["jobs"]["tests"]["steps"]]
    # the noxfile imports the tool: it is installed before nox runs
    assert runs.index("python -m pip install -e .") < runs.index("nox -s tests lint")
