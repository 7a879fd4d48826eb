"""Running smoke jobs under coverage.py: every torchrun rank measured, one data file per rank.

The job is the smoke runner's own (``flagscale.runner.smoke.run_smoke``: hooks, monitors, the
build tree only on ``PYTHONPATH``, losses against the golden ones). Two things are added to the
job's environment alone:

- ``COVERAGE_PROCESS_START`` names a configuration file written here, so that
  ``coverage.process_startup()`` starts measuring in every Python process of the job — torchrun
  and each rank it starts (coverage's subprocess support). coverage.py installs a ``.pth`` file
  that calls it; a ``sitecustomize.py`` put first on the job's ``PYTHONPATH`` calls it too (and
  then runs the ``sitecustomize`` it hides, if any), so it works with every coverage version;
- the data file is ``<data>/rank-$RANK...`` and the static context
  ``<case>/rank-$RANK``: one file per rank, and each line knows which ranks ran it.

Only the files to be judged are measured (``include``), and the fast core is used (``sysmon``
on Python 3.12 and later, the C tracer before), which keeps a measured job well under twice
the plain one (benchmarks/bench_coverage.py). The rank files are then combined into one.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.core.errors import FlagScaleError

__all__ = [
    "CaseRun",
    "CoverageRun",
    "LineData",
    "coverage_environment",
    "fast_core",
    "require_coverage",
    "run_cases",
]

CASE_VARIABLE = "FLAGSCALE_COVERAGE_CASE"
RC_NAME = "coveragerc"
STARTUP = "startup"
DATA = "data"
COMBINED = ".coverage"

_SITECUSTOMIZE = '''\
"""Starts coverage.py in every Python process of a measured smoke job (flagscale.trust).

Then runs the sitecustomize module this one hides, if there is one further on sys.path.
"""
import importlib.machinery
import importlib.util
import os
import sys

try:
    import coverage
except ImportError:  # the runner checked it is installed; a job's own Python may differ
    pass
else:
    coverage.process_startup()

_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _hidden = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_hidden)
'''


@dataclass(frozen=True)
class LineData:
    """What ran in one file: line → the contexts (``<case>/rank-<n>``) that ran it."""

    lines: dict[int, frozenset[str]]

    @property
    def ran(self) -> frozenset[int]:
        return frozenset(self.lines)


@dataclass(frozen=True)
class CaseRun:
    """One smoke case run under coverage: how it ended, and the smoke runner's outcome/error."""

    case: str
    config: Path
    status: str  # passed | failed | error (the smoke runner's words)
    reason: str | None
    duration: float
    log_dir: Path
    error: FlagScaleError | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CoverageRun:
    """The combined measurement of one or more smoke cases on one build tree."""

    build: Path
    cases: tuple[CaseRun, ...]
    files: dict[str, LineData]  # build-relative path → what ran
    data_file: Path
    rank_files: int


def require_coverage() -> None:
    """Fail early, with the install command, when coverage.py is missing."""
    try:
        import coverage  # noqa: F401
    except ImportError:
        raise FlagScaleError(
            "coverage.py is not installed in this Python, so the job cannot be measured",
            hint="python -m pip install -e '.[smoke]'",
        ) from None


def coverage_environment(out: Path, build: Path, measured: Sequence[str]) -> dict[str, str]:
    """Write the configuration and start-up file under ``out``; the job's extra variables."""
    out.mkdir(parents=True, exist_ok=True)
    startup = out / STARTUP
    startup.mkdir(exist_ok=True)
    (startup / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
    data = out / DATA
    data.mkdir(exist_ok=True)
    real = Path(os.path.realpath(build))
    include = "".join(f"\n    {_escape(str(real / path))}" for path in sorted(measured))
    rc = out / RC_NAME
    rc.write_text(
        "# written by flagscale.trust: measures the patched files of a smoke job\n"
        "[run]\n"
        f"data_file = {data}/rank-${{RANK-launcher}}\n"
        "parallel = true\n"
        f"context = ${{{CASE_VARIABLE}-case}}/rank-${{RANK-launcher}}\n"
        f"include ={include or chr(10) + '    ' + _escape(str(real / '__nothing__'))}\n"
        "disable_warnings = no-data-collected, module-not-imported, module-not-measured,"
        " couldnt-parse\n",
        encoding="utf-8",
    )
    env = {"COVERAGE_PROCESS_START": str(rc)}
    core = fast_core()
    if core:
        env["COVERAGE_CORE"] = core
    return env


def fast_core() -> str | None:
    """``sysmon`` on Python ≥ 3.12, the C tracer before (None: coverage decides)."""
    if sys.version_info >= (3, 12):
        return "sysmon"
    try:
        from coverage.tracer import CTracer  # noqa: F401
    except ImportError:
        return None
    return "ctrace"


def _escape(path: str) -> str:
    """A literal path as a coverage ``include`` pattern (fnmatch)."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in path)


def run_cases(
    root: Path,
    device_type: str,
    cases: Sequence[Path],
    build: Path,
    measured: Sequence[str],
    out: Path,
    *,
    timeout: float | None = None,
    base_env: Mapping[str, str] | None = None,
    report: Callable[[str], None] = print,
    job_report: Callable[[str], None] | None = None,
) -> CoverageRun:
    """Run each smoke case on ``build`` under coverage, measuring ``measured`` (build-relative).

    A case that fails is recorded (its error kept), the others still run; the data of every
    case is combined. Results and rank files go to ``out``. ``job_report`` gets the smoke
    runner's live lines (default: its own, on standard error).
    """
    from flagscale.runner.config import load_config
    from flagscale.runner.smoke import SmokeError, run_smoke

    require_coverage()
    for stale in (out / DATA, out / COMBINED):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    env = coverage_environment(out, build, measured)
    runs = []
    for config in cases:
        case = load_config(config).case
        log_dir = out / "smoke" / case
        try:
            outcome = run_smoke(
                root,
                device_type,
                config,
                build_dir=build,
                timeout=timeout,
                log_dir=log_dir,
                base_env=base_env,
                report=job_report,
                job_env={**env, CASE_VARIABLE: case},
                job_python_path=[out / STARTUP],
            )
            runs.append(CaseRun(case, config, outcome.status, None, outcome.duration, log_dir))
        except SmokeError as exc:
            runs.append(CaseRun(case, config, "failed", str(exc), _duration(log_dir), log_dir, exc))
        except FlagScaleError as exc:
            runs.append(CaseRun(case, config, "error", str(exc), _duration(log_dir), log_dir, exc))
        report(f"measured {device_type}/{case}: {runs[-1].status}")
    files, rank_files = _combine(out, build, measured)
    return CoverageRun(build, tuple(runs), files, out / COMBINED, rank_files)


def _duration(log_dir: Path) -> float:
    import json

    try:
        return float(json.loads((log_dir / "result.json").read_text())["duration_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _combine(out: Path, build: Path, measured: Sequence[str]) -> tuple[dict[str, LineData], int]:
    """Combine the rank files into ``out/.coverage`` (rank files kept); what ran per file."""
    from coverage import Coverage, CoverageData

    rank_files = sorted(
        p for p in (out / DATA).glob("rank-*") if not p.name.startswith("rank-launcher")
    )
    combined = Coverage(data_file=str(out / COMBINED), config_file=False)
    combined.combine([str(p) for p in sorted((out / DATA).iterdir())], keep=True)
    combined.save()
    data = CoverageData(str(out / COMBINED))
    data.read()
    real = Path(os.path.realpath(build))
    by_path = {str(real / path): path for path in measured}
    files: dict[str, LineData] = {}
    for measured_file in data.measured_files():
        relative = by_path.get(measured_file) or by_path.get(os.path.realpath(measured_file))
        if relative is None:
            continue
        contexts = data.contexts_by_lineno(measured_file)
        files[relative] = LineData({line: frozenset(c) for line, c in contexts.items()})
    return files, len(rank_files)
