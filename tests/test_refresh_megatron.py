"""The real workload: this repository's Generic_CPU set over megatron-core, moved between real
releases from the package registry and back, trained on the refreshed build each way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.gitrepos import TOOL_ROOT, inv, run_git

pytestmark = pytest.mark.slow

DEVICE = "Generic_CPU"
BACKEND = "Megatron-LM"
SET = f"hardware/{DEVICE}/{BACKEND}"


def _recorded() -> bool:
    path = TOOL_ROOT / "hardware" / "patch_history.yaml"
    history = yaml.safe_load(path.read_text()) if path.is_file() else None
    return bool(history and DEVICE in history)


@pytest.mark.skipif(not _recorded(), reason="the Generic_CPU set is not recorded here")
def test_generic_cpu_round_trip_between_megatron_core_releases(tmp_path: Path) -> None:
    root = tmp_path / "FlagScale"
    run_git(tmp_path, "clone", "-q", "--no-recurse-submodules", str(TOOL_ROOT), str(root))
    declared = (root / "backends/backends.yaml").read_text()
    if 'version: "0.16.1"' not in declared:
        pytest.skip("this workspace pins another megatron-core than 0.16.1")
    original = {
        path: (root / path).read_bytes()
        for path in [
            f"{SET}/{BACKEND}.patch",
            "backends/backends.yaml",
            f"backends/{BACKEND}/megatron/core/package_info.py",
            f"backends/{BACKEND}.layer.yaml",
        ]
    }

    down = inv(
        root, "refresh", "--backend", BACKEND, "--to", "0.16.0", "--json", str(tmp_path / "d.json")
    )
    assert f"refresh {BACKEND} 0.16.1 -> 0.16.0: done" in down.stdout
    report = json.loads((tmp_path / "d.json").read_text())
    [device] = report["devices"]
    assert device["sets"][0]["status"] == "unchanged"
    assert [p["status"] for p in device["smoke"]] == ["passed"]  # trained on 0.16.0
    assert {f["path"]: f["class"] for f in report["layer"]["files"]}[
        "megatron/core/package_info.py"
    ] == "merged"
    info = (root / f"backends/{BACKEND}/megatron/core/package_info.py").read_text()
    assert "PATCH = 0" in info and "__flagscale_base_layer__ = 1" in info

    up = inv(root, "refresh", "--backend", BACKEND, "--to", "0.16.1", "--no-smoke")
    assert f"refresh {BACKEND} 0.16.0 -> 0.16.1: done" in up.stdout
    assert {path: (root / path).read_bytes() for path in original} == original
    assert "1 clean" in inv(root, "matrix", "--strict").stdout
