"""Patch sets read from the work tree, before the history records them: ``inv build --work-tree``.

A vendor makes sets on a branch (``inv patch --device-type``); the history records them only after
the merge (docs/history.md). To build and smoke-test them before that, ``WorkTreeSets`` is a
``flagscale.vendor.stored_sets.SetSource`` that takes ``hardware/<V_M>/<backend>/`` from the work
tree as it is (committed or not; files ``.gitignore`` ignores left out, as ``git add`` would) and
names every file by the blob id git would give it. The build's history commit is ``HEAD`` and its
inputs say ``sets_from: work-tree``, so such a build never passes for one of recorded sets.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git
from flagscale.core.gitids import EXECUTABLE, REGULAR, blob_id, flat_tree_id
from flagscale.upstream.workspace import Workspace
from flagscale.vendor.patchset import METADATA, check_device_type, check_task, parse_metadata
from flagscale.vendor.set_plan import Entry, HistoryChoice, SetPlan

__all__ = ["WorkTreeSets", "sets_changed_since"]

SETS_FROM = "work-tree"  # the build record's inputs.sets_from


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _device_folder(device_type: str) -> str:
    return f"hardware/{device_type}"


def sets_changed_since(
    ws: Workspace, device_type: str, backends: Sequence[str], commit: str
) -> list[str]:
    """The set folders ``hardware/<V_M>/<backend>`` whose files in the work tree differ from
    ``commit``'s (edited, added or removed; files ``.gitignore`` ignores left out)."""
    folders = [f"{_device_folder(device_type)}/{b}" for b in backends]
    if not folders:
        return []
    changed = git(["diff", "--name-only", "-z", commit, "--", *folders], ws.root)
    untracked = git(["ls-files", "-z", "--others", "--exclude-standard", "--", *folders], ws.root)
    paths = {p.decode("utf-8", "surrogateescape") for p in (changed + untracked).split(b"\0") if p}
    return [f for f in folders if any(p.startswith(f"{f}/") for p in paths)]


class WorkTreeSets:
    """The patch sets in the work tree's ``hardware/<V_M>/``, as a build's source."""

    def __init__(self, warn: Callable[[str], None] = _warn) -> None:
        self.warn = warn
        self._warned: set[str] = set()

    def choose(
        self,
        ws: Workspace,
        device_type: str,
        task: str | None,
        commit: str | None,
        backends: Sequence[str],
    ) -> HistoryChoice:
        """The sets of ``device_type`` serving ``task`` (the only task they serve, if not given)."""
        check_device_type(device_type)
        head = commit_id(ws.root, "HEAD")
        if head is None:
            raise FlagScaleError(f"{ws.root} has no commit yet", hint="commit FlagScale first")
        if commit is not None and commit_id(ws.root, commit) != head:
            raise FlagScaleError(
                "--commit does not apply with --work-tree: the sets in your work tree are built"
            )
        served = self._tasks(ws, device_type)
        chosen_task = _pick_task(device_type, served, task)
        chosen = sorted(b for b, tasks in served.items() if chosen_task in tasks)
        if backends:
            missing = sorted(set(backends) - set(chosen))
            if missing:
                raise FlagScaleError(
                    f"{_device_folder(device_type)}/ in your work tree holds no {chosen_task}"
                    f" patch set for {', '.join(missing)}",
                    hint=f"it holds {', '.join(chosen)}",
                )
            chosen = sorted(set(backends))
        if device_type not in self._warned:
            self._warned.add(device_type)
            self.warn(
                f"warning: building {device_type} from the unrecorded patch sets in your work tree"
                f" ({_device_folder(device_type)}/: {', '.join(chosen)}), not from"
                " hardware/patch_history.yaml: users and CI build recorded sets only"
            )
        return HistoryChoice(device_type, chosen_task, tuple(chosen), head, (head,), recorded=False)

    def read_sets(self, ws: Workspace, choice: HistoryChoice) -> dict[str, SetPlan]:
        """Each backend's set from the work tree, its files held in memory."""
        from flagscale.vendor.stored_sets import check_task, set_from_metadata

        sets: dict[str, SetPlan] = {}
        for backend in choice.backends:
            folder = f"{_device_folder(choice.device_type)}/{backend}"
            entries, data = _folder_files(ws, folder)
            tree = flat_tree_id({name: (e.mode, e.oid) for name, e in entries.items()})
            where = f"{folder}/{{}} in the work tree"
            plan = set_from_metadata(
                choice.device_type, backend, folder, tree, entries, data[METADATA], where
            )
            check_task(plan, choice.task)
            stored = tuple(replace(f, data=data[f.path[len(folder) + 1 :]]) for f in plan.files)
            sets[backend] = replace(plan, files=stored)
        return sets

    @staticmethod
    def _tasks(ws: Workspace, device_type: str) -> dict[str, tuple[str, ...]]:
        """Backend → the tasks its set in the work tree serves."""
        folder = _device_folder(device_type)
        if not any(ws.path(folder).glob(f"*/{METADATA}")):
            raise FlagScaleError(
                f"{folder}/ holds no patch sets ({METADATA}) in your work tree",
                hint=f"make them with `inv patch --device-type {device_type} ...`",
            )
        served = {}
        for path in sorted(ws.path(folder).glob(f"*/{METADATA}")):
            relative = f"{folder}/{path.parent.name}/{METADATA}"
            served[path.parent.name] = parse_metadata(path.read_bytes(), relative).tasks
        return served


def _pick_task(device_type: str, served: dict[str, tuple[str, ...]], task: str | None) -> str:
    every = sorted({t for tasks in served.values() for t in tasks})
    if task is not None:
        check_task(task)
        if task not in every:
            raise FlagScaleError(
                f"no patch set in {_device_folder(device_type)}/ serves task {task}",
                hint=f"they serve {', '.join(every)}",
            )
        return task
    if len(every) != 1:
        raise FlagScaleError(
            f"the patch sets in {_device_folder(device_type)}/ serve several tasks"
            f" ({', '.join(every)})",
            hint="pass --task to pick one",
        )
    return every[0]


def _folder_files(ws: Workspace, folder: str) -> tuple[dict[str, Entry], dict[str, bytes]]:
    """The files ``git add`` would take from ``folder`` (name → entry) and their bytes."""
    listed = git(
        ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", f"{folder}/"],
        ws.root,
    )
    entries: dict[str, Entry] = {}
    data: dict[str, bytes] = {}
    for raw in dict.fromkeys(filter(None, listed.split(b"\0"))):
        path = raw.decode("utf-8", "surrogateescape")
        name = path[len(folder) + 1 :]
        full = ws.path(path)
        try:
            info = full.lstat()
        except FileNotFoundError:
            continue  # deleted in the work tree, not yet in the index
        if "/" in name or not stat.S_ISREG(info.st_mode):
            raise FlagScaleError(
                f"{path}: a patch set folder holds plain files only",
                hint="remove it, or make the sets again with `inv patch --device-type`",
            )
        content = full.read_bytes()
        mode = EXECUTABLE if info.st_mode & stat.S_IXUSR and os.name == "posix" else REGULAR
        entries[name] = Entry(mode, "blob", blob_id(content), path)
        data[name] = content
    if METADATA not in data:
        raise FlagScaleError(f"{folder}/{METADATA} is missing from your work tree")
    return entries, data
