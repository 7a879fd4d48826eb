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

__all__ = [
    "PLOT_NAME",
    "RESULT_NAME",
    "json_losses",
    "plot_losses",
    "plot_verdict",
    "write_result",
]

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


def plot_verdict(status: str, divergence: dict[str, Any] | None) -> str:
    """The words the plot's title ends with: what this run's status means."""
    if status == "passed":
        return "PASSED: every step within the golden tolerance"
    if status == "recorded":
        return "RECORDED: these losses are now the golden values (not compared)"
    if status == "failed" and divergence is not None:
        return f"FAILED: step {divergence['step']} leaves the golden tolerance"
    return "ERROR: the job did not finish (see result.json)"


def plot_losses(
    path: Path, losses: Sequence[float], golden: Golden | None, title: str, verdict: str
) -> Path:
    """Draw the loss per step beside the golden curve, and each step's distance from it.

    The upper panel shows both curves; the lower one shows ``loss - golden`` with the tolerance
    band around zero, where the band is visible (beside losses of ~5 a relative tolerance of
    1e-4 is thinner than a line). The title ends with the verdict in capitals, coloured, and the
    PNG's Title metadata holds the same words.
    """
    pyplot = _pyplot()
    panels = 2 if golden is not None else 1
    figure, axes = pyplot.subplots(
        panels, 1, figsize=(7, 2.6 + 2.2 * panels), dpi=100, sharex=True, squeeze=False
    )
    try:
        _draw_losses(axes[0][0], losses, golden)
        if golden is not None:
            _draw_differences(axes[1][0], losses, golden)
        axes[-1][0].set_xlabel("step")
        axes[-1][0].xaxis.get_major_locator().set_params(integer=True)
        colour = {"PASSED": "tab:green", "RECORDED": "tab:blue"}.get(verdict.split(":")[0], "red")
        figure.suptitle(f"{title}\n{verdict}", color=colour, fontweight="bold")
        figure.tight_layout()
        metadata = {"Software": None, "Title": f"{title}: {verdict}"}
        figure.savefig(path, format="png", metadata=metadata)
    finally:
        pyplot.close(figure)
    return path


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as exc:
        from flagscale.core.install import install_command

        raise FlagScaleError(
            "matplotlib is needed for the loss plot",
            hint=f"install the smoke extra: {install_command('smoke')}",
        ) from exc
    return pyplot


def _draw_losses(axes: Any, losses: Sequence[float], golden: Golden | None) -> None:
    if golden is not None:
        steps = range(1, len(golden.losses) + 1)
        axes.plot(steps, golden.losses, "--", color="tab:orange", label="golden", zorder=3)
    axes.plot(
        range(1, len(losses) + 1), losses, "o-", color="tab:blue", markersize=3, label="this run"
    )
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    axes.legend()


def _draw_differences(axes: Any, losses: Sequence[float], golden: Golden) -> None:
    steps = list(range(1, len(golden.losses) + 1))
    band = [golden.tolerance.absolute + golden.tolerance.relative * abs(x) for x in golden.losses]
    axes.fill_between(
        steps,
        [-b for b in band],
        band,
        color="tab:orange",
        alpha=0.3,
        step="mid",
        label=f"tolerance ({golden.tolerance})",
    )
    axes.axhline(0.0, color="tab:orange", linewidth=0.8)
    compared = list(zip(steps, losses, golden.losses, band, strict=False))
    inside = [(s, got - want) for s, got, want, b in compared if abs(got - want) <= b]
    outside = [(s, got - want) for s, got, want, b in compared if not abs(got - want) <= b]
    if inside:
        axes.plot(*zip(*inside, strict=True), "o", color="tab:green", markersize=4, label="within")
    if outside:
        axes.plot(*zip(*outside, strict=True), "x", color="red", markersize=7, label="outside")
        # linear inside the band, logarithmic beyond: the band and the outliers both stay visible
        axes.set_yscale("symlog", linthresh=max(band))
    axes.set_ylabel("loss - golden")
    axes.grid(True, alpha=0.3)
    # below the panel: inside it, the legend would hide the steps it explains
    axes.legend(
        fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False
    )
