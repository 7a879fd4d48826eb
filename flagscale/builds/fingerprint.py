"""What a build was made from, and whether its folder still holds what was built.

``build/<V_M>/.flagscale-build.json`` records the inputs of a build (commit and object ids only,
never a date) and their fingerprint, a SHA-256 of the canonical JSON of the inputs: a rebuild
whose inputs give the same fingerprint has nothing to do. Beside it, ``.flagscale-build.state``
lists every file's type, size, modification and change times, inode and blob id as written.
A fresh ``lstat`` walk compared with it tells whether someone changed the build folder by hand,
the way git tells a clean file: equal stat data means unchanged, unless the file is *racily
clean* (its times are not older than the state file, so an edit in the same clock tick would
leave them equal); a different size or type means changed; anything else (a touch, a chmod, an
edit that restored the mtime, a file replaced by another) is decided by the content. The build
writes the state only once its clock has moved past every file it wrote, so an unchanged
rebuild reads no file. The state file is local bookkeeping (times differ between machines),
the record is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import SchemaError, parse_document, validate

__all__ = [
    "RECORD_NAME",
    "STATE_NAME",
    "BuildRecord",
    "FolderState",
    "canonical_json",
    "fingerprint_of",
    "hand_changes",
    "read_record",
    "read_state",
    "record_bytes",
    "scan_folder",
    "write_state",
]

RECORD_NAME = ".flagscale-build.json"
STATE_NAME = ".flagscale-build.state"
RECORD_FORMAT = 1
_STATE_HEADER = b"flagscale-build-state 2\n"
_OLDER_HEADER = b"flagscale-build-state 1\n"
_SETTLE_TRIES = 2000  # 1 ms apart: past any clock tick but the coarsest file systems'
_OWN_FILES = frozenset({RECORD_NAME, STATE_NAME})


def canonical_json(data: Any) -> bytes:
    """JSON with sorted keys, no extra spaces, UTF-8: equal data gives equal bytes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint_of(inputs: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a build's inputs."""
    return hashlib.sha256(canonical_json(inputs)).hexdigest()


@dataclass(frozen=True)
class BuildRecord:
    """The contents of ``.flagscale-build.json``."""

    device_type: str
    fingerprint: str
    tree: str
    inputs: dict[str, Any]
    tool_version: str

    def to_json(self) -> dict[str, Any]:
        """The document as written (schema build-record)."""
        return {
            "version": RECORD_FORMAT,
            "device_type": self.device_type,
            "fingerprint": self.fingerprint,
            "tree": self.tree,
            "tool_version": self.tool_version,
            "inputs": self.inputs,
        }


def record_bytes(record: BuildRecord) -> bytes:
    """The record file's bytes: indented, sorted keys, trailing newline; no dates."""
    text = json.dumps(record.to_json(), sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode()


def read_record(folder: Path) -> BuildRecord | None:
    """The record of the build in ``folder``; None when there is none or it is unreadable."""
    path = folder / RECORD_NAME
    try:
        text = path.read_text(encoding="utf-8")
        data = validate(parse_document(text, str(path)), "build-record", str(path))
    except (OSError, UnicodeDecodeError, SchemaError):
        return None
    return BuildRecord(
        device_type=data["device_type"],
        fingerprint=data["fingerprint"],
        tree=data["tree"],
        inputs=data["inputs"],
        tool_version=data["tool_version"],
    )


class StateFormatError(FlagScaleError):
    """The state file was written by an older version of the tool (no change times, no ids)."""


class FileStat(NamedTuple):
    """What the state records of one file or symlink (a tuple: a rebuild compares thousands)."""

    kind: str  # "file", "exec", "link" or "other"
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    oid: str = ""  # git blob id of the content (a link: of its target); "" when not read


@dataclass(frozen=True)
class FolderState:
    """Path → FileStat for every file and link under a build folder.

    ``stamp`` is the modification time of the state file it was read from: entries whose times
    are not older than it are racily clean and are decided by their content.
    """

    entries: dict[str, FileStat]
    stamp: int | None = None

    def to_bytes(self) -> bytes:
        """The state file's bytes (NUL-separated so any file name survives)."""
        body = b"".join(
            f"{e.kind} {e.size} {e.mtime_ns} {e.ctime_ns} {e.inode} {e.oid}\0".encode()
            + os.fsencode(path)
            + b"\0"
            for path, e in sorted(self.entries.items())
        )
        return _STATE_HEADER + body

    def racy(self, entry: FileStat) -> bool:
        """Whether ``entry`` is racily clean: its times are not older than the state file."""
        return self.stamp is None or max(entry.mtime_ns, entry.ctime_ns) >= self.stamp


def read_state(folder: Path) -> FolderState | None:
    """The state recorded when ``folder`` was built; None if missing or damaged.

    Raises StateFormatError for the state of an older version of the tool.
    """
    path = folder / STATE_NAME
    try:
        with open(path, "rb") as handle:
            stamp = os.fstat(handle.fileno()).st_mtime_ns
            data = handle.read()
    except OSError:
        return None
    if data.startswith(_OLDER_HEADER):
        raise StateFormatError(f"{STATE_NAME} of an older version")
    if not data.startswith(_STATE_HEADER):
        return None
    fields = data[len(_STATE_HEADER) :].split(b"\0")
    if len(fields) % 2 != 1 or fields[-1] != b"":
        return None
    entries: dict[str, FileStat] = {}
    try:
        for meta, raw_path in zip(fields[0:-1:2], fields[1:-1:2], strict=True):
            kind, size, mtime, ctime, inode, oid = meta.split(b" ")
            entries[os.fsdecode(raw_path)] = FileStat(
                kind.decode(), int(size), int(mtime), int(ctime), int(inode), oid.decode()
            )
    except (ValueError, UnicodeDecodeError):
        return None
    return FolderState(entries, stamp)


def scan_folder(folder: Path, *, with_oids: bool = False) -> FolderState:
    """``lstat`` every entry below ``folder`` (contents read only ``with_oids``); the tool's own
    files skipped."""
    return FolderState(dict(_walk(folder, "", with_oids)))


def write_state(folder: Path) -> FolderState:
    """Record ``folder``'s files (stat data and blob ids) in its state file.

    The state file's time must end up later than every file's, so that no file is racily clean
    and an unchanged rebuild decides everything from stat data; on a file system whose clock
    ticks slowly this waits for the next tick (the racy check keeps it right if it cannot).
    """
    state = scan_folder(folder, with_oids=True)
    path = folder / STATE_NAME
    path.write_bytes(state.to_bytes())
    newest = max((max(e.mtime_ns, e.ctime_ns) for e in state.entries.values()), default=0)
    for _ in range(_SETTLE_TRIES):
        if os.lstat(path).st_mtime_ns > newest:
            break
        time.sleep(0.001)
        os.utime(path)
    return state


def hand_changes(folder: Path, recorded: FolderState, limit: int = 5) -> list[str]:
    """Up to ``limit`` paths changed under ``folder`` since ``recorded`` ("M path", "A", "D"),
    sorted; files whose stat data cannot decide are compared by content."""
    current = scan_folder(folder).entries
    entries = recorded.entries
    stamp = recorded.stamp
    undecided = [
        path
        for path, mine in entries.items()
        if (theirs := current.get(path)) is not None
        and (mine[:5] != theirs[:5] or stamp is None or max(mine[2], mine[3]) >= stamp)
    ]
    changed = {path: "A" for path in current.keys() - entries.keys()}
    changed.update({path: "D" for path in entries.keys() - current.keys()})
    for path in undecided:
        if _modified(folder / path, entries[path], current[path]):
            changed[path] = "M"
    return [f"{changed[path]} {path}" for path in sorted(changed)[:limit]]


def _modified(path: Path, recorded: FileStat, current: FileStat) -> bool:
    """For a file whose stat data cannot decide: a new type or size, or other content."""
    if recorded.kind != current.kind or recorded.size != current.size:
        return True
    return not recorded.oid or _content_oid(path, current.kind) != recorded.oid


def _content_oid(path: Path, kind: str) -> str | None:
    from flagscale.overlay.layer_files import blob_oid

    if kind == "other":  # a FIFO or device was never written by a build: never read it
        return None
    try:
        data = os.fsencode(os.readlink(path)) if kind == "link" else path.read_bytes()
    except OSError:
        return None
    return blob_oid(data)


def _walk(folder: Path, prefix: str, with_oids: bool) -> Iterator[tuple[str, FileStat]]:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FlagScaleError(f"cannot read build folder {folder}: {exc.strerror}") from None
    for entry in entries:
        relative = prefix + entry.name
        if not prefix and entry.name in _OWN_FILES:
            continue
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(Path(entry.path), relative + "/", with_oids)
            continue
        kind = "link" if stat.S_ISLNK(info.st_mode) else _file_kind(info.st_mode)
        oid = (_content_oid(Path(entry.path), kind) or "") if with_oids else ""
        yield (
            relative,
            FileStat(kind, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, oid),
        )


def _file_kind(mode: int) -> str:
    if not stat.S_ISREG(mode):
        return "other"
    return "exec" if mode & stat.S_IXUSR else "file"
