"""Reading a source release archive (.tar.gz, .tgz, .zip) into checked git tree entries.

Only an entry's path, type (file, executable, symlink) and content are kept; mtimes, owners,
permission bits other than the owner's execute bit and member order are ignored, so two archives
holding the same files give the same entries. Anything that is not a plain source tree is refused.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.paths import check_relative, link_problem
from flagscale.upstream.workspace import DECLARATION

__all__ = ["Entry", "read_archive"]

_MODES = {"file": "100644", "exec": "100755", "link": "120000"}
_TAR_KINDS = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


@dataclass(frozen=True)
class Entry:
    """One tree entry of an imported release: a file, an executable or a symlink."""

    path: str  # relative POSIX path, strip_prefix removed
    mode: str  # git mode: 100644, 100755 or 120000
    data: bytes  # the content, or a symlink's target


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # dir, file, exec or link
    data: bytes


def read_archive(archive: Path, strip_prefix: str | None = None) -> list[Entry]:
    """The archive's files, executables and symlinks, checked and sorted by path.

    Refused: absolute paths, ``..``, hardlinks, devices, FIFOs, symlinks leading outside the tree,
    entries outside ``strip_prefix``, a path given twice or as both a file and a folder.
    """
    members = _zip_members(archive) if archive.name.endswith(".zip") else _tar_members(archive)
    entries: dict[str, Entry] = {}
    for member in members:
        entry = _entry_for(member, strip_prefix, archive.name)
        if entry is None:
            continue
        if entry.path in entries:
            raise _refuse(archive.name, member.name, "appears twice")
        entries[entry.path] = entry
    _check_tree(entries, archive.name)
    if not entries:
        raise FlagScaleError(f"{archive.name}: holds no files to import")
    return [entries[path] for path in sorted(entries, key=_path_bytes)]


def _tar_members(archive: Path) -> Iterator[_Member]:
    try:
        with tarfile.open(archive, "r:*", encoding="utf-8", errors="surrogateescape") as tar:
            for info in tar:
                yield _tar_member(tar, info, archive.name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise FlagScaleError(
            f"{archive.name}: not a readable .tar.gz archive: {exc}",
            hint="delete it from the cache and download it again",
        ) from exc


def _tar_member(tar: tarfile.TarFile, info: tarfile.TarInfo, where: str) -> _Member:
    if info.isdir():
        return _Member(info.name, "dir", b"")
    if info.issym():
        return _Member(info.name, "link", os.fsencode(info.linkname))
    if info.islnk():
        raise _refuse(where, info.name, f"is a hardlink to {info.linkname!r}; not imported")
    if info.isfile():
        stream = tar.extractfile(info)
        data = stream.read() if stream else b""
        return _Member(info.name, "exec" if info.mode & 0o100 else "file", data)
    kind = _TAR_KINDS.get(info.type, f"special entry of type {info.type!r}")
    raise _refuse(where, info.name, f"is a {kind}; not imported")


def _zip_members(archive: Path) -> Iterator[_Member]:
    try:
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                yield _zip_member(bundle, info, archive.name)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, OSError) as exc:
        raise FlagScaleError(
            f"{archive.name}: not a readable .zip archive: {exc}",
            hint="delete it from the cache and download it again",
        ) from exc


def _zip_member(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> _Member:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3: made on Unix
    if info.is_dir() or stat.S_ISDIR(mode):
        return _Member(info.filename, "dir", b"")
    if stat.S_ISLNK(mode):
        return _Member(info.filename, "link", bundle.read(info))
    if mode and not stat.S_ISREG(mode):
        raise _refuse(where, info.filename, "is a device, FIFO or socket; not imported")
    return _Member(info.filename, "exec" if mode & 0o100 else "file", bundle.read(info))


def _entry_for(member: _Member, strip_prefix: str | None, where: str) -> Entry | None:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if member.kind == "dir" else name
    if member.kind == "dir" and name in ("", "."):
        return None
    _check_member_path(name, member.name, where)
    path = _strip(name, strip_prefix, where)
    if path is None and member.kind != "dir":
        raise _refuse(where, member.name, f"is a file named like strip_prefix {strip_prefix!r}")
    if path is None or member.kind == "dir":
        return None
    return Entry(path=path, mode=_MODES[member.kind], data=member.data)


def _check_member_path(name: str, original: str, where: str) -> None:
    try:
        check_relative(name, where)
    except FlagScaleError as exc:
        reason = str(exc).rsplit(": ", 1)[-1]
        raise _refuse(where, original, f"is unsafe: {reason}") from None


def _strip(name: str, prefix: str | None, where: str) -> str | None:
    if not prefix:
        return name
    if name == prefix:
        return None
    if name.startswith(prefix + "/"):
        return name[len(prefix) + 1 :]
    raise FlagScaleError(
        f"{where}: entry {name!r} is not under strip_prefix {prefix!r}",
        hint=f"set strip_prefix in {DECLARATION} to the archive's top folder, or remove it",
    )


def _check_tree(entries: dict[str, Entry], where: str) -> None:
    links = {
        path: e.data.decode("utf-8", "surrogateescape")
        for path, e in entries.items()
        if e.mode == "120000"
    }
    for path in entries:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in entries:
                raise _refuse(where, path, f"needs folder {folder!r}, which is a file or symlink")
    for path, target in links.items():
        problem = link_problem(path, target, links)
        if problem:
            raise _refuse(where, path, f"is a symlink to {target!r} that {problem}")


def _refuse(where: str, name: str, reason: str) -> FlagScaleError:
    return FlagScaleError(
        f"{where}: entry {name!r} {reason}",
        hint="the archive is not a plain source release; refusing to import it",
    )


def _path_bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")
