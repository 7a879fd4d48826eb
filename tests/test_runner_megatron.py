"""The real thing: megatron-core 0.16.1 with the Generic_CPU patch set, built from this
repository's committed history into a fresh clone, trains the tiny GPT (TP=2 over 2 CPU
processes, gloo) and matches the committed golden losses; the same tree without the adaptation
crashes, and with one line of the adaptation undone fails with the first diverging step."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from flagscale.ci.unpatch_and_test import fresh_build
from flagscale.runner.smoke import SmokeError, run_smoke
from tests.gitrepos import TOOL_ROOT

DEVICE = "Generic_CPU"
CASE = "ci/smoke/gpt_tiny_tp2.yaml"
# One piece of the Generic_CPU adaptation (tensor_parallel/random.py): on a CPU-only torch the RNG
# tracker must switch the CPU generator. Without it, setting the state silently goes nowhere
# (torch.cuda._lazy_call queues it), so the run still completes, with other dropout masks.
CPU_RNG_BRANCH = "".join(
    [
        "    if not torch.cuda.is_available():\n",
        "        torch.set_rng_state(new_state)\n",
        "        return\n",
    ]
)


def _recorded(device: str) -> bool:
    path = TOOL_ROOT / "hardware" / "patch_history.yaml"
    history = yaml.safe_load(path.read_text()) if path.is_file() else None
    return bool(history and "train" in (history.get(device) or {}))


@pytest.mark.slow
@pytest.mark.skipif(
    not _recorded(DEVICE),
    reason="the Generic_CPU patch set is not recorded in hardware/patch_history.yaml yet",
)
def test_generic_cpu_matches_golden_and_without_or_with_a_harmed_adaptation_does_not(
    tmp_path: Path,
) -> None:
    build = fresh_build(TOOL_ROOT, DEVICE, tmp_path)  # the megatron release comes via pip
    workspace = tmp_path / "workspace"
    outcome = run_smoke(workspace, DEVICE, workspace / CASE, build_dir=build)
    assert outcome.status == "passed"
    assert len(outcome.losses) == 10
    result = json.loads(outcome.result.read_text())
    megatron = build / "third_party" / "Megatron-LM"
    assert Path(result["job"]["megatron_core"]).is_relative_to(megatron)
    assert result["peak_memory_mb"]["job_rss"] > 100

    # Without the adaptation (the patch set reversed: pristine megatron-core), the job crashes.
    patch = TOOL_ROOT / "hardware" / DEVICE / "Megatron-LM" / "Megatron-LM.patch"
    # (the build sits inside the clone's work tree: stop git from treating it as a subfolder)
    apart = {**os.environ, "GIT_CEILING_DIRECTORIES": str(megatron.parent)}
    subprocess.run(["git", "apply", "-R", str(patch)], cwd=megatron, env=apart, check=True)
    with pytest.raises(SmokeError) as crashed:
        run_smoke(workspace, DEVICE, workspace / CASE, build_dir=build)
    assert "failed with exit status" in str(crashed.value)
    assert "Torch not compiled with CUDA enabled" in (crashed.value.args[0] + _job_log(workspace))
    subprocess.run(["git", "apply", str(patch)], cwd=megatron, env=apart, check=True)

    random_py = megatron / "megatron" / "core" / "tensor_parallel" / "random.py"
    text = random_py.read_text()
    assert text.count(CPU_RNG_BRANCH) == 1, "the Generic_CPU patch set changed; update the test"
    random_py.write_text(text.replace(CPU_RNG_BRANCH, ""))
    with pytest.raises(SmokeError) as failure:
        run_smoke(workspace, DEVICE, workspace / CASE, build_dir=build)
    message = str(failure.value)
    assert message.startswith(f"{DEVICE}/gpt_tiny_tp2: loss diverges at step ")
    assert "tolerance relative 0.0001, absolute 1e-05" in message
    assert json.loads(outcome.result.read_text())["status"] == "failed"


def _job_log(workspace: Path) -> str:
    log = workspace / "logs" / "smoke" / DEVICE / "gpt_tiny_tp2" / "job.log"
    return log.read_text(errors="replace") if log.is_file() else ""
