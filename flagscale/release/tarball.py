"""Deterministic gzip'd tar archives of plain files, and a strict in-memory reader for them.

Writing: entries sorted by name, mtime 0, uid/gid 0, no user or group names, mode 0644, no
folder entries, PAX format (long and non-ASCII names), gzip with mtime 0 and no file name.
The same files always give the same bytes.

Reading: the whole archive is decompressed and parsed in memory; nothing touches the disk. Only
regular files with safe relative names are accepted; links, devices, folders, FIFOs, duplicate
names, ``..`` and absolute paths are refused with an error naming the entry.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib

from flagscale.core.errors import FlagScaleError
from flagscale.core.paths import UnsafePathError, check_relative

__all__ = ["ArchiveError", "FILE_MODE", "MAX_ARCHIVE_BYTES", "read_archive", "write_archive"]

FILE_MODE = 0o644
MAX_ARCHIVE_BYTES = 1 << 30  # decompressed; bundles are small, this only stops a gzip bomb

_KIND_NAMES = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.DIRTYPE: "a folder",
    tarfile.CONTTYPE: "a contiguous file",
}


class ArchiveError(FlagScaleError):
    """An archive is damaged or holds an entry that is not allowed."""


def write_archive(files: dict[str, bytes]) -> bytes:
    """The .tar.gz bytes holding ``files`` (relative POSIX path → contents), deterministically."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            check_relative(name, "archive entry")
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            archive.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    # GzipFile with filename="" and mtime=0 writes neither a name nor a date into the header.
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def read_archive(data: bytes, source: str) -> dict[str, bytes]:
    """Every file of the .tar.gz ``data`` (path → contents), checked entry by entry.

    ``source`` names the archive in messages. Raises ArchiveError for a truncated or corrupted
    archive and for any entry that is not a regular file with a safe relative name.
    """
    tar_bytes = _gunzip(data, source)
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as archive:
            for member in archive:
                name = _checked_name(member, source)
                if name in files:
                    raise ArchiveError(f"{source}: entry {name!r} appears twice in the archive")
                handle = archive.extractfile(member)
                assert handle is not None  # regular files always have contents
                content = handle.read()
                if len(content) != member.size:
                    raise ArchiveError(f"{source}: entry {name!r} is truncated")
                files[name] = content
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(
            f"{source}: damaged tar archive ({_reason(exc)})",
            hint="download the bundle again",
        ) from None
    return files


def _gunzip(data: bytes, source: str) -> bytes:
    if not data:
        raise ArchiveError(f"{source}: empty file, not a bundle", hint="download the bundle again")
    if not data.startswith(b"\x1f\x8b"):
        raise ArchiveError(
            f"{source}: not a gzip file (a bundle is a .tar.gz)", hint="download the bundle again"
        )
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        tar_bytes = decompressor.decompress(data, MAX_ARCHIVE_BYTES)
    except zlib.error as exc:
        raise ArchiveError(
            f"{source}: corrupted gzip data ({_reason(exc)})", hint="download the bundle again"
        ) from None
    if decompressor.unconsumed_tail:
        raise ArchiveError(f"{source}: unpacks to more than {MAX_ARCHIVE_BYTES} bytes; refusing")
    if not decompressor.eof:
        raise ArchiveError(
            f"{source}: truncated archive (the gzip stream ends early)",
            hint="download the bundle again",
        )
    if decompressor.unused_data.strip(b"\0"):
        raise ArchiveError(f"{source}: unexpected bytes after the end of the gzip stream")
    return tar_bytes


def _checked_name(member: tarfile.TarInfo, source: str) -> str:
    name = member.name
    kind = _KIND_NAMES.get(member.type)
    if kind is None and not member.isreg():
        kind = f"an entry of unknown type {member.type!r}"
    if kind is not None:
        target = f" (-> {member.linkname!r})" if member.issym() or member.islnk() else ""
        raise ArchiveError(
            f"{source}: entry {name!r} is {kind}{target}; a bundle holds only regular files"
        )
    try:
        check_relative(name, f"{source}: entry")
    except UnsafePathError as exc:
        raise ArchiveError(str(exc)) from None
    return name


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
