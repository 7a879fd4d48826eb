"""Recording patch sets in the history (``inv record-history``), after they are merged.

Without ``--commit`` the commit is found by content on the current branch: the first-parent
commit that last changed the device type's sets, so a squash merge or rebase needs no id.
"""

from __future__ import annotations

from collections.abc import Callable

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id
from flagscale.upstream.workspace import Workspace
from flagscale.vendor.history import (
    HISTORY,
    HistoryEntry,
    backend_key,
    load_history,
    write_history,
)
from flagscale.vendor.history_sets import (
    ancestry_order,
    check_backend_names,
    is_ancestor,
    same_sets,
    set_changes,
)
from flagscale.vendor.patchset import HARDWARE, check_device_type, check_task
from flagscale.vendor.stored_sets import tasks_listed

__all__ = ["record_command", "record_history"]


def _locate(ws: Workspace, device: str, backends: list[str], commit: str | None) -> str:
    """The commit holding the sets: ``commit`` checked, or the last one that changed them."""
    if commit is not None:
        found = commit_id(ws.root, commit)
        if found is None:
            raise FlagScaleError(f"--commit {commit!r} is not a commit in {ws.root}")
        if not is_ancestor(ws, found, "HEAD"):
            raise FlagScaleError(
                f"commit {found} is not on the current branch",
                hint="record on the branch the sets were merged into (without --commit after "
                "a squash merge or rebase)",
            )
        return found
    changes = set_changes(ws, device, backends)
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
    check_backend_names(ws, names)
    found = _locate(ws, device, names, commit)
    listed = tasks_listed(ws, found, device, names)
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
        same = bool(commits) and commit is None and same_sets(ws, commits[-1], found, device, names)
        if found in commits or same:
            holder = found if found in commits else commits[-1]
            report(f"{device} {task} {key}: already recorded ({holder} holds these sets)")
        else:
            commits[:] = ancestry_order(ws, [*commits, found])
            report(f"{device} {task} {key}: recorded {found}")
        recorded.append(HistoryEntry(device, task, key, tuple(names), found))
    write_history(ws, history)
    return recorded


def record_command(
    device_type: str, *, tasks: list[str], backends: list[str], commit: str | None = None
) -> list[HistoryEntry]:
    """``inv record-history``: record in the current workspace's history file."""
    from flagscale.upstream.workspace import find_workspace

    entries = record_history(find_workspace(), device_type, tasks, backends, commit)
    print(f"{HISTORY} written; commit it (git commit -- {HISTORY})")
    return entries
