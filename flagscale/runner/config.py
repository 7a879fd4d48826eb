"""A smoke job's YAML configuration: read, checked against its schema and for consistency.

The file format is described by ``schemas/smoke-config.schema.json`` and docs/smoke-training.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flagscale.core.paths import check_relative
from flagscale.core.schema import SchemaError, load_document

__all__ = ["DEFAULT_ENTRY", "MonitorConfig", "SmokeConfig", "Tolerance", "load_config"]

DEFAULT_ENTRY = "flagscale/runner/train_gpt.py"
DEFAULT_BACKEND = "Megatron-LM"


@dataclass(frozen=True)
class Tolerance:
    """Two losses agree when ``|got - expected| <= absolute + relative * |expected|``."""

    relative: float
    absolute: float

    def allows(self, expected: float, got: float) -> bool:
        """True when ``got`` is within this tolerance of ``expected``."""
        return abs(got - expected) <= self.absolute + self.relative * abs(expected)

    def as_dict(self) -> dict[str, float]:
        return {"relative": self.relative, "absolute": self.absolute}

    def __str__(self) -> str:
        return f"relative {self.relative:g}, absolute {self.absolute:g}"


@dataclass(frozen=True)
class MonitorConfig:
    """Which monitors run around the job, and how often the system monitor samples."""

    system: bool = True
    vendor: str = "auto"  # auto | required | off
    interval: float = 0.25


@dataclass(frozen=True)
class SmokeConfig:
    """One smoke case, as read from ``ci/smoke/<case>.yaml``."""

    source: Path
    case: str
    backend: str
    entry: str
    nproc: int
    parallel: dict[str, int]
    model: dict[str, Any]
    train: dict[str, Any]
    data: dict[str, Any]
    tolerance: Tolerance
    timeout: float
    monitors: MonitorConfig = field(default_factory=MonitorConfig)

    def job_spec(self) -> dict[str, Any]:
        """What the training entry reads (``job.json``): everything that shapes the losses."""
        return {
            "protocol": 1,
            "case": self.case,
            "parallel": dict(self.parallel),
            "model": dict(self.model),
            "train": dict(self.train),
            "data": dict(self.data),
        }

    def fingerprint(self) -> str:
        """sha256 of the loss-shaping settings; a golden file records it."""
        shaping = {**self.job_spec(), "entry": self.entry, "nproc": self.nproc}
        shaping.pop("case")
        canonical = json.dumps(shaping, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_MODEL_DEFAULTS = {"dropout": 0.0, "position_embedding": "learned_absolute"}
_TRAIN_DEFAULTS = {"lr": 0.003, "micro_batch": 2}
_DATA_DEFAULTS = {"max_stride": 3}


def load_config(path: Path, *, display: str | None = None) -> SmokeConfig:
    """Read and check a smoke config; errors name the file, the path inside it and the value."""
    source = display or str(path)
    data = load_document(path, "smoke-config", display=source)
    case = data.get("case") or path.name.removesuffix(".yaml").removesuffix(".yml")
    entry = data.get("entry", DEFAULT_ENTRY)
    check_relative(entry, f"{source}: at entry")
    monitors = data.get("monitors", {})
    config = SmokeConfig(
        source=path,
        case=case,
        backend=data.get("backend", DEFAULT_BACKEND),
        entry=entry,
        nproc=data["nproc"],
        parallel=dict(data["parallel"]),
        model={**_MODEL_DEFAULTS, **data["model"]},
        train={**_TRAIN_DEFAULTS, **data["train"]},
        data={**_DATA_DEFAULTS, **data["data"]},
        tolerance=Tolerance(**data["tolerance"]),
        timeout=float(data["timeout"]),
        monitors=MonitorConfig(
            system=monitors.get("system", True),
            vendor=monitors.get("vendor", "auto"),
            interval=float(monitors.get("interval", 0.25)),
        ),
    )
    _check_consistency(config, source)
    return config


def _check_consistency(config: SmokeConfig, source: str) -> None:
    """What a schema cannot say: products and divisibility the parallel layout needs."""
    tensor, data = config.parallel["tensor"], config.parallel["data"]
    model = config.model
    checks = [
        (
            config.nproc == tensor * data,
            "nproc",
            config.nproc,
            f"must equal parallel.tensor × parallel.data = {tensor * data}",
        ),
        (
            model["heads"] % tensor == 0,
            "model.heads",
            model["heads"],
            f"must be divisible by parallel.tensor = {tensor}",
        ),
        (
            model["hidden"] % model["heads"] == 0,
            "model.hidden",
            model["hidden"],
            f"must be divisible by model.heads = {model['heads']}",
        ),
        (
            model["vocab"] % tensor == 0,
            "model.vocab",
            model["vocab"],
            f"must be divisible by parallel.tensor = {tensor}",
        ),
        (
            config.data["generator"] != "arithmetic" or config.data["max_stride"] < model["vocab"],
            "data.max_stride",
            config.data["max_stride"],
            f"must be smaller than model.vocab = {model['vocab']}",
        ),
    ]
    for ok, where, value, reason in checks:
        if not ok:
            raise SchemaError(f"{source}: at {where}: {value!r} {reason}")
