"""The patches a build tree is made of, split into hunks located in that tree.

A build tree made by ``inv build`` records its inputs (``.flagscale-build.json``); planned
again from the same history commit they must give the same fingerprint, and the tree must be
untouched since (``.flagscale-build.state``), or the hunks would not sit where the files are.
For each backend of the build this gives:

- each patch file of its vendor set (decrypted when a key is given), as it was applied;
- for an upstream backend, its base layer as a diff against the pin
  (``backends/<b>/`` laid over the pin, its deletions applied) — lines of it that the vendor set
  changes again are carried through that set to where they are in the build tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flagscale.builds.builder import read_patches
from flagscale.builds.fingerprint import (
    BuildRecord,
    StateFormatError,
    fingerprint_of,
    hand_changes,
    read_record,
    read_state,
)
from flagscale.builds.plan import BuildPlan, plan_device
from flagscale.core.errors import FlagScaleError
from flagscale.trust.hunks import FilePatch, Piece, parse_patch, pieces_of
from flagscale.trust.report import BASE_LAYER, PATCH_SET
from flagscale.upstream.workspace import FLAGSCALE, Workspace

__all__ = ["BuildPatches", "PatchFile", "build_patches", "plan_of_build"]


@dataclass(frozen=True)
class PatchFile:
    """One patch file of a build, parsed: a vendor set's file or a backend's base layer."""

    backend: str
    prefix: str  # third_party/<b>, or "" for FlagScale
    kind: str  # patch_set | base_layer
    label: str  # hardware/<V_M>/<b>/<file>, or backends/<b>
    against: str | None  # the pin, for the base layer
    files: tuple[FilePatch, ...]

    def pieces(self) -> list[Piece]:
        return pieces_of(self.files, label=self.label, prefix=self.prefix)


@dataclass(frozen=True)
class BuildPatches:
    """A build tree, what it was planned from, and its patch files."""

    build: Path
    plan: BuildPlan
    record: BuildRecord
    patches: tuple[PatchFile, ...]

    def vendor_file(self, backend: str, path: str) -> FilePatch | None:
        """The vendor set's section for ``path`` of ``backend``, if the set changes it."""
        for patch in self.patches:
            if patch.backend == backend and patch.kind == PATCH_SET:
                for section in patch.files:
                    if section.path == path:
                        return section
        return None


def plan_of_build(ws: Workspace, build: Path) -> tuple[BuildPlan, BuildRecord]:
    """The plan a build tree was made from, checked: same fingerprint, no hand edits."""
    make = f"run `inv build --device {build.name}`"
    record = read_record(build)
    if record is None:
        raise FlagScaleError(
            f"{build} is not a build tree made by inv build (no record)", hint=make
        )
    inputs = record.inputs
    plan = plan_device(
        ws,
        record.device_type,
        task=inputs["task"],
        commit=inputs["history_commit"],
        backends=[c["backend"] for c in inputs["components"] if c["patch_set"]],
        three_way=bool(inputs.get("options", {}).get("three_way")),
    )
    if fingerprint_of(plan.inputs()) != record.fingerprint:
        raise FlagScaleError(
            f"{build} was built from other inputs than the history entry"
            f" {inputs['history_commit'][:12]} gives now (another tool version, a bundle?)",
            hint=f"{make} to rebuild it from this clone's history",
        )
    try:
        recorded = read_state(build)
    except StateFormatError:
        recorded = None
    changed = hand_changes(build, recorded, 3) if recorded else ["no usable state file"]
    if changed:
        raise FlagScaleError(
            f"{build} was changed since it was built ({'; '.join(changed)}): its files no longer"
            " sit where the patches put them",
            hint=f"rebuild it with `inv build --device {build.name} --force` (your changes are"
            " saved first)",
        )
    return plan, record


def build_patches(ws: Workspace, build: Path, *, key_paths: Sequence[Path] = ()) -> BuildPatches:
    """Every patch file of the build tree ``build``, parsed into files and hunks."""
    plan, record = plan_of_build(ws, build)
    patches: list[PatchFile] = []
    pieces = read_patches(ws, plan, key_paths=key_paths)
    for backend in [FLAGSCALE, *plan.backends]:
        prefix = "" if backend == FLAGSCALE else f"third_party/{backend}"
        for piece in pieces.get(backend, ()):
            files = tuple(_parsed(piece.text, piece.label))
            patches.append(PatchFile(backend, prefix, PATCH_SET, piece.label, None, files))
        if backend != FLAGSCALE and _has_layer(plan, backend):
            layer = _base_layer(ws, plan, backend)
            if layer is not None:
                patches.append(layer)
    return BuildPatches(build, plan, record, tuple(patches))


def _parsed(text: bytes, label: str) -> list[FilePatch]:
    from flagscale.trust.hunks import PatchError

    try:
        return parse_patch(text)
    except PatchError as exc:
        raise FlagScaleError(f"{label}: {exc}", hint="the build applied it; report this") from None


def _has_layer(plan: BuildPlan, backend: str) -> bool:
    patch_set = plan.sets.get(backend)
    return patch_set is None or patch_set.apply_layer


def _base_layer(ws: Workspace, plan: BuildPlan, backend: str) -> PatchFile | None:
    """The base layer of ``backend`` at the plan's base, as a diff against its pin."""
    from flagscale.overlay.layered_trees import (
        diff_trees,
        layered_tree,
        scratch_git,
        scratch_repo,
    )

    pin = plan.pins[backend]
    pin_tree = scratch_git(ws, ["rev-parse", f"{pin}^{{tree}}"]).decode().strip()
    layered = layered_tree(ws, backend, plan.flagscale_base)
    text = diff_trees(scratch_repo(ws), pin_tree, layered)
    if not text:
        return None
    label = ws.backend(backend).layer
    prefix = f"third_party/{backend}"
    return PatchFile(backend, prefix, BASE_LAYER, label, pin, tuple(_parsed(text, label)))
