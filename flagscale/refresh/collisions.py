"""Which upstream change a carried hunk collided with, in words a person can act on.

Between the old and the new tree of a refresh step, a file changed; a vendor hunk (or a base
layer file) no longer fits. This names the lines that changed there and where the change came
from: for a git upstream (a submodule, or FlagScale's own files), the commits between the two
commits that touched those lines (``git log -L``); for a published release, the version step;
for files FlagScale's base layer lays, the layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.core.gitcli import git, git_ok
from flagscale.overlay.layered_trees import TreeEntry, scratch_git
from flagscale.refresh.objects import Objects

__all__ = ["Origin", "changed_ranges", "collided", "gone"]

_RANGE = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)
_MAX_COMMITS = 5


@dataclass(frozen=True)
class Origin:
    """Where the differences between an old and a new tree come from.

    ``label`` is the step in words (``megatron-core 0.16.1 -> 0.15.3``); ``repo`` with ``old``
    and ``new`` is a git history that explains it commit by commit (None for release imports,
    whose commits have no history between them); paths in ``layered`` are laid by FlagScale's
    base layer at either end.
    """

    label: str
    repo: Path | None = None
    old: str | None = None
    new: str | None = None
    layered: frozenset[str] = field(default_factory=frozenset)
    layer_label: str = "FlagScale's base layer"


def collided(
    objects: Objects,
    origin: Origin,
    path: str,
    old: TreeEntry | None,
    new: TreeEntry | None,
    first: int,
    last: int,
) -> list[str]:
    """The changes between ``old`` and ``new`` of ``path`` that touch old lines first..last."""
    if old is None or new is None:
        return gone(origin, path) if new is None else [f"{path} was added in {origin.label}"]
    ranges = [
        (a, b, c, d)
        for a, b, c, d in changed_ranges(objects, old.oid, new.oid)
        if a <= last + 1 and a + max(b, 1) - 1 >= first - 1
    ]
    if not ranges:
        return [f"{path} changed elsewhere in {origin.label} (the context of the hunk moved)"]
    found = []
    for a, b, c, d in ranges:
        lines = _lines(a, b) if b else f"after line {a}"
        now = "removed there" if d == 0 else f"now {_lines(c, d)}"
        where = origin.layer_label if path in origin.layered else origin.label
        found.append(f"{path} {lines} changed in {where} ({now})")
        if path not in origin.layered and d > 0:
            found += _commits(origin, path, c, c + d - 1)
    return found


def gone(origin: Origin, path: str) -> list[str]:
    """Why ``path`` is missing from the new tree: the step, and the commits that removed it."""
    found = [f"{path} was deleted or renamed in {origin.label}"]
    if origin.repo is not None and origin.old and origin.new:
        listing = git(
            ["log", "--no-renames", "--format=%h %s", f"{origin.old}..{origin.new}", "--", path],
            origin.repo,
            check=False,
        ).decode("utf-8", "replace")
        found += [f"commit {line}" for line in listing.splitlines()[:_MAX_COMMITS]]
    return found


def _lines(start: int, count: int) -> str:
    if count <= 1:
        return f"line {start}"
    return f"lines {start}-{start + count - 1}"


def changed_ranges(objects: Objects, old: str, new: str) -> list[tuple[int, int, int, int]]:
    """(old start, old count, new start, new count) of each change, ``git diff -U0``."""
    raw = scratch_git(
        objects.ws,
        ["diff", "-U0", "--no-color", "--no-ext-diff", "--diff-algorithm=myers", old, new],
    )
    ranges = []
    for match in _RANGE.finditer(raw):
        a, b, c, d = match.groups()
        ranges.append((int(a), 1 if b is None else int(b), int(c), 1 if d is None else int(d)))
    return ranges


def _commits(origin: Origin, path: str, first: int, last: int) -> list[str]:
    """Commits of ``origin.old..origin.new`` that touched new lines first..last of ``path``."""
    if origin.repo is None or not origin.old or not origin.new:
        return []
    if not git_ok(["merge-base", "--is-ancestor", origin.old, origin.new], origin.repo):
        return []
    listing = git(
        [
            "log",
            "--no-patch",
            "--format=%h %s",
            f"-L{first},{last}:{path}",
            f"{origin.old}..{origin.new}",
        ],
        origin.repo,
        check=False,
    ).decode("utf-8", "replace")
    commits = [line for line in listing.splitlines() if line.strip()]
    return [f"commit {line}" for line in commits[:_MAX_COMMITS]]
