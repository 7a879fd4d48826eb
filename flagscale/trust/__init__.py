"""Trust (flow 7): which changes of a device's patches ran in its smoke jobs, and which one broke
training.

``inv coverage --device V_M`` (``flagscale.trust.patch_coverage``) runs the smoke jobs on the
build tree under coverage.py and maps what ran onto every hunk; ``inv bisect --device V_M``
(``flagscale.trust.bisect``) finds the smallest set of hunks that makes a smoke job fail, by
delta debugging over real builds and real smoke runs. Guide: docs/coverage-and-bisect.md."""

from __future__ import annotations

__all__: list[str] = []
