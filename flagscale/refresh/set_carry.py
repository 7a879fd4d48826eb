"""A device type's patch sets, carried from their FlagScale base to the refreshed one.

Every set of a device type shares one FlagScale base (a build needs that), so a device type
whose history names the refreshed backend has all the sets of those history lines carried:
the refreshed backend's from the old pin to the new one, the others (FlagScale's own set, other
backends) from the old base to the new one — usually unchanged. Encrypted sets are decrypted
with the key whose id their header names and encrypted again with it; without that key the
device type is not refreshed (its sets and history stay as they are, and the report says why).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flagscale import __version__
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git
from flagscale.overlay.layered_trees import (
    WORKTREE_EXCLUDES,
    flagscale_tree,
    layered_tree,
    pin_at,
)
from flagscale.refresh.carry import CarryResult, Step, carry_patch
from flagscale.refresh.collisions import Origin
from flagscale.refresh.merge3 import Labels
from flagscale.refresh.objects import Objects
from flagscale.upstream.sync import ensure_pin
from flagscale.upstream.workspace import FLAGSCALE, ReleaseSource, Workspace, backends_at
from flagscale.vendor import crypto
from flagscale.vendor.committed import CommittedPatchSet, CommittedState
from flagscale.vendor.patchset import (
    ALGORITHM,
    METADATA,
    PatchMetadata,
    dump_metadata,
    encryption_name,
    parse_metadata,
)

__all__ = [
    "DeviceSets",
    "SetKeys",
    "SetCarry",
    "carry_set",
    "devices_of",
    "read_device",
    "set_files",
]


class SetKeys:
    """``--key-path`` files by the key id they hold."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [str(p) for p in paths]
        self.by_id: dict[str, bytes] = {}
        for path in paths:
            key = crypto.load_key(Path(path))
            self.by_id[crypto.key_id(key)] = key


@dataclass
class DeviceSets:
    """The sets of one device type the refresh carries, and the history lines they serve."""

    device: str
    base: str
    lines: dict[str, list[str]]  # backend key -> tasks
    sets: dict[str, CommittedPatchSet]
    plain: dict[str, bytes] = field(default_factory=dict)
    keys: dict[str, bytes | None] = field(default_factory=dict)


@dataclass
class SetCarry:
    """One set carried (or why not): the carry's outcome and the set's new plain patch."""

    backend: str
    result: CarryResult
    origin: str  # the step in words


def devices_of(committed: CommittedState, backend: str) -> list[str]:
    """The device types whose history has a line naming ``backend``, sorted."""
    return sorted(
        device
        for device, tasks in committed.history.items()
        if any(backend in key.split("+") for keys in tasks.values() for key in keys)
    )


def read_device(
    ws: Workspace, committed: CommittedState, device: str, backend: str, keys: SetKeys
) -> DeviceSets | str:
    """The device type's sets to carry, decrypted; or why it cannot be refreshed."""
    lines: dict[str, list[str]] = {}
    for task, history_keys in committed.history[device].items():
        for key in history_keys:
            if backend in key.split("+"):
                lines.setdefault(key, []).append(task)
    names = sorted({name for key in lines for name in key.split("+")})
    try:
        sets = {name: committed.patch_set(device, name) for name in names}
    except FlagScaleError as exc:
        return f"its sets cannot be read: {exc}"
    legacy = sorted(name for name, s in sets.items() if s.layout != "patch-set")
    if legacy:
        return (
            f"its {', '.join(legacy)} set(s) are in FlagScale's older layout (diff.yaml): make them"
            " again with `inv patch --device-type` first"
        )
    bases = {s.flagscale_base for s in sets.values()}
    if len(bases) != 1:
        listed = ", ".join(f"{n} at {s.flagscale_base[:12]}" for n, s in sets.items())
        return f"its sets were made against different FlagScale commits ({listed})"
    found = DeviceSets(device, bases.pop(), {k: sorted(v) for k, v in lines.items()}, sets)
    for name, patch_set in sets.items():
        plain = _plain(patch_set, keys)
        if isinstance(plain, str):
            return plain
        found.plain[name], found.keys[name] = plain
    return found


def _plain(patch_set: CommittedPatchSet, keys: SetKeys) -> tuple[bytes, bytes | None] | str:
    parts: list[bytes] = []
    used: bytes | None = None
    for path, stored in patch_set.patch_files.items():
        if not crypto.is_encrypted(stored):
            parts.append(stored)
            continue
        key_id = crypto.encrypted_key_id(stored, source=path)
        key = keys.by_id.get(key_id)
        if key is None:
            contact = patch_set.plan.contact or "the vendor"
            return (
                f"{patch_set.folder} is encrypted with key {key_id}: not refreshed (pass"
                f" --key-path with that key; ask {contact})"
            )
        name = encryption_name(patch_set.device_type, patch_set.backend, path.rsplit("/", 1)[1])
        parts.append(crypto.decrypt_file_bytes(stored, key, name=name, source=path))
        used = key
    return b"".join(parts), used


# --- the trees a set moves between --------------------------------------------------------------


class Trees:
    """Each backend's tree at a FlagScale commit (the pin made present first), and what the
    declaration says there (pin, version), each worked out once per refresh."""

    def __init__(self, ws: Workspace, objects: Objects) -> None:
        self.ws = ws
        self.objects = objects
        self._trees: dict[tuple[str, str], str] = {}
        self._pins: dict[tuple[str, str], str] = {}
        self._declared: dict[str, dict] = {}
        self._layers: dict[tuple[str, str], frozenset[str]] = {}

    def at(self, backend: str, commit: str) -> str:
        key = (backend, commit)
        if key not in self._trees:
            if backend == FLAGSCALE:
                tree = flagscale_tree(self.ws, commit, exclude=WORKTREE_EXCLUDES)
            else:
                upstream = self.ws.backend(backend)
                ensure_pin(self.ws, upstream, self.pin(backend, commit), declared_at=commit)
                tree = layered_tree(self.ws, upstream, commit)
            self._trees[key] = tree
        return self._trees[key]

    def pin(self, backend: str, commit: str) -> str:
        key = (backend, commit)
        if key not in self._pins:
            self._pins[key] = pin_at(self.ws, self.ws.backend(backend), commit)
        return self._pins[key]

    def release(self, backend: str, commit: str) -> ReleaseSource | None:
        """The release a commit declares for ``backend`` (None for submodules)."""
        if commit not in self._declared:
            self._declared[commit] = backends_at(self.ws.root, commit)
        declared = self._declared[commit].get(backend)
        if declared is None or not isinstance(declared.source, ReleaseSource):
            return None
        return declared.source

    def layer_paths(self, backend: str, commit: str) -> frozenset[str]:
        key = (backend, commit)
        if key not in self._layers:
            layer = self.ws.backend(backend).layer
            raw = git(
                ["ls-tree", "-r", "-z", "--name-only", commit, "--", f"{layer}/"], self.ws.root
            )
            self._layers[key] = frozenset(
                name.decode("utf-8", "surrogateescape")[len(layer) + 1 :]
                for name in raw.split(b"\0")
                if name
            )
        return self._layers[key]


def step_between(
    ws: Workspace, trees: Trees, backend: str, old: str, new: str, device: str
) -> Step:
    """The step of ``backend``'s set of ``device`` from FlagScale ``old`` to ``new``."""
    origin = origin_between(ws, trees, backend, old, new)
    labels = Labels(
        ours=f"{_side(trees, backend, new)} (new)",
        base=f"{_side(trees, backend, old)} (old)",
        theirs=f"{device} {backend} set",
    )
    return Step(trees.at(backend, old), trees.at(backend, new), labels, origin)


def origin_between(ws: Workspace, trees: Trees, backend: str, old: str, new: str) -> Origin:
    """Where the differences of ``backend``'s tree between two FlagScale commits come from."""
    if backend == FLAGSCALE:
        return Origin(label=f"FlagScale {old[:12]} -> {new[:12]}", repo=ws.root, old=old, new=new)
    upstream = ws.backend(backend)
    layered = trees.layer_paths(backend, old) | trees.layer_paths(backend, new)
    before, after = trees.release(backend, old), trees.release(backend, new)
    if before is not None and after is not None:
        label = f"{after.package} {before.version} -> {after.version}"
        return Origin(label=label, layered=layered)
    old_pin, new_pin = trees.pin(backend, old), trees.pin(backend, new)
    return Origin(
        label=f"{backend} {old_pin[:12]} -> {new_pin[:12]}",
        repo=ws.path(upstream.checkout),
        old=old_pin,
        new=new_pin,
        layered=layered,
    )


def _side(trees: Trees, backend: str, commit: str) -> str:
    if backend == FLAGSCALE:
        return f"FlagScale {commit[:12]}"
    release = trees.release(backend, commit)
    if release is not None:
        return f"{backend} {release.version}"
    return f"{backend} {trees.pin(backend, commit)[:12]}"


def carry_set(
    ws: Workspace, objects: Objects, trees: Trees, sets: DeviceSets, backend: str, new_base: str
) -> SetCarry:
    """Carry one of the device type's sets from its base to ``new_base``."""
    step = step_between(ws, trees, backend, sets.base, new_base, sets.device)
    source = sets.sets[backend].folder
    result = carry_patch(objects, step, sets.plain[backend], source)
    return SetCarry(backend, result, step.origin.label)


# --- the set's files after the refresh ----------------------------------------------------------


def set_files(
    ws: Workspace,
    sets: DeviceSets,
    backend: str,
    new_base: str,
    plain: bytes | None,
    refreshed_backend: str,
    new_version: str | None,
    pin: str | None = None,
) -> dict[str, bytes]:
    """``metadata.yaml`` and the patch file of a carried set (``plain`` None: keep the bytes)."""
    committed = sets.sets[backend]
    old = parse_metadata(committed.metadata_bytes, committed.metadata_path)
    key = sets.keys.get(backend)
    if plain is None:
        files = {path.rsplit("/", 1)[1]: data for path, data in committed.patch_files.items()}
        patches = old.patches
    else:
        name = f"{backend}.patch"
        data = plain
        if key is not None:
            data = crypto.encrypt_file_bytes(
                plain, key, name=encryption_name(sets.device, backend, name)
            )
            name += crypto.ENCRYPTED_SUFFIX
        files = {name: data}
        patches = (
            {
                "file": name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "encrypted": key is not None,
            },
        )
    if backend == FLAGSCALE:
        pin = None
    elif pin is None:
        pin = pin_at(ws, ws.backend(backend), new_base)
    version = new_version if backend == refreshed_backend and new_version else old.backend_version
    metadata = PatchMetadata(
        device_type=old.device_type,
        backend=old.backend,
        flagscale_base=new_base,
        backend_pin=pin,
        backend_version=version,
        models=old.models,
        tasks=old.tasks,
        contact=old.contact,
        tool_version=__version__,
        patches=tuple(patches),
        encryption=(
            {"algorithm": ALGORITHM, "key_id": crypto.key_id(key)}
            if key is not None and plain is not None
            else old.encryption
        ),
        ci=old.ci,
    )
    document = dump_metadata(metadata)
    parse_metadata(document, f"{committed.folder}/{METADATA}")
    return {**files, METADATA: document}


def describe(result: CarryResult) -> dict[str, Any]:
    """Counts of the classes of a carry's files."""
    counts: dict[str, int] = {}
    for outcome in result.files:
        counts[outcome.cls] = counts.get(outcome.cls, 0) + 1
    return counts
