"""What a build was made from, and whether its folder still holds what was built.

``build/<V_M>/.flagscale-build.json`` records the inputs of a build (commit and object ids only,
never a date) and their fingerprint, a SHA-256 of the canonical JSON of the inputs: a rebuild
whose inputs give the same fingerprint has nothing to do. Beside it, ``.flagscale-build.state``
lists every file's type, size and modification time as written; comparing it with a fresh
``lstat`` walk tells whether someone changed the build folder by hand without reading a single
file. The state file is local bookkeeping (times differ between machines), the record is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import SchemaError, parse_document, validate

__all__ = [
    "RECORD_NAME",
    "STATE_NAME",
    "BuildRecord",
    "FolderState",
    "canonical_json",
    "fingerprint_of",
    "read_record",
    "read_state",
    "record_bytes",
    "scan_folder",
]

RECORD_NAME = ".flagscale-build.json"
STATE_NAME = ".flagscale-build.state"
RECORD_FORMAT = 1
_STATE_HEADER = b"flagscale-build-state 1\n"
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


@dataclass(frozen=True)
class FolderState:
    """Path → (kind, size, mtime_ns) for every file and link under a build folder."""

    entries: dict[str, tuple[str, int, int]]

    def to_bytes(self) -> bytes:
        """The state file's bytes (NUL-separated so any file name survives)."""
        body = b"".join(
            f"{kind} {size} {mtime}\0".encode() + os.fsencode(path) + b"\0"
            for path, (kind, size, mtime) in sorted(self.entries.items())
        )
        return _STATE_HEADER + body

    def differences(self, other: FolderState, limit: int = 5) -> list[str]:
        """Up to ``limit`` paths that differ between two states, sorted ("M path", "A", "D")."""
        changed: list[str] = []
        for path in sorted(self.entries.keys() | other.entries.keys()):
            mine, theirs = self.entries.get(path), other.entries.get(path)
            if mine == theirs:
                continue
            mark = "A" if mine is None else "D" if theirs is None else "M"
            changed.append(f"{mark} {path}")
            if len(changed) >= limit:
                break
        return changed


def read_state(folder: Path) -> FolderState | None:
    """The state recorded when ``folder`` was built; None if missing or damaged."""
    try:
        data = (folder / STATE_NAME).read_bytes()
    except OSError:
        return None
    if not data.startswith(_STATE_HEADER):
        return None
    fields = data[len(_STATE_HEADER) :].split(b"\0")
    if len(fields) % 2 != 1 or fields[-1] != b"":
        return None
    entries: dict[str, tuple[str, int, int]] = {}
    for meta, raw_path in zip(fields[0:-1:2], fields[1:-1:2], strict=True):
        parts = meta.decode("ascii", "replace").split(" ")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].lstrip("-").isdigit():
            return None
        entries[os.fsdecode(raw_path)] = (parts[0], int(parts[1]), int(parts[2]))
    return FolderState(entries)


def scan_folder(folder: Path) -> FolderState:
    """``lstat`` every entry below ``folder`` (no file is read); the tool's own files skipped."""
    return FolderState(dict(_walk(folder, "")))


def _walk(folder: Path, prefix: str) -> Iterator[tuple[str, tuple[str, int, int]]]:
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
            yield from _walk(Path(entry.path), relative + "/")
            continue
        kind = "link" if stat.S_ISLNK(info.st_mode) else _file_kind(info.st_mode)
        yield relative, (kind, info.st_size, info.st_mtime_ns)


def _file_kind(mode: int) -> str:
    if not stat.S_ISREG(mode):
        return "other"
    return "exec" if mode & stat.S_IXUSR else "file"
