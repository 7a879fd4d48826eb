"""Proving a refreshed device type trains: a build of the new commits and its smoke jobs.

The refreshed commits are not published yet, so the proof happens in a private clone (``git
clone --shared`` of the workspace at the new commits, the upstream checkouts borrowed the same
way): ``flagscale.builds`` builds the device type there exactly as ``inv build`` would, and
``flagscale.runner`` runs every smoke case that has golden losses for it. The user's
``build/``, ``logs/smoke/`` and checkouts are not touched; the jobs' logs go to
``logs/refresh/<V_M>/<case>/``. Losses that leave the golden tolerance are shown step by step
beside the golden ones; with ``record_golden`` the new losses become the golden values.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, is_repository
from flagscale.upstream.workspace import Workspace, load_workspace

__all__ = ["CaseProof", "SMOKE_CASES", "golden_files", "loss_table", "prove_device"]

SMOKE_CASES = "ci/smoke"
LOGS = "logs/refresh"


@dataclass
class CaseProof:
    """One smoke case on the refreshed build: passed, failed, recorded or error."""

    case: str
    status: str
    reason: str = ""
    result: str | None = None
    losses: list[float | None] = field(default_factory=list)
    golden: list[float] = field(default_factory=list)
    tolerance: dict[str, float] = field(default_factory=dict)
    recorded: bytes | None = field(default=None, repr=False)  # the golden file written

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "status": self.status,
            "reason": self.reason,
            "result": self.result,
            "losses": list(self.losses),
            "golden": list(self.golden),
            "tolerance": dict(self.tolerance),
        }


def smoke_case_files(root: Path) -> list[Path]:
    """The smoke cases every device type runs: ``ci/smoke/*.yaml``."""
    return sorted((root / SMOKE_CASES).glob("*.yaml"))


def golden_files(root: Path, device: str) -> dict[str, Path]:
    """case name → smoke case file, for the cases with golden losses for ``device``."""
    from flagscale.runner.config import load_config
    from flagscale.runner.golden import golden_path

    found = {}
    for case_file in smoke_case_files(root):
        config = load_config(case_file, display=str(case_file.relative_to(root)))
        if golden_path(root / "hardware", device, config.case).is_file():
            found[config.case] = case_file
    return found


def prove_device(
    ws: Workspace,
    head: str,
    device: str,
    *,
    backends: Sequence[str],
    key_paths: Sequence[Path] = (),
    record_golden: bool = False,
    report: Callable[[str], None] = print,
    folder: Path,
) -> list[CaseProof]:
    """Build ``device`` at ``head`` in a private clone and run its smoke cases there."""
    from flagscale.builds.builder import BuildRequest, build_devices

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        clone = _clone(ws, head, backends, folder)
        cases = golden_files(clone, device)
        if not cases:
            return []
        try:
            request = BuildRequest(devices=(device,), key_paths=tuple(key_paths), report=_quiet)
            built = build_devices(load_workspace(clone), request)[device]
        except FlagScaleError as exc:
            return [CaseProof(case, "error", f"cannot build: {exc}") for case in sorted(cases)]
        return [
            _run_case(ws, clone, built, device, case, cases[case], record_golden, report)
            for case in sorted(cases)
        ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _quiet(_line: str) -> None:
    pass


def _live(device: str, case: str) -> Callable[[str], None]:
    """The runner's live lines, said to come from the refreshed build (in a private clone)."""
    prefix = f"smoke {device}/{case} (refreshed build): "

    def report(line: str) -> None:
        print(prefix + line, file=sys.stderr, flush=True)

    return report


def _clone(ws: Workspace, head: str, backends: Sequence[str], folder: Path) -> Path:
    """The workspace at ``head`` and its upstream checkouts, borrowed (``--shared``)."""
    clone = folder / "workspace"
    shared = ["clone", "-q", "--shared", "--no-checkout", "--no-recurse-submodules"]
    git([*shared, str(ws.root), str(clone)], folder)
    git(["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", head], clone)
    for name in backends:
        source = ws.path(f"third_party/{name}")
        if is_repository(source):
            target = clone / "third_party" / name
            if target.exists():
                shutil.rmtree(target)
            git([*shared, str(source), str(target)], folder)
    return clone


def _run_case(
    ws: Workspace,
    clone: Path,
    built: Path,
    device: str,
    case: str,
    case_file: Path,
    record_golden: bool,
    report: Callable[[str], None],
) -> CaseProof:
    from flagscale.runner.smoke import describe, run_smoke

    log_dir = ws.path(f"{LOGS}/{device}/{case}")
    try:
        outcome = run_smoke(
            clone,
            device,
            case_file,
            build_dir=built,
            record_golden=record_golden,
            log_dir=log_dir,
            report=_live(device, case),
        )
    except FlagScaleError as exc:
        return _from_result(log_dir, case, "error", str(exc))
    report(describe(device, outcome).replace(str(outcome.result), _shown(ws, outcome.result)))
    proof = _from_result(log_dir, case, outcome.status, "")
    if record_golden:
        proof.recorded = outcome.golden.read_bytes()
    return proof


def _from_result(log_dir: Path, case: str, status: str, reason: str) -> CaseProof:
    result = log_dir / "result.json"
    try:
        document = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return CaseProof(case, status, reason)
    golden = document.get("golden") or {}
    if golden.get("first_divergence") and status == "error":
        status = "failed"
    return CaseProof(
        case=case,
        status=status,
        reason=reason,
        result=str(result),
        losses=list(document.get("losses") or []),
        golden=list(golden.get("losses") or []),
        tolerance=dict(golden.get("tolerance") or {}),
    )


def _shown(ws: Workspace, path: Path) -> str:
    try:
        return str(path.relative_to(ws.root))
    except ValueError:
        return str(path)


def loss_table(proof: CaseProof) -> list[str]:
    """The losses beside the golden ones, step by step, marking those out of tolerance."""
    if not proof.golden or not proof.losses:
        return []
    relative = float(proof.tolerance.get("relative", 0.0))
    absolute = float(proof.tolerance.get("absolute", 0.0))
    lines = [
        f"  {'step':>4}  {'golden':>14}  {'refreshed':>14}  {'|difference|':>12}  {'allowed':>10}"
    ]
    for step, (expected, got) in enumerate(zip(proof.golden, proof.losses, strict=False), start=1):
        allowed = absolute + relative * abs(expected)
        if got is None:
            lines.append(
                f"  {step:>4}  {expected:>14.8g}  {'nan':>14}  {'':>12}  {allowed:>10.3g}  out"
            )
            continue
        difference = abs(got - expected)
        mark = "" if difference <= allowed else "  out"
        cells = f"{expected:>14.8g}  {got:>14.8g}  {difference:>12.3g}  {allowed:>10.3g}"
        lines.append(f"  {step:>4}  {cells}{mark}")
    return lines
