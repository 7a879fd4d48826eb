"""The compatibility matrix as one self-contained HTML page: inline CSS, no scripts, no assets.

The page is a pure function of the matrix document (``generated_at`` is left out), so the same
repository state and smoke results give the same bytes.
"""

from __future__ import annotations

from html import escape
from typing import Any

from flagscale.release.matrix_notes import row_notes

__all__ = ["render_html"]

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 2rem; color: #1a1a1a; background: #ffffff; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
p.meta { margin: .1rem 0; color: #444; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
table { border-collapse: collapse; margin-top: 1rem; }
th, td { border: 1px solid #c8c8c8; padding: .35rem .6rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.name { white-space: nowrap; }
td.status { font-weight: 600; white-space: nowrap; }
.applies, .clean, .passed { background: #d8f3dc; color: #0b4d1e; }
.drifting { background: #fff1c2; color: #5c4300; }
.recorded { background: #dcecff; color: #0b3a6e; }
.conflicts, .conflicting, .failed, .error { background: #ffd9d9; color: #7a0b0b; }
.unknown, .none { background: #ececec; color: #333333; }
.refresh-unchanged, .refresh-carried, .refresh-refreshed, .done {
  background: #d8f3dc; color: #0b4d1e; }
.refresh-conflict, .refresh-not_refreshed, .smoke_failed, .stopped {
  background: #ffd9d9; color: #7a0b0b; }
.refresh-pending, .in_progress { background: #fff1c2; color: #5c4300; }
td.detail { color: #444; font-size: 13px; max-width: 36rem; }
ul.summary { list-style: none; padding: 0; display: flex; gap: .6rem; margin: .6rem 0 0; }
ul.summary li { padding: .2rem .6rem; border-radius: .3rem; font-weight: 600; }
ul.summary li.zero { background: #f6f6f6; color: #555555; font-weight: 400; }
dl.legend { display: grid; grid-template-columns: max-content 1fr; gap: .2rem .6rem;
            margin: .8rem 0 0; font-size: 13px; }
dl.legend dt { padding: 0 .4rem; border-radius: .2rem; }
dl.legend dd { margin: 0; color: #444; }
"""

_LABELS = {
    "applies": "applies",
    "conflicts": "conflicts",
    "unknown": "unknown",
    "error": "error",
}


def render_html(document: dict[str, Any]) -> str:
    """The HTML page for a matrix document (the JSON that ``inv matrix --json`` writes)."""
    refresh = document.get("refresh")
    rows = "\n".join(_row(row, with_refresh=bool(refresh)) for row in document["rows"])
    pins = ", ".join(
        f"{escape(name)} <code>{escape(pin)}</code>"
        for name, pin in sorted(document["pins"].items())
    )
    columns = 9 if refresh else 8
    last_columns = "<th>Last smoke</th>" + ("<th>Refresh</th>" if refresh else "")
    refresh_meta = _refresh_meta(refresh)
    results = escape(document.get("results_dir") or "none given")
    empty = f'<tr><td colspan="{columns}">no patch sets in the history</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>FlagScale compatibility matrix</title>
<style>{_CSS}</style>
</head>
<body>
<h1>FlagScale compatibility matrix</h1>
<p class="meta">FlagScale commit <code>{escape(document["flagscale_commit"])}</code></p>
<p class="meta">Current pins: {pins or "none"}</p>
<p class="meta">Smoke results: {results}</p>{refresh_meta}
{_summary(document["summary"])}
{_legend()}
<table id="matrix">
<thead><tr><th>Device type</th><th>Backend</th><th>Tasks</th><th>Recorded base</th>
<th>On its base</th><th>On current pins</th><th>Verdict</th>{last_columns}</tr></thead>
<tbody>
{rows or empty}
</tbody>
</table>
</body>
</html>
"""


def _summary(summary: dict[str, int]) -> str:
    """One badge per verdict, coloured by its verdict only when there is something to count."""
    items = "".join(
        f'<li class="{escape(name) if count else "zero"}">{escape(name)}: {count}</li>'
        for name, count in summary.items()
    )
    return f'<ul class="summary">{items}</ul>'


_LEGEND = (
    ("clean", "applies on its base and on today's pins"),
    ("drifting", "applies on its base, not on today's pins: regenerate it on the current pins"),
    ("conflicting", "does not apply even on its base: the vendor must make it again"),
    (
        "unknown",
        "could not be checked (encrypted without a key, its trees missing, or a stale history"
        " entry)",
    ),
)


def _legend() -> str:
    items = "".join(
        f'<dt class="status {name}">{name}</dt><dd>{escape(meaning)}</dd>'
        for name, meaning in _LEGEND
    )
    return f'<dl class="legend">{items}</dl>'


def _refresh_meta(refresh: dict[str, Any] | None) -> str:
    if not refresh:
        return ""
    status = refresh["status"].replace("_", " ")
    step = f"{refresh['from']} -> {refresh['to']}"
    return (
        f'\n<p class="meta">Refresh: {escape(refresh["backend"])} {escape(step)}:'
        f' <span class="status {escape(refresh["status"])}">{escape(status)}</span></p>'
    )


def _refresh_cell(row: dict[str, Any]) -> str:
    found = row.get("refresh")
    if found is None:
        return '<td class="status none">-</td>'
    status = found["status"]
    return (
        f'<td class="status refresh-{escape(status)}" title="{escape(found["detail"])}">'
        f"{escape(status.replace('_', ' '))}</td>"
    )


def _row(row: dict[str, Any], *, with_refresh: bool = False) -> str:
    smoke = row["smoke"]
    smoke_text = smoke["status"]
    if smoke.get("case"):
        smoke_text += f" ({smoke['case']}, {smoke['finished_at']})"
    smoke_title = smoke.get("reason") or ""
    base = row["flagscale_base"] or "-"
    cells = [
        f'<td class="name">{escape(row["device_type"])}</td>',
        f'<td class="name">{escape(row["backend"])}</td>',
        f"<td>{escape(', '.join(row['tasks']))}</td>",
        f'<td><code title="{escape(base)}">{escape(base[:12])}</code></td>',
        _check_cell(row["on_base"]),
        _check_cell(row["on_current"]),
        f'<td class="status {escape(row["verdict"])}">{escape(row["verdict"])}</td>',
        f'<td class="status {escape(smoke["status"])}" title="{escape(smoke_title)}">'
        f"{escape(smoke_text)}</td>",
    ]
    if with_refresh:
        cells.append(_refresh_cell(row))
    line = (
        f'<tr data-device="{escape(row["device_type"])}" data-backend="{escape(row["backend"])}">'
        + "".join(cells)
        + "</tr>"
    )
    notes = "<br>".join(escape(note) for note in row_notes(row))
    if with_refresh and row.get("refresh", {}).get("detail"):
        detail = f"refresh: {escape(row['refresh']['detail'])}"
        notes = f"{notes}<br>{detail}" if notes else detail
    if notes:
        span = 8 if with_refresh else 7
        line += f'\n<tr class="note"><td></td><td class="detail" colspan="{span}">{notes}</td></tr>'
    return line


def _check_cell(check: dict[str, Any]) -> str:
    status = check["status"]
    text = _LABELS.get(status, status)
    if check.get("reason"):
        text += f" ({check['reason']})"
    return f'<td class="status {escape(status)}">{escape(text)}</td>'
