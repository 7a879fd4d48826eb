"""The real thing: patch coverage and culprit bisection on the Generic_CPU set (megatron-core 0.16.1
on CPU, 2 ranks with gloo).

A clone of this repository plays the vendor: ``inv unpatch`` lays the base layer, the committed
Generic_CPU set is applied in ``third_party/Megatron-LM`` and edited there — a fault (a constant
that moves the RNG seed), harmless changes, a file nobody imports, then two changes that only
break training together — and each version is made into a set with ``inv patch --device-type``
and recorded with ``inv record-history``, exactly as a vendor would. ``inv bisect`` must name
the faulty hunk, then the pair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.gitrepos import TOOL_ROOT, inv, run_git

pytestmark = pytest.mark.slow

DEVICE = "Generic_CPU"
BACKEND = "Megatron-LM"
MEGATRON = f"third_party/{BACKEND}"
SET_PATCH = TOOL_ROOT / "hardware" / DEVICE / BACKEND / f"{BACKEND}.patch"


def _recorded() -> bool:
    history = yaml.safe_load((TOOL_ROOT / "hardware" / "patch_history.yaml").read_text())
    return bool(history and "train" in (history.get(DEVICE) or {}))


if not _recorded():  # pragma: no cover - the set is committed in this repository
    pytest.skip("the Generic_CPU set is not recorded", allow_module_level=True)


@pytest.fixture(scope="module")
def vendor(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone with the base layer laid and the Generic_CPU set applied in the checkout."""
    root = tmp_path_factory.mktemp("generic-cpu") / "FlagScale"
    subprocess.run(
        ["git", "clone", "-q", "--shared", "--no-recurse-submodules", str(TOOL_ROOT), str(root)],
        check=True,
    )
    inv(root, "unpatch", "--backend", BACKEND)
    subprocess.run(["git", "apply", str(SET_PATCH)], cwd=root / MEGATRON, check=True)
    return root


def base_of(root: Path) -> str:
    metadata = yaml.safe_load((root / "hardware" / DEVICE / BACKEND / "metadata.yaml").read_text())
    return metadata["flagscale_base"]


def make_set(root: Path, message: str, edits: Callable[[Path], None]) -> str:
    """The Generic_CPU set with ``edits`` made in the checkout, made and recorded as a vendor
    does; returns the new history commit. The checkout is put back afterwards."""
    checkout = root / MEGATRON
    before = {path: (checkout / path).read_bytes() for path in (RANDOM, CLIP, UTILS)}
    edits(checkout)
    inv(
        root, "patch", "--device-type", DEVICE, "--task", "train", "--backend", BACKEND,
        "--commit", base_of(root), "--backend-version", "0.16.1", "--models", "gpt",
        "--message", message,
    )  # fmt: skip
    inv(root, "record-history", "--device-type", DEVICE, "--backend", BACKEND)
    run_git(root, "commit", "-q", "-m", f"history: {message}", "--", "hardware/patch_history.yaml")
    for path, content in before.items():  # the checkout as the committed set makes it
        (checkout / path).write_bytes(content)
    (checkout / NOTES).unlink(missing_ok=True)
    return run_git(root, "log", "-1", "--format=%H", "--", f"hardware/{DEVICE}/{BACKEND}")


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path}: the Generic_CPU set changed; update the test"
    path.write_text(text.replace(old, new), encoding="utf-8")


RANDOM = "megatron/core/tensor_parallel/random.py"
CLIP = "megatron/core/optimizer/clip_grads.py"
UTILS = "megatron/core/utils.py"
NOTES = "megatron/core/cpu_notes.py"
SEED = "    else:\n        torch.manual_seed(seed)\n"


def fault_and_harmless(checkout: Path) -> None:
    replace(checkout / RANDOM, SEED, "    else:\n        torch.manual_seed(seed + 1)\n")
    replace(checkout / CLIP, "(total_norm + 1.0e-6)", "(total_norm + 1e-6)")  # same value
    (checkout / NOTES).write_text('NOTES = ["never imported"]\n')


def pair_and_harmless(checkout: Path) -> None:
    shifted = (
        "    else:\n        from megatron.core import utils as _utils\n\n"
        '        torch.manual_seed(seed + getattr(_utils, "CPU_SEED_OFFSET", 0))\n'
    )
    replace(checkout / RANDOM, SEED, shifted)  # alone: the offset is 0
    utils = checkout / UTILS
    utils.write_text(utils.read_text() + "\n\nCPU_SEED_OFFSET = 1  # alone: read by nobody\n")
    (checkout / NOTES).write_text('NOTES = ["never imported"]\n')


def bisect_report(root: Path) -> dict:
    return json.loads((root / "logs" / "bisect" / DEVICE / "bisect.json").read_text())


def test_ci_coverage_classifies_every_hunk_and_the_cpu_hunks_ran(vendor: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flagscale.ci",
            "unpatch-and-test",
            "--device",
            DEVICE,
            "--coverage",
        ],
        cwd=vendor,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TOOL_ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rank(s) measured" in result.stdout
    document = json.loads((vendor / "logs" / "coverage" / DEVICE / "coverage.json").read_text())
    assert document["measurement"]["rank_files"] == 2
    assert document["cases"][0]["status"] == "passed"
    hunks = {
        (file["path"], hunk["header"]): hunk
        for backend in document["backends"]
        for patch in backend["patches"]
        if patch["kind"] == "patch_set"
        for file in patch["files"]
        for hunk in file["hunks"]
    }
    set_hunks = SET_PATCH.read_text().count("\n@@ -")
    assert len(hunks) == set_hunks == 47
    statuses = {hunk["status"] for hunk in hunks.values()}
    assert statuses <= {"executed", "imported_only", "not_reached", "not_measurable"}
    cpu = [
        (UTILS, "@@ -606,6 +606,17 @@"),  # get_current_device()
        (RANDOM, "@@ -50,6 +50,10 @@"),  # the RNG state from the CPU generator
        (RANDOM, "@@ -81,6 +85,11 @@"),
        (RANDOM, "@@ -111,6 +120,14 @@"),  # _manual_seed_device
        (RANDOM, "@@ -419,7 +440,7 @@"),  # model_parallel_cuda_manual_seed
        ("megatron/core/tensor_parallel/data.py", "@@ -34,7 +34,7 @@"),  # broadcast_data
        ("megatron/core/tensor_parallel/data.py", "@@ -81,9 +81,11 @@"),
        ("megatron/core/tensor_parallel/layers.py", "@@ -258,7 +259,7 @@"),  # embedding weights
        ("megatron/core/tensor_parallel/layers.py", "@@ -870,7 +871,7 @@"),  # column parallel
        ("megatron/core/tensor_parallel/layers.py", "@@ -1194,7 +1195,7 @@"),  # row parallel
    ]
    for key in cpu:
        assert hunks[key]["status"] == "executed", key
        assert hunks[key]["ranks"] == ["gpt_tiny_tp2/rank-0", "gpt_tiny_tp2/rank-1"], key
    # the gradient clipping the smoke job never calls: imported, never run
    assert hunks[(CLIP, "@@ -87,7 +87,9 @@")]["status"] == "imported_only"
    layer = [p for b in document["backends"] for p in b["patches"] if p["kind"] == "base_layer"]
    assert layer and layer[0]["against"] and layer[0]["totals"]["hunks"] >= 1
    # only the fresh build ran and was measured, never the clone's checkout
    assert all("/build/" in path for path in _measured_paths(document["measurement"]["data_file"]))


def _measured_paths(data_file: str) -> list[str]:
    from coverage import CoverageData

    data = CoverageData(data_file)
    data.read()
    return sorted(data.measured_files())


def test_bisect_names_the_faulty_hunk_then_the_pair(vendor: Path) -> None:
    faulty = make_set(vendor, "Generic_CPU: tidy the CPU adaptation", fault_and_harmless)

    result = inv(vendor, "bisect", "--device", DEVICE)

    report = bisect_report(vendor)
    assert report["bad"] == faulty and report["signature"] == "diverged"
    assert [c["piece"] for c in report["culprit"]] == [f"{MEGATRON}/{RANDOM} @@ -125,7 +125,7 @@"]
    assert report["culprit"][0]["in_bad_set"].startswith(
        f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch, hunk "
    )
    culprit = (vendor / "logs" / "bisect" / DEVICE / "culprit.patch").read_text()
    assert "-        torch.manual_seed(seed)\n+        torch.manual_seed(seed + 1)\n" in culprit
    assert "coverage: 1 hunk(s) in files no rank of the bad run imported, left out" in result.stdout
    assert "cpu_notes.py" not in culprit
    # the bad entry under coverage, the good one, the harmless hunk alone, the fault alone
    assert report["smoke_runs"] == 4, report["tries"]

    paired = make_set(vendor, "Generic_CPU: a seed offset", pair_and_harmless)
    result = inv(vendor, "bisect", "--device", DEVICE)

    report = bisect_report(vendor)
    assert report["bad"] == paired
    # the previous entry (the faulty one) fails: its verdict comes from the cache, as does
    # the one before it, which passes
    assert report["cached_verdicts"] >= 2
    pieces = [c["piece"].split(" @@")[0] for c in report["culprit"]]
    assert pieces == [f"{MEGATRON}/{RANDOM}", f"{MEGATRON}/{UTILS}"]
    culprit = (vendor / "logs" / "bisect" / DEVICE / "culprit.patch").read_text()
    assert "CPU_SEED_OFFSET = 1" in culprit and '"CPU_SEED_OFFSET", 0' in culprit
    assert "cpu_notes.py" not in culprit
    # the bad entry under coverage, each of the two alone (both pass), the two together
    assert report["smoke_runs"] == 4, report["tries"]
    assert "4 smoke run(s)" in result.stdout
    assert not (vendor / "build" / DEVICE / "logs").exists()
