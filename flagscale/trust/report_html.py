"""The patch coverage report as one self-contained HTML page (no scripts, no outside files).

Every patch file of the device is shown as the patch itself, hunk by hunk, each added line
coloured by how far it got: green ran, amber imported only (its module ran, the line did not),
red never reached (its module was never imported), grey not measurable. Each hunk's header
carries its status; a table on top sums it all up per backend and patch file.
"""

from __future__ import annotations

from html import escape
from typing import Any

from flagscale.trust.hunk_coverage import HUNK_STATUSES

__all__ = ["render_html"]

_WORDS = {
    "executed": "executed",
    "imported_only": "imported only",
    "not_reached": "not reached",
    "not_measurable": "not measurable",
}
_LINE_CLASS = {
    "executed": "executed",
    "defined": "imported_only",
    "missed": "imported_only",
    "not_reached": "not_reached",
    "replaced": "not_measurable",
    None: "not_measurable",
}

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 6px; }
h3 { font-size: 15px; margin: 18px 0 4px; font-family: ui-monospace, monospace; }
p.meta { color: #555; margin: 2px 0; }
table.summary { border-collapse: collapse; margin: 12px 0; }
table.summary th, table.summary td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
table.summary th:first-child, table.summary td:first-child { text-align: left; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; border: 1px solid #bbb; }
section.hunk { margin: 8px 0 14px; border: 1px solid #ccc; }
.hunk-head { padding: 3px 8px; font-family: ui-monospace, monospace; font-weight: 600; }
table.diff { border-collapse: collapse; width: 100%; font: 12px/1.35 ui-monospace, monospace; }
table.diff td { padding: 0 6px; white-space: pre; vertical-align: top; }
table.diff td.no { color: #888; text-align: right; width: 4em; }
tr.context td.code { color: #444; }
tr.removed td.code { background: #f4f4f4; color: #999; text-decoration: line-through; }
.executed { background: #d8f3dc; }
.imported_only { background: #fff1c2; }
.not_reached { background: #ffd9d9; }
.not_measurable { background: #ececec; }
"""


def render_html(document: dict[str, Any]) -> str:
    """The whole page for a ``patch-coverage`` document."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Patch coverage: {escape(document['device_type'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Patch coverage: {escape(document['device_type'])}</h1>",
        *_meta(document),
        _legend(),
        _summary(document),
    ]
    for backend in document["backends"]:
        for patch in backend["patches"]:
            parts.append(_patch(backend, patch))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _meta(document: dict[str, Any]) -> list[str]:
    build = document["build"]
    cases = "; ".join(
        f"{escape(c['case'])}: {escape(c['status'])} in {c['duration_s']:.1f} s"
        for c in document["cases"]
    )
    measured = document["measurement"]
    return [
        f'<p class="meta">Build tree <code>{escape(build["path"])}</code>, patch sets of'
        f" <code>{escape(build['history_commit'][:12])}</code> on FlagScale"
        f" <code>{escape(build['flagscale_base'][:12])}</code></p>",
        f'<p class="meta">Smoke jobs: {cases}. {measured["rank_files"]} rank data file(s),'
        f" coverage.py {escape(measured['coverage'])}"
        f" ({escape(measured['core'] or 'default core')}).</p>",
    ]


def _legend() -> str:
    items = "".join(f'<span class="{status}">{_WORDS[status]}</span>' for status in HUNK_STATUSES)
    return f'<p class="legend">{items}</p>'


def _summary(document: dict[str, Any]) -> str:
    head = "".join(f"<th>{_WORDS[s]}</th>" for s in HUNK_STATUSES)
    rows = []
    for backend in document["backends"]:
        for patch in backend["patches"]:
            rows.append(_summary_row(f"{backend['backend']}: {_title(patch)}", patch["totals"]))
    rows.append(_summary_row("total", document["totals"]))
    return (
        f'<table class="summary"><tr><th>patch</th><th>hunks</th>{head}</tr>'
        + "".join(rows)
        + "</table>"
    )


def _summary_row(name: str, totals: dict[str, int]) -> str:
    cells = "".join(f'<td class="{s if totals[s] else ""}">{totals[s]}</td>' for s in HUNK_STATUSES)
    return f"<tr><td>{escape(name)}</td><td>{totals['hunks']}</td>{cells}</tr>"


def _title(patch: dict[str, Any]) -> str:
    if patch["kind"] == "base_layer":
        return f"base layer {patch['source']} vs pin {(patch['against'] or '')[:12]}"
    return patch["source"]


def _patch(backend: dict[str, Any], patch: dict[str, Any]) -> str:
    parts = [
        f'<h2 data-patch="{escape(patch["source"])}">{escape(backend["backend"])}:'
        f" {escape(_title(patch))}</h2>"
    ]
    for file in patch["files"]:
        parts.append(
            f'<h3 data-file="{escape(file["build_path"])}">{escape(file["path"])}'
            f" ({escape(file['change'])})</h3>"
        )
        for hunk in file["hunks"]:
            parts.append(_hunk(file, hunk))
    return "\n".join(parts)


def _hunk(file: dict[str, Any], hunk: dict[str, Any]) -> str:
    status = hunk["status"]
    label = _WORDS[status] + (f": {hunk['reason']}" if hunk["reason"] else "")
    ranks = f" — ran on {', '.join(hunk['ranks'])}" if hunk["ranks"] else ""
    head = (
        f'<div class="hunk-head {status}">{escape(hunk["header"])} {escape(hunk["section"])}'
        f" · patch line {hunk['patch_line']} · {escape(label)}{escape(ranks)}</div>"
    )
    rows = [_line(line, status) for line in hunk["lines"]]
    table = f'<table class="diff">{"".join(rows)}</table>' if rows else ""
    return (
        f'<section class="hunk" data-hunk="{hunk["index"]}" data-status="{status}"'
        f' data-file="{escape(file["build_path"])}">{head}{table}</section>'
    )


def _line(line: dict[str, Any], hunk_status: str) -> str:
    kind, number = line["kind"], line["line"]
    shown = "" if number is None else str(number)
    code = escape(line["text"]) or " "
    if kind == "+":
        colour = _LINE_CLASS.get(line["status"], "not_measurable")
        if hunk_status == "not_measurable":
            colour = "not_measurable"
        return (
            f'<tr class="added {colour}" data-line-status="{line["status"] or ""}">'
            f'<td class="no">{shown}</td><td class="code">+{code}</td></tr>'
        )
    if kind == "-":
        return f'<tr class="removed"><td class="no"></td><td class="code">-{code}</td></tr>'
    if kind == "\\":
        return f'<tr class="context"><td class="no"></td><td class="code">\\{code}</td></tr>'
    return f'<tr class="context"><td class="no">{shown}</td><td class="code"> {code}</td></tr>'
