"""One device type's vendor sets at one FlagScale commit, converted to native patch sets.

For every history line whose newest entry is that commit, FlagScale's tool is replayed on its
recorded inputs (``flagscale_apply``): the newest of the sets' base commits, each backend at its
``backends_commit`` (else the gitlink there), the decrypted patch files applied file by file.
The tree it gives is the reference. A converted set is the diff from what this workspace's build
starts from (the backend's pin with our base layer at the import's base commit; FlagScale's own
files there) to that reference, so building it gives the reference again: ``importer`` proves it.

FlagScale's own files are compared without the tool's data folders (``SCOPE_EXCLUDES``): the
vendor sets, both layers and the upstream checkouts live there, in each tool's own format.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from flagscale import __version__
from flagscale.core.errors import FlagScaleError
from flagscale.migrate.base_layer import ensure_commit
from flagscale.migrate.flagscale_apply import FlagScaleToolFails, apply_vendor_files
from flagscale.migrate.scratch import ImportScratch
from flagscale.migrate.source import HistoryLine, SourceCheckout, Submodule
from flagscale.overlay.layered_trees import (
    changed_entries,
    diff_trees,
    flagscale_tree,
    layered_tree,
)
from flagscale.upstream.workspace import FLAGSCALE, Workspace
from flagscale.vendor import crypto
from flagscale.vendor.keyring import KeyRing
from flagscale.vendor.legacy import DIFF_YAML, parse_diff_yaml
from flagscale.vendor.patchset import ALGORITHM, PatchMetadata, dump_metadata, encryption_name
from flagscale.vendor.set_plan import SetPlan
from flagscale.vendor.set_results import plain_results, seal_results

__all__ = [
    "SCOPE_EXCLUDES",
    "Converted",
    "DeviceSets",
    "convert_device",
    "layout_of",
    "vendor_of",
]

SCOPE_EXCLUDES = ("third_party", "build", "hardware", "backends", "flagscale/backends")


@dataclass
class Converted:
    """One converted set: its files (name → bytes) and FlagScale's tree it must rebuild."""

    backend: str
    files: dict[str, bytes]
    reference: str  # FlagScale's tree (a backend's whole tree; FlagScale's files in scope)
    fixed: list[str]  # patch files FlagScale applied with --whitespace fix


@dataclass
class DeviceSets:
    """The sets of one device type at one FlagScale commit, and what became of each line."""

    device: str
    commit: str  # FlagScale's commit holding the sets
    lines: list[HistoryLine]
    stored: dict[str, SetPlan] = field(default_factory=dict)
    stored_bytes: dict[str, dict[str, bytes]] = field(default_factory=dict)  # path → stored bytes
    carried: str = ""  # why the sets stay as FlagScale stored them ("" when converted)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)  # (task, key) → why
    references: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    converted: dict[str, Converted] = field(default_factory=dict)
    fixed: dict[str, list[str]] = field(default_factory=dict)  # backend → files FlagScale fixed


def vendor_of(device: str) -> str:
    return device.split("_", 1)[0]


def layout_of(plan: SetPlan) -> str:
    """``per-file``, ``single-file`` or ``oldest`` (``<short commit>.patch``)."""
    if not plan.metadata_path.endswith(f"/{DIFF_YAML}"):
        return "oldest"
    names = [f.path[len(plan.folder) + 1 :] for f in plan.files]
    return "single-file" if names in (["diff.patch"], ["diff.patch.encrypted"]) else "per-file"


def convert_device(
    ws: Workspace,
    scratch: ImportScratch,
    source: SourceCheckout,
    submodules: dict[str, Submodule],
    base: str,
    device: str,
    commit: str,
    lines: list[HistoryLine],
    keys: KeyRing,
    new_keys: Path | None,
) -> DeviceSets:
    """Read, decrypt, replay and convert the sets ``lines`` use at ``commit``."""
    result = DeviceSets(device, commit, sorted(lines, key=lambda line: (line.task, line.key)))
    names = sorted({b for line in lines for b in line.backends})
    for name in names:
        plan = source.stored_set(commit, device, name)
        if plan is None:
            raise FlagScaleError(
                f"{source.describe()}: hardware/{device}/{name} does not exist at {commit[:12]},"
                " but its history names it there",
                hint="fix FlagScale's hardware/patch_history.yaml, then run again",
            )
        result.stored[name] = plan
        oids = [f.blob for f in plan.files] + [plan.metadata_blob]
        blobs = source.blobs(oids)
        paths = [f.path for f in plan.files] + [plan.metadata_path]
        result.stored_bytes[name] = {
            path: blobs[oid] for path, oid in zip(paths, oids, strict=True)
        }
    plaintext = _decrypt(result, keys)
    if plaintext is None:
        return result
    unknown = [b for b in names if b != FLAGSCALE and b not in submodules]
    for line in result.lines:
        missing = [b for b in line.backends if b in unknown]
        if missing:
            why = f"FlagScale declares no submodule third_party/{missing[0]}"
            result.skipped[(line.task, line.key)] = why
            continue
        try:
            result.references[(line.task, line.key)] = _replay(
                scratch, source, submodules, result, line, plaintext
            )
        except FlagScaleToolFails as exc:
            result.skipped[(line.task, line.key)] = f"{exc.message}: FlagScale's tool stops here"
    for line in result.lines:
        references = result.references.get((line.task, line.key))
        for name in line.backends if references else ():
            if name not in result.converted:
                result.converted[name] = _convert(
                    ws, scratch, base, result, name, references[name], plaintext, new_keys
                )
    return result


def _decrypt(result: DeviceSets, keys: KeyRing) -> dict[str, list[tuple[str, bytes]]] | None:
    """Each set's patch files in FlagScale's apply order, decrypted; None (and ``carried`` set)
    when some file cannot be decrypted with the keys given."""
    plaintext: dict[str, list[tuple[str, bytes]]] = {}
    for name, plan in result.stored.items():
        files = []
        for stored in sorted(plan.files, key=lambda f: _walk_key(f.path)):
            data = result.stored_bytes[name][stored.path]
            if stored.encrypted:
                if not keys.paths:
                    result.carried = "encrypted, no --key-path given"
                    return None
                try:
                    data = keys.decrypt(plan, stored.path, stored.name, stored.scheme, data)
                except FlagScaleError:
                    result.carried = "encrypted, and no --key-path given opens it"
                    return None
            files.append((stored.path, data))
        plaintext[name] = files
    return plaintext


def _walk_key(path: str) -> tuple[tuple[int, str], ...]:
    parts = path.split("/")
    return tuple((1, part) for part in parts[:-1]) + ((0, parts[-1]),)


def _replay(
    scratch: ImportScratch,
    source: SourceCheckout,
    submodules: dict[str, Submodule],
    result: DeviceSets,
    line: HistoryLine,
    plaintext: dict[str, list[tuple[str, bytes]]],
) -> dict[str, str]:
    """backend → the tree FlagScale's tool gives for ``line`` (FlagScale: its files in scope)."""
    bases = [result.stored[b].flagscale_base for b in line.backends]
    for commit in bases:
        if not source.is_ancestor(commit, source.head):
            raise FlagScaleToolFails(
                f"{line.device_type}: base commit {commit} is not in {source.root}"
            )
    newest = source.topo_order(bases)[-1]
    trees: dict[str, str] = {}
    for name in line.backends:
        if name == FLAGSCALE:
            start = scratch.filtered(scratch.tree_of(newest), ["third_party"])
        else:
            pin = result.stored[name].recorded_pin or source.gitlink(newest, f"third_party/{name}")
            if pin is None:
                raise FlagScaleToolFails(
                    f"FlagScale {newest[:12]} has no submodule third_party/{name}"
                )
            ensure_commit(scratch, pin, submodules[name].url)
            start = scratch.tree_of(pin)
        reference = apply_vendor_files(scratch, start, plaintext[name])
        if name == FLAGSCALE:
            trees[name] = scratch.filtered(reference.tree, SCOPE_EXCLUDES)
        else:
            trees[name] = reference.tree
        result.fixed.setdefault(name, reference.fixed)
    return trees


def _convert(
    ws: Workspace,
    scratch: ImportScratch,
    base: str,
    result: DeviceSets,
    name: str,
    reference: str,
    plaintext: dict[str, list[tuple[str, bytes]]],
    new_keys: Path | None,
) -> Converted:
    """The native set rebuilding ``reference`` from this workspace's start at ``base``."""
    if name == FLAGSCALE:
        start = scratch.filtered(flagscale_tree(ws, base), SCOPE_EXCLUDES)
    else:
        start = layered_tree(ws, name, base)
    patch = diff_trees(scratch.path, start, reference)
    produced = plain_results(  # what the set makes (flagscale.vendor.set_results)
        (after.path, None if after.mode == "000000" else after.oid)
        for _before, after in changed_entries(scratch.path, start, reference)
    )
    results: dict[str, str | None] | None = produced
    sealed = None
    plan = result.stored[name]
    legacy = parse_diff_yaml(
        result.stored_bytes[name][plan.metadata_path], plan.source, name_commit=plan.flagscale_base
    )
    file = f"{name}.patch"
    encryption = None
    if plan.files and any(f.encrypted for f in plan.files):
        key = _vendor_key(new_keys, result.device)
        patch = crypto.encrypt_file_bytes(
            patch, key, name=encryption_name(result.device, name, file)
        )
        file += crypto.ENCRYPTED_SUFFIX
        encryption = {"algorithm": ALGORITHM, "key_id": crypto.key_id(key)}
        results, sealed = None, seal_results(produced, key)
    tasks = sorted(set(plan.tasks) | {line.task for line in result.lines if name in line.backends})
    metadata = PatchMetadata(
        device_type=result.device,
        backend=name,
        flagscale_base=base,
        backend_pin=None if name == FLAGSCALE else ws.pin(ws.backend(name)),
        backend_version=plan.backend_version or "unknown",
        models=tuple(dict.fromkeys(legacy.models)) or ("unknown",),
        tasks=tuple(tasks),
        contact=plan.contact,
        tool_version=__version__,
        patches=(
            {
                "file": file,
                "sha256": hashlib.sha256(patch).hexdigest(),
                "encrypted": bool(encryption),
            },
        ),
        encryption=encryption,
        results=results,
        results_sealed=sealed,
    )
    files = {file: patch, "metadata.yaml": dump_metadata(metadata)}
    return Converted(name, files, reference, result.fixed.get(name, []))


def _vendor_key(folder: Path | None, device: str) -> bytes:
    """The native key a vendor's converted sets are encrypted with: ``<folder>/<Vendor>.key``,
    made (0600) on first use and reused after."""
    if folder is None:
        raise FlagScaleError(
            f"{device}: its sets are encrypted; converted, they are encrypted again with a new key"
            " per vendor, and no folder for those keys was given",
            hint="pass --new-keys <folder outside the repository>",
        )
    key, _created = crypto.load_or_create_key(folder / f"{vendor_of(device)}.key")
    return key
