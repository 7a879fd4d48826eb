"""What a device type's build is made of, read from git objects only (never the work tree).

The history names a FlagScale commit; that commit's ``hardware/<V_M>/<backend>/`` folders hold
the patch sets; their metadata names the FlagScale base and each backend's pin. A ``BuildPlan``
collects all of it as ids (commits, trees, blobs) so that its fingerprint costs a few git calls
and no file reads, and so that the build itself knows exactly which objects to use.

The patch sets are read by ``flagscale.vendor.stored_sets`` (both layouts); the plan adds the
FlagScale base they share, the pins and the base layer at that base.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flagscale import __version__
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git
from flagscale.upstream.workspace import DECLARATION, FLAGSCALE, Workspace
from flagscale.vendor.stored_sets import (
    GIT_SETS,
    HistoryChoice,
    SetPlan,
    SetSource,
    list_paths,
)

__all__ = ["BuildPlan", "plan_device"]

PLAN_FORMAT = 2  # 2: legacy sets applied file by file as FlagScale's tool does


@dataclass
class BuildPlan:
    """Everything one device type's build is made from, as ids; ``inputs`` is fingerprinted."""

    device_type: str
    choice: HistoryChoice
    flagscale_base: str
    sets: dict[str, SetPlan]
    pins: dict[str, str]  # backend → pin used
    layers: dict[str, tuple[str | None, str | None]]  # backend → (layer tree, deletions blob)
    base_tree: str
    three_way: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def layout(self) -> str:
        """``legacy`` when any set uses FlagScale's older layout, else ``patch-set``."""
        return "legacy" if any(s.layout == "legacy" for s in self.sets.values()) else "patch-set"

    @property
    def backends(self) -> list[str]:
        """The upstream backends of the build (FlagScale itself excluded), sorted."""
        return sorted(b for b in self.choice.backends if b != FLAGSCALE)

    def inputs(self) -> dict[str, Any]:
        """The fingerprinted inputs (schema build-record, ``inputs``)."""
        components = [self._component(FLAGSCALE)] + [self._component(b) for b in self.backends]
        inputs: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "tool_version": __version__,
            "device_type": self.device_type,
            "task": self.choice.task,
            "history_commit": self.choice.commit,
            "flagscale_base": self.flagscale_base,
            "layout": self.layout,
            "components": components,
            "options": {"three_way": self.three_way},
        }
        if not self.choice.recorded:
            inputs["sets_from"] = "work-tree"  # never the fingerprint of a recorded build
        return inputs

    def _component(self, backend: str) -> dict[str, Any]:
        patch_set = self.sets.get(backend)
        upstream = backend != FLAGSCALE
        with_layer = upstream and (patch_set is None or patch_set.apply_layer)
        layer, deletions = self.layers.get(backend, (None, None)) if with_layer else (None, None)
        return {
            "backend": backend,
            "prefix": f"third_party/{backend}" if upstream else "",
            "tree": None if upstream else self.base_tree,
            "pin": self.pins[backend] if upstream else None,
            "base_layer": with_layer,
            "layer": layer,
            "deletions": deletions,
            "patch_set": patch_set.folder_tree if patch_set else None,
            "patches": [
                {"file": f.path, "blob": f.blob, "encrypted": f.encrypted}
                for f in (patch_set.files if patch_set else ())
            ],
            "key_id": patch_set.key_id if patch_set else None,
        }


# --- the plan ---------------------------------------------------------------------------------


def plan_device(
    ws: Workspace,
    device_type: str,
    *,
    task: str | None = None,
    commit: str | None = None,
    backends: Sequence[str] = (),
    three_way: bool = False,
    source: SetSource = GIT_SETS,
) -> BuildPlan:
    """Resolve the history, read the sets and pins: everything but the file contents.

    ``source`` says where the history line and the patch sets come from; FlagScale's files at
    the base and the pins always come from this clone.
    """
    from flagscale.vendor.patchset import check_device_type

    check_device_type(device_type)
    choice = source.choose(ws, device_type, task, commit, backends)
    for backend in choice.backends:
        if backend != FLAGSCALE:
            ws.backend(backend)  # unknown backend: one clear error
    sets = source.read_sets(ws, choice)
    base = _common_base(ws, choice, sets)
    pins, layers, base_tree = _base_facts(ws, base, choice, sets)
    return BuildPlan(
        device_type=device_type,
        choice=choice,
        flagscale_base=base,
        sets=sets,
        pins=pins,
        layers=layers,
        base_tree=base_tree,
        three_way=three_way,
    )


def _common_base(ws: Workspace, choice: HistoryChoice, sets: Mapping[str, SetPlan]) -> str:
    from flagscale.vendor import legacy

    bases = {s.flagscale_base for s in sets.values()}
    if all(s.layout == "legacy" for s in sets.values()):
        return legacy.newest_base(ws, list(sets.values()), choice)
    if len(bases) != 1:
        listed = ", ".join(f"{s.backend} at {s.flagscale_base[:12]}" for s in sets.values())
        raise FlagScaleError(
            f"the patch sets of {choice.device_type} at {choice.commit[:12]} were made against"
            f" different FlagScale commits ({listed})",
            hint="ask the vendor to regenerate them against one --commit",
        )
    base = bases.pop()
    if commit_id(ws.root, base) is None:
        first = next(iter(sets.values()))
        raise FlagScaleError(
            f"{first.source}: flagscale_base {base} is not a commit in {ws.root}",
            hint=f"fetch it (git fetch {_remote(ws)} {base}) or update your clone, then retry",
        )
    return base


def _remote(ws: Workspace) -> str:
    """The remote to name in a fetch hint: ``origin`` if there is one, else the only one."""
    remotes = git(["remote"], ws.root, check=False).decode().split()
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else "<remote>"


def _base_facts(
    ws: Workspace, base: str, choice: HistoryChoice, sets: Mapping[str, SetPlan]
) -> tuple[dict[str, str], dict[str, tuple[str | None, str | None]], str]:
    """Pins, base layer ids and the FlagScale tree at ``base``, in one ``ls-tree`` call."""
    from flagscale.overlay.layered_trees import pin_at

    upstreams = sorted(b for b in choice.backends if b != FLAGSCALE)
    wanted = []
    for name in upstreams:
        backend = ws.backend(name)
        wanted += [backend.checkout, backend.layer, backend.deletions]
    found = list_paths(ws, base, wanted) if wanted else {}
    pins: dict[str, str] = {}
    layers: dict[str, tuple[str | None, str | None]] = {}
    for name in upstreams:
        backend = ws.backend(name)
        gitlink = found.get(backend.checkout)
        pin = gitlink.oid if gitlink and gitlink.mode == "160000" else pin_at(ws, backend, base)
        patch_set = sets.get(name)
        recorded = patch_set.recorded_pin if patch_set else None
        if patch_set is not None and recorded is not None and recorded != pin:
            if patch_set.layout == "legacy":
                pin = recorded  # FlagScale's older tool reset the submodule to backends_commit
            else:
                raise FlagScaleError(
                    f"{patch_set.source}: made against {name} {recorded}, but FlagScale"
                    f" {base[:12]} pins {name} at {pin} (in {backend.checkout} / {DECLARATION})",
                    hint="the patch set does not fit its recorded base: ask the vendor to"
                    " regenerate it",
                )
        pins[name] = pin
        layer = found.get(backend.layer)
        deletions = found.get(backend.deletions)
        layers[name] = (layer.oid if layer else None, deletions.oid if deletions else None)
    base_tree = git(["rev-parse", f"{base}^{{tree}}"], ws.root).decode().strip()
    return pins, layers, base_tree
