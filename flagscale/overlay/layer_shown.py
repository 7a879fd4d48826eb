"""Whether a checkout still shows its base layer: the one check made before edits are taken in.

Both ways of writing a checkout's edits somewhere (``inv patch`` into ``backends/<b>``, and
``inv patch --device-type`` into a vendor's patch set) take the checkout as the truth. A checkout
that git reset (``git checkout -f``, ``git submodule update --force``, ``git checkout -- <path>``)
shows the pin's version of paths the base layer changes, and taking that in would revert the
layer there. Per path:

- the layer changes an upstream file (replaces or deletes it) and the checkout shows exactly the
  pin's version: git restored it, so it is refused. A user drops a path from the layer in
  ``backends/<b>`` (or its deletion list), never by restoring upstream's bytes in the checkout;
- the layer adds a file upstream does not have and the checkout lacks it: the user removed it
  (a reset's ``git clean`` does the same, so it is taken in only while the checkout shows some
  other part of the layer, and ``inv patch`` saves what ``backends/<b>`` loses first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flagscale.core.errors import FlagScaleError
from flagscale.overlay.checkout import SHOWN_PATHS
from flagscale.upstream.workspace import Backend

__all__ = ["LayerPath", "refuse_layer_at_pin"]


@dataclass(frozen=True)
class LayerPath:
    """One path the base layer changes: whether the pin has a file there, and whether what would
    be taken in from the checkout is the pin's version (the layer's change is not shown)."""

    path: str
    upstream_file: bool
    at_pin: bool


def refuse_layer_at_pin(backend: Backend, paths: Iterable[LayerPath], consequence: str) -> None:
    """Refuse when the checkout shows the pin where the layer changes an upstream file, or shows
    none of the layer at all; ``consequence`` says what taking it in would do."""
    layer_paths = list(paths)
    reverted = [p.path for p in layer_paths if p.at_pin and p.upstream_file]
    if not reverted and layer_paths and all(p.at_pin for p in layer_paths):
        reverted = [p.path for p in layer_paths]
    if not reverted:
        return
    shown = ", ".join(reverted[:SHOWN_PATHS])
    more = f" and {len(reverted) - SHOWN_PATHS} more" if len(reverted) > SHOWN_PATHS else ""
    raise FlagScaleError(
        f"{backend.name}: {backend.checkout} shows the pin's version, not {backend.layer}'s, at"
        f" {len(reverted)} path(s) (it looks reset to the pin): {shown}{more}; {consequence}",
        hint=f"run `inv unpatch --backend {backend.name}` to lay them again, with --force if it"
        " reports other edits (it saves those first); to drop a path from the base layer,"
        f" delete it in {backend.layer}/ or {backend.deletions}",
    )
