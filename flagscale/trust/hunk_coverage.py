"""Mapping coverage onto hunks: did each change run, only get imported, or never get reached?

A hunk is judged by the lines it adds or changes, located in the build tree (a patch set's new
side *is* the build tree's file — builds check it, ``flagscale.builds.results_check``; a base
layer hunk is carried through the vendor set's changes to the same file first). A hunk that only
removes lines is judged by the lines around the removal. Each line gets its status from
``flagscale.trust.python_lines``; the hunk then is

- ``executed``: at least one of its lines ran (a function's header counts when its body ran);
- ``imported_only``: its file was imported (some of its code ran), its own lines did not;
- ``not_reached``: its file was never imported by any rank;
- ``not_measurable``: nothing Python could run there — not a ``.py`` file, a binary file, a
  mode change, a deleted file, a file that does not parse, or lines the vendor set replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from flagscale.trust.hunks import FilePatch, Piece
from flagscale.trust.python_lines import (
    EXECUTED,
    STATUS_ORDER,
    PythonLines,
    SourceError,
)
from flagscale.trust.run_coverage import LineData

__all__ = [
    "HUNK_STATUSES",
    "IMPORTED_ONLY",
    "NOT_MEASURABLE",
    "NOT_REACHED",
    "HunkVerdict",
    "LineVerdict",
    "judge_pieces",
    "line_through",
]

IMPORTED_ONLY = "imported_only"
NOT_REACHED = "not_reached"
NOT_MEASURABLE = "not_measurable"
HUNK_STATUSES = (EXECUTED, IMPORTED_ONLY, NOT_REACHED, NOT_MEASURABLE)
REPLACED = "replaced"  # a line status: a later patch (the vendor's) changed the line again


@dataclass(frozen=True)
class LineVerdict:
    """One added line (or a removal's neighbour) in the build tree and how far it got."""

    line: int | None  # line in the build tree's file (None: replaced by a later patch)
    status: str  # executed | defined | missed | not_reached | not_measurable | replaced
    ranks: tuple[str, ...] = ()


@dataclass(frozen=True)
class HunkVerdict:
    """A hunk's status, why (for ``not_measurable``), its lines, and the ranks that ran it."""

    piece: Piece
    status: str
    reason: str | None
    added: tuple[LineVerdict, ...]  # one per '+' line, in order
    around: tuple[LineVerdict, ...]  # the neighbours of pure removals
    ranks: tuple[str, ...]


LineMap = Callable[[Piece, int], "int | None"]


def judge_pieces(
    pieces: Sequence[Piece],
    data: Mapping[str, LineData],
    read: Callable[[str], bytes | None],
    *,
    line_map: LineMap | None = None,
) -> list[HunkVerdict]:
    """A verdict per piece. ``read`` gives a build-tree file's bytes (None: absent);
    ``line_map`` moves a piece's new-side line to the build tree's (None: replaced)."""
    sources: dict[str, PythonLines | str | None] = {}
    verdicts = []
    for piece in pieces:
        reason = _unmeasurable_reason(piece)
        source: PythonLines | str | None = None
        if reason is None:
            if piece.path not in sources:
                sources[piece.path] = _load(piece.path, read)
            source = sources[piece.path]
            if isinstance(source, str) or source is None:
                reason = source or "not in the build tree"
        if reason is not None or not isinstance(source, PythonLines):
            verdicts.append(HunkVerdict(piece, NOT_MEASURABLE, reason, (), (), ()))
            continue
        verdicts.append(_judge(piece, source, data.get(piece.path), line_map))
    return verdicts


def _unmeasurable_reason(piece: Piece) -> str | None:
    section = piece.file
    if section.binary:
        return "binary file"
    if section.deleted:
        return "file deleted: nothing left to run"
    if not section.path.endswith(".py"):
        return "not Python"
    if piece.hunk is None:
        return "no lines changed (mode or empty file)"
    return None


def _load(path: str, read: Callable[[str], bytes | None]) -> PythonLines | str | None:
    data = read(path)
    if data is None:
        return None
    try:
        return PythonLines(data, path)
    except SourceError:
        return "does not parse as Python"


def _judge(
    piece: Piece, source: PythonLines, data: LineData | None, line_map: LineMap | None
) -> HunkVerdict:
    assert piece.hunk is not None
    ran = data.ran if data is not None else frozenset()
    contexts = data.lines if data is not None else {}
    imported = bool(ran)

    def verdict(new_line: int) -> LineVerdict:
        line = line_map(piece, new_line) if line_map else new_line
        if line is None:
            return LineVerdict(None, REPLACED)
        if not imported:
            return LineVerdict(line, NOT_REACHED)
        status, evidence = source.judge(line, ran)
        ranks = sorted({c for number in evidence for c in contexts.get(number, ())})
        return LineVerdict(line, status, tuple(ranks))

    added = tuple(verdict(n) for n in piece.hunk.added_lines())
    around = tuple(
        verdict(n)
        for point in piece.hunk.deletion_points()
        for n in (point, point + 1)
        if 1 <= n <= source.line_count
    )
    judged = [v for v in (*added, *around) if v.status != REPLACED]
    ranks = tuple(sorted({r for v in judged for r in v.ranks if v.status == EXECUTED}))
    if not judged:
        return HunkVerdict(
            piece, NOT_MEASURABLE, "lines changed again by a later patch", added, around, ()
        )
    best = max((v.status for v in judged), key=lambda s: STATUS_ORDER.get(s, -1))
    status = EXECUTED if best == EXECUTED else IMPORTED_ONLY if imported else NOT_REACHED
    return HunkVerdict(piece, status, None, added, around, ranks)


def line_through(later: FilePatch | None, line: int) -> int | None:
    """Where line ``line`` of a file ends up after ``later`` (a patch of the same file)
    changes it: shifted by the hunks before it, None when ``later`` removes or replaces it."""
    if later is None:
        return line
    shift = 0
    for hunk in later.hunks:
        end = hunk.old_start + hunk.old_count  # first old line after the hunk
        if hunk.old_count == 0:  # an insertion after old line old_start
            if line <= hunk.old_start:
                break
            shift += hunk.delta
            continue
        if line < hunk.old_start:
            break
        if line >= end:
            shift += hunk.delta
            continue
        old, new = hunk.old_start, hunk.new_start
        for text in hunk.lines:
            kind = text[:1]
            if kind in (b" ", b""):
                if old == line:
                    return new
                old, new = old + 1, new + 1
            elif kind == b"-":
                if old == line:
                    return None
                old += 1
            elif kind == b"+":
                new += 1
        return None
    return line + shift
