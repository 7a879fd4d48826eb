"""A git patch as files and hunks, with line numbers; and a chosen subset written back as a patch.

Patches here are what ``git diff`` writes (the tool's own sets: ``--full-index --binary
--no-renames``, ``a/`` and ``b/`` prefixes): one section per file, starting ``diff --git``,
then extended headers, then ``@@`` hunks or a binary payload. A hunk knows where it sits in the
old and the new file and in the patch file itself (its line, for messages), and which new-file
lines it adds. A file section without hunks (binary, mode change, empty file added or deleted)
is one indivisible piece.

``render`` writes any subset of hunks back as a patch ``git apply`` takes: the chosen hunks of
a file keep their old-side positions and get new-side positions shifted by the hunks left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from flagscale.core.errors import FlagScaleError
from flagscale.core.patch_names import section_paths

__all__ = [
    "FilePatch",
    "Hunk",
    "PatchError",
    "Piece",
    "parse_patch",
    "pieces_of",
    "render",
]

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_NO_NEWLINE = b"\\"


class PatchError(ValueError):
    """Text that is not a git patch this module understands."""


@dataclass(frozen=True)
class Hunk:
    """One ``@@`` hunk: positions in the old and new file, its lines, its line in the patch."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    section: str  # the text after the second @@ (git's function context), stripped
    lines: tuple[bytes, ...]  # body lines without their line ends (' ', '-', '+', '\\' first)
    patch_line: int  # 1-based line of the @@ header in the patch text it was parsed from

    @property
    def header(self) -> str:
        """``@@ -a,b +c,d @@`` as git writes it (counts of 1 left out)."""
        return _hunk_header(self.old_start, self.old_count, self.new_start, self.new_count)

    def added_lines(self) -> list[int]:
        """New-file line numbers of the ``+`` lines."""
        return [number for number, kind in self._walk() if kind == "+"]

    def removed_lines(self) -> list[int]:
        """Old-file line numbers of the ``-`` lines."""
        numbers, old = [], self.old_start
        for line in self.lines:
            if line.startswith(b"-"):
                numbers.append(old)
            if line.startswith((b"-", b" ")) or line == b"":
                old += 1
        return numbers

    def deletion_points(self) -> list[int]:
        """For each run of ``-`` lines with no ``+`` line right after: the new-file line just
        before the removed lines (0 at the top); a pure deletion is located by its neighbours."""
        points, new, pending = [], self.new_start, False
        for line in self.lines:
            if line.startswith(b"-"):
                pending = True
                continue
            if line.startswith(b"+"):
                pending = False
            elif pending:
                points.append(new - 1)
                pending = False
            if line.startswith((b"+", b" ")) or line == b"":
                new += 1
        if pending:
            points.append(new - 1)
        return points

    def _walk(self) -> Iterable[tuple[int, str]]:
        new = self.new_start
        for line in self.lines:
            kind = chr(line[0]) if line else " "
            if kind in "+ ":
                yield new, kind
                new += 1

    @property
    def delta(self) -> int:
        """How many lines the hunk adds to the file (negative: removes)."""
        return self.new_count - self.old_count


@dataclass(frozen=True)
class FilePatch:
    """One file's section of a patch."""

    old_path: str | None  # None: the file is added
    new_path: str | None  # None: the file is deleted
    header: tuple[bytes, ...]  # ``diff --git`` up to (not including) the first hunk
    hunks: tuple[Hunk, ...] = ()
    payload: tuple[bytes, ...] = ()  # a binary patch's lines, kept as they are
    patch_line: int = 0  # 1-based line of ``diff --git`` in the patch text

    @property
    def path(self) -> str:
        """The file's path (the new one; the old one for a deletion)."""
        return self.new_path or self.old_path or ""

    @property
    def binary(self) -> bool:
        return bool(self.payload) or any(line.startswith(b"Binary files ") for line in self.header)

    @property
    def deleted(self) -> bool:
        return self.new_path is None

    @property
    def added(self) -> bool:
        return self.old_path is None

    @property
    def whole(self) -> bool:
        """A section that cannot be split into hunks (binary, mode change, empty file)."""
        return not self.hunks


@dataclass(frozen=True)
class Piece:
    """The unit a patch is split into: one hunk of a file, or a whole file section."""

    file: FilePatch
    hunk: Hunk | None  # None: the whole file section
    label: str = ""  # the patch file it came from (``hardware/V_M/B/B.patch``), for messages
    prefix: str = ""  # where the file lies in a build tree (``third_party/B``), "" for FlagScale
    key: tuple[str, int] = field(default=("", 0))  # (file path, hunk index): stable identity

    @property
    def path(self) -> str:
        """The file's path in the build tree."""
        return f"{self.prefix}/{self.file.path}" if self.prefix else self.file.path

    def describe(self) -> str:
        """``path @@ -a,b +c,d @@`` (or ``path (whole file)``)."""
        if self.hunk is None:
            what = "deleted" if self.file.deleted else "added" if self.file.added else "changed"
            return f"{self.path} ({what}, whole file)"
        return f"{self.path} {self.hunk.header}"


def parse_patch(text: bytes) -> list[FilePatch]:
    """The file sections of a git patch, in order; PatchError when it is not one."""
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    files: list[FilePatch] = []
    index = 0
    while index < len(lines):
        if not lines[index].startswith(b"diff --git "):
            if lines[index].strip():
                raise PatchError(
                    f"line {index + 1}: expected 'diff --git', got {lines[index][:40]!r}"
                )
            index += 1
            continue
        index, section = _parse_file(lines, index)
        files.append(section)
    return files


def _parse_file(lines: list[bytes], start: int) -> tuple[int, FilePatch]:
    header = [lines[start]]
    index = start + 1
    while index < len(lines) and not lines[index].startswith((b"@@ ", b"diff --git ")):
        if lines[index] == b"GIT binary patch":
            break
        header.append(lines[index])
        index += 1
    payload: list[bytes] = []
    if index < len(lines) and lines[index] == b"GIT binary patch":
        while index < len(lines) and not lines[index].startswith(b"diff --git "):
            payload.append(lines[index])
            index += 1
    hunks: list[Hunk] = []
    while index < len(lines) and lines[index].startswith(b"@@ "):
        index, hunk = _parse_hunk(lines, index)
        hunks.append(hunk)
    old_path, new_path = _paths(header)
    section = FilePatch(old_path, new_path, tuple(header), tuple(hunks), tuple(payload), start + 1)
    return index, section


def _parse_hunk(lines: list[bytes], start: int) -> tuple[int, Hunk]:
    found = _HUNK.match(lines[start])
    if found is None:
        raise PatchError(f"line {start + 1}: not a hunk header: {lines[start][:60]!r}")
    old_start, new_start = int(found[1]), int(found[3])
    old_count = 1 if found[2] is None else int(found[2])
    new_count = 1 if found[4] is None else int(found[4])
    body: list[bytes] = []
    old_left, new_left = old_count, new_count
    index = start + 1
    while index < len(lines) and (old_left > 0 or new_left > 0):
        line = lines[index]
        kind = line[:1]
        if kind == b"-":
            old_left -= 1
        elif kind == b"+":
            new_left -= 1
        elif kind in (b" ", b""):
            old_left -= 1
            new_left -= 1
        elif kind != _NO_NEWLINE:
            raise PatchError(f"line {index + 1}: unexpected line in a hunk: {line[:40]!r}")
        body.append(line)
        index += 1
    if old_left or new_left:
        raise PatchError(
            f"line {start + 1}: hunk ends early ({lines[start].decode(errors='replace')})"
        )
    while index < len(lines) and lines[index].startswith(_NO_NEWLINE):
        body.append(lines[index])
        index += 1
    section = found[5].decode("utf-8", "replace").strip()
    hunk = Hunk(old_start, old_count, new_start, new_count, section, tuple(body), start + 1)
    return index, hunk


def _paths(header: list[bytes]) -> tuple[str | None, str | None]:
    try:
        return section_paths(header, "patch")
    except FlagScaleError as exc:
        raise PatchError(exc.message) from None


def _split_quoted(raw: bytes) -> tuple[bytes, bytes, bytes]:
    end = 1
    while end < len(raw) and raw[end : end + 1] != b'"':
        end += 2 if raw[end : end + 1] == b"\\" else 1
    return raw[: end + 1], b" ", raw[end + 2 :]


def _range(start: int, count: int) -> str:
    return str(start) if count == 1 else f"{start},{count}"


def _hunk_header(old_start: int, old_count: int, new_start: int, new_count: int) -> str:
    return f"@@ -{_range(old_start, old_count)} +{_range(new_start, new_count)} @@"


def pieces_of(files: Sequence[FilePatch], *, label: str = "", prefix: str = "") -> list[Piece]:
    """Every hunk (and every whole section without hunks) as a Piece, in patch order."""
    pieces = []
    for section in files:
        if section.whole:
            pieces.append(Piece(section, None, label, prefix, (section.path, 0)))
            continue
        for number, hunk in enumerate(section.hunks, start=1):
            pieces.append(Piece(section, hunk, label, prefix, (section.path, number)))
    return pieces


def render(pieces: Iterable[Piece]) -> bytes:
    """A patch applying exactly ``pieces`` (paths prefixed with their build-tree prefix).

    Hunks of one file come out in order; each one's new-side start is moved by the line counts
    of the file's earlier hunks that are left out, so ``git apply`` finds every hunk where it is.
    The ``index`` line (blob ids) is dropped when a file is not taken whole: the result of part
    of a file's hunks is no blob the patch could name.
    """
    by_file: dict[tuple[str, int], list[Piece]] = {}
    for piece in pieces:
        by_file.setdefault((piece.prefix, piece.file.patch_line), []).append(piece)
    out: list[bytes] = []
    for (prefix, _line), chosen in sorted(by_file.items(), key=lambda item: item[0]):
        section = chosen[0].file
        whole = any(p.hunk is None for p in chosen) or len(chosen) == len(section.hunks)
        out += _header(section, prefix, keep_index=whole)
        if section.whole:
            out += section.payload
            continue
        taken = {id(p.hunk) for p in chosen}
        shift = 0
        for hunk in section.hunks:
            if id(hunk) not in taken:
                shift -= hunk.delta
                continue
            start = hunk.new_start + shift
            header = _hunk_header(hunk.old_start, hunk.old_count, start, hunk.new_count)
            out.append((header + (f" {hunk.section}" if hunk.section else "")).encode())
            out += hunk.lines
    return b"".join(line + b"\n" for line in out)


def _header(section: FilePatch, prefix: str, *, keep_index: bool) -> list[bytes]:
    lines = []
    for line in section.header:
        if line.startswith(b"index ") and not keep_index:
            continue
        lines.append(_prefixed(line, prefix) if prefix else line)
    return lines


def _prefixed(line: bytes, prefix: str) -> bytes:
    """A header line with its ``a/``/``b/`` names moved under ``prefix`` (quoting kept)."""
    folder = prefix.encode("utf-8", "surrogateescape") + b"/"
    if line.startswith(b"diff --git "):
        rest = line[len(b"diff --git ") :]
        if rest.startswith(b'"'):
            first, _, second = _split_quoted(rest)
            return b"diff --git " + _insert(first, folder) + b" " + _insert(second, folder)
        size = (len(rest) - 5) // 2  # "a/P b/P" (no renames)
        first, second = rest[: 2 + size], rest[3 + size :]
        return b"diff --git " + _insert(first, folder) + b" " + _insert(second, folder)
    for start in (b"--- ", b"+++ "):
        if line.startswith(start):
            return start + _insert(line[len(start) :], folder)
    return line


def _insert(name: bytes, folder: bytes) -> bytes:
    """``a/P`` → ``a/<folder>P`` (also quoted); ``/dev/null`` stays."""
    quoted = name.startswith(b'"')
    body = name[1:] if quoted else name
    if body[:2] not in (b"a/", b"b/"):
        return name
    return (b'"' if quoted else b"") + body[:2] + folder + body[2:]
