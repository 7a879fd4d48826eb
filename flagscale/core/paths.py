"""Keeping every path inside its tree: patch targets, overlay entries, deletion lists, bundles.

Symlinks follow one rule wherever a tree is made (``inv unpatch``, ``inv build``, a build from a
bundle, ``inv patch --device-type``, a release import): a link is relative and, followed as the
kernel would follow it through the tree as assembled (other links included), stays inside the
tree it is in and out of ``.git``. ``link_problem`` states the rule, ``check_links`` applies it
to every link of a tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from flagscale.core.errors import FlagScaleError

__all__ = [
    "MAX_LINK_HOPS",
    "UnsafePathError",
    "check_links",
    "check_relative",
    "ensure_inside",
    "link_problem",
]

MAX_LINK_HOPS = 40  # the kernel's own limit (ELOOP)


class UnsafePathError(FlagScaleError):
    """A path would escape the tree it belongs to."""


def check_relative(path: str, where: str) -> str:
    """Return ``path`` if it is a plain relative POSIX path inside its tree; raise otherwise.

    Rejected: empty names, absolute paths, ``..`` or ``.`` components, ``.git`` components,
    backslashes, NUL and newlines. ``where`` names the file the path came from.
    """
    reason = _unsafe_reason(path)
    if reason:
        raise UnsafePathError(f"{where}: unsafe path {path!r}: {reason}")
    return path


def _unsafe_reason(path: str) -> str | None:
    if not path:
        return "empty path"
    if "\0" in path or "\n" in path or "\r" in path:
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/") or PurePosixPath(path).is_absolute():
        return "absolute paths are not allowed"
    parts = path.split("/")
    if any(part in ("", ".") for part in parts):
        return "empty or '.' component"
    if ".." in parts:
        return "'..' leads outside the tree"
    if any(part.lower() == ".git" for part in parts):
        return "'.git' is not part of a tree"
    return None


def ensure_inside(root: Path, relative: str, where: str) -> Path:
    """The absolute path of ``relative`` under ``root``, refusing symlinked parents leading out.

    The final component may itself be a symlink (a tree may hold symlinks); only the folders
    on the way must stay inside ``root``.
    """
    check_relative(relative, where)
    real_root = Path(os.path.realpath(root))
    current = real_root
    parts = relative.split("/")
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            resolved = Path(os.path.realpath(current))
            if resolved != real_root and real_root not in resolved.parents:
                raise UnsafePathError(
                    f"{where}: {relative!r} goes through symlink {current} leading outside {root}"
                )
    return Path(root) / relative


def link_problem(
    path: str, target: str, links: Mapping[str, str] | None = None, root: str = ""
) -> str | None:
    """Why the symlink at ``path`` (pointing at ``target``) breaks the rule, or None.

    ``path`` is relative to the top of the assembled tree, ``links`` maps every symlink of that
    tree to its target (links met on the way are followed, as the kernel does), and ``root`` is
    the folder of the tree the link belongs to (``third_party/<b>`` inside a build tree). Going
    above ``root`` at any step counts as leaving, even if a later step would come back.
    """
    if not target or target.startswith("/") or "\0" in target:
        return "must be a relative path"
    links = links or {}
    floor = len(root.split("/")) if root else 0
    resolved = path.split("/")[:-1]
    pending = target.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if len(resolved) <= floor:
                return "leads outside its tree"
            resolved.pop()
            continue
        if part.lower() == ".git":
            return "leads into .git"
        resolved.append(part)
        inner = links.get("/".join(resolved))
        if inner is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            return f"goes through more than {MAX_LINK_HOPS} links (a loop)"
        if not inner or inner.startswith("/"):
            return f"goes through {'/'.join(resolved)!r}, whose target is not a relative path"
        resolved.pop()
        pending = inner.split("/") + pending
    return None


def check_links(
    links: Mapping[str, str],
    where: Callable[[str], str],
    roots: Sequence[str] = ("",),
) -> None:
    """Refuse the first symlink of a tree that breaks the rule (see ``link_problem``).

    ``links`` holds every symlink of the assembled tree (path → target); ``roots`` the folders
    that are trees of their own (a link belongs to the deepest one holding it); ``where(path)``
    names the file and what it came from (a patch set, a base layer) for the error.
    """
    ordered = sorted((r for r in roots if r), key=len, reverse=True)
    for path in sorted(links):
        root = next((r for r in ordered if path.startswith(f"{r}/")), "")
        problem = link_problem(path, links[path], links, root)
        if problem:
            raise UnsafePathError(
                f"{where(path)}: symlink target {links[path]!r} {problem}",
                hint="a symlink must be relative and stay inside the tree it is in;"
                " replace it with the file it should show, or remove it",
            )
