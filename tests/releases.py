"""Making real release archives (.tar.gz and .zip) and release declarations for the tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.upstream.workspace import ReleaseSource


@dataclass(frozen=True)
class Member:
    """One archive member: a file (``data``), a folder, a symlink or hardlink (``link``), ..."""

    name: str
    data: bytes = b""
    kind: str = "file"  # file, dir, symlink, hardlink, chr, fifo
    mode: int = 0o644
    link: str = ""
    mtime: int = 1_700_000_000
    owner: str = field(default="builder")


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def make_tar(path: Path, members: list[Member]) -> Path:
    """Write a .tar.gz holding ``members`` in the given order."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = _TAR_TYPES[member.kind]
            info.mode = member.mode
            info.mtime = member.mtime
            info.uname = info.gname = member.owner
            info.linkname = member.link
            info.size = len(member.data) if member.kind == "file" else 0
            tar.addfile(info, io.BytesIO(member.data) if member.kind == "file" else None)
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="") as stream:
        stream.write(raw.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compressed.getvalue())
    return path


def make_zip(path: Path, members: list[Member]) -> Path:
    """Write a .zip (made "on Unix", so modes and symlinks are recorded) holding ``members``."""
    kinds = {
        "file": stat.S_IFREG,
        "dir": stat.S_IFDIR,
        "symlink": stat.S_IFLNK,
        "fifo": stat.S_IFIFO,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as bundle:
        for member in members:
            info = zipfile.ZipInfo(member.name, date_time=(2020, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (kinds[member.kind] | member.mode) << 16
            payload = member.link.encode() if member.kind == "symlink" else member.data
            bundle.writestr(info, payload)
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_for(
    archive: Path,
    *,
    package: str = "demo-pkg",
    version: str = "1.0",
    strip_prefix: str | None = "demo_pkg-1.0",
    url: str | None = None,
    sha256: str | None = None,
) -> ReleaseSource:
    """A ReleaseSource for ``archive`` read from a file:// url (or ``url``)."""
    return ReleaseSource(
        package=package,
        version=version,
        filename=archive.name,
        sha256=sha256 or sha256_file(archive),
        strip_prefix=strip_prefix,
        url=url or archive.as_uri(),
    )


def release_entry(source: ReleaseSource, pin: str, **extra: object) -> dict:
    """A backends.yaml entry declaring ``source`` pinned at ``pin``."""
    data: dict = {
        "kind": "release",
        "package": source.package,
        "version": source.version,
        "filename": source.filename,
        "sha256": source.sha256,
    }
    if source.strip_prefix:
        data["strip_prefix"] = source.strip_prefix
    if source.url:
        data["url"] = source.url
    return {"source": data, "pin": pin, **extra}


SAMPLE = [
    Member("demo_pkg-1.0/", kind="dir", mode=0o755),
    Member("demo_pkg-1.0/README.md", b"demo\n"),
    Member("demo_pkg-1.0/src/demo/__init__.py", b"VALUE = 1\n"),
    Member("demo_pkg-1.0/tools/run.sh", b"#!/bin/sh\necho run\n", mode=0o755),
    Member("demo_pkg-1.0/docs/latest", kind="symlink", link="../README.md"),
    Member("demo_pkg-1.0/data/blob.bin", bytes(range(256)) * 4),
    Member("demo_pkg-1.0/name with space ü.txt", b"unicode\r\n"),
    Member('demo_pkg-1.0/"quoted".txt', b"quotes\n"),
]
