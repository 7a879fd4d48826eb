"""A synthetic device for the trust tests: a fast smoke job whose loss depends on 100 knobs.

The upstream (a real submodule) holds ``megatron/core/knobs.py`` with 100 constants far enough
apart that each change to one is a hunk of its own. The smoke case's entry (a FlagScale file,
run from the build tree under torchrun like the real one) reports losses shifted by the sum of
the knobs, so a set that changes ``K_037`` from 1 to 2 leaves the golden tolerance while one that
writes ``K_012 = 2 - 1`` does not. No torch in the ranks: a run takes seconds.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml

from flagscale.upstream.workspace import find_workspace
from flagscale.vendor.history_record import record_history
from flagscale.vendor.make_sets import PatchRequest, create_patch_sets
from tests.gitrepos import commit_all, make_workspace, run_git, write_files
from tests.smoke_fixtures import case_document

DEVICE = "Synth_K100"
BACKEND = "Megatron-LM"
KNOBS = 100
KNOBS_FILE = "megatron/core/knobs.py"
CASE = "knobs"

ENTRY = textwrap.dedent(
    '''
    """A fast training stand-in: losses shifted by the knobs of the build tree's megatron."""
    import argparse, json, os, sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--job", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()
    job = json.load(open(args.job))
    rank = int(os.environ["RANK"])
    import megatron.core
    from megatron.core import helpers, knobs

    helpers.used()


    def write(event, **fields):
        if rank == 0:
            with open(args.metrics, "a") as stream:
                stream.write(json.dumps({"event": event, **fields}) + "\\n")


    write("provenance", megatron_core=os.path.realpath(megatron.core.__file__),
          megatron_core_version="synthetic", torch=None, python=sys.executable, sys_path=sys.path)
    shift = sum(getattr(knobs, f"K_{i:03d}") for i in range(100)) - 100
    for step in range(1, job["train"]["steps"] + 1):
        write("step", step=step, loss=5.0 / (1.0 + step) + 1e-3 * shift)
    modules = {name: os.path.realpath(sys.modules[name].__file__)
               for name in ("megatron", "megatron.core", "megatron.core.knobs",
                            "megatron.core.helpers")}
    write("summary", steps=job["train"]["steps"], train_seconds=0.0, peak_rss_mb=1.0,
          modules=modules)
    '''
)


def knobs_source(values: dict[int, str] | None = None) -> str:
    """``knobs.py``: ``K_000 = 1`` ... with 8 comment lines between (one hunk per knob)."""
    values = values or {}
    lines = ['"""Tuning knobs (synthetic)."""', ""]
    for index in range(KNOBS):
        lines += [f"# knob {index}: line {n}" for n in range(8)]
        lines.append(f"K_{index:03d} = {values.get(index, '1')}")
    return "\n".join(lines) + "\n"


HELPERS = textwrap.dedent(
    """\
    \"\"\"Helpers (synthetic): one the job calls, one it never does.\"\"\"


    def used():
        value = 1
        return value


    # Far enough apart that a change to each function is a hunk of its own:
    # one
    # two
    # three
    # four


    def unused():
        value = 2
        return value
    """
)
UPSTREAM = {
    "README.md": "synthetic megatron\n",
    "megatron/__init__.py": "",
    "megatron/core/__init__.py": "",
    KNOBS_FILE: knobs_source(),
    "megatron/core/helpers.py": HELPERS,
    "weights.bin": bytes(range(256)),
}


def expected_losses(steps: int) -> tuple[float, ...]:
    return tuple(5.0 / (1.0 + step) for step in range(1, steps + 1))


@dataclass(frozen=True)
class SynthWorkspace:
    root: Path
    base: str
    good: str  # history commit of the set that passes
    bad: str  # history commit of the set with the culprit

    @property
    def checkout(self) -> Path:
        return self.root / "third_party" / BACKEND


def make_synth_workspace(tmp: Path, culprits: dict[int, str]) -> SynthWorkspace:
    """A FlagScale with a good set and a bad one changing all 100 knobs, ``culprits`` for real."""
    root, base = make_base(tmp)
    checkout = root / "third_party" / BACKEND
    write_files(checkout, {"megatron/core/vendor.py": "DEVICE = 'synthetic'\n"})
    good = make_set(root, base, "good set")
    harmless = {i: "2 - 1" for i in range(KNOBS)}
    write_files(checkout, {KNOBS_FILE: knobs_source({**harmless, **culprits})})
    bad = make_set(root, base, "bad set")
    return SynthWorkspace(root, base, good, bad)


def make_coverage_workspace(tmp: Path) -> tuple[Path, str]:
    """A FlagScale whose one set makes every kind of change: a knob (module level, runs), the
    body of a function the job calls and of one it never calls, a module nobody imports, a
    text file and a binary file. Returns (root, history commit)."""
    root, base = make_base(tmp)
    checkout = root / "third_party" / BACKEND
    helpers = HELPERS.replace("value = 1", "value = 3 - 2").replace("value = 2", "value = 4 - 2")
    write_files(
        checkout,
        {
            KNOBS_FILE: knobs_source({5: "2 - 1"}),
            "megatron/core/helpers.py": helpers,
            "megatron/core/never.py": "NEVER = 'imported'\n",
            "README.md": "synthetic megatron, adapted\n",
            "weights.bin": bytes(reversed(range(256))),
        },
    )
    return root, make_set(root, base, "every kind of change")


def make_base(tmp: Path) -> tuple[Path, str]:
    """The FlagScale (with the smoke case, its entry and golden losses) and the base commit."""
    case = case_document(
        entry="tools/knob_train.py",
        nproc=2,
        parallel={"tensor": 1, "data": 2},
        train={"steps": 3, "seed": 7, "lr": 0.01},
        monitors={"system": False, "vendor": "off", "interval": 0.1},
    )
    root, _ = make_workspace(
        tmp,
        {BACKEND: UPSTREAM},
        extra={
            "tools/knob_train.py": ENTRY,
            f"ci/smoke/{CASE}.yaml": yaml.safe_dump(case, sort_keys=False),
        },
    )
    _record_golden(root)
    base = run_git(root, "rev-parse", "HEAD")
    run_git(root, "submodule", "update", "--init", "-q")
    return root, base


def make_set(root: Path, base: str, message: str, key: Path | None = None) -> str:
    """``inv patch --device-type`` of the checkout's edits (encrypted with ``key``), recorded."""
    ws = find_workspace(root)
    create_patch_sets(
        ws,
        PatchRequest(
            device_type=DEVICE,
            tasks=["train"],
            backends=[BACKEND],
            commit=base,
            backend_version="1.0",
            models=["synthetic"],
            message=message,
            key_path=key,
            contact="Synth Support <support@synth.invalid>" if key else None,
            report=lambda _line: None,
        ),
    )
    entries = record_history(ws, DEVICE, backends=[BACKEND], report=lambda _line: None)
    run_git(root, "add", "hardware/patch_history.yaml")
    run_git(root, "commit", "-q", "-m", f"history: {message}")
    return entries[0].commit


def _record_golden(root: Path) -> None:
    from flagscale.runner.config import load_config
    from flagscale.runner.golden import Golden, golden_path, write_golden

    config = load_config(root / "ci" / "smoke" / f"{CASE}.yaml")
    golden = Golden(
        DEVICE,
        config.case,
        config.fingerprint(),
        expected_losses(config.train["steps"]),
        config.tolerance,
        {"torch": None, "megatron_core": "synthetic"},
    )
    write_golden(golden_path(root / "hardware", DEVICE, config.case), golden)
    commit_all(root, "golden losses")
