"""The base layer on disk: whole files under ``backends/<backend>/`` and its deletion list.

Reading walks the folder without following symlinks and checks every name; writing replaces one
file at a time by writing beside it and renaming into place, and prunes folders left empty.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.paths import UnsafePathError, check_relative, link_problem

__all__ = [
    "LayerEntry",
    "blob_oid",
    "check_link_target",
    "deletions_text",
    "file_oid",
    "is_leftover",
    "link_oid",
    "prune_empty_parents",
    "read_deletions",
    "remove_path",
    "scan_layer",
    "write_deletions",
    "write_file",
    "write_link",
]

_TEMP_MARK = ".flagscale-tmp-"


@dataclass(frozen=True)
class LayerEntry:
    """One whole file of the layer: ``kind`` is 'file', 'exec' or 'link'; ``stat`` for caching."""

    path: str
    kind: str
    target: str | None
    stat: tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def is_leftover(name: str) -> bool:
    """True for the temporary sibling of a file being written (``.<name>.flagscale-tmp-<pid>``)."""
    return name.startswith(".") and _TEMP_MARK in name


def blob_oid(data: bytes) -> str:
    """The git blob id of ``data`` (raw bytes, no filters)."""
    digest = hashlib.sha1(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()


def file_oid(path: Path) -> str:
    """The git blob id of a file's bytes."""
    return blob_oid(path.read_bytes())


def link_oid(target: str) -> str:
    """The git blob id git stores for a symlink pointing at ``target``."""
    return blob_oid(os.fsencode(target))


def scan_layer(root: Path, where: str) -> dict[str, LayerEntry]:
    """Every file and symlink under ``root`` (``where`` names it in errors), by relative path."""
    entries: dict[str, LayerEntry] = {}
    if not root.is_dir():
        return entries
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(root / prefix if prefix else root) as listing:
            for item in listing:
                relative = f"{prefix}{item.name}"
                if is_leftover(item.name):  # from a run killed mid-write (callers hold the lock)
                    os.unlink(item.path)
                    continue
                if item.is_dir(follow_symlinks=False):
                    pending.append(relative + "/")
                    continue
                entries[relative] = _layer_entry(item, relative, where)
    return entries


def _layer_entry(item: os.DirEntry[str], relative: str, where: str) -> LayerEntry:
    check_relative(relative, where)
    info = item.stat(follow_symlinks=False)
    key = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(item.path)
        check_link_target(relative, target, f"{where}/{relative}")
        return LayerEntry(relative, "link", target, key)
    if not stat.S_ISREG(info.st_mode):
        raise FlagScaleError(
            f"{where}/{relative}: not a regular file or symlink", hint="remove it from the layer"
        )
    kind = "exec" if info.st_mode & stat.S_IXUSR else "file"
    return LayerEntry(relative, kind, None, key)


def check_link_target(relative: str, target: str, where: str) -> str:
    """Refuse a symlink at ``relative`` whose ``target`` leads outside its tree on its own
    (``flagscale.core.paths.link_problem``; the tree as laid is checked by ``laid_links``)."""
    problem = link_problem(relative, target)
    if problem:
        raise UnsafePathError(f"{where}: symlink target {target!r} {problem}")
    return target


def read_deletions(path: Path, where: str) -> list[str]:
    """The ``deleted`` list of a ``<backend>.layer.yaml`` file, each path checked; [] if absent."""
    if not path.is_file():
        return []
    from flagscale.core.schema import load_document

    data = load_document(path, "base-layer", display=where)
    return [check_relative(str(item), where) for item in data["deleted"]]


def deletions_text(paths: list[str]) -> str:
    """The deletion list file's text: stable, sorted, one path a line."""
    import yaml

    body = yaml.safe_dump(
        {"version": 1, "deleted": sorted(paths)},
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 16,
    )
    return body


def write_deletions(path: Path, paths: list[str], where: str) -> bool:
    """Write the deletion list (removed when empty); return whether the file changed."""
    for item in paths:
        check_relative(item, where)
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise FlagScaleError(f"{where}: path {item!r} is not valid UTF-8") from None
    if not paths:
        if path.is_file():
            path.unlink()
            return True
        return False
    text = deletions_text(paths).encode("utf-8")
    if path.is_file() and path.read_bytes() == text:
        return False
    write_file(path, text, executable=False)
    return True


def write_file(path: Path, data: bytes, *, executable: bool) -> None:
    """Write ``data`` beside ``path`` and rename it into place (replacing a file or symlink).

    The new file gets 0777 or 0666 less the umask, as git gives the files it checks out.
    """
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}")
    temp.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temp, flags, 0o777 if executable else 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_link(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target``, renaming a fresh link into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}")
    temp.unlink(missing_ok=True)
    os.symlink(target, temp)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def remove_path(root: Path, relative: str) -> bool:
    """Remove a file or symlink at ``root/relative`` and prune parents left empty.

    A real folder is left alone (its files are separate entries). Returns whether it removed.
    """
    path = root / relative
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink()):
        return False
    path.unlink()
    prune_empty_parents(root, relative)
    return True


def prune_empty_parents(root: Path, relative: str) -> None:
    """Remove the now-empty folders above ``relative``, stopping at ``root``."""
    parent = posixpath.dirname(relative)
    while parent:
        try:
            (root / parent).rmdir()
        except OSError:
            return
        parent = posixpath.dirname(parent)
