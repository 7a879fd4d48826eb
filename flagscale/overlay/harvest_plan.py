"""What a running ``inv patch`` is writing into ``backends/<b>``, kept until the run is recorded.

``inv patch`` writes several files into the layer, then records the checkout as laid. Cut short
between the two (Ctrl-C, ``kill -9``), the next run would find the layer changed since
``inv unpatch`` at the very paths the checkout changed, which is a conflict, or a half-written
layer that reads as the user's. So the planned layer states are written first
(``<state>/overlay/<b>.harvest.json``, schema ``overlay-harvest``), and a layer state equal to
the planned one is known to be the tool's own write. ``inv unpatch`` lays the layer as it is and
drops the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.overlay.checkout_state import State

__all__ = ["HarvestPlan", "plan_path"]

_AT_PIN = ("pin", "")


def plan_path(record: Path) -> Path:
    """The plan beside a backend's laid-state record."""
    return record.with_name(record.name.removesuffix(".json") + ".harvest.json")


@dataclass(frozen=True)
class HarvestPlan:
    """The layer's new state per path (None: the layer leaves the path to upstream)."""

    backend: str
    pin: str
    planned: dict[str, State | None]

    @classmethod
    def load(cls, path: Path, backend: str, pin: str) -> HarvestPlan | None:
        """The plan at ``path`` if one is there for this backend and pin, else None."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        from flagscale.core.schema import parse_document, validate

        hint = "delete it and run `inv patch` again"
        try:
            data = validate(parse_document(text, str(path)), "overlay-harvest", str(path))
        except FlagScaleError as exc:
            raise FlagScaleError(str(exc), hint=hint) from None
        if data["backend"] != backend or data["pin"] != pin:
            return None
        planned = {
            name: None if tuple(value) == _AT_PIN else (value[0], value[1])
            for name, value in data["planned"].items()
        }
        return cls(backend, pin, planned)

    def save(self, path: Path) -> None:
        data = {
            "version": 1,
            "backend": self.backend,
            "pin": self.pin,
            "planned": {
                name: list(_AT_PIN if state is None else state)
                for name, state in sorted(self.planned.items())
            },
        }
        write_atomically(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())

    def wrote(self, path: str, state: State | None) -> bool:
        """True when the layer's ``state`` at ``path`` is one this plan's run left there: the
        planned state, or nothing (a path is cleared, or its deletion dropped, before the new
        file is written)."""
        return path in self.planned and state in (self.planned[path], None)
