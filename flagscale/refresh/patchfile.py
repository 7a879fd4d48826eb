"""A git patch read into its file sections and hunks, byte for byte.

``git diff --binary --full-index`` output is a list of sections, one per file, each starting with
``diff --git``. A section is a header (modes, index line, ``---``/``+++``), then text hunks
(``@@ -a,b +c,d @@``) or a binary patch. Paths are unquoted as git quotes them (C-style). Every
byte of the input belongs to exactly one section, so joining the sections gives the patch back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flagscale.core.errors import FlagScaleError

__all__ = ["FileSection", "Hunk", "parse_patch", "unquote_path"]

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


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
    old_path, new_path = _paths(header_lines, source)
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


def _paths(header: list[bytes], source: str) -> tuple[str | None, str | None]:
    """(old, new) file names from ``---``/``+++``, rename lines, or the ``diff --git`` line."""
    old = new = None
    created = deleted = False
    for line in header[1:]:
        text = line.rstrip(b"\n").decode("utf-8", "surrogateescape")
        if text.startswith("--- "):
            old = None if text[4:] == "/dev/null" else _strip(unquote_path(text[4:]), "a/")
        elif text.startswith("+++ "):
            new = None if text[4:] == "/dev/null" else _strip(unquote_path(text[4:]), "b/")
        elif text.startswith("rename from "):
            old = unquote_path(text[len("rename from ") :])
        elif text.startswith("rename to "):
            new = unquote_path(text[len("rename to ") :])
        elif text.startswith("new file mode"):
            created = True
        elif text.startswith("deleted file mode"):
            deleted = True
    if old is None and new is None:
        name = _name_from_diff_line(header[0], source)
        old, new = name, name
    if created:
        old = None
    if deleted:
        new = None
    if old is None and new is None:
        raise FlagScaleError(f"{source}: cannot tell which file a section is about")
    return old, new


def _name_from_diff_line(line: bytes, source: str) -> str:
    """The file name of ``diff --git a/X b/X`` (git prints the same name twice unless renamed)."""
    text = line.rstrip(b"\n").decode("utf-8", "surrogateescape")[len("diff --git ") :]
    if text.startswith('"'):
        first, rest = _split_quoted(text)
        return _strip(unquote_path(first), "a/")
    half = (len(text) - 1) // 2
    if len(text) % 2 == 1 and text[half] == " " and text[2:half] == text[half + 3 :]:
        return _strip(text[:half], "a/")
    raise FlagScaleError(f"{source}: cannot read the file name of {line[:80]!r}")


def _split_quoted(text: str) -> tuple[str, str]:
    index = 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == '"':
            return text[: index + 1], text[index + 1 :].lstrip()
        index += 1
    raise FlagScaleError(f"unterminated quoted name {text[:60]!r}")


def _strip(path: str, prefix: str) -> str:
    return path[len(prefix) :] if path.startswith(prefix) else path


def unquote_path(text: str) -> str:
    """A path as git writes it in patches: as is, or C-quoted with octal bytes."""
    text = text.rstrip("\t")
    if not (text.startswith('"') and text.endswith('"') and len(text) >= 2):
        return text
    raw = bytearray()
    body = text[1:-1]
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            raw += char.encode("utf-8", "surrogateescape")
            index += 1
            continue
        following = body[index + 1 : index + 2]
        if following in _ESCAPES:
            raw.append(_ESCAPES[following])
            index += 2
        elif body[index + 1 : index + 4].isdigit():
            raw.append(int(body[index + 1 : index + 4], 8))
            index += 4
        else:
            raw += following.encode("utf-8", "surrogateescape")
            index += 2
    return raw.decode("utf-8", "surrogateescape")
