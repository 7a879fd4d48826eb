"""The patch history: which FlagScale commits hold each device type's patch sets.

``hardware/patch_history.yaml`` maps device type → task → backend key (sorted backend names
joined by ``+``) → FlagScale commits, oldest first, newest last. Each recorded commit *contains*
the device type's patch sets for the key's backends; a build checks that commit's sets out.

Squash merges and rebases give a vendor's commit a new id on the main branch. So entries are
recorded on the main branch after the merge, by content: ``record_history`` finds the commit of
the current branch's first-parent history that last changed the sets. ``check_history`` finds
entries that no longer fit, and ``repair=True`` remaps a rewritten commit to the commit of the
current branch whose sets are identical (same git tree ids). docs/history.md explains it all.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git, git_ok, git_text
from flagscale.core.schema import parse_document, validate
from flagscale.upstream.workspace import FLAGSCALE, Workspace
from flagscale.vendor.patchset import (
    DEVICE_TYPE,
    HARDWARE,
    METADATA,
    TASKS,
    check_device_type,
    check_task,
    parse_metadata,
    set_folder,
)

__all__ = [
    "HISTORY",
    "CheckReport",
    "HistoryEntry",
    "backend_key",
    "check_command",
    "check_history",
    "dump_history",
    "entries_of",
    "load_history",
    "record_command",
    "record_history",
    "resolve",
    "write_history",
]

HISTORY = f"{HARDWARE}/patch_history.yaml"
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")

History = dict[str, dict[str, dict[str, list[str]]]]
_MISSING = "missing"  # check_commit's answer for a commit id this repository does not have


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded commit: device type, task, backend key (and its backends), commit."""

    device_type: str
    task: str
    backend_key: str
    backends: tuple[str, ...]
    commit: str


def backend_key(backends: Iterable[str]) -> str:
    """The history key of a set of backends: sorted, unique, ``+``-joined."""
    names = sorted(set(backends))
    if not names:
        raise FlagScaleError("no backend given", hint="name the backends of the patch sets")
    return "+".join(names)


# --- reading and writing the file --------------------------------------------------------------


def load_history(ws: Workspace) -> History:
    """The history in the work tree, checked against its schema; {} when there is none."""
    path = ws.path(HISTORY)
    if not path.is_file():
        return {}
    data = parse_document(path.read_text(encoding="utf-8"), HISTORY) or {}
    _refuse_unquoted(data)
    return validate(data, "patch-history", HISTORY)


def _refuse_unquoted(data: Any) -> None:
    for device, task, key, index, value in _walk(data):
        if not isinstance(value, str):
            raise FlagScaleError(
                f"{HISTORY}: {device}.{task}.{key}[{index}] is {value!r}, not a string: "
                "YAML read an unquoted commit id as a number",
                hint='quote commit ids ("0123abc...") or run `inv check-history --repair`',
            )


def _walk(data: Any) -> Iterable[tuple[str, str, str, int, Any]]:
    if not isinstance(data, dict):
        return
    for device, tasks in data.items():
        for task, keys in (tasks or {}).items() if isinstance(tasks, dict) else ():
            for key, commits in (keys or {}).items() if isinstance(keys, dict) else ():
                for index, value in enumerate(commits if isinstance(commits, list) else []):
                    yield str(device), str(task), str(key), index, value


def _scalar(text: str) -> str:
    """``text`` as a YAML key, quoted only when a parser would read it as something else."""
    plain = yaml.safe_load(f"{text}: x") if text else None
    if isinstance(plain, dict) and list(plain) == [text] and re.match(r"^[\w.+-]+$", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_history(history: History, header: str = "") -> bytes:
    """The file's bytes: keys sorted, commits in their order and double-quoted, 2-space indent."""
    lines: list[str] = []
    for device in sorted(history):
        lines.append(f"{_scalar(device)}:")
        for task in sorted(history[device]):
            lines.append(f"  {_scalar(task)}:")
            for key in sorted(history[device][task]):
                lines.append(f"    {_scalar(key)}:")
                lines.extend(f'      - "{commit}"' for commit in history[device][task][key])
    body = "\n".join(lines) + "\n" if lines else "{}\n"
    return (header + body).encode("utf-8")


def _header(ws: Workspace) -> str:
    """The comment lines at the top of the current file (kept when it is rewritten)."""
    path = ws.path(HISTORY)
    if not path.is_file():
        return ""
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or (not line.strip() and header):
            header.append(line)
        else:
            break
    return "".join(f"{line}\n" for line in header)


def write_history(ws: Workspace, history: History) -> None:
    """Write the history beside the file and rename it into place (validated first)."""
    validate(history, "patch-history", HISTORY)
    write_atomically(ws.path(HISTORY), dump_history(history, _header(ws)))


# --- git questions -----------------------------------------------------------------------------


def _full_commit(ws: Workspace, text: str) -> str | None:
    return commit_id(ws.root, text) if _HEX.match(text) else None


def _is_ancestor(ws: Workspace, older: str, newer: str) -> bool:
    return git_ok(["merge-base", "--is-ancestor", older, newer], ws.root)


def _set_trees(ws: Workspace, commits: list[str], device: str, backends: Iterable[str]) -> dict:
    """commit → tuple of tree ids of ``hardware/<device>/<backend>`` (None when one is missing)."""
    names = list(backends)
    if not commits:
        return {}
    request = "".join(
        f"{commit}:{set_folder(device, name)}\n" for commit in commits for name in names
    )
    output = git(["cat-file", "--batch-check"], ws.root, stdin=request.encode()).decode()
    answers = output.splitlines()
    result: dict[str, tuple[str, ...] | None] = {}
    for index, commit in enumerate(commits):
        trees = []
        for answer in answers[index * len(names) : (index + 1) * len(names)]:
            oid, _, kind = answer.partition(" ")
            trees.append(oid if kind.startswith("tree") else None)
        result[commit] = None if None in trees else tuple(t for t in trees if t)
    return result


def _set_changes(ws: Workspace, device: str, backends: Iterable[str]) -> list[str]:
    """First-parent commits of HEAD that changed the sets, newest first."""
    paths = [set_folder(device, name) for name in backends]
    listing = git_text(
        ["log", "--first-parent", "--format=%H", "HEAD", "--", *paths], ws.root, check=False
    )
    return listing.split()


def _same_sets(ws: Workspace, a: str, b: str, device: str, backends: list[str]) -> bool:
    if not (_full_commit(ws, a) and _full_commit(ws, b)):
        return False
    trees = _set_trees(ws, [a, b], device, backends)
    return trees[a] is not None and trees[a] == trees[b]


def _content_match(ws: Workspace, commit: str, device: str, backends: list[str]) -> str | None:
    """The oldest first-parent commit of HEAD whose sets have the same trees as at ``commit``."""
    wanted = _set_trees(ws, [commit], device, backends).get(commit)
    if wanted is None:
        return None
    candidates = _set_changes(ws, device, backends)
    trees = _set_trees(ws, candidates, device, backends)
    matches = [c for c in candidates if trees.get(c) == wanted]
    return matches[-1] if matches else None


def _metadata_at(ws: Workspace, commit: str, device: str, backend: str):
    path = f"{set_folder(device, backend)}/{METADATA}"
    if not git_ok(["cat-file", "-e", f"{commit}:{path}"], ws.root):
        return None
    return parse_metadata(
        git(["cat-file", "blob", f"{commit}:{path}"], ws.root), f"{path} at {commit}"
    )


def _check_backend_names(ws: Workspace, backends: Iterable[str]) -> None:
    for name in backends:
        if name != FLAGSCALE and name not in ws.backends:
            known = ", ".join([FLAGSCALE, *sorted(ws.backends)])
            raise FlagScaleError(f"unknown backend {name!r}", hint=f"known backends: {known}")


# --- recording ---------------------------------------------------------------------------------


def _locate(ws: Workspace, device: str, backends: list[str], commit: str | None) -> str:
    """The commit holding the sets: ``commit`` checked, or the last one that changed them."""
    if commit is not None:
        found = commit_id(ws.root, commit)
        if found is None:
            raise FlagScaleError(f"--commit {commit!r} is not a commit in {ws.root}")
        if not _is_ancestor(ws, found, "HEAD"):
            raise FlagScaleError(
                f"commit {found} is not on the current branch",
                hint="record on the branch the sets were merged into (without --commit after "
                "a squash merge or rebase)",
            )
        return found
    changes = _set_changes(ws, device, backends)
    if not changes:
        raise FlagScaleError(
            f"no commit on the current branch holds {HARDWARE}/{device}/ sets for "
            f"{', '.join(backends)}",
            hint="make and commit them with `inv patch --device-type ...` first",
        )
    return changes[0]


def record_history(
    ws: Workspace,
    device_type: str,
    tasks: list[str] | None = None,
    backends: list[str] | None = None,
    commit: str | None = None,
    *,
    report: Callable[[str], None] = print,
) -> list[HistoryEntry]:
    """Record the commit holding the device type's sets, once per task; return the entries.

    Without ``commit`` the commit is found on the current branch (see the module doc). Tasks
    default to those every named set's metadata lists.
    """
    device = check_device_type(device_type)
    names = sorted(dict.fromkeys(backends or []))
    if not names:
        raise FlagScaleError("no --backend given", hint="name the backends of the patch sets")
    _check_backend_names(ws, names)
    found = _locate(ws, device, names, commit)
    listed = _tasks_listed(ws, found, device, names)
    wanted = sorted(dict.fromkeys(tasks or listed))
    for task in wanted:
        check_task(task)
        if task not in listed:
            raise FlagScaleError(
                f"the sets of {device} at {found} are for {', '.join(listed) or 'no task'},"
                f" not {task}",
                hint="re-run inv patch with that --task, or record another task",
            )
    history = load_history(ws)
    key = backend_key(names)
    recorded = []
    for task in wanted:
        commits = history.setdefault(device, {}).setdefault(task, {}).setdefault(key, [])
        # found by content: a newer commit holding the same sets adds nothing; an explicit
        # --commit is recorded as asked (a heterogeneous build needs one shared commit)
        same = (
            bool(commits) and commit is None and _same_sets(ws, commits[-1], found, device, names)
        )
        if found in commits or same:
            holder = found if found in commits else commits[-1]
            report(f"{device} {task} {key}: already recorded ({holder} holds these sets)")
        else:
            commits[:] = _ancestry_order(ws, [*commits, found])
            report(f"{device} {task} {key}: recorded {found}")
        recorded.append(HistoryEntry(device, task, key, tuple(names), found))
    write_history(ws, history)
    return recorded


def _tasks_listed(ws: Workspace, commit: str, device: str, backends: list[str]) -> list[str]:
    common: set[str] | None = None
    for name in backends:
        metadata = _metadata_at(ws, commit, device, name)
        if metadata is None:
            raise FlagScaleError(
                f"commit {commit} does not hold {set_folder(device, name)}/{METADATA}",
                hint="record a commit that contains the patch set",
            )
        common = set(metadata.tasks) if common is None else common & set(metadata.tasks)
    return sorted(common or ())


def _tasks_listed_quiet(ws: Workspace, commit: str, device: str, backends: list[str]) -> list[str]:
    try:
        return _tasks_listed(ws, commit, device, backends)
    except FlagScaleError:
        return []


def _ancestry_order(ws: Workspace, commits: list[str]) -> list[str]:
    """``commits`` oldest first by ancestry (topological; unrelated ones in a stable order)."""
    unique = list(dict.fromkeys(commits))
    if len(unique) < 2 or any(_full_commit(ws, oid) != oid for oid in unique):
        return unique  # a commit this repository lacks: keep the order (check-history says so)
    listing = git_text(["rev-list", "--topo-order", "--reverse", *unique], ws.root).split()
    position = {oid: index for index, oid in enumerate(listing)}
    return sorted(unique, key=lambda oid: position.get(oid, -1))


# --- checking and repairing --------------------------------------------------------------------


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

    def __init__(self, ws: Workspace, repair: bool) -> None:
        self.ws = ws
        self.repair = repair
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
            expandable = _full_commit(self.ws, value) is not None
            self.problem(
                where,
                f"{value!r} is not a full 40-hex commit id",
                "expanded" if expandable else None,
            )
        oid = _full_commit(self.ws, text)
        if oid is None:
            return _MISSING
        if not _is_ancestor(self.ws, oid, "HEAD"):
            match = _content_match(self.ws, oid, device, backends)
            self.problem(
                where,
                f"{oid} is not on the current branch (rewritten by a squash merge or rebase?)",
                f"remapped to {match}, which holds identical patch sets" if match else None,
            )
            if match is None:
                return None
            oid = match
        try:
            return oid if self.holds_sets(where, oid, device, task, backends) else None
        except FlagScaleError as exc:  # a damaged metadata.yaml at that commit
            self.problem(where, str(exc))
            return None

    def holds_sets(self, where: str, oid: str, device: str, task: str, backends: list[str]) -> bool:
        absent = [b for b in backends if _metadata_at(self.ws, oid, device, b) is None]
        if absent:
            folders = ", ".join(f"{set_folder(device, b)}/" for b in absent)
            self.problem(where, f"{oid} does not contain the patch set {folders}")
            return False
        listed = _tasks_listed(self.ws, oid, device, backends)
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
            for c in _set_changes(self.ws, device, backends)
            if (before is None or (c != before and _is_ancestor(self.ws, before, c)))
            and (after is None or _is_ancestor(self.ws, c, after))
            and task in _tasks_listed_quiet(self.ws, c, device, backends)
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
        detail = (
            f"; candidates: {', '.join(c[:12] for c in candidates)}"
            if candidates
            else "; no commit of the current branch between its neighbours changed the sets"
        )
        self.problem(where, what + detail + " (record the right one with inv record-history)")
        return None

    def check_duplicates(self, where: str, commits: list[str]) -> list[str]:
        unique = list(dict.fromkeys(commits))
        if len(unique) != len(commits):
            self.problem(where, "lists a commit more than once", "duplicates removed")
        return unique

    def check_order(self, where: str, commits: list[str]) -> list[str]:
        for older, newer in zip(commits, commits[1:], strict=False):
            if older != newer and _is_ancestor(self.ws, newer, older):
                self.problem(
                    where,
                    f"{newer} is listed after its descendant {older}: newest last, please",
                    "reordered by ancestry",
                )
                return _ancestry_order(self.ws, commits)
        return commits


def check_history(ws: Workspace, *, repair: bool = False) -> CheckReport:
    """Check ``hardware/patch_history.yaml``; with ``repair`` fix what can be fixed and write it.

    Repair quotes unquoted ids, expands short ones, remaps commits rewritten by a squash merge or
    rebase to the current branch's commit with identical patch sets, removes duplicates and
    orders by ancestry. Nothing is written while any problem remains.
    """
    checker = _Checker(ws, repair)
    report = checker.run()
    if repair and report.ok and report.repaired:
        write_history(ws, checker.fixed)
        report.written = True
    return report


# --- resolving for builds ----------------------------------------------------------------------


def entries_of(ws: Workspace, device_type: str) -> list[HistoryEntry]:
    """Every recorded entry of a device type (per task and key, oldest first)."""
    history = load_history(ws)
    entries = []
    for task, keys in sorted(history.get(device_type, {}).items()):
        for key, commits in sorted(keys.items()):
            backends = tuple(key.split("+"))
            entries.extend(HistoryEntry(device_type, task, key, backends, c) for c in commits)
    return entries


def resolve(
    ws: Workspace,
    device_type: str,
    task: str | None = None,
    commit: str | None = None,
    backends: list[str] | None = None,
) -> HistoryEntry:
    """The history entry to build: the newest one, or the one recording ``commit``.

    ``task`` and ``backends`` narrow the choice; without them a device type whose tasks or keys
    point at different commits is ambiguous unless one commit descends from all others.
    """
    check_device_type(device_type)
    entries = entries_of(ws, device_type)
    if not entries:
        raise FlagScaleError(
            f"{HISTORY} has no entry for {device_type}",
            hint="check the device type, or ask its vendor to record the patch sets",
        )
    if task is not None:
        check_task(task)
        entries = [e for e in entries if e.task == task]
    if backends:
        key = backend_key(backends)
        entries = [e for e in entries if e.backend_key == key]
    if commit is not None:
        full = commit_id(ws.root, commit) or commit
        entries = [e for e in entries if e.commit == full]
    else:
        newest: dict[tuple[str, str], HistoryEntry] = {}
        for entry in entries:
            newest[(entry.task, entry.backend_key)] = entry
        entries = list(newest.values())
    if not entries:
        narrowed = ", ".join(
            f"{name} {value}"
            for name, value in (
                ("task", task),
                ("backends", backends and backend_key(backends)),
                ("commit", commit),
            )
            if value
        )
        raise FlagScaleError(
            f"{HISTORY} has no entry for {device_type} with {narrowed}",
            hint=f"see the entries of {device_type} in {HISTORY}",
        )
    return _newest(ws, device_type, entries)


def _newest(ws: Workspace, device_type: str, entries: list[HistoryEntry]) -> HistoryEntry:
    if len(entries) == 1:
        return entries[0]
    heads = [
        e
        for e in entries
        if all(o.commit == e.commit or _is_ancestor(ws, o.commit, e.commit) for o in entries)
    ]
    widest = [e for e in heads if all(set(o.backends) <= set(e.backends) for o in heads)]
    if len({(e.commit, e.backend_key) for e in widest}) == 1:
        return widest[0]
    choices = "; ".join(f"{e.task} {e.backend_key} {e.commit[:12]}" for e in entries)
    raise FlagScaleError(
        f"{device_type} has several history entries to choose from ({choices})",
        hint="pass --task (and --backend) to pick one",
    )


# --- the commands ------------------------------------------------------------------------------


def record_command(
    device_type: str, *, tasks: list[str], backends: list[str], commit: str | None = None
) -> list[HistoryEntry]:
    """``inv record-history``: record in the current workspace's history file."""
    from flagscale.upstream.workspace import find_workspace

    entries = record_history(find_workspace(), device_type, tasks, backends, commit)
    print(f"{HISTORY} written; commit it (git commit -- {HISTORY})")
    return entries


def check_command(*, repair: bool = False) -> CheckReport:
    """``inv check-history``: print what was repaired and fail on each problem left."""
    from flagscale.upstream.workspace import find_workspace

    report = check_history(find_workspace(), repair=repair)
    for line in report.repaired:
        print(f"repaired: {line}")
    if report.written:
        print(f"{HISTORY} written; commit it (git commit -- {HISTORY})")
    if report.problems:
        for line in report.problems[:-1]:
            print(f"error: {line}", file=sys.stderr)
        raise FlagScaleError(
            report.problems[-1],
            hint=f"{len(report.problems)} problem(s); fix by hand"
            + ("" if repair else " or try `inv check-history --repair`"),
        )
    if not report.repaired:
        print(f"{HISTORY}: ok")
    return report
