"""A smoke job's outcome on disk: ``result.json`` (schema smoke-result) and ``loss.png``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import validate
from flagscale.runner.golden import Golden

__all__ = ["PLOT_NAME", "RESULT_NAME", "json_losses", "plot_losses", "write_result"]

RESULT_NAME = "result.json"
PLOT_NAME = "loss.png"


def json_losses(losses: Sequence[float]) -> list[float | None]:
    """Losses as JSON allows them: NaN and infinities become null."""
    return [x if math.isfinite(x) else None for x in losses]


def write_result(log_dir: Path, document: dict[str, Any]) -> Path:
    """Validate and write ``result.json`` atomically; returns its path."""
    path = log_dir / RESULT_NAME
    validate(document, "smoke-result", str(path))
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_atomically(path, text.encode("utf-8"))
    return path


def plot_losses(path: Path, losses: Sequence[float], golden: Golden | None, title: str) -> Path:
    """Draw the loss per step, with the golden curve and its tolerance band when there is one."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as exc:
        from flagscale.runner.extra import install_command

        raise FlagScaleError(
            "matplotlib is needed for the loss plot",
            hint=f"install the smoke extra: {install_command()}",
        ) from exc
    figure, axes = pyplot.subplots(figsize=(7, 4), dpi=100)
    try:
        if golden is not None:
            steps = range(1, len(golden.losses) + 1)
            band = [
                golden.tolerance.absolute + golden.tolerance.relative * abs(x)
                for x in golden.losses
            ]
            axes.fill_between(
                steps,
                [x - b for x, b in zip(golden.losses, band, strict=True)],
                [x + b for x, b in zip(golden.losses, band, strict=True)],
                color="tab:orange",
                alpha=0.25,
                label="golden tolerance",
            )
            axes.plot(steps, golden.losses, "--", color="tab:orange", label="golden", zorder=3)
        axes.plot(
            range(1, len(losses) + 1),
            losses,
            "o-",
            color="tab:blue",
            markersize=3,
            label="this run",
        )
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, format="png", metadata={"Software": None})
    finally:
        pyplot.close(figure)
    return path
