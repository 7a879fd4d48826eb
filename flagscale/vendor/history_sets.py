"""Which commits hold a device type's patch sets: the git questions behind recording and checking.

Sets are compared by content: the git tree ids of ``hardware/<V_M>/<backend>/`` at two commits.
Squash merges and rebases change a commit's id but not those trees (docs/history.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git, git_ok, git_text
from flagscale.upstream.workspace import FLAGSCALE, Workspace
from flagscale.vendor.patchset import set_folder

__all__ = [
    "ancestry_order",
    "check_backend_names",
    "content_match",
    "full_commit",
    "is_ancestor",
    "same_sets",
    "set_changes",
    "set_trees",
]

_HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")


def full_commit(ws: Workspace, text: str) -> str | None:
    return commit_id(ws.root, text) if _HEX.match(text) else None


def is_ancestor(ws: Workspace, older: str, newer: str) -> bool:
    return git_ok(["merge-base", "--is-ancestor", older, newer], ws.root)


def set_trees(ws: Workspace, commits: list[str], device: str, backends: Iterable[str]) -> dict:
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


def set_changes(ws: Workspace, device: str, backends: Iterable[str]) -> list[str]:
    """First-parent commits of HEAD that changed the sets, newest first."""
    paths = [set_folder(device, name) for name in backends]
    listing = git_text(
        ["log", "--first-parent", "--format=%H", "HEAD", "--", *paths], ws.root, check=False
    )
    return listing.split()


def same_sets(ws: Workspace, a: str, b: str, device: str, backends: list[str]) -> bool:
    if not (full_commit(ws, a) and full_commit(ws, b)):
        return False
    trees = set_trees(ws, [a, b], device, backends)
    return trees[a] is not None and trees[a] == trees[b]


def content_match(ws: Workspace, commit: str, device: str, backends: list[str]) -> str | None:
    """The oldest first-parent commit of HEAD whose sets have the same trees as at ``commit``."""
    wanted = set_trees(ws, [commit], device, backends).get(commit)
    if wanted is None:
        return None
    candidates = set_changes(ws, device, backends)
    trees = set_trees(ws, candidates, device, backends)
    matches = [c for c in candidates if trees.get(c) == wanted]
    return matches[-1] if matches else None


def check_backend_names(ws: Workspace, backends: Iterable[str]) -> None:
    for name in backends:
        if name != FLAGSCALE and name not in ws.backends:
            known = ", ".join([FLAGSCALE, *sorted(ws.backends)])
            raise FlagScaleError(f"unknown backend {name!r}", hint=f"known backends: {known}")


def ancestry_order(ws: Workspace, commits: list[str]) -> list[str]:
    """``commits`` oldest first by ancestry (topological; unrelated ones in a stable order)."""
    unique = list(dict.fromkeys(commits))
    if len(unique) < 2 or any(full_commit(ws, oid) != oid for oid in unique):
        return unique  # a commit this repository lacks: keep the order (check-history says so)
    listing = git_text(["rev-list", "--topo-order", "--reverse", *unique], ws.root).split()
    position = {oid: index for index, oid in enumerate(listing)}
    return sorted(unique, key=lambda oid: position.get(oid, -1))
