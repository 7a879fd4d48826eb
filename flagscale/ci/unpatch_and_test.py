"""One device type's CI job: validate, build in a fresh clone, run every smoke case.

``python -m flagscale.ci unpatch-and-test --device V_M``, which
``nox -s "unpatch_and_test(device='V_M')"`` runs (docs/ci.md).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flagscale.ci.devices import SMOKE_CASES, TASK, smoke_cases
from flagscale.ci.validate import validate_workspace
from flagscale.core.errors import FlagScaleError
from flagscale.upstream.workspace import Workspace, load_workspace

__all__ = [
    "COVERAGE_ENV",
    "KEY_PATHS_ENV",
    "ci_key_paths",
    "coverage_wanted",
    "fresh_build",
    "unpatch_and_test",
]


KEY_PATHS_ENV = "FLAGSCALE_KEY_PATHS"  # key files for encrypted patch sets in CI
COVERAGE_ENV = "FLAGSCALE_COVERAGE"  # 1: run the smoke cases under coverage (docs/ci.md)


def coverage_wanted(flag: bool = False) -> bool:
    """``--coverage``, or ``$FLAGSCALE_COVERAGE`` set to 1/true/yes."""
    return flag or os.environ.get(COVERAGE_ENV, "").strip().lower() in ("1", "true", "yes")


def ci_key_paths() -> tuple[Path, ...]:
    """Key files for encrypted patch sets, from ``$FLAGSCALE_KEY_PATHS`` (os.pathsep-separated).

    CI hosts write each vendor's key from a secret into a 0600 file and name it here.
    """
    value = os.environ.get(KEY_PATHS_ENV, "")
    return tuple(Path(part) for part in value.split(os.pathsep) if part.strip())


def fresh_build(
    root: Path, device_type: str, folder: Path, *, key_paths: tuple[Path, ...] = ()
) -> Path:
    """Clone the workspace's committed state into ``folder`` and build ``device_type`` there.

    The build comes from the history and patch sets as committed; nothing in the developer's
    ``build/`` or ``third_party/`` is used or touched. Returns the build tree.

    Errors say when the cause is what a fresh clone cannot see (uncommitted changes to the
    history or the sets), and name ``$FLAGSCALE_KEY_PATHS`` for encrypted sets.
    """
    from flagscale.builds.builder import BuildRequest, build_devices
    from flagscale.core.gitcli import git
    from flagscale.vendor.keyring import MissingKeyError
    from flagscale.vendor.stored_sets import GIT_SETS

    clone = folder / "workspace"
    git(["clone", "--quiet", "--shared", "--no-recurse-submodules", str(root), str(clone)], folder)
    workspace = load_workspace(clone)
    try:
        GIT_SETS.choose(workspace, device_type, TASK, None, ())
    except FlagScaleError as exc:
        uncommitted = _uncommitted(root, device_type)
        if not uncommitted:
            raise
        raise FlagScaleError(
            f"{exc.message} in the committed state",
            hint=f"CI builds a fresh clone of HEAD; your uncommitted changes to"
            f" {', '.join(uncommitted)} are not in it: commit them",
        ) from None
    request = BuildRequest(devices=(device_type,), task=TASK, key_paths=key_paths)
    try:
        return build_devices(workspace, request)[device_type]
    except MissingKeyError as exc:
        raise FlagScaleError(
            f"{exc.path} is encrypted{exc.with_key}: no key file in {KEY_PATHS_ENV}",
            hint=f"{exc.ask}, then set {KEY_PATHS_ENV}=<key file> (several: separated by"
            f" {os.pathsep!r}); in GitHub Actions the workflow fills it from the device type's"
            " secret: see docs/ci.md",
        ) from None


def _uncommitted(root: Path, device_type: str) -> list[str]:
    """The history and ``hardware/<V_M>/`` if either has changes a fresh clone would not see."""
    from flagscale.core.gitcli import git
    from flagscale.vendor.history import HISTORY

    folder = f"{HISTORY.rsplit('/', 1)[0]}/{device_type}/"
    listed = git(
        ["status", "--porcelain", "-z", "--untracked-files=all", "--", HISTORY, folder], root
    )
    paths = [record[3:].decode("utf-8", "replace") for record in listed.split(b"\0") if record]
    found = []
    if HISTORY in paths:
        found.append(HISTORY)
    if any(path.startswith(folder) for path in paths):
        found.append(folder)
    return found


def unpatch_and_test(
    root: Path,
    device_type: str,
    *,
    work: Path | None = None,
    report: Callable[[str], None] = print,
    coverage: bool = False,
) -> list[Any]:
    """CI for one device type: validate, fresh build, then every smoke case against its golden.

    Returns the SmokeOutcome of each case; raises on the first failure. With ``coverage`` the
    cases run under coverage.py and the patch coverage report is written to
    ``logs/coverage/<V_M>/`` (``flagscale.trust``); it then returns the measured cases.
    """
    from flagscale.runner.extra import require_smoke_extra

    require_smoke_extra("python -m flagscale.ci unpatch-and-test")
    from flagscale.runner.smoke import describe, run_smoke
    from flagscale.vendor.patchset import check_device_type

    check_device_type(device_type)
    root = root.resolve()
    checked = validate_workspace(root)
    report(f"validated {len(checked)} files")
    cases = smoke_cases(root)
    if not cases:
        raise FlagScaleError(f"no smoke cases in {SMOKE_CASES}/", hint="add ci/smoke/<case>.yaml")
    with tempfile.TemporaryDirectory(prefix=f"flagscale-ci-{device_type}-", dir=work) as temp:
        build = fresh_build(root, device_type, Path(temp), key_paths=ci_key_paths())
        report(f"built {device_type} in a fresh clone: {build}")
        if coverage:
            clone = load_workspace(Path(temp) / "workspace")
            return _measured(root, clone, device_type, cases, build, report)
        outcomes = []
        for case in cases:
            outcome = run_smoke(root, device_type, case, build_dir=build)
            outcomes.append(outcome)
            report(describe(device_type, outcome))
    return outcomes


def _measured(
    root: Path,
    clone: Workspace,
    device_type: str,
    cases: list[Path],
    build: Path,
    report: Callable[[str], None],
) -> list[Any]:
    """The cases under coverage on the fresh build (made in ``clone``); the report goes to the
    workspace's logs."""
    from flagscale.trust.patch_coverage import measure_device, output_folder
    from flagscale.trust.report import summary_lines

    out = output_folder(root / "logs" / "coverage" / device_type)
    measured = measure_device(
        clone, root, device_type, build, cases, out, key_paths=ci_key_paths(), report=report
    )
    for line in summary_lines(measured.document, per_hunk=False):
        report(line)
    report(f"wrote {measured.json_path} and {measured.html_path}")
    if measured.failures:
        raise measured.failures[0]
    return list(measured.run.cases)
