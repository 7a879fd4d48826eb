"""What the refresh's commits hold: the pin and base layer, a device type's sets, the history.

Each function returns the path changes of one commit (``flagscale.refresh.chain.Put``), computed
from the commit the refresh started on; ``inv refresh`` and ``inv bisect-upstream --smoke``
both make their commits from these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flagscale.core.gitcli import git
from flagscale.core.gitlisting import listed_entries
from flagscale.core.schema import parse_document, validate
from flagscale.overlay.layer_files import blob_oid, deletions_text
from flagscale.overlay.layered_trees import TreeEntry
from flagscale.refresh.chain import Put, paths_under
from flagscale.refresh.declaration import with_release
from flagscale.refresh.layer_carry import layer_at
from flagscale.refresh.objects import Objects
from flagscale.refresh.set_carry import DeviceSets, set_files
from flagscale.refresh.target import PinMove
from flagscale.upstream.workspace import DECLARATION, Backend, ReleaseSource, Workspace
from flagscale.vendor.history import HISTORY, dump_history, history_header
from flagscale.vendor.history_sets import ancestry_order
from flagscale.vendor.patchset import HARDWARE

__all__ = ["device_changes", "history_data", "pin_changes"]


def pin_changes(
    ws: Workspace,
    objects: Objects,
    backend: Backend,
    head: str,
    move: PinMove,
    layer: Mapping[str, TreeEntry],
    deletions: list[str],
) -> tuple[dict[str, Put | None], list[str]]:
    """The pin commit's changes (layer files, deletion list, pin) and notes; only real changes."""
    changes: dict[str, Put | None] = {p: None for p in paths_under(ws, head, backend.layer)}
    data = objects.read_many([e.oid for e in layer.values()])
    for path, entry in layer.items():
        changes[f"{backend.layer}/{path}"] = Put(entry.mode, data[entry.oid])
    _files, old_deletions = layer_at(ws, backend, head, objects)
    if sorted(deletions) != sorted(old_deletions):
        text = deletions_text(deletions).encode() if deletions else None
        changes[backend.deletions] = Put("100644", text) if text else None
    notes: list[str] = []
    if isinstance(backend.source, ReleaseSource):
        assert move.source is not None
        current = git(["show", f"{head}:{DECLARATION}"], ws.root).decode("utf-8")
        edit = with_release(current, backend.name, move.source, move.new_pin)
        notes += list(edit.notes)
        changes[DECLARATION] = Put("100644", edit.text.encode("utf-8"))
    else:
        changes[backend.checkout] = Put("160000", oid=move.new_pin)
    current = _entries_at(ws, head, list(changes))
    return {p: c for p, c in changes.items() if not _same(current.get(p), c)}, notes


def _entries_at(ws: Workspace, commit: str, paths: list[str]) -> dict[str, tuple[str, str]]:
    """(mode, oid) of each of ``paths`` that ``commit`` holds, in one ``ls-tree``."""
    if not paths:
        return {}
    return listed_entries(
        git(["ls-tree", "-r", "-z", "--full-tree", commit, "--", *paths], ws.root)
    )


def _same(current: tuple[str, str] | None, put: Put | None) -> bool:
    if put is None or current is None:
        return put is None and current is None
    wanted = put.oid if put.oid is not None else blob_oid(put.data or b"")
    return current == (put.mode, wanted)


def device_changes(
    ws: Workspace,
    objects: Objects,
    sets: DeviceSets,
    carried: Mapping[str, str | None],
    *,
    parent: str,
    new_base: str,
    refreshed_backend: str,
    new_version: str | None,
    pins: Mapping[str, str] | None = None,
) -> dict[str, Put | None]:
    """A device type's commit: each set's folder replaced by its carried files.

    ``carried`` maps backend → the carried plain patch's blob (None: the stored bytes stay);
    ``pins`` each upstream backend's pin at ``new_base`` when already known.
    """
    changes: dict[str, Put | None] = {}
    for name, plain_oid in sorted(carried.items()):
        folder = f"{HARDWARE}/{sets.device}/{name}"
        for path in paths_under(ws, parent, folder):
            changes[path] = None
        plain = objects.read(plain_oid) if plain_oid else None
        pin = (pins or {}).get(name)
        files = set_files(ws, sets, name, new_base, plain, refreshed_backend, new_version, pin)
        for file_name, data in files.items():
            changes[f"{folder}/{file_name}"] = Put("100644", data)
    return changes


def history_data(
    ws: Workspace, head: str, refreshed: Mapping[str, tuple[dict[str, Any], str]]
) -> bytes:
    """The history file with each refreshed device type's commit appended to its lines, as
    ``inv record-history --commit`` writes it. ``refreshed``: device → (key → tasks, commit)."""
    text = git(["show", f"{head}:{HISTORY}"], ws.root).decode("utf-8")
    history = validate(parse_document(text, HISTORY) or {}, "patch-history", HISTORY)
    for device, (lines, commit) in refreshed.items():
        for key, tasks in lines.items():
            for task in tasks:
                line = history[device][task][key]
                line[:] = ancestry_order(ws, [*line, commit])
    return dump_history(history, history_header(text))
