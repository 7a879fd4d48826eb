"""``inv bisect --device V_M``: the smallest part of a change to a device's patches that breaks
its smoke job.

1. **Bad**: the newest history entry (or ``--bad``) is built in a scratch folder and its smoke
   job run under coverage: it must fail (or leave the golden tolerance); its failure's
   signature is what is hunted (``flagscale.trust.tries``).
2. **Good**: ``--good``, or the previous history entries, newest first, until one passes.
3. **The change** between the two build trees, split into pieces credited to the patch files
   that carry them (``flagscale.trust.change``). Pieces whose file no rank ever imported in the
   bad run cannot matter and are left out — checked by one run of the rest.
4. **Delta debugging** (``flagscale.trust.ddmin``), first over the patch files, then over the
   hunks of those that matter. Every try is a real build of candidate patch sets into the
   scratch folder and a real smoke run; verdicts are cached by the fingerprint of their inputs.
5. **The culprit**: the hunk(s) as a patch (``logs/bisect/<V_M>/culprit.patch``), where they sit
   in the bad entry's patch files, and the number of smoke runs it took.

The user's checkout and ``build/`` are never touched: builds go to a temporary folder, and git
work to a private object folder inside it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagscale.builds.plan import BuildPlan, plan_device
from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.owned_folder import fresh_folder
from flagscale.core.schema import validate
from flagscale.trust.change import CandidateError, CandidateSets, Workbench
from flagscale.trust.ddmin import FAIL, PASS, UNRESOLVED, NotFailing, ddmin
from flagscale.trust.hunk_coverage import NOT_REACHED, judge_pieces
from flagscale.trust.hunks import Piece, parse_patch, render
from flagscale.trust.run_coverage import CoverageRun, run_cases
from flagscale.trust.tries import FAILED, PASSED, Outcome, Trials, failure_signature
from flagscale.upstream.workspace import FLAGSCALE, Workspace

__all__ = ["BisectResult", "bisect_command", "bisect_device"]

PATCH_NAME = "culprit.patch"
REPORT_NAME = "bisect.json"
MARK = ".flagscale-bisect"


@dataclass(frozen=True)
class BisectResult:
    """What a bisection found."""

    device_type: str
    good: str
    bad: str
    signature: str
    culprit: tuple[Piece, ...]
    patch: bytes
    patch_path: Path
    report_path: Path
    runs: int
    cached: int
    document: dict[str, Any]


class _Bisection:
    """One bisection's state: the workbench, the tries, the steps printed."""

    def __init__(
        self,
        ws: Workspace,
        device_type: str,
        cases: Sequence[Path],
        scratch: Path,
        logs: Path,
        key_paths: Sequence[Path],
        report: Callable[[str], None],
    ) -> None:
        self.ws = ws
        self.device_type = device_type
        self.cases = list(cases)
        self.logs = logs
        self.report = report
        self.bench = Workbench(ws, scratch, key_paths)
        self.trials = Trials(
            ws, device_type, cases, scratch, logs, key_paths=key_paths, report=report
        )
        self.count = 0
        self.steps: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def say(self, line: str) -> None:
        self.report(line)

    def note(self, line: str) -> None:
        line = line.removeprefix("note: ")
        self.notes.append(line)
        self.report(f"note: {line}")

    def step(
        self, what: str, outcome: Outcome, pieces: int | None = None, target: str | None = None
    ) -> None:
        self.count += 1
        verdict = outcome.result if outcome.result != FAILED else f"failed ({outcome.signature})"
        how = "cached verdict" if outcome.cached else f"{outcome.seconds:.1f} s"
        known = outcome.result == PASSED or (target and outcome.signature == target)
        detail = "" if known else f": {outcome.detail}"
        self.say(f"[try {self.count}] {what}: {verdict} ({how}){detail}")
        self.steps.append(
            {
                "try": self.count,
                "what": what,
                "pieces": pieces,
                "result": outcome.result,
                "signature": outcome.signature,
                "detail": outcome.detail,
                "cached": outcome.cached,
                "key": outcome.key,
            }
        )


def bisect_device(
    ws: Workspace,
    device_type: str,
    cases: Sequence[Path],
    *,
    good: str | None = None,
    bad: str | None = None,
    task: str | None = None,
    key_paths: Sequence[Path] = (),
    use_coverage: bool = True,
    logs: Path,
    report: Callable[[str], None] = print,
) -> BisectResult:
    """Find the hunk(s) of the change from ``good`` to ``bad`` that make the smoke job fail."""
    from flagscale.vendor.stored_sets import choose_history

    with tempfile.TemporaryDirectory(prefix=f"flagscale-bisect-{device_type}-") as temp:
        run = _Bisection(ws, device_type, cases, Path(temp), logs, key_paths, report)
        bad_choice = choose_history(ws, device_type, task, bad)
        task = bad_choice.task
        line = list(bad_choice.commits)
        older = list(reversed(line[: line.index(bad_choice.commit)]))
        good_commits = [_on_line(ws, good, line, bad_choice.commit)] if good else older
        if not good_commits:
            raise FlagScaleError(
                f"{device_type}: history entry {bad_choice.commit[:12]} is the first of its line:"
                " there is no earlier entry to compare it with",
                hint="pass --good <history commit> (an entry whose smoke job passes)",
            )
        report(
            f"bisect {device_type} ({', '.join(c.stem for c in cases)}): bad = history entry"
            f" {bad_choice.commit[:12]}{'' if bad else ' (newest)'}"
        )
        bad_plan = _plan(ws, device_type, task, bad_choice.commit)
        bad_tree = run.bench.tree_of(bad_plan, run.note)
        probe_plan = _plan(ws, device_type, task, good_commits[0])
        probe_tree = run.bench.tree_of(probe_plan, run.note)
        measured = _python_paths(run.bench.change(probe_plan, probe_tree, bad_plan, bad_tree))

        coverage: list[CoverageRun] = []
        bad_outcome = _bad_endpoint(run, bad_choice.commit, task, measured, use_coverage, coverage)
        if bad_outcome.result == PASSED:
            raise FlagScaleError(
                f"{device_type} at history entry {bad_choice.commit[:12]} passes"
                f" {', '.join(c.stem for c in cases)}: there is nothing to bisect",
                hint="name a failing entry with --bad, or another case with --case",
            )
        if bad_outcome.result != FAILED:
            raise FlagScaleError(
                f"{device_type} at history entry {bad_choice.commit[:12]} cannot be built:"
                f" {bad_outcome.detail}",
                hint="fix the build first (inv build --device); bisection needs a failing job",
            )
        target = bad_outcome.signature
        good_commit, good_plan, good_tree = _good_endpoint(
            run, good_commits, task, target, bool(good), (probe_plan, probe_tree)
        )
        pieces = run.bench.change(good_plan, good_tree, bad_plan, bad_tree)
        if not pieces:
            raise FlagScaleError(
                f"{device_type}: the builds of {good_commit[:12]} and {bad_choice.commit[:12]}"
                " are identical, yet one passes and the other fails: the smoke job is not"
                " deterministic",
                hint="run `inv smoke` twice on one build to see it",
            )
        carriers = list(dict.fromkeys(p.label for p in pieces))
        report(
            f"change: {len(pieces)} hunk(s) in {len({p.path for p in pieces})} file(s),"
            f" from {len(carriers)} patch file(s): {'; '.join(carriers)}"
        )
        test = _tester(run, good_commit, task, good_plan, good_tree, target, pieces)
        reached = _reached(run, pieces, coverage, bad_tree)
        culprit = _minimize(run, pieces, reached, test)
        return _finish(run, good_commit, bad_choice.commit, target, culprit, bad_plan, pieces)


def _on_line(ws: Workspace, good: str, line: list[str], bad: str) -> str:
    from flagscale.overlay.layered_trees import resolve_commit

    full = resolve_commit(ws, good, what="--good")
    if full not in line:
        raise FlagScaleError(
            f"--good {good}: not an entry of the device's history line (it has"
            f" {', '.join(c[:12] for c in line)})",
            hint="pass one of those commits",
        )
    if full == bad:
        raise FlagScaleError(
            f"--good {good} is the failing entry itself", hint="pass an older entry"
        )
    return full


def _plan(ws: Workspace, device_type: str, task: str, commit: str) -> BuildPlan:
    return plan_device(ws, device_type, task=task, commit=commit)


def _python_paths(pieces: Sequence[Piece]) -> list[str]:
    return sorted({p.path for p in pieces if p.path.endswith(".py") and not p.file.deleted})


def _bad_endpoint(
    run: _Bisection,
    commit: str,
    task: str,
    measured: list[str],
    use_coverage: bool,
    coverage: list[CoverageRun],
) -> Outcome:
    """The failing entry's run — under coverage, which also tells what it reached."""

    def measure(build: Path, log_dir: Path) -> Outcome:
        result = run_cases(
            run.ws.root,
            run.device_type,
            run.cases,
            build,
            measured,
            log_dir,
            report=lambda _line: None,
            job_report=lambda _line: None,
        )
        coverage.append(result)
        failed = next((case for case in result.cases if case.error is not None), None)
        if failed is None:
            return Outcome(PASSED, None, "passed", "", False)
        signature = failure_signature(str(failed.error))
        return Outcome(FAILED, signature, failed.error.message.split("\n", 1)[0], "", False)

    outcome = run.trials.run("bad", commit, task, measure=measure if use_coverage else None)
    what = f"bad {commit[:12]}" + (" (under coverage)" if use_coverage else "")
    run.step(what, outcome)
    return outcome


def _good_endpoint(
    run: _Bisection,
    commits: list[str],
    task: str,
    target: str | None,
    given: bool,
    probe: tuple[BuildPlan, str],
) -> tuple[str, BuildPlan, str]:
    for commit in commits:
        outcome = run.trials.run(f"good-{commit[:12]}", commit, task)
        run.step(f"good? {commit[:12]}", outcome)
        if outcome.result == PASSED:
            plan = (
                probe[0]
                if probe[0].choice.commit == commit
                else _plan(run.ws, run.device_type, task, commit)
            )
            tree = probe[1] if plan is probe[0] else run.bench.tree_of(plan, run.note)
            return commit, plan, tree
        if given:
            raise FlagScaleError(
                f"--good {commit[:12]} does not pass either ({outcome.detail})",
                hint="pass an entry whose smoke job passes",
            )
    raise FlagScaleError(
        f"{run.device_type}: no earlier history entry passes"
        f" ({', '.join(c[:12] for c in commits)})",
        hint="pass --good <history commit> of an entry known to pass",
    )


def _tester(
    run: _Bisection,
    good_commit: str,
    task: str,
    good_plan: BuildPlan,
    good_tree: str,
    target: str | None,
    change: Sequence[Piece],
) -> Callable[[list[Piece]], str]:
    """A ddmin test: build the good entry plus ``pieces`` and run the smoke cases."""
    order = {piece.key: number for number, piece in enumerate(change, start=1)}

    def test(pieces: list[Piece]) -> str:
        if not pieces:
            return PASS
        what = _describe(pieces, order)
        label = f"bisect try {run.count + 1}"
        try:
            candidate = run.bench.candidate(good_plan, good_tree, pieces, label)
        except CandidateError as exc:
            run.count += 1
            run.say(f"[try {run.count}] {what}: unresolved ({exc})")
            return UNRESOLVED
        source = CandidateSets(good_plan.choice, candidate)
        outcome = run.trials.run(f"{run.count + 1:03d}", good_commit, task, source)
        run.step(what, outcome, len(pieces), target)
        return outcome.verdict(target)

    return test


def _describe(pieces: Sequence[Piece], order: dict[tuple[str, int], int]) -> str:
    """``hunks 1-25, 51 of 100 (2 files)``, or the pieces themselves when there are few."""
    if len(pieces) <= 2:
        return " + ".join(p.describe() for p in pieces)
    numbers = sorted(order[p.key] for p in pieces)
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    shown = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    files = len({p.path for p in pieces})
    return f"hunks {shown} of {len(order)} ({files} file{'s' if files > 1 else ''})"


def _reached(
    run: _Bisection, pieces: list[Piece], coverage: list[CoverageRun], bad_tree: str
) -> list[Piece]:
    """The pieces whose file some rank of the bad run imported (all, without coverage)."""
    if not coverage:
        return pieces
    data = coverage[0].files
    measured = set(_python_paths(pieces))

    def read(path: str) -> bytes | None:
        if path not in measured:
            return None
        return run.bench.assembler.run(["cat-file", "blob", f"{bad_tree}:{path}"], "read")

    verdicts = judge_pieces(pieces, data, read)
    skipped = [v.piece for v in verdicts if v.status == NOT_REACHED]
    if skipped:
        run.say(
            f"coverage: {len(skipped)} hunk(s) in files no rank of the bad run imported, left"
            " out: "
            + "; ".join(p.describe() for p in skipped[:5])
            + (" ..." if len(skipped) > 5 else "")
        )
    return [p for p in pieces if p not in skipped]


def _minimize(
    run: _Bisection, pieces: list[Piece], reached: list[Piece], test: Callable[[list[Piece]], str]
) -> list[Piece]:
    """ddmin over the patch files, then over the hunks of those that matter — over the reached
    pieces first; if they do not fail without the others, over all of them."""
    if reached and len(reached) < len(pieces):
        try:
            return _by_file_then_hunk(run, reached, test, known_to_fail=False)
        except NotFailing:
            run.note(
                "the pieces never reached do matter (without them the job does not fail the"
                " same way): searching all of them"
            )
    if not reached:
        run.note("no piece of the change was reached in the bad run: searching all of them")
    return _by_file_then_hunk(run, pieces, test, known_to_fail=True)


def _by_file_then_hunk(
    run: _Bisection,
    pieces: list[Piece],
    test: Callable[[list[Piece]], str],
    *,
    known_to_fail: bool,
) -> list[Piece]:
    groups = list(dict.fromkeys(p.label for p in pieces))
    if len(groups) > 1:
        run.say(f"ddmin over {len(groups)} patch files")

        def test_groups(chosen: list[str]) -> str:
            return test([p for p in pieces if p.label in chosen])

        kept = set(ddmin(groups, test_groups, known_to_fail=known_to_fail))
        pieces, known_to_fail = [p for p in pieces if p.label in kept], True
    if len(pieces) > 1:
        run.say(f"ddmin over {len(pieces)} hunks")
        return ddmin(pieces, test, known_to_fail=known_to_fail)
    if not known_to_fail and test(pieces) != FAIL:
        raise NotFailing("the only piece does not fail")
    return pieces


def _finish(
    run: _Bisection,
    good: str,
    bad: str,
    signature: str | None,
    culprit: list[Piece],
    bad_plan: BuildPlan,
    pieces: list[Piece],
) -> BisectResult:
    patch = render(culprit)
    places = [_in_bad_set(run, bad_plan, piece) for piece in culprit]
    run.say(
        f"culprit: {len(culprit)} hunk(s) of the {len(pieces)} in the change from"
        f" {good[:12]} to {bad[:12]}:"
    )
    for piece, place in zip(culprit, places, strict=True):
        run.say(
            f"  {piece.describe()}"
            + (f"\n    in {place}" if place else f"\n    from {piece.label}")
        )
    run.say(patch.decode("utf-8", "replace").rstrip("\n"))
    patch_path = write_atomically(run.logs / PATCH_NAME, patch)
    document = validate(
        {
            "version": 1,
            "device_type": run.device_type,
            "cases": [c.stem for c in run.cases],
            "good": good,
            "bad": bad,
            "signature": signature,
            "change": len(pieces),
            "culprit": [
                {"piece": p.describe(), "carrier": p.label, "in_bad_set": place}
                for p, place in zip(culprit, places, strict=True)
            ],
            "smoke_runs": run.trials.runs,
            "cached_verdicts": run.trials.cached,
            "tries": run.steps,
            "notes": run.notes,
        },
        "bisect-report",
        f"bisection of {run.device_type}",
    )
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    report_path = write_atomically(run.logs / REPORT_NAME, text.encode("utf-8"))
    run.say(
        f"wrote {patch_path} and {report_path}: {run.trials.runs} smoke run(s)"
        f" ({run.trials.cached} verdict(s) from the cache, {run.count} tries)"
    )
    return BisectResult(
        run.device_type,
        good,
        bad,
        signature or "",
        tuple(culprit),
        patch,
        patch_path,
        report_path,
        run.trials.runs,
        run.trials.cached,
        document,
    )


def _in_bad_set(run: _Bisection, plan: BuildPlan, piece: Piece) -> str | None:
    """``<patch file>, hunk N @@ ... @@ (patch line L)``: where the bad entry's set makes it."""
    from flagscale.builds.builder import read_patches

    if piece.hunk is None:
        return None
    lines = piece.hunk.added_lines() or [piece.hunk.new_start]
    low, high = min(lines), max(lines)
    for backend, patches in read_patches(run.ws, plan, key_paths=run.bench.key_paths).items():
        prefix = "" if backend == FLAGSCALE else f"third_party/{backend}/"
        for patch in patches:
            number = 0
            for section in parse_patch(patch.text):
                for hunk in section.hunks:
                    number += 1
                    if prefix + section.path != piece.path:
                        continue
                    end = hunk.new_start + max(hunk.new_count, 1) - 1
                    if hunk.new_start <= high and low <= end:
                        where = f"{hunk.header} (patch line {hunk.patch_line})"
                        return f"{patch.label}, hunk {number} {where}"
    return None


def bisect_command(
    device_type: str | None,
    *,
    case: str | None = None,
    good: str | None = None,
    bad: str | None = None,
    task: str | None = None,
    key_paths: Sequence[str] = (),
    no_coverage: bool = False,
    start: Path | None = None,
) -> BisectResult:
    """``inv bisect``: prints each step and the culprit; writes ``logs/bisect/<V_M>/``."""
    from flagscale.trust.smoke_cases import device_workspace, resolve_cases

    ws, here = device_workspace(device_type, start)
    cases = resolve_cases(ws.root, case, here=here)
    logs = fresh_folder(
        ws.root / "logs" / "bisect" / device_type,
        mark=MARK,
        maker="inv bisect",
        hint="move it away",
    )
    return bisect_device(
        ws,
        device_type,
        cases,
        good=good,
        bad=bad,
        task=task,
        key_paths=[Path(p).expanduser() for p in key_paths],
        use_coverage=not no_coverage,
        logs=logs,
        report=lambda line: print(line, flush=True),
    )
