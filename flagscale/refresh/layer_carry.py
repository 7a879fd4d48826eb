"""Carrying FlagScale's base layer (``backends/<backend>/``) from the old pin to the new one.

Each whole file of the layer is merged three ways: the old pin's file (base), the new pin's
file (ours) and the layer's file (theirs), with ``git merge-file``:

* ``unchanged`` — the pin did not change the file: the layer keeps it as it is;
* ``merged`` — both changed it, on different lines: the layer gets the merged file;
* ``already_upstream`` — the new pin holds the layer's file: it leaves the layer (a note);
* ``target_gone`` — the new pin lost the file: followed to its new name when git detects a
  rename, otherwise a conflict (keep the layer's file, or drop it);
* ``conflict`` — the same lines changed on both sides, a binary file changed on both, or a file
  the layer adds that the new pin now adds too (never an overwrite).

Deletions (``backends/<backend>.layer.yaml``) whose file is gone from the new pin are dropped
with a note; the others stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flagscale.core.gitcli import git, git_ok
from flagscale.core.paths import check_relative
from flagscale.core.schema import parse_document, validate
from flagscale.overlay.layered_trees import TreeEntry, tree_entries
from flagscale.refresh.carry import (
    ALREADY_UPSTREAM,
    CONFLICT,
    MERGED,
    TARGET_GONE,
    UNCHANGED,
    Conflict,
    FileOutcome,
    Step,
    merge_entries,
)
from flagscale.refresh.collisions import changed_ranges, collided, gone
from flagscale.refresh.objects import Objects, Tree
from flagscale.upstream.workspace import Backend, Workspace

__all__ = ["LayerResult", "carry_layer", "layer_at", "layer_from_tree", "overlay"]


@dataclass
class LayerResult:
    """The carried layer: its files (paths inside ``backends/<b>/``) and deletions, what became
    of each, and the new pin with the layer laid (work-tree versions where it conflicts)."""

    status: str  # unchanged | carried | conflict
    files: list[FileOutcome]
    layer: Tree
    deletions: list[str]
    tree: str
    conflicts: list[Conflict] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The result as the refresh state keeps it between stages."""
        return {
            "status": self.status,
            "files": [f.to_json() for f in self.files],
            "layer": {p: [e.mode, e.oid] for p, e in sorted(self.layer.items())},
            "deletions": list(self.deletions),
            "tree": self.tree,
            "conflicts": [
                {
                    "path": c.path,
                    "worktree": [c.worktree.mode, c.worktree.oid] if c.worktree else None,
                }
                for c in self.conflicts
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerResult:
        """A result kept by ``to_json`` (its outcomes are not kept: the report has them)."""
        layer = {p: TreeEntry(m, o, p) for p, (m, o) in data["layer"].items()}
        conflicts = [
            Conflict(
                c["path"],
                None,
                None,
                None,
                TreeEntry(c["worktree"][0], c["worktree"][1], c["path"]) if c["worktree"] else None,
                False,
            )
            for c in data.get("conflicts", [])
        ]
        return cls(data["status"], [], layer, list(data["deletions"]), data["tree"], conflicts)


def layer_at(
    ws: Workspace, backend: Backend, commit: str, objects: Objects
) -> tuple[Tree, list[str]]:
    """The base layer committed at ``commit``: its files and its deletion list."""
    files = {e.path: e for e in tree_entries(objects.repo, commit, backend.layer)}
    for path in files:
        check_relative(path, f"{backend.layer} at {commit}")
    spec = f"{commit}:{backend.deletions}"
    if not git_ok(["cat-file", "-e", spec], ws.root):
        return files, []
    source = f"{backend.deletions} at {commit}"
    text = git(["cat-file", "blob", spec], ws.root).decode("utf-8", "replace")
    data = validate(parse_document(text, source), "base-layer", source)
    return files, [check_relative(str(p), source) for p in data["deleted"]]


def carry_layer(objects: Objects, step: Step, layer: Tree, deletions: list[str]) -> LayerResult:
    """Carry ``layer`` and ``deletions`` from pin tree ``step.old`` to ``step.new``."""
    old, new = objects.entries(step.old), objects.entries(step.new)
    carrier = _LayerCarrier(objects, step, old, new, layer)
    outcomes = [carrier.carry(path) for path in sorted(layer)]
    kept, notes = _carry_deletions(deletions, new)
    outcomes += notes
    tree = objects.tree(overlay(new, carrier.result, kept, carrier.worktree).values())
    if carrier.conflicts:
        status = "conflict"
    elif all(o.cls == UNCHANGED for o in outcomes):
        status = "unchanged"
    else:
        status = "carried"
    return LayerResult(status, outcomes, carrier.result, kept, tree, carrier.conflicts)


def overlay(
    pin: Tree, layer: Tree, deletions: list[str], extra: dict[str, TreeEntry | None] | None = None
) -> Tree:
    """The pin with the layer laid over it and the deletions (files or folders) cut out."""
    cut = set(deletions)
    files = {
        path: entry
        for path, entry in pin.items()
        if not any(path == d or path.startswith(f"{d}/") for d in cut)
    }
    for path, entry in {**layer, **(extra or {})}.items():
        if entry is None:
            files.pop(path, None)
        else:
            files[path] = TreeEntry(entry.mode, entry.oid, path)
    return files


def layer_from_tree(
    pin: Tree, resolved: Tree, before: LayerResult, conflicted: set[str]
) -> tuple[Tree, list[str]]:
    """The layer a resolved checkout asks for: what was carried, with every path the user
    settled or changed by hand taken from ``resolved`` (a file equal to the pin's leaves the
    layer; a pin file missing from ``resolved`` becomes a deletion)."""
    laid = overlay(
        pin, before.layer, before.deletions, {c.path: c.worktree for c in before.conflicts}
    )
    layer = dict(before.layer)
    deletions = list(before.deletions)
    touched = {p for p in set(laid) | set(resolved) if _differs(laid.get(p), resolved.get(p))}
    for path in sorted(touched | conflicted):
        entry = resolved.get(path)
        layer.pop(path, None)
        if entry is None:
            if path in pin and not _deleted(path, deletions):
                deletions.append(path)
        elif not _same(entry, pin.get(path)):
            layer[path] = entry
    return layer, sorted(dict.fromkeys(deletions))


class _LayerCarrier:
    def __init__(self, objects: Objects, step: Step, old: Tree, new: Tree, layer: Tree) -> None:
        self.objects = objects
        self.step = step
        self.old, self.new, self.layer = old, new, layer
        self.result: Tree = {}
        self.conflicts: list[Conflict] = []
        self.worktree: dict[str, TreeEntry | None] = {}
        self._renames: dict[str, str] | None = None

    def carry(self, path: str) -> FileOutcome:
        mine = self.layer[path]
        old, new = self.old.get(path), self.new.get(path)
        if _same(old, new):
            self.result[path] = mine
            return FileOutcome(path, UNCHANGED)
        if _same(mine, new):
            return FileOutcome(
                path, ALREADY_UPSTREAM, detail="the new pin has FlagScale's file: left the layer"
            )
        if old is None:
            return self._conflict(path, None, new, mine, "added by the layer and by the new pin")
        if new is None:
            return self._gone(path, old, mine)
        return self._merge(path, old, new, mine)

    def _merge(
        self, path: str, old: TreeEntry, new: TreeEntry, mine: TreeEntry, source: str = ""
    ) -> FileOutcome:
        origin = source or path
        merged = merge_entries(self.objects, new, old, mine, self.step.labels, path)
        if merged.entry is None:
            outcome = self._conflict(
                path, old, new, mine, merged.reason, worktree=merged.worktree, text=merged.text
            )
            outcome.path = origin
            outcome.new_path = path if source else None
            if merged.text:
                outcome.upstream = self._collisions(origin, old, new, merged.worktree)
            return outcome
        if _same(merged.entry, new):
            return FileOutcome(
                origin, ALREADY_UPSTREAM, detail="the merge equals the new pin's file"
            )
        self.result[path] = merged.entry
        if source:
            return FileOutcome(
                origin,
                TARGET_GONE,
                new_path=path,
                detail=f"renamed to {path} in the new pin: the layer file follows it",
                upstream=gone(self.step.origin, origin),
            )
        return FileOutcome(origin, MERGED)

    def _gone(self, path: str, old: TreeEntry, mine: TreeEntry) -> FileOutcome:
        if self._renames is None:
            missing = [p for p in self.layer if p in self.old and p not in self.new]
            self._renames = self.objects.renames(self.step.old, self.step.new, missing)
        target = self._renames.get(path)
        if target is not None and target not in self.layer:
            return self._merge(target, old, self.new[target], mine, source=path)
        outcome = self._conflict(
            path,
            old,
            None,
            mine,
            "deleted in the new pin: keep the layer's file (`git add`) or drop it (`git rm`)",
            worktree=mine,
        )
        outcome.cls = TARGET_GONE
        outcome.upstream = gone(self.step.origin, path)
        return outcome

    def _conflict(
        self,
        path: str,
        old: TreeEntry | None,
        new: TreeEntry | None,
        mine: TreeEntry,
        reason: str,
        *,
        worktree: TreeEntry | None = None,
        text: bool = False,
    ) -> FileOutcome:
        if worktree is None:
            if old is None and new is not None:
                empty = TreeEntry(new.mode, self.objects.write(b""), path)
                merged = merge_entries(self.objects, new, empty, mine, self.step.labels, path)
                worktree, text = merged.worktree, merged.text
            else:
                worktree = new or mine
        self.conflicts.append(Conflict(path, old, new, mine, worktree, text))
        self.worktree[path] = worktree
        upstream = [f"{path} was added in {self.step.origin.label}"] if old is None else []
        return FileOutcome(path, CONFLICT, resolved=False, detail=reason, upstream=upstream)

    def _collisions(
        self, path: str, old: TreeEntry, new: TreeEntry, worktree: TreeEntry | None
    ) -> list[str]:
        """The pin's changes that overlap the lines the layer changed."""
        found: list[str] = []
        mine = self.layer[path]
        for start, count, _new_start, _new_count in changed_ranges(self.objects, old.oid, mine.oid):
            first, last = max(start, 1), max(start, 1) + max(count, 1) - 1
            found += collided(self.objects, self.step.origin, path, old, new, first, last)
        return list(dict.fromkeys(found))


def _carry_deletions(deletions: list[str], new: Tree) -> tuple[list[str], list[FileOutcome]]:
    kept, notes = [], []
    for path in deletions:
        if path in new or any(p.startswith(f"{path}/") for p in new):
            kept.append(path)
            notes.append(FileOutcome(path, UNCHANGED, detail="deletion kept"))
        else:
            notes.append(
                FileOutcome(
                    path,
                    TARGET_GONE,
                    detail="gone from the new pin: the deletion is dropped",
                )
            )
    return kept, notes


def _same(a: TreeEntry | None, b: TreeEntry | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.mode == b.mode and a.oid == b.oid


def _differs(a: TreeEntry | None, b: TreeEntry | None) -> bool:
    return not _same(a, b)


def _deleted(path: str, deletions: list[str]) -> bool:
    return any(path == d or path.startswith(f"{d}/") for d in deletions)
