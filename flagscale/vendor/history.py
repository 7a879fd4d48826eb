"""The patch history: which FlagScale commits hold each device type's patch sets.

``hardware/patch_history.yaml`` maps device type → task → backend key (sorted backend names
joined by ``+``) → FlagScale commits, oldest first, newest last. Each recorded commit *contains*
the device type's patch sets for the key's backends; a build checks that commit's sets out.

Squash merges and rebases give a vendor's commit a new id on the main branch. So entries are
recorded on the main branch after the merge, by content: ``record_history`` finds the commit of
the current branch's first-parent history that last changed the sets. ``check_history`` finds
entries that no longer fit, and ``repair=True`` remaps a rewritten commit to the commit of the
current branch whose sets are identical (same git tree ids). docs/history.md explains it all.

This module is the file itself (read, write, resolve an entry for a build); recording is
``flagscale.vendor.history_record``, checking and repairing ``flagscale.vendor.history_check``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id
from flagscale.core.schema import parse_document, validate
from flagscale.upstream.workspace import Workspace
from flagscale.vendor.history_sets import is_ancestor
from flagscale.vendor.patchset import (
    HARDWARE,
    METADATA,
    check_device_type,
    check_task,
)

__all__ = [
    "HISTORY",
    "HistoryEntry",
    "backend_key",
    "dump_history",
    "entries_of",
    "history_header",
    "load_history",
    "resolve",
    "write_history",
]

HISTORY = f"{HARDWARE}/patch_history.yaml"

History = dict[str, dict[str, dict[str, list[str]]]]


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
    return history_header(path.read_text(encoding="utf-8"))


def history_header(text: str) -> str:
    """The comment lines at the top of a history file's text (kept when it is rewritten)."""
    header = []
    for line in text.splitlines():
        if line.startswith("#") or (not line.strip() and header):
            header.append(line)
        else:
            break
    return "".join(f"{line}\n" for line in header)


def write_history(ws: Workspace, history: History) -> None:
    """Write the history beside the file and rename it into place (validated first)."""
    validate(history, "patch-history", HISTORY)
    write_atomically(ws.path(HISTORY), dump_history(history, _header(ws)))


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
            f"{HISTORY} has no entry for {device_type}", hint=_no_entry(ws, device_type)
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


def _no_entry(ws: Workspace, device_type: str) -> str:
    """What to do when the history does not know ``device_type``."""
    folder = ws.path(f"{HARDWARE}/{device_type}")
    if folder.is_dir() and any(folder.glob(f"*/{METADATA}")):
        return (
            f"{HARDWARE}/{device_type}/ holds patch sets the history does not record yet: build"
            f" them with `inv build --device {device_type} --work-tree`; the history records them"
            " after the merge"
        )
    return _known_devices_hint(load_history(ws))


def _known_devices_hint(history: History) -> str:
    """Which device types the history knows, or that it knows none."""
    known = sorted(history)
    if not known:
        return "the history records no device type yet: ask the vendor to record its patch sets"
    return f"known device types: {', '.join(known)} (or ask the vendor to record the patch sets)"


def _newest(ws: Workspace, device_type: str, entries: list[HistoryEntry]) -> HistoryEntry:
    if len(entries) == 1:
        return entries[0]
    heads = [
        e
        for e in entries
        if all(o.commit == e.commit or is_ancestor(ws, o.commit, e.commit) for o in entries)
    ]
    widest = [e for e in heads if all(set(o.backends) <= set(e.backends) for o in heads)]
    if len({(e.commit, e.backend_key) for e in widest}) == 1:
        return widest[0]
    choices = "; ".join(f"{e.task} {e.backend_key} {e.commit[:12]}" for e in entries)
    raise FlagScaleError(
        f"{device_type} has several history entries to choose from ({choices})",
        hint="pass --task (and --backend) to pick one",
    )
