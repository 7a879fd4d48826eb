"""Checking the history (``inv check-history``) and repairing what can be repaired (``--repair``).

Repair quotes unquoted ids, expands short ones, remaps commits rewritten by a squash merge or
rebase to the current branch's commit with identical patch sets, removes duplicates and orders
by ancestry. Nothing is written while any problem remains.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import parse_document, validate
from flagscale.upstream.workspace import FLAGSCALE, Workspace
from flagscale.vendor.history import HISTORY, History, backend_key, load_history, write_history
from flagscale.vendor.history_sets import (
    ancestry_order,
    content_match,
    full_commit,
    is_ancestor,
    set_changes,
)
from flagscale.vendor.patchset import DEVICE_TYPE, HARDWARE, TASKS, set_folder
from flagscale.vendor.stored_sets import set_at, tasks_listed, tasks_listed_quiet
from flagscale.vendor.worktree_sets import sets_changed_since

__all__ = ["CheckReport", "check_command", "check_history"]

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_DROPPED = "entry removed (--drop-stale)"
_RECORD = "`inv record-history`"
_DROP = "`inv check-history --repair --drop-stale`"
_MISSING = "missing"  # check_commit's answer for a commit id this repository does not have


@dataclass
class CheckReport:
    """What ``check_history`` found (problems) and, with repair, what it changed."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    written: bool = False

    @property
    def ok(self) -> bool:
        """True when no problem is left."""
        return not self.problems


def _raw_history(ws: Workspace) -> tuple[Any, Any]:
    """The file parsed twice: typed (to spot numbers) and all-strings (to repair them)."""
    path = ws.path(HISTORY)
    if not path.is_file():
        return {}, {}
    text = path.read_text(encoding="utf-8")
    typed = parse_document(text, HISTORY) or {}
    strings = yaml.load(text, Loader=yaml.BaseLoader) or {}
    return typed, strings


class _Checker:
    """Checks one history file; with ``repair`` builds the repaired history on the way."""

    def __init__(self, ws: Workspace, repair: bool, drop: bool = False) -> None:
        self.ws = ws
        self.repair = repair
        self.drop = repair and drop
        self.report = CheckReport()
        self.fixed: History = {}

    def problem(self, where: str, text: str, fixed: str | None = None) -> None:
        if self.repair and fixed is not None:
            self.report.repaired.append(f"{HISTORY}: {where}: {text}: {fixed}")
        else:
            self.report.problems.append(f"{HISTORY}: {where}: {text}")

    def run(self) -> CheckReport:
        typed, strings = _raw_history(self.ws)
        if not isinstance(typed, dict):
            self.problem("(top level)", f"{typed!r} is not a mapping of device types")
            return self.report
        for device, tasks in typed.items():
            self.check_device(str(device), tasks, strings.get(str(device), {}))
        if not self.report.problems:
            try:
                validate(self.fixed if self.repair else typed, "patch-history", HISTORY)
            except FlagScaleError as exc:
                self.report.problems.append(str(exc))
        return self.report

    def check_device(self, device: str, tasks: Any, strings: Any) -> None:
        if not DEVICE_TYPE.match(device):
            self.problem(device, "not a Vendor_Model device type")
            return
        if not self.ws.path(f"{HARDWARE}/{device}").is_dir():
            self.problem(device, f"no folder {HARDWARE}/{device}/ for this device type")
            return
        if not isinstance(tasks, dict):
            self.problem(device, "should map tasks to backend keys")
            return
        for task, keys in tasks.items():
            where = f"{device}.{task}"
            if task not in TASKS:
                self.problem(where, f"unknown task (known: {', '.join(TASKS)})")
                continue
            if not isinstance(keys, dict):
                self.problem(where, "should map backend keys to lists of commits")
                continue
            for key, commits in keys.items():
                self.check_key(device, str(task), str(key), commits, strings.get(task, {}))

    def check_key(self, device: str, task: str, key: str, commits: Any, strings: Any) -> None:
        where = f"{device}.{task}.{key}"
        texts = strings.get(key, []) if isinstance(strings, dict) else []
        backends = key.split("+")
        if not all(backends) or key != backend_key(backends):
            fixed = backend_key(b for b in backends if b) if any(backends) else None
            self.problem(
                where,
                "backend key is not sorted, unique and '+'-joined",
                f"renamed to {fixed}" if fixed else None,
            )
            if fixed is None:
                return
            key, backends = fixed, fixed.split("+")
        unknown = [b for b in backends if b != FLAGSCALE and b not in self.ws.backends]
        if unknown:
            self.problem(where, f"unknown backend(s) {', '.join(unknown)}")
        if not isinstance(commits, list) or not commits:
            self.problem(where, "should be a non-empty list of commits")
            return
        found: list[str | None] = []
        missing: list[int] = []
        for index, value in enumerate(commits):
            text = texts[index] if index < len(texts) else str(value)
            oid = self.check_commit(f"{where}[{index}]", device, task, backends, value, text)
            if oid == _MISSING:
                missing.append(index)
                oid = None
            found.append(oid)
        for index in missing:
            found[index] = self.remap_missing(
                f"{where}[{index}]",
                device,
                task,
                backends,
                found,
                index,
                texts[index] if index < len(texts) else "",
            )
        resolved = self.check_duplicates(where, [oid for oid in found if oid is not None])
        resolved = self.check_order(where, resolved)
        if resolved:
            self.fixed.setdefault(device, {}).setdefault(task, {})[key] = resolved

    def check_commit(
        self, where: str, device: str, task: str, backends: list[str], value: Any, text: str
    ) -> str | None:
        """The full id the entry stands for, None after a problem, _MISSING when not here."""
        if not isinstance(value, str):
            self.problem(
                where,
                f"{value!r} is not a string: an unquoted commit id read as a number",
                f"quoted as {text!r}",
            )
        elif not _FULL_SHA.match(value):
            expandable = full_commit(self.ws, value) is not None
            self.problem(
                where,
                f"{value!r} is not a full 40-hex commit id",
                "expanded" if expandable else None,
            )
        oid = full_commit(self.ws, text)
        if oid is None:
            return _MISSING
        if not is_ancestor(self.ws, oid, "HEAD"):
            match = content_match(self.ws, oid, device, backends)
            self.problem(
                where,
                f"{oid} is not on the current branch (rewritten by a squash merge or rebase?)",
                f"remapped to {match}, which holds identical patch sets" if match else None,
            )
            if match is None:
                self.drop_if_asked(where, "its sets are on no commit of the current branch")
                return None
            oid = match
        try:
            return oid if self.holds_sets(where, oid, device, task, backends) else None
        except FlagScaleError as exc:  # a damaged metadata.yaml at that commit
            self.problem(where, str(exc))
            return None

    def holds_sets(self, where: str, oid: str, device: str, task: str, backends: list[str]) -> bool:
        absent = [b for b in backends if set_at(self.ws, oid, device, b) is None]
        if absent:
            folders = ", ".join(f"{set_folder(device, b)}/" for b in absent)
            self.problem(where, f"{oid} does not contain the patch set {folders}")
            return False
        listed = tasks_listed(self.ws, oid, device, backends)
        if task not in listed:
            self.problem(where, f"the sets at {oid} are for {', '.join(listed)}, not {task}")
            return False
        return True

    def remap_missing(
        self,
        where: str,
        device: str,
        task: str,
        backends: list[str],
        found: list[str | None],
        index: int,
        text: str,
    ) -> str | None:
        """A commit that is gone: the one commit changing the sets between its neighbours."""
        before = next((c for c in reversed(found[:index]) if c), None)
        after = next((c for c in found[index + 1 :] if c), None)
        candidates = [
            c
            for c in set_changes(self.ws, device, backends)
            if (before is None or (c != before and is_ancestor(self.ws, before, c)))
            and (after is None or is_ancestor(self.ws, c, after))
            and task in tasks_listed_quiet(self.ws, c, device, backends)
        ]
        what = f"commit {text!r} does not exist here (squash-merged or rebased away?)"
        if len(candidates) == 1:
            self.problem(
                where,
                what,
                f"remapped to {candidates[0]}, the only commit between"
                " its neighbours that changed the patch sets",
            )
            return candidates[0]
        if not candidates and self.drop:
            self.problem(where, what, _DROPPED)
            return None
        detail = (
            f"; candidates: {', '.join(c[:12] for c in candidates)}"
            f" (record the right one with {_RECORD})"
            if candidates
            else "; no commit of the current branch between its neighbours changed the sets"
            f" (record the right one with {_RECORD}, or drop the entry: {_DROP})"
        )
        self.problem(where, what + detail)
        return None

    def drop_if_asked(self, where: str, why: str) -> None:
        """After a problem that leaves an entry pointing nowhere: with ``drop``, say it goes."""
        if self.drop:
            self.report.problems.pop()
            self.report.repaired.append(f"{HISTORY}: {where}: {why}: {_DROPPED}")
        else:
            self.report.problems[-1] += f" (record the right one with {_RECORD}, or drop: {_DROP})"

    def check_duplicates(self, where: str, commits: list[str]) -> list[str]:
        unique = list(dict.fromkeys(commits))
        if len(unique) != len(commits):
            self.problem(where, "lists a commit more than once", "duplicates removed")
        return unique

    def check_order(self, where: str, commits: list[str]) -> list[str]:
        for older, newer in zip(commits, commits[1:], strict=False):
            if older != newer and is_ancestor(self.ws, newer, older):
                self.problem(
                    where,
                    f"{newer} is listed after its descendant {older}: newest last, please",
                    "reordered by ancestry",
                )
                return ancestry_order(self.ws, commits)
        return commits


def check_history(ws: Workspace, *, repair: bool = False, drop: bool = False) -> CheckReport:
    """Check ``hardware/patch_history.yaml``; with ``repair`` fix what can be fixed and write it.

    Repair quotes unquoted ids, expands short ones, remaps commits rewritten by a squash merge or
    rebase to the current branch's commit with identical patch sets, removes duplicates and
    orders by ancestry; with ``drop`` too it removes entries whose sets no commit of the current
    branch holds (gone, or left on another branch). Nothing is written while a problem remains.
    """
    checker = _Checker(ws, repair, drop)
    report = checker.run()
    if repair and report.ok and report.repaired:
        write_history(ws, checker.fixed)
        report.written = True
    return report


def check_command(*, repair: bool = False, drop_stale: bool = False) -> CheckReport:
    """``inv check-history``: print what was repaired and fail on each problem left."""
    from flagscale.upstream.workspace import find_workspace

    if drop_stale and not repair:
        raise FlagScaleError("--drop-stale goes with --repair", hint="add --repair")
    ws = find_workspace()
    report = check_history(ws, repair=repair, drop=drop_stale)
    for line in report.repaired:
        print(f"repaired: {line}")
    if report.written:
        print(f"{HISTORY} written; commit it (git commit -- {HISTORY})")
    if report.problems:
        for line in report.problems[:-1]:
            print(f"error: {line}", file=sys.stderr)
        raise FlagScaleError(
            report.problems[-1],
            hint=f"{len(report.problems)} problem(s)"
            + (
                "; each says what to do"
                if repair
                else "; `inv check-history --repair` fixes what it can, each says what to do"
            ),
        )
    if not report.repaired:
        print(f"{HISTORY}: ok")
    for note in unrecorded_notes(ws):
        print(f"note: {note}")
    return report


def unrecorded_notes(ws: Workspace) -> list[str]:
    """One note per history line whose sets in the work tree differ from its newest entry."""
    notes = []
    for device, tasks in sorted(load_history(ws).items()):
        for task, keys in sorted(tasks.items()):
            for key, commits in sorted(keys.items()):
                changed = sets_changed_since(ws, device, key.split("+"), commits[-1])
                if changed:
                    notes.append(
                        f"{', '.join(changed)} in your work tree differ from the newest entry of"
                        f" {device}.{task}.{key} ({commits[-1][:12]}): record them after the merge"
                        f" (`inv record-history --device-type {device} --task {task}"
                        f" --backend {' '.join(key.split('+'))}`)"
                    )
    return notes
