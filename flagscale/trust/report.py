"""Patch coverage reports: the document (JSON, schemas/patch-coverage.schema.json) and the terminal.

One document per device type: per backend, per patch file (a set's patch file, or the base
layer as a diff against the pin), per target file, per hunk: its status, the ranks that ran
it, and every line of the hunk with its status, so the HTML page
(``flagscale.trust.report_html``) is drawn from the document alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagscale.core.atomic import write_atomically
from flagscale.core.schema import validate
from flagscale.trust.hunk_coverage import (
    HUNK_STATUSES,
    NOT_MEASURABLE,
    HunkVerdict,
    LineVerdict,
)
from flagscale.trust.hunks import FilePatch
from flagscale.trust.run_coverage import CoverageRun

__all__ = [
    "JSON_NAME",
    "HTML_NAME",
    "PatchSource",
    "coverage_document",
    "summary_lines",
    "totals_line",
    "write_reports",
]

FORMAT = 1
JSON_NAME = "coverage.json"
HTML_NAME = "coverage.html"
PATCH_SET = "patch_set"
BASE_LAYER = "base_layer"
_WORDS = {
    "executed": "executed",
    "imported_only": "imported only",
    "not_reached": "not reached",
    "not_measurable": "not measurable",
}


@dataclass(frozen=True)
class PatchSource:
    """One patch file of a device's build and the verdicts on its hunks."""

    backend: str
    prefix: str  # where the backend lies in the build tree ("" for FlagScale)
    kind: str  # patch_set | base_layer
    label: str  # hardware/V_M/B/B.patch, or backends/B for the base layer
    against: str | None  # the base layer's pin; None for a patch set
    verdicts: tuple[HunkVerdict, ...]


def coverage_document(
    device_type: str,
    build: dict[str, Any],
    run: CoverageRun,
    sources: Sequence[PatchSource],
    measurement: dict[str, Any],
) -> dict[str, Any]:
    """The report as data (validated against ``patch-coverage``)."""
    backends: dict[str, dict[str, Any]] = {}
    for source in sources:
        entry = backends.setdefault(
            source.backend,
            {"backend": source.backend, "prefix": source.prefix, "patches": []},
        )
        entry["patches"].append(_patch_entry(source))
    for entry in backends.values():
        entry["totals"] = _sum(p["totals"] for p in entry["patches"])
    ordered = [backends[name] for name in sorted(backends, key=lambda b: (b != "FlagScale", b))]
    document = {
        "version": FORMAT,
        "device_type": device_type,
        "build": build,
        "cases": [
            {
                "case": case.case,
                "config": str(case.config),
                "status": case.status,
                "reason": case.reason,
                "duration_s": round(case.duration, 3),
                "log_dir": str(case.log_dir),
            }
            for case in run.cases
        ],
        "measurement": {
            **measurement,
            "rank_files": run.rank_files,
            "data_file": str(run.data_file),
        },
        "totals": _sum(entry["totals"] for entry in ordered),
        "backends": ordered,
    }
    return validate(document, "patch-coverage", f"coverage report of {device_type}")


def _patch_entry(source: PatchSource) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {}
    for number, verdict in enumerate(source.verdicts, start=1):
        piece = verdict.piece
        entry = files.setdefault(
            piece.file.path,
            {
                "path": piece.file.path,
                "build_path": piece.path,
                "change": _change(piece.file),
                "hunks": [],
            },
        )
        entry["hunks"].append(_hunk_entry(number, verdict))
    for entry in files.values():
        entry["totals"] = _count(h["status"] for h in entry["hunks"])
    return {
        "kind": source.kind,
        "source": source.label,
        "against": source.against,
        "totals": _sum(f["totals"] for f in files.values()),
        "files": list(files.values()),
    }


def _change(section: FilePatch) -> str:
    if section.deleted:
        return "deleted"
    if section.added:
        return "added"
    return "binary" if section.binary else "modified"


def _hunk_entry(number: int, verdict: HunkVerdict) -> dict[str, Any]:
    piece = verdict.piece
    hunk = piece.hunk
    return {
        "index": number,
        "header": hunk.header if hunk else "(whole file)",
        "section": hunk.section if hunk else "",
        "patch_line": hunk.patch_line if hunk else piece.file.patch_line,
        "status": verdict.status,
        "reason": verdict.reason,
        "ranks": list(verdict.ranks),
        "lines": _lines(verdict),
    }


def _lines(verdict: HunkVerdict) -> list[dict[str, Any]]:
    """Every line of the hunk: kind (+ - space \\), text, new-side line, status of + lines."""
    hunk = verdict.piece.hunk
    if hunk is None:
        return []
    added = iter(verdict.added)
    around = {v.line: v for v in verdict.around if v.line is not None}
    lines, new = [], hunk.new_start
    for raw in hunk.lines:
        kind = raw[:1].decode() or " "
        text = raw[1:].decode("utf-8", "replace")
        status = None
        line_no: int | None = None
        if kind == "+":
            judged: LineVerdict | None = next(added, None)  # none for unmeasurable hunks
            status, line_no = (judged.status, judged.line) if judged else (None, new)
            new += 1
        elif kind == " ":
            line_no = new
            marked = around.get(new)
            status = marked.status if marked is not None else None
            new += 1
        lines.append({"kind": kind, "text": text, "line": line_no, "status": status})
    return lines


def _count(statuses: Iterable[str]) -> dict[str, int]:
    counted = Counter(statuses)
    totals = {"hunks": sum(counted.values())}
    totals.update({status: counted.get(status, 0) for status in HUNK_STATUSES})
    return totals


def _sum(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total = Counter()
    for part in parts:
        total.update(part)
    return {key: total.get(key, 0) for key in ("hunks", *HUNK_STATUSES)}


def totals_line(totals: dict[str, int]) -> str:
    """``47 hunks: 25 executed, 12 imported only, 10 not reached, 0 not measurable``."""
    parts = ", ".join(f"{totals[s]} {_WORDS[s]}" for s in HUNK_STATUSES)
    return f"{totals['hunks']} hunk{'s' if totals['hunks'] != 1 else ''}: {parts}"


def summary_lines(document: dict[str, Any], *, per_hunk: bool = True) -> list[str]:
    """The terminal summary: cases, then per backend and patch file, per file and hunk."""
    lines = []
    cases = ", ".join(f"{c['case']} {c['status']}" for c in document["cases"])
    ranks = document["measurement"]["rank_files"]
    lines.append(f"coverage {document['device_type']}: {cases} ({ranks} rank(s) measured)")
    for backend in document["backends"]:
        for patch in backend["patches"]:
            what = patch["source"]
            if patch["kind"] == BASE_LAYER:
                what = f"base layer {patch['source']} vs pin {(patch['against'] or '')[:12]}"
            lines.append(f"  {backend['backend']}  {what}: {totals_line(patch['totals'])}")
            if not per_hunk:
                continue
            for file in patch["files"]:
                lines.append(f"    {file['path']}")
                for hunk in file["hunks"]:
                    status = _WORDS[hunk["status"]]
                    if hunk["status"] == NOT_MEASURABLE and hunk["reason"]:
                        status += f" ({hunk['reason']})"
                    where = f"{hunk['header']} (patch line {hunk['patch_line']})"
                    lines.append(f"      {where:<44} {status}")
    lines.append(f"  total: {totals_line(document['totals'])}")
    return lines


def write_reports(document: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``coverage.json`` and ``coverage.html`` in ``out``, each written all or nothing."""
    from flagscale.trust.report_html import render_html

    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    json_path = write_atomically(out / JSON_NAME, text.encode("utf-8"))
    html_path = write_atomically(out / HTML_NAME, render_html(document).encode("utf-8"))
    return json_path, html_path
