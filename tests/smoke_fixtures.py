"""Workspaces and build trees for the smoke-runner tests.

A *fake* build tree has the layout of a real one (``.flagscale-build.json``,
``third_party/Megatron-LM/megatron/core``) and a training entry written here: plain Python that
follows the runner's protocol (job.json in, metrics JSON lines out) without torch, so the
runner's process handling is tested on real torchrun processes in a few seconds each.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml

from tests.gitrepos import write_files

DEVICE = "Generic_CPU"

FAKE_ENTRY = textwrap.dedent(
    '''
    """A stand-in training entry: deterministic losses, behaviour picked by MODE."""
    import argparse, json, math, os, subprocess, sys, time

    MODE = "{mode}"

    parser = argparse.ArgumentParser()
    parser.add_argument("--job", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()
    job = json.load(open(args.job))
    rank = int(os.environ["RANK"])
    import megatron.core

    def write(event, **fields):
        if rank == 0:
            with open(args.metrics, "a") as stream:
                stream.write(json.dumps({{"event": event, **fields}}) + "\\n")

    write("provenance", megatron_core=os.path.realpath(megatron.core.__file__),
          megatron_core_version="fake", torch=None, python=sys.executable, sys_path=sys.path)
    if MODE == "escape" and rank == 0:
        # A process in a session of its own, as torchrun starts workers: only the marker finds it.
        escaped = subprocess.Popen(["sleep", "300"], start_new_session=True)
        pid_file = os.path.join(os.path.dirname(args.metrics), "escaped.pid")
        open(pid_file, "w").write(str(escaped.pid))
    seed, lr = job["train"]["seed"], job["train"]["lr"]
    extra = os.environ.get("FAKE_LOSS_SHIFT", "0")
    for step in range(1, job["train"]["steps"] + 1):
        loss = 5.0 / (1.0 + lr * 10 * step) + (seed % 97) * 1e-3 + float(extra)
        if MODE == "nan" and step == 3:
            loss = float("nan")
        if MODE == "diverge" and step >= 4:
            loss += 0.5
        write("step", step=step, loss=loss)
        if MODE == "handshake" and rank == 0:
            # Go on only once the runner has reported this step: proves steps are shown live.
            go = os.path.join(os.path.dirname(args.metrics), f"go.{{step}}")
            for _ in range(600):
                if os.path.exists(go):
                    break
                time.sleep(0.1)
            else:
                sys.exit(9)
        if MODE in ("hang", "escape") and step == 2:
            time.sleep(3600)
        if MODE == "crash" and step == 2:
            print("Traceback (most recent call last):", file=sys.stderr)
            print("RuntimeError: fake kernel failure on rank", rank, file=sys.stderr)
            sys.exit(7)
        if not math.isfinite(loss):
            sys.exit(3)
    modules = {{"megatron.core": os.path.realpath(megatron.core.__file__)}}
    if MODE == "leak":
        modules["leaky"] = "/somewhere/else/leaky.py"
    write("summary", steps=job["train"]["steps"], train_seconds=0.0, peak_rss_mb=12.5,
          modules=modules)
    '''
)


def case_document(**overrides: object) -> dict:
    """A small valid smoke case; ``overrides`` replace top-level keys."""
    document: dict = {
        "version": 1,
        "nproc": 2,
        "parallel": {"tensor": 1, "data": 2},
        "model": {"layers": 1, "hidden": 8, "heads": 2, "seq_len": 4, "vocab": 16},
        "train": {"steps": 5, "seed": 7, "lr": 0.01},
        "data": {"generator": "arithmetic"},
        "tolerance": {"relative": 1.0e-6, "absolute": 1.0e-9},
        "timeout": 120,
        "monitors": {"system": True, "vendor": "auto", "interval": 0.1},
    }
    document.update(overrides)
    return document


def write_case(folder: Path, name: str = "tiny", **overrides: object) -> Path:
    """Write ``<folder>/ci/smoke/<name>.yaml``; returns its path."""
    path = folder / "ci" / "smoke" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(case_document(**overrides), sort_keys=False), "utf-8")
    return path


def make_fake_build(root: Path, modes: tuple[str, ...] = ("ok",), device: str = DEVICE) -> Path:
    """``root/build/<device>`` with fake megatron and one entry ``fake/<mode>.py`` per mode."""
    build = root / "build" / device
    files = {
        ".flagscale-build.json": json.dumps({"fingerprint": "0" * 64}) + "\n",
        "third_party/Megatron-LM/megatron/__init__.py": "",
        "third_party/Megatron-LM/megatron/core/__init__.py": "__version__ = 'fake'\n",
    }
    files.update({f"fake/{mode}.py": FAKE_ENTRY.format(mode=mode) for mode in modes})
    write_files(build, files)
    return build


def fake_workspace(tmp: Path, modes: tuple[str, ...] = ("ok",)) -> Path:
    """A workspace folder (hardware/, build/, ci/smoke/) with a fake build of Generic_CPU."""
    root = tmp / "ws"
    (root / "hardware" / DEVICE).mkdir(parents=True)
    make_fake_build(root, modes)
    return root


def fake_losses(case: Path, shift: float = 0.0) -> tuple[float, ...]:
    """The losses the stand-in entry reports for ``case`` (see FAKE_ENTRY)."""
    from flagscale.runner.config import load_config

    config = load_config(case)
    seed, lr = config.train["seed"], config.train["lr"]
    return tuple(
        5.0 / (1.0 + lr * 10 * step) + (seed % 97) * 1e-3 + shift
        for step in range(1, config.train["steps"] + 1)
    )


def record_fake_golden(root: Path, case: Path, device: str = DEVICE) -> Path:
    """Write the golden file the stand-in entry's ``ok`` mode matches, without running it."""
    from flagscale.runner.config import load_config
    from flagscale.runner.golden import Golden, golden_path, write_golden

    config = load_config(case)
    path = golden_path(root / "hardware", device, config.case)
    golden = Golden(
        device,
        config.case,
        config.fingerprint(),
        fake_losses(case),
        config.tolerance,
        {"torch": None, "megatron_core": "fake"},  # what the stand-in entry reports
    )
    write_golden(path, golden)
    return path
