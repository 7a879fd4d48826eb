"""The newest smoke-job result per device type, read from the smoke runner's ``result.json``.

The runner (``flagscale.runner.smoke``) writes ``result.json`` (schema ``smoke-result``) into
each job's log folder, by default ``logs/smoke/<device type>/<case>/``. The matrix searches a
results folder recursively and reads only ``device_type``, ``case``, ``status`` (``passed``,
``failed``, ``recorded``, ``error``), ``reason`` and ``finished_at``; the newest run per device
type (by ``finished_at``; for results written before it was recorded, by the file's modification
time: the runner writes it last, atomically) is that device type's last result.

A file that is not a JSON object naming a device type is skipped, never fatal: an interrupted
run must not break the matrix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError

__all__ = ["DEFAULT_RESULTS", "RESULT_FILE", "SmokeResult", "latest_smoke_results"]

RESULT_FILE = "result.json"
DEFAULT_RESULTS = "logs/smoke"
_STATUSES = ("passed", "failed", "recorded", "error")
_UTC_SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@dataclass(frozen=True)
class SmokeResult:
    """One smoke run's outcome for a device type."""

    device_type: str
    status: str
    case: str | None
    reason: str | None
    finished_at: str  # when the run ended (result.json's finished_at, else its mtime), UTC
    path: str  # the result file, relative to the results folder
    mtime: float

    @property
    def order(self) -> tuple[str, float, str]:
        """Sorts results by when their run ended (ties: file time, then path)."""
        return (self.finished_at, self.mtime, self.path)

    def to_json(self) -> dict[str, Any]:
        """The result as the matrix JSON stores it."""
        return {
            "status": self.status,
            "case": self.case,
            "reason": self.reason,
            "finished_at": self.finished_at,
            "result": self.path,
        }


def latest_smoke_results(folder: Path) -> dict[str, SmokeResult]:
    """Device type → its newest smoke result found under ``folder`` (searched recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlagScaleError(
            f"smoke results folder {folder} does not exist",
            hint="give the smoke runner's log folder with --results (default logs/smoke)",
        )
    latest: dict[str, SmokeResult] = {}
    for path in sorted(folder.rglob(RESULT_FILE)):
        result = _read_result(folder, path)
        if result is None:
            continue
        current = latest.get(result.device_type)
        if current is None or result.order > current.order:
            latest[result.device_type] = result
    return latest


def _read_result(folder: Path, path: Path) -> SmokeResult | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        mtime = os.stat(path).st_mtime
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("device_type"), str):
        return None
    status = data.get("status")
    case, reason = data.get("case"), data.get("reason")
    finished = data.get("finished_at")
    if not (isinstance(finished, str) and _UTC_SECOND.match(finished)):
        finished = datetime.fromtimestamp(int(mtime), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return SmokeResult(
        device_type=data["device_type"],
        status=status if status in _STATUSES else "error",
        case=case if isinstance(case, str) else None,
        reason=reason if isinstance(reason, str) else None,
        finished_at=finished,
        path=path.relative_to(folder).as_posix(),
        mtime=mtime,
    )
