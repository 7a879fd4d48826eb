"""What a refresh did, for people and for other tools: a terminal table and a JSON document.

The document (schema ``refresh-report``) says which pin moved, what became of each base layer
file and of each file of every device type's sets (the classes of ``flagscale.refresh.carry``),
which device types were not refreshed and why, the conflict a stopped refresh waits on, and the
smoke jobs. The last one is kept in ``.git/flagscale/refresh/report.json``; ``inv matrix``
shows it beside the sets it concerns.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flagscale.core.atomic import write_atomically
from flagscale.core.schema import validate
from flagscale.refresh.carry import CLASSES
from flagscale.refresh.prove import CaseProof, loss_table
from flagscale.refresh.state import REPORT_NAME, load_state, refresh_dir
from flagscale.upstream.workspace import Workspace

__all__ = [
    "SCHEMA_VERSION",
    "counted",
    "notable",
    "build_report",
    "last_report",
    "matrix_view",
    "render_report",
    "write_report",
]

SCHEMA_VERSION = 1
_SHORT = {
    "unchanged": "UNCH",
    "moved": "MOVED",
    "merged": "MERGED",
    "already_upstream": "UPSTR",
    "target_gone": "GONE",
    "conflict": "CONFL",
}


def build_report(state: dict[str, Any], status: str) -> dict[str, Any]:
    """The report document of a refresh's state (``status``: done, stopped, smoke_failed)."""
    move = state.get("move") or {}
    devices = []
    summary = {name: 0 for name in CLASSES}
    for device in state.get("order", []):
        entry = state["devices"].get(device, {"status": "pending", "sets": {}})
        sets = []
        for backend, item in sorted(entry.get("sets", {}).items()):
            counts = item.get("counts") or _counts(item.get("files", []))
            for name, count in counts.items():
                summary[name] += count
            sets.append(
                {
                    "backend": backend,
                    "status": item["status"],
                    "origin": item.get("origin", ""),
                    "encrypted": bool(item.get("encrypted")),
                    "files": item.get("files", []),
                    "summary": counts,
                }
            )
        devices.append(
            {
                "device_type": device,
                "status": entry["status"],
                "reason": entry.get("reason", ""),
                "commit": entry.get("commit"),
                "sets": sets,
                "smoke": entry.get("smoke", []),
            }
        )
    layer = state.get("layer")
    document = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "backend": state["backend"],
        "kind": move.get("kind"),
        "from": {"pin": move.get("old_pin"), "label": move.get("old_label") or "current pin"},
        "to": {
            "pin": move.get("new_pin"),
            "label": move.get("new_label") or state["request"]["to"],
        },
        "status": status,
        "flagscale": {
            "before": state["start"]["head"],
            "after": (state.get("published") or {}).get("new"),
        },
        "layer": {"status": layer["status"], "files": layer["files"]} if layer else None,
        "devices": devices,
        "conflict": _conflict(state),
        "summary": summary,
        "notes": list(state.get("notes", [])),
    }
    return validate(document, "refresh-report", "refresh report")


def notable(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The files worth a line: all but those unchanged (they are only counted)."""
    return [f for f in files if f["class"] != "unchanged" or not f["resolved"]]


def counted(files: list[dict[str, Any]]) -> dict[str, int]:
    """How many files of each class."""
    return _counts(files)


def _counts(files: list[dict[str, Any]]) -> dict[str, int]:
    counts = {name: 0 for name in CLASSES}
    for item in files:
        counts[item["class"]] += 1
    return counts


def _conflict(state: dict[str, Any]) -> dict[str, Any] | None:
    conflict = state.get("conflict")
    if not conflict:
        return None
    return {
        "stage": conflict["stage"],
        "title": conflict["title"],
        "checkout": conflict["folder"],
        "files": conflict["files"],
    }


def write_report(ws: Workspace, document: dict[str, Any], json_path: Path | None) -> None:
    """Keep the report as the last one (for ``inv matrix``) and write it where asked."""
    text = (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    write_atomically(refresh_dir(ws) / REPORT_NAME, text)
    if json_path is not None:
        write_atomically(Path(json_path), text)


def last_report(ws: Workspace) -> dict[str, Any] | None:
    """The report of the last refresh in this repository, if any (and readable)."""
    path = refresh_dir(ws) / REPORT_NAME
    try:
        return validate(json.loads(path.read_text(encoding="utf-8")), "refresh-report", str(path))
    except (OSError, ValueError):
        return None


def render_report(document: dict[str, Any]) -> str:
    """The report as text: the move, the base layer, a table of the sets, then the details."""
    move = f"{document['from']['label']} -> {document['to']['label']}"
    lines = [f"refresh {document['backend']} {move}: {document['status'].replace('_', ' ')}"]
    layer = document.get("layer")
    if layer:
        counts = _counts(layer["files"])
        shown = ", ".join(f"{n} {c.replace('_', ' ')}" for c, n in counts.items() if n)
        lines.append(f"base layer: {layer['status']} ({shown or 'no files'})")
    rows = [["DEVICE TYPE", "BACKEND", "SET", "FILES", *_SHORT.values(), "SMOKE"]]
    for device in document["devices"]:
        smoke = _smoke_word(device["smoke"])
        if not device["sets"]:
            rows.append([device["device_type"], "-", device["status"], "", *[""] * 6, smoke])
        for item in device["sets"]:
            counts = item["summary"]
            rows.append(
                [
                    device["device_type"],
                    item["backend"],
                    item["status"],
                    str(sum(counts.values())),
                    *[str(counts[c]) for c in _SHORT],
                    smoke,
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines += _details(document)
    return "\n".join(lines) + "\n"


def _smoke_word(proofs: list[dict[str, Any]]) -> str:
    if not proofs:
        return "-"
    statuses = {p["status"] for p in proofs}
    for word in ("error", "failed", "recorded", "passed"):
        if word in statuses:
            return word
    return statuses.pop()


def _details(document: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    layer = document.get("layer") or {"files": []}
    for item in layer["files"]:
        if item["class"] != "unchanged":
            lines += _file_lines(f"base layer {item['path']}", item)
    for device in document["devices"]:
        name = device["device_type"]
        if device["reason"]:
            lines.append(f"{name}: {device['status'].replace('_', ' ')}: {device['reason']}")
        for item in device["sets"]:
            for entry in item["files"]:
                if entry["class"] != "unchanged":
                    lines += _file_lines(f"{name} {item['backend']} {entry['path']}", entry)
        for proof in device["smoke"]:
            if proof["status"] in ("failed", "error"):
                lines.append(f"{name}/{proof['case']}: smoke {proof['status']}: {proof['reason']}")
                lines += loss_table(_proof(proof))
    conflict = document.get("conflict")
    if conflict:
        lines.append(f"stopped at {conflict['title']}:")
        for entry in conflict["files"]:
            if entry["class"] != "unchanged":
                lines += _file_lines(f"  {entry['path']}", entry)
        lines.append(f"settle it in {conflict['checkout']}")
    for note in document.get("notes", []):
        lines.append(f"note: {note}")
    return ["", *lines] if lines else []


def _proof(data: dict[str, Any]) -> CaseProof:
    fields = ("case", "status", "reason", "result", "losses", "golden", "tolerance")
    return CaseProof(**{name: data[name] for name in fields})


def _file_lines(where: str, entry: dict[str, Any]) -> list[str]:
    word = entry["class"].replace("_", " ")
    if not entry["resolved"]:
        word += ", needs a hand"
    moved = f" -> {entry['new_path']}" if entry.get("new_path") else ""
    detail = f": {entry['detail']}" if entry.get("detail") else ""
    lines = [f"{where}{moved}: {word}{detail}"]
    for hunk in entry.get("hunks", []):
        if hunk["class"] == "unchanged":
            continue
        offset = f" by {hunk['offset']:+d} lines" if hunk["class"] == "moved" else ""
        lines.append(f"    hunk {hunk['header']}: {hunk['class'].replace('_', ' ')}{offset}")
        lines += [f"      collided with: {u}" for u in hunk.get("upstream", [])]
    if not entry.get("hunks"):
        lines += [f"    upstream: {u}" for u in entry.get("upstream", [])]
    return lines


def matrix_view(ws: Workspace) -> dict[str, Any] | None:
    """What ``inv matrix`` shows of refreshes: the one in progress, else the last report.

    ``{"backend", "from", "to", "status", "sets": {"<device>/<backend>": {"status", "detail"}}}``
    """
    state = load_state(ws)
    if state is not None:
        status = "stopped" if state.get("conflict") else "in_progress"
        document = build_report(state, status)
    else:
        document = last_report(ws)
    if document is None:
        return None
    sets: dict[str, dict[str, str]] = {}
    for device in document["devices"]:
        name = device["device_type"]
        smoke = _smoke_word(device["smoke"])
        for item in device["sets"]:
            counts = ", ".join(
                f"{n} {c.replace('_', ' ')}" for c, n in item["summary"].items() if n
            )
            detail = counts + (f"; smoke {smoke}" if smoke != "-" else "")
            sets[f"{name}/{item['backend']}"] = {"status": item["status"], "detail": detail}
        if device["status"] in ("not_refreshed", "pending") or not device["sets"]:
            key = f"{name}/{document['backend']}"
            sets.setdefault(key, {"status": device["status"], "detail": device["reason"]})
    conflict = document.get("conflict")
    if conflict and "/" in conflict["stage"]:
        sets[conflict["stage"]] = {
            "status": "conflict",
            "detail": f"settle it in {conflict['checkout']}",
        }
    return {
        "backend": document["backend"],
        "from": document["from"]["label"],
        "to": document["to"]["label"],
        "status": document["status"],
        "sets": sets,
    }
