"""What an import did, set by set: the terminal table and the JSON report (schemas/import-report).

Each vendor set (device type, backend, the FlagScale commit holding it) ends as one of:

* ``identical``: converted to a native patch set whose build tree equals FlagScale's, by tree hash;
* ``differs``: the converted set's build tree is not FlagScale's; the files that differ are listed
  and the set is not recorded;
* ``carried``: kept as FlagScale stored it (still encrypted: its key was not given, or did not
  open it); recorded in the history, built as a legacy set once its key is given;
* ``skipped``: not brought in, with the reason (FlagScale's own tool cannot apply it, an older
  history entry, a backend FlagScale does not declare, another set of its line differs).

The base layer of each backend is reported the same way (identical or differs).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flagscale.core.atomic import write_atomically
from flagscale.core.schema import validate

__all__ = ["SCHEMA_VERSION", "ImportReport", "LayerRow", "SetRow", "render_table", "write_report"]

SCHEMA_VERSION = 1
STATUSES = ("identical", "differs", "carried", "skipped")


@dataclass
class SetRow:
    """One vendor set of the FlagScale checkout and what became of it."""

    device_type: str
    backend: str
    source_commit: str  # the FlagScale commit holding the set (its history entry)
    layout: str  # per-file, single-file, oldest, or native
    encrypted: bool
    tasks: list[str]
    status: str
    reason: str = ""
    differing: list[str] = field(default_factory=list)
    whitespace_fixed: list[str] = field(default_factory=list)  # files FlagScale applied with fix
    tree: str | None = None  # FlagScale's tree (hash over path, mode and content)
    built_tree: str | None = None  # this workspace's build of the converted set
    bytes_before: int = 0
    bytes_after: int = 0


@dataclass
class LayerRow:
    """One backend's base layer: FlagScale's base patches as whole files over the same pin."""

    backend: str
    pin: str
    source: str  # submodule or release
    status: str
    patches: int
    files: int
    deletions: int
    differing: list[str] = field(default_factory=list)
    tree: str | None = None  # FlagScale's unpatched tree
    built_tree: str | None = None  # our pin + base layer
    bytes_before: int = 0
    bytes_after: int = 0


@dataclass
class ImportReport:
    """The whole import."""

    source: str  # the FlagScale checkout's path
    source_commit: str
    workspace_commit: str = ""
    base_layer: list[LayerRow] = field(default_factory=list)
    sets: list[SetRow] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """What differs from FlagScale (sets and base layers), as ``device/backend`` names."""
        rows = [f"{r.device_type}/{r.backend}" for r in self.sets if r.status == "differs"]
        return rows + [f"base layer {r.backend}" for r in self.base_layer if r.status == "differs"]

    def to_json(self) -> dict[str, Any]:
        before = sum(r.bytes_before for r in self.base_layer) + sum(
            r.bytes_before for r in self.sets
        )
        after = sum(r.bytes_after for r in self.base_layer) + sum(r.bytes_after for r in self.sets)
        document = {
            "schema_version": SCHEMA_VERSION,
            "source": {"path": self.source, "commit": self.source_commit},
            "workspace_commit": self.workspace_commit,
            "base_layer": [asdict(row) for row in self.base_layer],
            "sets": [asdict(row) for row in self.sets],
            "summary": {s: sum(r.status == s for r in self.sets) for s in STATUSES},
            "size": {"before": before, "after": after},
        }
        return validate(document, "import-report", "import report")


def write_report(report: ImportReport, path: Path) -> None:
    """The JSON report, written all at once."""
    text = json.dumps(report.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomically(path, text.encode("utf-8"))


def render_table(report: ImportReport) -> str:
    """The report as an aligned text table, then the summary and the sizes."""
    header = ["SET", "TASKS", "LAYOUT", "RESULT", "DETAIL"]
    rows = [
        [f"base layer {r.backend}", "", r.source, r.status, _layer_detail(r)]
        for r in report.base_layer
    ]
    rows += [
        [
            f"{r.device_type}/{r.backend}",
            ",".join(r.tasks),
            r.layout + (" encrypted" if r.encrypted else ""),
            r.status,
            _set_detail(r),
        ]
        for r in report.sets
    ]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)), line[-1]]
        ).rstrip()
        for line in [header, *rows]
    ]
    data = report.to_json()
    summary = ", ".join(f"{count} {name}" for name, count in data["summary"].items())
    lines.append(f"{len(report.sets)} vendor sets from {report.source_commit[:12]}: {summary}")
    lines.append(
        f"data: {_size(data['size']['before'])} in FlagScale's layout (base patches and vendor"
        f" sets), {_size(data['size']['after'])} after (base layer and patch sets)"
    )
    return "\n".join(lines) + "\n"


def _layer_detail(row: LayerRow) -> str:
    text = f"{row.patches} patches -> {row.files} files, {row.deletions} deletions"
    if row.differing:
        text += f"; differs in {_listed(row.differing)}"
    return text


def _set_detail(row: SetRow) -> str:
    parts = [row.reason] if row.reason else []
    if row.differing:
        parts.append(f"differs in {_listed(row.differing)}")
    if row.whitespace_fixed:
        parts.append(f"{len(row.whitespace_fixed)} file(s) took the --whitespace=fix fallback")
    return "; ".join(parts)


def _listed(paths: list[str]) -> str:
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024 or unit == "MiB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)
