"""Carrying one patch from the tree it was made against to a new tree, file by file.

A vendor patch ``p`` was made against an old tree O (pin + base layer at its FlagScale base).
The vendor's tree is V = O + p. The refresh wants p' with N + p' = V', where N is the new tree
(new pin + carried base layer) and V' is V's changes merged onto N. Each file p touches is
classified:

* ``unchanged`` — the file is the same in O and N: its part of the patch stays byte-identical.
* ``moved`` — N changed the file, but ``git apply`` still places every hunk (with offsets).
* ``merged`` — the hunks no longer apply, but a three-way merge (``git merge-file``) is clean.
* ``already_upstream`` — N already holds the vendor's version: the change is dropped.
* ``target_gone`` — N lost the file: followed to its new name when git detects a rename,
  otherwise it needs a hand (keep the vendor's file, or drop the change).
* ``conflict`` — both changed the same lines (or a binary file, or one deleted what the other
  changed): it needs a hand.

Hunks of files N changed are classified too (in place, moved by n lines, already upstream,
merged, conflict), and each conflicting hunk names the upstream change it collided with
(``flagscale.refresh.collisions``). A patch none of whose files N changed is kept byte for byte
at the cost of one ``git apply --check`` against the files it touches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flagscale.overlay.layered_trees import TreeEntry, diff_trees
from flagscale.refresh.collisions import Origin, collided, gone
from flagscale.refresh.merge3 import Labels, merge_bytes
from flagscale.refresh.objects import Objects, Tree, is_binary, sparse
from flagscale.refresh.patchfile import FileSection, parse_patch

__all__ = [
    "ALREADY_UPSTREAM",
    "CLASSES",
    "CONFLICT",
    "MERGED",
    "MOVED",
    "TARGET_GONE",
    "UNCHANGED",
    "CarryResult",
    "Conflict",
    "FileOutcome",
    "HunkOutcome",
    "Step",
    "carry_patch",
    "merge_entries",
]

UNCHANGED, MOVED, MERGED = "unchanged", "moved", "merged"
ALREADY_UPSTREAM, TARGET_GONE, CONFLICT = "already_upstream", "target_gone", "conflict"
CLASSES = (UNCHANGED, MOVED, MERGED, ALREADY_UPSTREAM, TARGET_GONE, CONFLICT)
SYMLINK = "120000"
_OFFSET = re.compile(r"Hunk #\d+ succeeded at \d+ \(offset (-?\d+) lines?\)")


@dataclass(frozen=True)
class Step:
    """One move: from the old tree to the new one, with the words for markers and reports."""

    old: str
    new: str
    labels: Labels
    origin: Origin


@dataclass
class HunkOutcome:
    """How one hunk fared on the new tree."""

    header: str
    cls: str
    offset: int = 0
    upstream: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "class": self.cls,
            "offset": self.offset,
            "upstream": list(self.upstream),
        }


@dataclass
class FileOutcome:
    """How one file fared: its class, whether it is settled, and why."""

    path: str
    cls: str
    resolved: bool = True
    new_path: str | None = None
    detail: str = ""
    hunks: list[HunkOutcome] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "class": self.cls,
            "resolved": self.resolved,
            "new_path": self.new_path,
            "detail": self.detail,
            "hunks": [h.to_json() for h in self.hunks],
            "upstream": list(self.upstream),
        }


@dataclass(frozen=True)
class Conflict:
    """An unsettled path, as git records a conflict: base (1), new tree (2), carried side (3),
    and what the work tree shows (a text with markers, or one side)."""

    path: str
    base: TreeEntry | None
    ours: TreeEntry | None
    theirs: TreeEntry | None
    worktree: TreeEntry | None
    text: bool


@dataclass
class CarryResult:
    """The outcome of carrying a patch: ``status`` is ``unchanged`` (keep the stored bytes),
    ``carried`` (``patch`` is the new patch), ``conflict`` (``tree`` holds the work-tree
    versions for a checkout) or ``broken`` (the patch does not apply to its own old tree)."""

    status: str
    files: list[FileOutcome]
    tree: str | None = None
    patch: bytes | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    reason: str = ""


def _same(a: TreeEntry | None, b: TreeEntry | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.mode == b.mode and a.oid == b.oid


def carry_patch(objects: Objects, step: Step, patch: bytes, source: str) -> CarryResult:
    """Carry ``patch`` (made against ``step.old``) to ``step.new``; see the module doc."""
    sections = parse_patch(patch, source)
    touched = list(dict.fromkeys(p for s in sections for p in s.paths))
    if not objects.changed_paths(step.old, step.new).intersection(touched):
        checked = objects.check_on(patch, step.old)  # kept as is, if it applies
        if checked.entries is None:
            return CarryResult("broken", [], reason=_first_errors(checked.stderr))
        return CarryResult("unchanged", [FileOutcome(p, UNCHANGED) for p in touched])
    old = objects.entries(step.old)
    applied = objects.apply(patch, sparse(old, touched))
    if applied.entries is None:
        return CarryResult("broken", [], reason=_first_errors(applied.stderr))
    return _Carrier(objects, step, old, applied.entries).run(sections, touched)


class _Carrier:
    """The per-file work of one carry (only when the new tree changed a touched file)."""

    def __init__(self, objects: Objects, step: Step, old: Tree, vendor: Tree) -> None:
        self.objects = objects
        self.step = step
        self.old = old
        self.new = objects.entries(step.new)
        self.vendor = vendor
        self.result = dict(self.new)
        self.conflicts: list[Conflict] = []
        self.worktree: dict[str, TreeEntry | None] = {}
        self._renames: dict[str, str] | None = None
        self._touched: set[str] = set()

    def run(self, sections: list[FileSection], touched: list[str]) -> CarryResult:
        self._touched = set(touched)
        by_path = {s.path: s for s in sections if s.old_path == s.new_path}
        files = [self._carry(path, by_path.get(path)) for path in touched]
        if self.conflicts:
            merged = dict(self.result)
            for path, entry in self.worktree.items():
                if entry is None:
                    merged.pop(path, None)
                else:
                    merged[path] = entry
            tree = self.objects.tree(merged.values())
            return CarryResult("conflict", files, tree=tree, conflicts=self.conflicts)
        tree = self.objects.tree(self.result.values())
        patch = diff_trees(self.objects.repo, self.step.new, tree)
        return CarryResult("carried", files, tree=tree, patch=patch)

    # --- one path ---------------------------------------------------------------------------

    def _carry(self, path: str, section: FileSection | None) -> FileOutcome:
        old, vendor, new = self.old.get(path), self.vendor.get(path), self.new.get(path)
        if _same(old, new):
            self._set(path, vendor)
            return FileOutcome(path, UNCHANGED)
        if _same(vendor, new):
            detail = "deleted in the new tree too" if new is None else "the new tree has it"
            return FileOutcome(path, ALREADY_UPSTREAM, detail=detail + ": dropped from the set")
        if old is None:
            return self._conflict(
                path, None, new, vendor, "added by the set and, differently, by the new tree"
            )
        if new is None:
            return self._gone(path, old, vendor)
        if vendor is None:
            return self._conflict(
                path, old, new, None, "the set deletes it, the new tree changed it"
            )
        return self._modified(path, old, new, vendor, section)

    def _modified(
        self,
        path: str,
        old: TreeEntry,
        new: TreeEntry,
        vendor: TreeEntry,
        section: FileSection | None,
        target: str | None = None,
    ) -> FileOutcome:
        place = target or path
        merged = merge_entries(self.objects, new, old, vendor, self.step.labels, place)
        hunks = self._hunks(section, place, old, new) if section and merged.text else []
        if merged.entry is None:
            outcome = self._conflict(
                place, old, new, vendor, merged.reason, worktree=merged.worktree, text=merged.text
            )
            outcome.path, outcome.hunks = path, hunks
            outcome.new_path = target
            if target:
                outcome.detail = f"renamed to {target} in the new tree; {merged.reason}"
            outcome.upstream = [u for h in hunks for u in h.upstream] or self._whole_file(
                path, old, new
            )
            return outcome
        self._set(place, merged.entry)
        if target:
            return FileOutcome(
                path,
                TARGET_GONE,
                new_path=target,
                detail=f"renamed to {target} in the new tree: the change follows it",
                hunks=hunks,
                upstream=gone(self.step.origin, path),
            )
        cls = MOVED if section and self._applies_as_is(section, path, new, merged.entry) else MERGED
        return FileOutcome(path, cls, hunks=hunks, detail=merged.reason)

    def _gone(self, path: str, old: TreeEntry, vendor: TreeEntry | None) -> FileOutcome:
        target = self._rename_of(path)
        if target is not None and vendor is not None:  # hunks name the old path: merge only
            return self._modified(path, old, self.new[target], vendor, None, target=target)
        outcome = self._conflict(
            path,
            old,
            None,
            vendor,
            "deleted in the new tree: keep the set's version (`git add`) or drop the change"
            " (`git rm`)",
        )
        outcome.cls = TARGET_GONE
        outcome.upstream = gone(self.step.origin, path)
        return outcome

    def _conflict(
        self,
        path: str,
        old: TreeEntry | None,
        new: TreeEntry | None,
        vendor: TreeEntry | None,
        reason: str,
        *,
        worktree: TreeEntry | None = None,
        text: bool = False,
    ) -> FileOutcome:
        if worktree is None and not text:
            if (
                old is None
                and new is not None
                and vendor is not None
                and _texts(self.objects, new, vendor)
            ):
                empty = self.objects.write(b"")
                base = TreeEntry(new.mode, empty, path)
                merged = merge_entries(self.objects, new, base, vendor, self.step.labels, path)
                worktree, text = merged.worktree, merged.text
            else:
                worktree = new if new is not None else vendor
        self.conflicts.append(Conflict(path, old, new, vendor, worktree, text))
        self.worktree[path] = worktree
        upstream = self._whole_file(path, old, new) if old is not None or new is not None else []
        return FileOutcome(path, CONFLICT, resolved=False, detail=reason, upstream=upstream)

    def _whole_file(self, path: str, old: TreeEntry | None, new: TreeEntry | None) -> list[str]:
        if new is None:
            return gone(self.step.origin, path)
        if old is None:
            return [f"{path} was added in {self.step.origin.label}"]
        return [f"{path} changed in {self.step.origin.label}"]

    # --- helpers ----------------------------------------------------------------------------

    def _set(self, path: str, entry: TreeEntry | None) -> None:
        if entry is None:
            self.result.pop(path, None)
        else:
            self.result[path] = TreeEntry(entry.mode, entry.oid, path)

    def _rename_of(self, path: str) -> str | None:
        if self._renames is None:
            gone_paths = [p for p in self._touched if p in self.old and p not in self.new]
            self._renames = self.objects.renames(self.step.old, self.step.new, gone_paths)
        target = self._renames.get(path)
        return target if target and target not in self._touched else None

    def _applies_as_is(
        self, section: FileSection, path: str, new: TreeEntry, merged: TreeEntry
    ) -> bool:
        applied = self.objects.apply(section.text, {path: new})
        if applied.entries is None:
            return False
        entry = applied.entries.get(path)
        return entry is not None and entry.oid == merged.oid and entry.mode == merged.mode

    def _hunks(
        self, section: FileSection, path: str, old: TreeEntry, new: TreeEntry
    ) -> list[HunkOutcome]:
        outcomes = []
        for index, hunk in enumerate(section.hunks):
            single = section.hunk_patch(index)
            forward = self.objects.apply(single, {section.path: _at(new, section.path)})
            if forward.entries is not None:
                offset = _offset(forward.stderr)
                outcomes.append(HunkOutcome(hunk.header, MOVED if offset else UNCHANGED, offset))
                continue
            if self.objects.apply(single, {section.path: _at(new, section.path)}, reverse=True).ok:
                outcomes.append(HunkOutcome(hunk.header, ALREADY_UPSTREAM))
                continue
            alone = self.objects.apply(single, {section.path: old})
            vendor = alone.entries.get(section.path) if alone.entries else None
            merged = (
                merge_entries(self.objects, new, old, vendor, self.step.labels, path)
                if vendor is not None
                else None
            )
            if merged is not None and merged.entry is not None:
                outcomes.append(HunkOutcome(hunk.header, MERGED))
                continue
            first, last = hunk.old_range
            upstream = collided(self.objects, self.step.origin, section.path, old, new, first, last)
            outcomes.append(HunkOutcome(hunk.header, CONFLICT, upstream=upstream))
        return outcomes


@dataclass(frozen=True)
class MergedEntry:
    """A three-way merge of one file: the clean result, or the work-tree version of a conflict."""

    entry: TreeEntry | None
    worktree: TreeEntry | None
    text: bool
    reason: str = ""


def merge_entries(
    objects: Objects,
    ours: TreeEntry,
    base: TreeEntry,
    theirs: TreeEntry,
    labels: Labels,
    path: str,
) -> MergedEntry:
    """Merge mode and content of one file three ways (``ours`` is the new tree's side)."""
    mode = _merge_mode(ours.mode, base.mode, theirs.mode)
    reason = "" if mode is not None else "mode changed on both sides"
    mode = mode or theirs.mode
    if base.oid == ours.oid or ours.oid == theirs.oid:
        oid = theirs.oid
    elif base.oid == theirs.oid:
        oid = ours.oid
    else:
        oid = None
    if oid is not None:
        entry = TreeEntry(mode, oid, path)
        if reason:
            return MergedEntry(None, entry, False, reason)
        return MergedEntry(entry, entry, False)
    if SYMLINK in (ours.mode, base.mode, theirs.mode) or not _texts(objects, ours, base, theirs):
        kind = "symlink" if SYMLINK in (ours.mode, theirs.mode) else "binary file"
        return MergedEntry(None, ours, False, f"{kind} changed on both sides")
    data = objects.read_many([ours.oid, base.oid, theirs.oid])
    result = merge_bytes(data[ours.oid], data[base.oid], data[theirs.oid], labels)
    written = TreeEntry(mode, objects.write(result.data), path)
    if result.conflicts or reason:
        why = reason or f"{result.conflicts} conflicting region(s)"
        return MergedEntry(None, written, True, why)
    return MergedEntry(written, written, True)


def _merge_mode(ours: str, base: str, theirs: str) -> str | None:
    if base == ours:
        return theirs
    if base == theirs or ours == theirs:
        return ours
    return None


def _texts(objects: Objects, *entries: TreeEntry) -> bool:
    data = objects.read_many([e.oid for e in entries])
    return not any(is_binary(data[e.oid]) for e in entries)


def _at(entry: TreeEntry, path: str) -> TreeEntry:
    return TreeEntry(entry.mode, entry.oid, path)


def _offset(report: str) -> int:
    found = _OFFSET.search(report)
    return int(found.group(1)) if found else 0


def _first_errors(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    return "; ".join((errors or lines)[:2]) or "git apply failed"
