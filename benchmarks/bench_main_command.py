"""Benchmark: the README's main command on a fresh machine, nox on uv against nox on virtualenv.

Each run clones this repository's committed HEAD (or --ref) into a temporary folder, makes a
fresh virtual environment with ``python -m venv``, gives pip, uv and the tool empty caches of
their own (XDG_CACHE_HOME, PIP_CACHE_DIR, UV_CACHE_DIR, FLAGSCALE_CACHE; HOME and pip's
configuration stay, so packages come from where pip finds them), and runs the README's command
exactly:

    python -m pip install -e . && nox -s "unpatch_and_test(device='Generic_CPU')"

twice per run, in alternating order: as shipped (nox makes its environment with uv) and as the
baseline with ``NOX_DEFAULT_VENV_BACKEND=virtualenv`` (nox makes it with virtualenv and pip, as
before uv). ``--baseline-ref REF`` takes the baseline from another commit as it is instead (for
example the commit before uv). Each line of output is time-stamped as it comes, so the wall time
is split into: installing the tool (pip), nox making its environment and installing into it,
and the CI job itself (validate, build, smoke training). The machine should be otherwise idle:
the job trains on the CPU.

Run:  python benchmarks/bench_main_command.py [--runs 3] [--ref HEAD] [--baseline-ref REF]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TOOL_ROOT = Path(__file__).resolve().parent.parent
MAIN_COMMAND = "python -m pip install -e . && nox -s \"unpatch_and_test(device='Generic_CPU')\""
# nox's lines that start each phase after the first.
NOX_SESSION = "nox > Running session"
NOX_JOB = "nox > python -m flagscale.ci"


@dataclass
class Timing:
    total: float
    tool: float  # python -m pip install -e .
    environment: float  # nox: make the environment, install the tool with [smoke] into it
    job: float  # python -m flagscale.ci unpatch-and-test
    backend: str


def run_once(folder: Path, ref: str, *, baseline: bool) -> Timing:
    clone = folder / "FlagScale"
    subprocess.run(["git", "clone", "-q", str(TOOL_ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", ref], check=True)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cache = folder / "cache"
    env = {key: value for key, value in os.environ.items() if not key.startswith("NOX")}
    env.pop("PYTHONPATH", None)
    env.update(
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        XDG_CACHE_HOME=str(cache),
        PIP_CACHE_DIR=str(cache / "pip"),
        UV_CACHE_DIR=str(cache / "uv"),
        FLAGSCALE_CACHE=str(cache / "flagscale"),
    )
    if baseline:
        env["NOX_DEFAULT_VENV_BACKEND"] = "virtualenv"
    marks: dict[str, float] = {}
    backend = "?"
    log = (folder / "log").open("w")
    started = time.perf_counter()
    process = subprocess.Popen(
        ["bash", "-c", MAIN_COMMAND],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        log.write(line)
        for mark in (NOX_SESSION, NOX_JOB):
            if line.startswith(mark):
                marks.setdefault(mark, time.perf_counter())
        if line.startswith("nox > Creating virtual environment ("):
            backend = line.split("(", 1)[1].split(")", 1)[0]
    returncode = process.wait()
    ended = time.perf_counter()
    log.close()
    if returncode != 0 or len(marks) != 2:
        sys.exit(f"the main command failed (exit {returncode}): see {folder / 'log'}")
    return Timing(
        total=ended - started,
        tool=marks[NOX_SESSION] - started,
        environment=marks[NOX_JOB] - marks[NOX_SESSION],
        job=ended - marks[NOX_JOB],
        backend=backend,
    )


def describe(name: str, timings: list[Timing]) -> str:
    def median(field: str) -> float:
        return statistics.median(getattr(t, field) for t in timings)

    totals = " ".join(f"{t.total:.1f}" for t in timings)
    return (
        f"{name:<9} ({timings[0].backend}): median {median('total'):5.1f} s [{totals}]"
        f" = tool {median('tool'):.1f} + environment {median('environment'):.1f}"
        f" + job {median('job'):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--ref", default="HEAD", help="the commit measured (default HEAD)")
    parser.add_argument(
        "--baseline-ref",
        default=None,
        help="baseline: this commit as it is (default: --ref with nox on virtualenv)",
    )
    args = parser.parse_args()
    ref = _commit(args.ref)
    baseline_ref = _commit(args.baseline_ref) if args.baseline_ref else ref
    shipped: list[Timing] = []
    baseline: list[Timing] = []
    print(f"$ {MAIN_COMMAND}")
    for run in range(args.runs):
        order = [False, True] if run % 2 == 0 else [True, False]
        for is_baseline in order:
            with tempfile.TemporaryDirectory(prefix="bench-main-") as scratch:
                if is_baseline:
                    timing = run_once(
                        Path(scratch), baseline_ref, baseline=args.baseline_ref is None
                    )
                    baseline.append(timing)
                else:
                    shipped.append(run_once(Path(scratch), ref, baseline=False))
    print(describe("baseline", baseline) + f"  {shlex.quote(args.baseline_ref or 'same ref')}")
    print(describe("shipped", shipped) + f"  {shlex.quote(args.ref)}")
    ratio = statistics.median(t.total for t in shipped) / statistics.median(
        t.total for t in baseline
    )
    print(f"shipped / baseline: {ratio:.2f}")


def _commit(ref: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(TOOL_ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"not a commit: {ref}")
    return result.stdout.strip()


if __name__ == "__main__":
    main()
