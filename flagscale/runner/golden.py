"""Recorded losses per device type and case (``hardware/<V_M>/smoke/<case>.golden.json``).

Format: ``schemas/golden.schema.json``. Written with sorted keys and a trailing newline, to a
temporary sibling renamed into place, so the same losses give the same bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import SchemaError, validate
from flagscale.runner.config import Tolerance

__all__ = ["Divergence", "Golden", "compare", "golden_path", "load_golden", "write_golden"]


@dataclass(frozen=True)
class Golden:
    """The losses a case gave on a device type, and the tolerance runs are held to."""

    device_type: str
    case: str
    config_sha256: str
    losses: tuple[float, ...]
    tolerance: Tolerance
    recorded_with: dict[str, str | None] = field(default_factory=dict)

    def as_document(self) -> dict:
        document = {
            "version": 1,
            "device_type": self.device_type,
            "case": self.case,
            "config_sha256": self.config_sha256,
            "steps": len(self.losses),
            "losses": list(self.losses),
            "tolerance": self.tolerance.as_dict(),
        }
        if self.recorded_with:
            document["recorded_with"] = dict(self.recorded_with)
        return document


@dataclass(frozen=True)
class Divergence:
    """The first step whose loss is outside the tolerance."""

    step: int
    expected: float
    got: float
    tolerance: Tolerance

    def __str__(self) -> str:
        return (
            f"loss diverges at step {self.step}: expected {self.expected:.8g}, got {self.got:.8g}"
            f" (|difference| {abs(self.got - self.expected):.3g}; tolerance {self.tolerance})"
        )


def golden_path(hardware_root: Path, device_type: str, case: str) -> Path:
    """Where the golden losses of ``case`` on ``device_type`` live."""
    return hardware_root / device_type / "smoke" / f"{case}.golden.json"


def load_golden(path: Path, *, display: str | None = None) -> Golden:
    """Read and check a golden file."""
    source = display or str(path)
    data = validate(_read_json(path, source), "golden", source)
    if data["steps"] != len(data["losses"]):
        raise SchemaError(
            f"{source}: at steps: {data['steps']} does not match the {len(data['losses'])} losses"
        )
    return Golden(
        device_type=data["device_type"],
        case=data["case"],
        config_sha256=data["config_sha256"],
        losses=tuple(float(x) for x in data["losses"]),
        tolerance=Tolerance(**data["tolerance"]),
        recorded_with=dict(data.get("recorded_with", {})),
    )


def _read_json(path: Path, source: str) -> object:
    """JSON proper (YAML would read ``1e-05`` as a string)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SchemaError(f"{source}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{source}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from exc


def write_golden(path: Path, golden: Golden) -> None:
    """Write ``golden`` atomically (temporary sibling, then rename)."""
    if not all(math.isfinite(x) for x in golden.losses):
        raise FlagScaleError(f"{path}: refusing to record non-finite losses")
    document = validate(golden.as_document(), "golden", str(path))
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    write_atomically(path, text.encode("utf-8"))


def compare(golden: Golden, losses: Sequence[float]) -> Divergence | None:
    """The first step (1-based) whose loss is outside the golden tolerance, if any."""
    for step, (expected, got) in enumerate(zip(golden.losses, losses, strict=True), start=1):
        if not golden.tolerance.allows(expected, got):
            return Divergence(step, expected, got, golden.tolerance)
    return None
