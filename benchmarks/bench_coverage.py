"""Benchmark: the Generic_CPU smoke job under coverage against the plain job, in the same run.

This repository's committed state is cloned and Generic_CPU built there (``fresh_build``, as
CI does); then, alternately, ``--repeat`` times each: the plain smoke job (``run_smoke``) and
the job under coverage as ``inv coverage`` runs it (``run_cases``: every rank measured, only
the patched files, the fast core; the rank files combined) followed by the mapping onto the
hunks and both reports. Alternating keeps a busy machine's load fair to both. Reported: each
run's wall time, the medians, and the ratio of the medians (the budget is 2×).

Run:  python benchmarks/bench_coverage.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOOL_ROOT = Path(__file__).resolve().parent.parent
if str(TOOL_ROOT) not in sys.path:
    sys.path.insert(0, str(TOOL_ROOT))

DEVICE = "Generic_CPU"
CASE = TOOL_ROOT / "ci" / "smoke" / "gpt_tiny_tp2.yaml"


def quiet(_line: str) -> None:
    """Drop the runner's live lines."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from flagscale.ci.unpatch_and_test import fresh_build
    from flagscale.runner.smoke import run_smoke
    from flagscale.trust.patch_coverage import measure_device, output_folder
    from flagscale.trust.run_coverage import fast_core
    from flagscale.upstream.workspace import load_workspace

    with tempfile.TemporaryDirectory(prefix="bench-coverage-") as scratch:
        folder = Path(scratch)
        build = fresh_build(TOOL_ROOT, DEVICE, folder)
        clone = load_workspace(folder / "workspace")
        plain: list[float] = []
        measured: list[float] = []
        for round_ in range(args.repeat):
            started = time.perf_counter()
            run_smoke(
                TOOL_ROOT, DEVICE, CASE, build_dir=build, log_dir=folder / "plain", report=quiet
            )
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = measure_device(
                clone, TOOL_ROOT, DEVICE, build, [CASE], output_folder(folder / "coverage"),
                report=quiet, job_report=quiet,
            )  # fmt: skip
            measured.append(time.perf_counter() - started)
            failures = result.failures
            if failures:
                raise SystemExit(f"the measured job failed: {failures[0]}")
            print(
                f"round {round_ + 1}: plain {plain[-1]:.1f} s, under coverage {measured[-1]:.1f} s"
                f" ({measured[-1] / plain[-1]:.2f}×)",
                flush=True,
            )
        document = result.document
        ratio = statistics.median(measured) / statistics.median(plain)
        print(
            f"Generic_CPU gpt_tiny_tp2, {args.repeat} rounds, {os.cpu_count()} CPUs,"
            f" load {os.getloadavg()[0]:.1f}; coverage.py core {fast_core() or 'default'},"
            f" {document['measurement']['measured_files']} files measured,"
            f" {document['measurement']['rank_files']} rank files"
        )
        print(
            f"plain smoke job:     median {statistics.median(plain):.1f} s (min {min(plain):.1f})"
        )
        print(
            f"under coverage:      median {statistics.median(measured):.1f} s"
            f" (min {min(measured):.1f}; job, combine, map, JSON and HTML)"
        )
        print(f"ratio of medians:    {ratio:.2f}× (budget 2×)")


if __name__ == "__main__":
    main()
