"""A git patch read into its file sections and hunks, byte for byte.

``git diff --binary --full-index`` output is a list of sections, one per file, each starting with
``diff --git``. A section is a header (modes, index line, ``---``/``+++``), then text hunks
(``@@ -a,b +c,d @@``) or a binary patch. Paths are read by :mod:`flagscale.core.patch_names`. Every
byte of the input belongs to exactly one section, so joining the sections gives the patch back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flagscale.core.errors import FlagScaleError
from flagscale.core.patch_names import section_paths

__all__ = ["FileSection", "Hunk", "parse_patch"]

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class Hunk:
    """One ``@@`` hunk: its ranges in the old and the new file, and its bytes (header included)."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    text: bytes

    @property
    def header(self) -> str:
        """The ``@@ ... @@`` line, for messages."""
        return self.text.split(b"\n", 1)[0].decode("utf-8", "replace")

    @property
    def old_range(self) -> tuple[int, int]:
        """First and last line of the old file the hunk covers (context included)."""
        start = max(self.old_start, 1)
        return start, start + max(self.old_count, 1) - 1


@dataclass(frozen=True)
class FileSection:
    """The part of a patch about one file."""

    old_path: str | None  # None: the file is new
    new_path: str | None  # None: the file is deleted
    header: bytes
    hunks: tuple[Hunk, ...]
    binary: bool
    text: bytes

    @property
    def path(self) -> str:
        """The file's name before the change (after it, for a new file)."""
        name = self.old_path or self.new_path
        assert name is not None
        return name

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path the section touches (both names of a rename)."""
        return tuple(dict.fromkeys(p for p in (self.old_path, self.new_path) if p))

    def hunk_patch(self, index: int) -> bytes:
        """A patch holding only this file's header and its ``index``-th hunk."""
        return self.header + self.hunks[index].text


def parse_patch(data: bytes, source: str = "patch") -> list[FileSection]:
    """The file sections of ``data``; ``source`` names the patch in errors."""
    if not data.strip():
        return []
    lines = data.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(b"diff --git ")]
    if not starts or any(line.strip() for line in lines[: starts[0]]):
        raise FlagScaleError(
            f"{source}: not a git patch (no 'diff --git' line at its start)",
            hint="patch sets are made by `inv patch --device-type`",
        )
    sections = []
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(lines)
        sections.append(_section(lines[start:end], source))
    return sections


def _section(lines: list[bytes], source: str) -> FileSection:
    first_hunk = next((i for i, line in enumerate(lines) if line.startswith(b"@@ ")), None)
    header_lines = lines if first_hunk is None else lines[:first_hunk]
    binary = any(line.startswith((b"GIT binary patch", b"Binary files ")) for line in header_lines)
    old_path, new_path = section_paths(header_lines, source)
    hunks: list[Hunk] = []
    if first_hunk is not None and not binary:
        hunks = _hunks(lines[first_hunk:], source)
    return FileSection(
        old_path=old_path,
        new_path=new_path,
        header=b"".join(header_lines),
        hunks=tuple(hunks),
        binary=binary,
        text=b"".join(lines),
    )


def _hunks(lines: list[bytes], source: str) -> list[Hunk]:
    hunks: list[Hunk] = []
    current: list[bytes] = []
    for line in lines:
        if line.startswith(b"@@ ") and current:
            hunks.append(_hunk(current, source))
            current = []
        current.append(line)
    if current:
        hunks.append(_hunk(current, source))
    return hunks


def _hunk(lines: list[bytes], source: str) -> Hunk:
    match = _HUNK.match(lines[0])
    if match is None:
        raise FlagScaleError(f"{source}: malformed hunk header {lines[0][:60]!r}")
    old_start, old_count, new_start, new_count = match.groups()
    return Hunk(
        old_start=int(old_start),
        old_count=1 if old_count is None else int(old_count),
        new_start=int(new_start),
        new_count=1 if new_count is None else int(new_count),
        text=b"".join(lines),
    )
