"""The smoke-training runner: a tiny real training job per device type, checked against
recorded losses (flow 4). Entry point: ``flagscale.runner.smoke.run_smoke``; guide:
docs/smoke-training.md. Modules import psutil/matplotlib only where they need them, so reading
configs (``flagscale.runner.config``) works without the smoke extra."""

from __future__ import annotations

__all__: list[str] = []
