"""The file names of a git patch's sections, read as git writes them.

A section starts ``diff --git a/P b/P``; its header may name the files again in ``---``/``+++``
lines, ``rename from``/``rename to`` lines, or mark the file as new or deleted. Names are plain or
C-quoted with octal bytes (git's ``core.quotePath``). Both readers of patches (refresh's carry
and trust's hunks) take the names from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from flagscale.core.errors import FlagScaleError

__all__ = ["section_paths", "unquote_path"]

_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def section_paths(header: Sequence[bytes], source: str) -> tuple[str | None, str | None]:
    """(old, new) names of a section from its header lines (``diff --git`` first): from
    ``---``/``+++``, rename lines, or the ``diff --git`` line; None for an added file's old name
    and a deleted file's new name. ``source`` names the patch in errors."""
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
