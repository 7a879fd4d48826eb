"""A refresh proves each refreshed device type trains: a build of the new commits, its smoke jobs.

The smoke case runs a stand-in training entry (plain Python under real torchrun, the runner's
protocol) whose losses depend on a value in the upstream's ``megatron/core/__init__.py``: an
upstream step that changes it moves the losses out of the golden tolerance, and the refresh
stops before publishing with the losses beside the golden ones; ``--record-golden`` takes them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.gitrepos import commit_all, inv, run_git
from tests.refresh_fixtures import (
    BACKEND,
    Refreshable,
    edit,
    lines,
    make_refreshable,
    move_upstream,
)
from tests.smoke_fixtures import FAKE_ENTRY, case_document, record_fake_golden

pytestmark = pytest.mark.slow

DEVICE = "Smoke_S1"
ENTRY = FAKE_ENTRY.format(mode="ok").replace(
    'os.environ.get("FAKE_LOSS_SHIFT", "0")', 'getattr(megatron.core, "LOSS_SHIFT", 0.0)'
)
V1 = {
    "megatron/__init__.py": "",
    "megatron/core/__init__.py": "LOSS_SHIFT = 0.0\n",
    "megatron/core/model.py": lines("model"),
}


@pytest.fixture(scope="module")
def workspace(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Refreshable:
    case = yaml.safe_dump(case_document(entry="tools/fake_train.py"), sort_keys=False)
    found = make_refreshable(
        tmp_path_factory.mktemp("smoke"),
        upstream=V1,
        devices={DEVICE: {BACKEND: {"megatron/core/model.py": edit(lines("model"), 10, "vendor")}}},
        extra={"ci/smoke/tiny.yaml": case, "tools/fake_train.py": ENTRY},
    )
    record_fake_golden(found.root, found.root / "ci/smoke/tiny.yaml", DEVICE)
    commit_all(found.root, "Smoke_S1: golden losses")
    return found


def copy_of(found: Refreshable, tmp: Path) -> Path:
    root = tmp / "FlagScale"
    shutil.copytree(found.root, root, symlinks=True)
    return root


def test_a_refreshed_device_type_is_built_and_trained_before_publishing(
    workspace: Refreshable, tmp_path: Path
) -> None:
    root = copy_of(workspace, tmp_path)
    new = move_upstream(workspace, {"megatron/core/model.py": edit(lines("model"), 25, "up")})
    result = inv(
        root, "refresh", "--backend", BACKEND, "--to", new, "--json", str(tmp_path / "r.json")
    )

    assert "smoke Smoke_S1/tiny: passed, 5 steps" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    [device] = report["devices"]
    [proof] = device["smoke"]
    assert proof["status"] == "passed" and proof["losses"] == proof["golden"]
    result_file = root / "logs/refresh" / DEVICE / "tiny" / "result.json"
    assert json.loads(result_file.read_text())["status"] == "passed"
    assert not (root / "build" / DEVICE).exists()  # proved in a private clone
    assert run_git(root, "rev-parse", f"HEAD:third_party/{BACKEND}") == new


def test_losses_out_of_tolerance_stop_the_refresh_until_new_golden_values_are_asked_for(
    workspace: Refreshable, tmp_path: Path
) -> None:
    root = copy_of(workspace, tmp_path)
    before = run_git(root, "rev-parse", "HEAD")
    golden = root / "hardware" / DEVICE / "smoke" / "tiny.golden.json"
    old_losses = json.loads(golden.read_text())["losses"]
    new = move_upstream(workspace, {"megatron/core/__init__.py": "LOSS_SHIFT = 0.5\n"})

    stopped = inv(root, "refresh", "--backend", BACKEND, "--to", new, check=False)
    assert stopped.returncode == 1
    assert "refresh stopped before publishing: smoke job(s) failed on the refreshed build" in (
        stopped.stderr
    )
    assert "Smoke_S1/tiny: smoke failed: Smoke_S1/tiny: loss diverges at step 1" in stopped.stdout
    rows = stopped.stdout.splitlines()
    header = next(i for i, r in enumerate(rows) if r.split()[:3] == ["step", "golden", "refreshed"])
    first = rows[header + 1].split()
    assert first[0] == "1" and float(first[1]) == pytest.approx(old_losses[0])
    assert float(first[2]) == pytest.approx(old_losses[0] + 0.5) and first[-1] == "out"
    assert run_git(root, "rev-parse", "HEAD") == before  # nothing published

    recorded = inv(root, "refresh", "--continue", "--record-golden")
    assert "smoke Smoke_S1/tiny: recorded golden losses" in recorded.stdout
    subjects = run_git(root, "log", "--format=%s", f"{before}..HEAD").splitlines()
    assert subjects[:2] == [
        f"refresh: history on {BACKEND} {new[:12]}",
        f"refresh: golden losses on {BACKEND} {new[:12]}",
    ]
    losses = json.loads(golden.read_text())["losses"]
    assert losses == pytest.approx([x + 0.5 for x in old_losses])
    assert run_git(root, "status", "--porcelain", "--ignore-submodules=all") == ""


def test_bisect_with_smoke_names_the_commit_whose_losses_leave_the_golden_ones(
    workspace: Refreshable, tmp_path: Path
) -> None:
    root = copy_of(workspace, tmp_path)
    change = {"megatron/core/model.py": edit(lines("model"), 29, "x")}
    harmless = move_upstream(workspace, change, branch="bisect")
    shift = {"megatron/core/__init__.py": "LOSS_SHIFT = 0.25\n"}
    shifted = move_upstream(workspace, shift, branch="bisect")
    result = inv(
        root,
        "bisect-upstream",
        "--device",
        DEVICE,
        "--good",
        workspace.pin,
        "--bad",
        shifted,
        "--smoke",
        "--json",
        str(tmp_path / "b.json"),
    )
    document = json.loads((tmp_path / "b.json").read_text())
    assert document["first_bad"] == shifted and document["last_good"] is not None
    verdicts = {p["step"]: (p["verdict"], p["reason"]) for p in document["probes"]}
    assert (
        verdicts[workspace.pin][0] == "good" and "smoke tiny passed" in verdicts[workspace.pin][1]
    )
    assert verdicts[shifted][0] == "bad"
    assert "the set applies, smoke tiny fails: Smoke_S1/tiny: loss diverges" in verdicts[shifted][1]
    assert f"first bad step: {shifted[:12]}" in result.stdout
    assert harmless in document["steps"]
    assert run_git(root, "status", "--porcelain", "--ignore-submodules=all") == ""
    assert run_git(root, "for-each-ref", "refs/flagscale") == ""
