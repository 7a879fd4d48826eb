"""One backend's base layer as read from disk, and what it asks of the checkout.

``backends/<b>/`` holds whole files; ``backends/<b>.layer.yaml`` lists upstream files to delete.
The desired state of the checkout follows from them, the pin and the layer mode: in symlink mode
a regular file is laid as a relative symlink into ``backends/<b>/``, in copy mode as a copy;
symlinks of the layer are recreated as the same symlink.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.overlay.checkout_state import DELETED, PinTree, State
from flagscale.overlay.layer_files import LayerEntry, file_oid, read_deletions, scan_layer
from flagscale.upstream.workspace import Backend, Workspace

__all__ = ["Layer", "overlay_target", "read_layer"]

_RACY_NS = 2_000_000_000  # a file changed this recently may change again within one mtime tick


def overlay_target(backend: str, path: str) -> str:
    """The relative symlink target that makes ``third_party/<b>/<path>`` show the layer's file."""
    depth = path.count("/") + 2  # third_party/<b>/ is two folders below the workspace root
    return "../" * depth + f"backends/{backend}/{path}"


@dataclass
class Layer:
    """The whole files and deletions of one backend's base layer."""

    backend: Backend
    root: Path
    entries: dict[str, LayerEntry]
    deletions: list[str]
    sources: dict[str, list]
    _hashed: dict[str, str] = field(default_factory=dict, repr=False)
    _deleted_set: frozenset[str] | None = field(default=None, repr=False)

    @property
    def _deleted(self) -> frozenset[str]:
        if self._deleted_set is None:
            self._deleted_set = frozenset(self.deletions)
        return self._deleted_set

    def state(self, path: str) -> State | None:
        """The layer's own state for ``path``: its file, DELETED, or None when it has nothing."""
        entry = self.entries.get(path)
        if entry is None:
            return DELETED if path in self._deleted else None
        if entry.kind == "link":
            assert entry.target is not None
            return ("link", entry.target)
        return (entry.kind, self.oid(entry))

    def oid(self, entry: LayerEntry) -> str:
        """The blob id of a regular file of the layer, from the stat cache when it is fresh."""
        cached = self.sources.get(entry.path)
        if cached is not None and tuple(cached[:4]) == entry.stat:
            return str(cached[4])
        if entry.path in self._hashed:
            return self._hashed[entry.path]
        oid = self._hashed[entry.path] = file_oid(self.root / entry.path)
        if time.time_ns() - entry.stat[1] > _RACY_NS:
            self.sources[entry.path] = [*entry.stat, oid]
        else:
            self.sources.pop(entry.path, None)
        return oid

    def raw(self, mode: str) -> dict[str, State]:
        """The layer as laid in ``mode``, before the pin is consulted (the run's inputs)."""
        wanted: dict[str, State] = dict.fromkeys(self.deletions, DELETED)
        for path, entry in self.entries.items():
            if entry.kind == "link":
                assert entry.target is not None
                wanted[path] = ("link", entry.target)
            elif mode == "symlink":
                wanted[path] = ("link", overlay_target(self.backend.name, path))
            else:
                wanted[path] = (entry.kind, self.oid(entry))
        return wanted

    def desired(self, mode: str, pin: PinTree) -> dict[str, State]:
        """What the checkout should hold, path by path, beyond the pin."""
        return self._with_pin(self.raw(mode), pin)

    def contents(self, pin: PinTree) -> dict[str, State]:
        """The layer by content (regular files as blob ids), with the deletions it implies."""
        return self._with_pin(self.raw("copy"), pin)

    def _with_pin(self, wanted: dict[str, State], pin: PinTree) -> dict[str, State]:
        """Add the deletions the pin implies: files in listed folders, and upstream files or
        folders where the layer puts a file (the layer replaces what is there)."""
        for folder in [d for d in self.deletions if d in pin.folders]:
            if not pin.has_file(folder):
                del wanted[folder]
            wanted.update(dict.fromkeys(pin.files_under(folder), DELETED))
        for path in self.entries:
            if path in pin.folders:
                wanted.update(dict.fromkeys(pin.files_under(path), DELETED))
            parent = os.path.dirname(path)
            while parent:
                if pin.has_file(parent):
                    wanted[parent] = DELETED
                parent = os.path.dirname(parent)
        return wanted

    def prune_sources(self) -> dict[str, list]:
        """The stat cache restricted to files that still exist."""
        return {p: v for p, v in self.sources.items() if p in self.entries}

    @property
    def empty(self) -> bool:
        return not self.entries and not self.deletions


def read_layer(workspace: Workspace, backend: Backend, sources: dict[str, list] | None) -> Layer:
    """Read and check ``backends/<b>/`` and its deletion list."""
    root = workspace.path(backend.layer)
    if root.is_symlink():
        raise FlagScaleError(
            f"{backend.layer} is a symlink; a base layer must be a folder of the workspace",
            hint="replace it with a folder holding the files (e.g. `cp -rL` it into place)",
        )
    entries = scan_layer(root, backend.layer)
    deletions = read_deletions(workspace.path(backend.deletions), backend.deletions)
    _refuse_deleted_entries(backend, entries, set(deletions))
    return Layer(backend, root, entries, deletions, dict(sources or {}))


def _refuse_deleted_entries(backend: Backend, entries: dict, deleted: set[str]) -> None:
    """A file of the layer must not also be deleted by it (itself or a folder above it)."""
    if not deleted:
        return
    for path in sorted(entries):
        listed = path
        while listed and listed not in deleted:
            listed = os.path.dirname(listed)
        if listed:
            raise FlagScaleError(
                f"{backend.deletions}: {listed!r} is listed as deleted but {backend.layer}/{path}"
                " exists",
                hint="keep one of them",
            )
