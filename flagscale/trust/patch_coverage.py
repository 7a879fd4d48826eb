"""``inv coverage --device V_M``: which hunks of a device's patches ran in its smoke jobs.

The smoke cases run on the device's build tree under coverage (``flagscale.trust.run_coverage``),
only the patched Python files measured; the lines that ran are mapped onto every hunk of every
patch set of the build and of its base layer (``flagscale.trust.hunk_coverage``); the result is
printed and written as ``coverage.json`` and ``coverage.html`` (``flagscale.trust.report``) in
``logs/coverage/<V_M>/``. The user's checkout is never measured, nor written to: only the
build tree runs, as in every smoke job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.owned_folder import fresh_folder
from flagscale.trust.build_patches import BuildPatches, PatchFile, build_patches
from flagscale.trust.hunk_coverage import judge_pieces, line_through
from flagscale.trust.hunks import Piece
from flagscale.trust.report import (
    BASE_LAYER,
    PatchSource,
    coverage_document,
    summary_lines,
    write_reports,
)
from flagscale.trust.run_coverage import CoverageRun, fast_core, run_cases
from flagscale.upstream.workspace import Workspace

__all__ = ["Measured", "coverage_command", "judge_build", "measure_device", "output_folder"]

MARK = ".flagscale-coverage"


@dataclass(frozen=True)
class Measured:
    """A measured build: the run, the document, where the reports are."""

    run: CoverageRun
    document: dict[str, Any]
    json_path: Path
    html_path: Path

    @property
    def failures(self) -> list[FlagScaleError]:
        return [case.error for case in self.run.cases if case.error is not None]


def output_folder(path: Path) -> Path:
    """An empty output folder; an old one is cleared only if this tool made it."""
    return fresh_folder(
        path, mark=MARK, maker="inv coverage", hint="choose another --out or remove the folder"
    )


def measure_device(
    ws: Workspace,
    root: Path,
    device_type: str,
    build: Path,
    cases: Sequence[Path],
    out: Path,
    *,
    key_paths: Sequence[Path] = (),
    timeout: float | None = None,
    base_env: Mapping[str, str] | None = None,
    report: Callable[[str], None] = print,
    job_report: Callable[[str], None] | None = None,
) -> Measured:
    """Run ``cases`` on ``build`` under coverage and write the reports into ``out``.

    ``ws`` is the workspace the build was made in (its history and objects), ``root`` the one
    whose ``hardware/<V_M>/`` hooks and golden losses the jobs use. ``job_report`` gets the
    smoke runner's live lines (default: the runner's own, on standard error).
    """
    build = build.resolve()
    patches = build_patches(ws, build, key_paths=key_paths)
    measured = sorted(
        {
            piece.path
            for patch in patches.patches
            for piece in patch.pieces()
            if piece.path.endswith(".py") and (build / piece.path).is_file()
        }
    )
    run = run_cases(
        root, device_type, cases, build, measured, out, timeout=timeout, base_env=base_env,
        report=report, job_report=job_report,
    )  # fmt: skip
    sources = judge_build(patches, run)
    import coverage

    document = coverage_document(
        device_type,
        {
            "path": str(build),
            "fingerprint": patches.record.fingerprint,
            "history_commit": patches.plan.choice.commit,
            "flagscale_base": patches.plan.flagscale_base,
        },
        run,
        sources,
        {
            "coverage": coverage.__version__,
            "core": fast_core(),
            "measured_files": len(measured),
        },
    )
    json_path, html_path = write_reports(document, out)
    return Measured(run, document, json_path, html_path)


def judge_build(patches: BuildPatches, run: CoverageRun) -> list[PatchSource]:
    """Every patch file of the build, its hunks judged against what ran."""
    build = patches.build

    def read(path: str) -> bytes | None:
        file = build / path
        return file.read_bytes() if file.is_file() and not file.is_symlink() else None

    sources = []
    for patch in patches.patches:
        line_map = _through_vendor(patches, patch) if patch.kind == BASE_LAYER else None
        verdicts = judge_pieces(patch.pieces(), run.files, read, line_map=line_map)
        sources.append(
            PatchSource(
                patch.backend, patch.prefix, patch.kind, patch.label, patch.against, tuple(verdicts)
            )
        )
    return sources


def _through_vendor(patches: BuildPatches, layer: PatchFile) -> Callable[[Piece, int], int | None]:
    """Base-layer lines moved through the vendor set's changes to the same file."""

    def move(piece: Piece, line: int) -> int | None:
        return line_through(patches.vendor_file(layer.backend, piece.file.path), line)

    return move


def coverage_command(
    device_type: str | None,
    *,
    case: str | None = None,
    build_dir: str | None = None,
    key_paths: Sequence[str] = (),
    out: str | None = None,
    timeout: float | None = None,
    start: Path | None = None,
) -> Measured:
    """``inv coverage``: measure ``build/<V_M>`` (or ``--build-dir``), print, write reports.

    A smoke job that fails under measurement still gives its report; the command then fails
    with the job's error.
    """
    from flagscale.trust.smoke_cases import device_workspace, resolve_cases

    ws, here = device_workspace(device_type, start)
    build = _located(build_dir, here, ws.root) if build_dir else ws.root / "build" / device_type
    if not build.is_dir():
        raise FlagScaleError(
            f"build tree {build} does not exist",
            hint=f"run `inv build --device {device_type}` first",
        )
    cases = resolve_cases(ws.root, case, here=here)
    folder = _located(out, here, ws.root) if out else ws.root / "logs" / "coverage" / device_type
    measured = measure_device(
        ws,
        ws.root,
        device_type,
        build,
        cases,
        output_folder(folder),
        key_paths=[Path(p).expanduser() for p in key_paths],
        timeout=timeout,
    )
    for line in summary_lines(measured.document):
        print(line)
    print(f"wrote {measured.json_path} and {measured.html_path}")
    if measured.failures:
        raise measured.failures[0]  # the report of the failed job was written all the same
    return measured


def _located(name: str, here: Path, root: Path) -> Path:
    path = Path(name).expanduser()
    if path.is_absolute() or (here / path).exists():
        return (here / path).resolve()
    return root / path
