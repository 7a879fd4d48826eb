"""Isolated builds per device type: ``build/<Vendor_Model>/``, complete, plain files, atomic.

For each device type: the history names a FlagScale commit (``flagscale.builds.plan``); the patch
sets stored there name the FlagScale base and each backend's pin. The build tree is FlagScale's
files at the base with its FlagScale patch set, and ``third_party/<backend>/`` = the pin with the
base layer and the backend's vendor patch set. All of it is assembled as git objects through
temporary index files (``flagscale.builds.assemble``), written out with one ``git checkout-index``
beside the target and swapped in (``flagscale.builds.lock``). A fingerprint of the inputs
(``flagscale.builds.fingerprint``) makes an unchanged rebuild a no-op.

The user's work tree, branch, index and stash are never touched; decrypted patches live in
memory and in the build's private staging folder only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from flagscale import __version__
from flagscale.builds.assemble import (
    Assembler,
    Component,
    PatchApplyError,
    PatchPiece,
    piece_for_path,
)
from flagscale.builds.conflicts_folder import clear_conflicts, conflicts_path
from flagscale.builds.fingerprint import (
    RECORD_NAME,
    STATE_NAME,
    BuildRecord,
    FolderState,
    StateFormatError,
    fingerprint_of,
    hand_changes,
    read_record,
    read_state,
    record_bytes,
    write_state,
)
from flagscale.builds.lock import (
    BuildLockedError,
    DeviceLock,
    clean_stale,
    remove_tree,
    replace_directory,
    staging_path,
    stale_leftovers,
)
from flagscale.builds.plan import BuildPlan, plan_device
from flagscale.builds.results_check import Expectation, check_results
from flagscale.builds.write_failures import reported_write_failures
from flagscale.core.atomic import write_atomically
from flagscale.core.crashpoints import crash_point
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git
from flagscale.core.paths import check_links
from flagscale.core.progress import Progress
from flagscale.core.savededits import save_new_patch
from flagscale.core.schema import validate
from flagscale.upstream.workspace import FLAGSCALE, Workspace
from flagscale.vendor.keyring import KeyRing
from flagscale.vendor.stored_sets import GIT_SETS, SetPlan, SetSource, read_blobs
from flagscale.vendor.worktree_sets import sets_changed_since

__all__ = [
    "assemble_trees",
    "BUILD_DIR",
    "HETERO_MAP",
    "BuildRequest",
    "ConflictError",
    "assemble_tree",
    "build_devices",
    "build_root",
    "read_patches",
]

BUILD_DIR = "build"
HETERO_MAP = "hetero.json"
_ROOT_ONLY = ("third_party", "build")  # FlagScale's patch set may not reach into these


class ConflictError(FlagScaleError):
    """``--3way`` left conflicts; the files with markers are in ``build/<V_M>.conflicts/``."""


@dataclass(frozen=True)
class BuildRequest:
    """What ``inv build`` / ``inv unpatch --device-type`` asks for."""

    devices: tuple[str, ...]
    task: str | None = None
    commit: str | None = None
    backends: tuple[str, ...] = ()
    key_paths: tuple[Path, ...] = ()
    three_way: bool = False
    jobs: int | None = None
    force: bool = False
    report: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    source: SetSource = GIT_SETS  # where history and patch sets come from (git, or a bundle)
    root: Path | None = None  # where build trees go (default: the workspace's build/)
    progress: bool = True  # the per-step progress lines on stderr


def build_root(ws: Workspace) -> Path:
    """Where build trees go: ``<workspace>/build``."""
    return ws.root / BUILD_DIR


def build_devices(ws: Workspace, request: BuildRequest) -> dict[str, Path]:
    """Build (or find up to date) ``build/<V_M>`` for every requested device type.

    Returns device type → build folder. With several device types, also writes
    ``build/hetero.json``. Raises FlagScaleError (one line) on the first failure.
    """
    devices = list(dict.fromkeys(request.devices))
    if not devices:
        raise FlagScaleError(
            "no --device given", hint="name a device type, e.g. --device Metax_C550"
        )
    root = request.root or _checked_build_root(ws)
    plans = _plan_all(ws, devices, request)
    for plan in plans:
        _refuse_linked_target(root / plan.device_type)
    pending = []
    for plan in plans:
        if _up_to_date(root, plan, request):
            _clean_dead_builds(root, plan.device_type, request)
        else:
            pending.append(plan)
    if pending:
        _scratch(ws)  # create the scratch repository once, before any thread needs it
    _run_builds(ws, pending, request)
    result = {plan.device_type: root / plan.device_type for plan in plans}
    if len(devices) > 1:
        with reported_write_failures(root / HETERO_MAP, _shown):
            _write_hetero_map(root, result, request)
    return result


# --- where builds go ---------------------------------------------------------------------------


def _checked_build_root(ws: Workspace) -> Path:
    """``build/``, refused when it is a symlink: a build never writes through a link it did not
    make into a folder the user did not name (another clone, a source tree)."""
    root = build_root(ws)
    if root.is_symlink():
        raise FlagScaleError(
            f"{BUILD_DIR} in {ws.root} is a symlink (to {os.readlink(root)}): inv build writes"
            f" build trees only into a {BUILD_DIR}/ folder of the workspace, never through a link",
            hint=f"replace the link by a folder (from {shlex.quote(str(ws.root))}:"
            f" rm {BUILD_DIR} && mkdir {BUILD_DIR}) and build again; to build on another disk,"
            " clone FlagScale there",
        )
    if root.exists() and not root.is_dir():
        raise FlagScaleError(
            f"{BUILD_DIR} in {ws.root} is a file, not a folder",
            hint=f"move it away and build again ({BUILD_DIR}/ holds the build trees)",
        )
    return root


def _refuse_linked_target(target: Path) -> None:
    """``build/<V_M>`` must be the folder a build made, not a link to someone else's tree."""
    if target.is_symlink():
        raise FlagScaleError(
            f"{_shown(target)} is a symlink (to {os.readlink(target)}): a build tree is a folder"
            " inv build makes itself; it neither writes through the link nor replaces it",
            hint=f"remove the link (rm {_shown(target)}; what it points to stays as it is) and"
            " build again",
        )


def _clean_dead_builds(root: Path, device_type: str, request: BuildRequest) -> None:
    """Remove what killed builds of ``device_type`` left in ``build/``, even when there is
    nothing to build. A live builder holds the lock: its staging folder is left alone."""
    if not stale_leftovers(root, device_type):
        return
    try:
        with DeviceLock(root, device_type):
            clean_stale(root, device_type)
    except BuildLockedError:
        return
    except OSError as exc:
        request.report(
            f"warning: could not remove what a killed build of {device_type} left in"
            f" {BUILD_DIR}/ ({exc.strerror}); the next build removes it"
        )


# --- planning ---------------------------------------------------------------------------------


def _plan_all(ws: Workspace, devices: list[str], request: BuildRequest) -> list[BuildPlan]:
    """One plan per device; several devices share a FlagScale commit where the history allows."""
    commit = request.commit
    if len(devices) > 1 and commit is None:
        commit = _common_history_commit(ws, devices, request)
    plans = [
        plan_device(
            ws,
            device,
            task=request.task,
            commit=commit,
            backends=request.backends,
            three_way=request.three_way,
            source=request.source,
        )
        for device in devices
    ]
    if len(plans) > 1:
        _report_bases(plans, request)
    if request.source is GIT_SETS and commit is None:
        for plan in plans:
            _warn_newer_sets(ws, plan, request)
    return plans


def _warn_newer_sets(ws: Workspace, plan: BuildPlan, request: BuildRequest) -> None:
    """Say when the work tree holds other sets than the history entry this build uses."""
    changed = sets_changed_since(ws, plan.device_type, list(plan.sets), plan.choice.commit)
    if changed:
        request.report(
            f"warning: {', '.join(changed)} in your work tree differ from the patch sets of the"
            f" history entry being built ({plan.choice.commit[:12]}): this builds the recorded"
            f" sets; build yours with `inv build --device {plan.device_type} --work-tree`, and"
            " record them after the merge (`inv record-history`, docs/history.md)"
        )


def _common_history_commit(ws: Workspace, devices: list[str], request: BuildRequest) -> str | None:
    """The newest history commit that holds patch sets for every device type, if any."""
    choices = [request.source.choose(ws, d, request.task, None, request.backends) for d in devices]
    shared = [c for c in choices[0].commits if all(c in other.commits for other in choices[1:])]
    if not shared:
        return None
    newest = shared[-1]
    behind = [c.device_type for c in choices if c.commit != newest]
    if behind:
        request.report(
            f"note: building {', '.join(devices)} from FlagScale commit {newest[:12]}, the newest"
            f" history entry they share ({', '.join(behind)} also has newer patch sets; build it"
            " alone to use them)"
        )
    return newest


def _report_bases(plans: list[BuildPlan], request: BuildRequest) -> None:
    bases = {plan.flagscale_base for plan in plans}
    if len(bases) > 1:
        listed = ", ".join(f"{p.device_type} at {p.flagscale_base[:12]}" for p in plans)
        request.report(
            f"note: the device types are built from different FlagScale bases ({listed}):"
            " their history entries share no commit"
        )


# --- deciding whether to build ----------------------------------------------------------------


def _up_to_date(root: Path, plan: BuildPlan, request: BuildRequest) -> bool:
    """True when ``build/<V_M>`` holds exactly this plan's build, untouched since."""
    target = root / plan.device_type
    if not target.exists():
        return False
    record = read_record(target)
    if record is None:
        if request.force:
            return False
        raise FlagScaleError(
            f"{_shown(target)} exists but was not made by inv build (no {RECORD_NAME})",
            hint="move it away, or rerun with --force to replace it (its files are saved to"
            f" {_shown(_edits_path(target))} first)",
        )
    changed = _hand_changes(target)
    if changed:
        if request.force:
            return False
        raise FlagScaleError(
            f"{_shown(target)} was changed since it was built ({'; '.join(changed)}):"
            " rebuilding would lose those edits",
            hint=f"rerun with --force to save them to {_shown(_edits_path(target))} and rebuild",
        )
    if record.fingerprint == fingerprint_of(plan.inputs()):
        request.report(f"{_shown(target)}: up to date ({plan.device_type} at {_where(plan)})")
        return True
    return False


def _hand_changes(target: Path, limit: int = 3) -> list[str]:
    """Files under ``target`` changed since the build wrote them (first ``limit``)."""
    try:
        recorded = read_state(target)
    except StateFormatError:
        return [f"its {STATE_NAME} is from an older version of the tool, which could miss edits"]
    if recorded is None:
        return [f"its {STATE_NAME} is missing or damaged"]
    return hand_changes(target, recorded, limit)


def _where(plan: BuildPlan) -> str:
    return f"FlagScale {plan.flagscale_base[:12]}, {plan.choice.described}"


def _shown(path: Path) -> str:
    """A path under build/ as users know it (``build/Metax_C550``), others as given."""
    parts = path.parts
    if BUILD_DIR in parts:
        return "/".join(parts[len(parts) - parts[::-1].index(BUILD_DIR) - 1 :])
    return str(path)


def _edits_path(target: Path) -> Path:
    """How saved edits are named (``build/<V_M>.edits-<UTC time>.patch``), for messages."""
    return target.with_name(f"{target.name}.edits-<time>.patch")


# --- running builds ---------------------------------------------------------------------------


def _scratch(ws: Workspace) -> Path:
    from flagscale.overlay.layered_trees import scratch_repo

    return scratch_repo(ws)


def _run_builds(ws: Workspace, plans: list[BuildPlan], request: BuildRequest) -> None:
    """Prepare the base trees one plan at a time (checkouts, fetches), then build in parallel."""
    if not plans:
        return
    cache: dict[tuple[str, str, bool], str] = {}
    bases = [_base_trees(ws, plan, cache) for plan in plans]
    jobs = request.jobs or min(len(plans), os.cpu_count() or 1)
    if jobs <= 1 or len(plans) == 1:
        for plan, trees in zip(plans, bases, strict=True):
            _build_one(ws, plan, trees, request)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(_build_one, ws, plan, trees, request)
            for plan, trees in zip(plans, bases, strict=True)
        ]
        errors = [f.exception() for f in futures]
    failures = [e for e in errors if e is not None]
    for extra in failures[1:]:
        print(f"error: {extra}", file=sys.stderr)
    if failures:
        raise failures[0]


def _build_one(
    ws: Workspace, plan: BuildPlan, bases: dict[str, str], request: BuildRequest
) -> Path:
    """Build one device type under its lock, beside the target, and swap it in."""
    root = request.root or build_root(ws)
    target = root / plan.device_type
    stream = None if request.progress else io.StringIO()
    progress = Progress(f"build {plan.device_type}", total=4, stream=stream)
    with reported_write_failures(target, _shown), DeviceLock(root, plan.device_type):
        clean_stale(root, plan.device_type)
        if _up_to_date(root, plan, request):  # someone built it while we waited
            return target
        container = staging_path(root, plan.device_type)
        container.mkdir(parents=True)
        crash_point("build:staging-made")
        try:
            progress.step(f"reading {plan.choice.described}")
            assembler = Assembler(_scratch(ws), container / "git")
            keys = KeyRing(request.key_paths)
            components = _components(ws, plan, bases, keys)
            progress.step("applying patch sets")
            checks = _expectations(ws, plan, keys)
            tree = _assemble(ws, root, plan, components, assembler, checks, request.report)
            for note in assembler.notes:
                request.report(f"{plan.device_type}: {note}")
            progress.step(f"writing {_shown(target)}")
            staged = container / "tree"
            assembler.write_out(tree, staged)
            crash_point("build:tree-written")
            if target.exists():
                _save_edits(ws, target, tree, assembler, request)
            _write_record(staged, plan, tree)
            remove_tree(container / "git")
            progress.step("swapping in")
            replace_directory(staged, target)
        finally:
            _remove_quietly(container)
        with contextlib.suppress(OSError):  # left for the next build: never hides the report
            clear_conflicts(conflicts_path(target), request.report)
    progress.finish(f"built {_shown(target)} ({_where(plan)})")
    return target


def _remove_quietly(path: Path) -> None:
    """Remove a folder of this build; one that resists (a full or read-only disk) is left for
    the next build to remove, and never hides the error that is already being reported."""
    with contextlib.suppress(OSError):
        remove_tree(path)


def assemble_trees(
    ws: Workspace, plan: BuildPlan, key_paths: Sequence[Path], work: Path
) -> tuple[dict[str, str], Assembler]:
    """The tree of each part of ``plan``'s build (prefix → tree id: "" for FlagScale's own
    files, ``third_party/<backend>`` for each backend), made exactly as ``inv build`` makes them,
    without writing the files out. The new objects go under ``work``; the returned Assembler
    reads them (``entries``) until ``work`` is removed."""
    bases = _base_trees(ws, plan, {})
    components = _components(ws, plan, bases, KeyRing(key_paths))
    assembler = Assembler(_scratch(ws), work)
    trees = {c.prefix: assembler.patched_tree(c, three_way=False) for c in components}
    return trees, assembler


def _write_record(staged: Path, plan: BuildPlan, tree: str) -> None:
    inputs = plan.inputs()
    record = BuildRecord(
        device_type=plan.device_type,
        fingerprint=fingerprint_of(inputs),
        tree=tree,
        inputs=inputs,
        tool_version=__version__,
    )
    (staged / RECORD_NAME).write_bytes(record_bytes(record))
    write_state(staged)


# --- components: what gets patched where -----------------------------------------------------


def assemble_tree(
    ws: Workspace,
    plan: BuildPlan,
    assembler: Assembler,
    *,
    key_paths: Sequence[Path] = (),
    report: Callable[[str], None] = print,
) -> str:
    """The build tree of ``plan`` as a git tree in ``assembler``'s objects; nothing written out.

    The same assembly and checks as a build (no ``--3way``): for tools that compare builds.
    """
    keys = KeyRing(key_paths)
    components = _components(ws, plan, _base_trees(ws, plan, {}), keys)
    checks = _expectations(ws, plan, keys)
    return _assemble(ws, build_root(ws), plan, components, assembler, checks, report)


def read_patches(
    ws: Workspace, plan: BuildPlan, *, key_paths: Sequence[Path] = ()
) -> dict[str, tuple[PatchPiece, ...]]:
    """backend → its set's patch files as the build applies them (checked, decrypted)."""
    files = [f for s in plan.sets.values() for f in s.files]
    blobs = read_blobs(ws, [f.blob for f in files if f.data is None])
    keys = KeyRing(key_paths)
    return {name: _pieces(patch_set, blobs, keys) for name, patch_set in plan.sets.items()}


def _components(
    ws: Workspace, plan: BuildPlan, bases: dict[str, str], keys: KeyRing
) -> list[Component]:
    """Each part of the tree with its base tree and its (decrypted) patch pieces."""
    files = [f for s in plan.sets.values() for f in s.files]
    blobs = read_blobs(ws, [f.blob for f in files if f.data is None])
    components = []
    for name in [FLAGSCALE, *plan.backends]:
        patch_set = plan.sets.get(name)
        components.append(
            Component(
                name=name,
                prefix="" if name == FLAGSCALE else f"third_party/{name}",
                base_tree=bases[name],
                pieces=_pieces(patch_set, blobs, keys),
                legacy=bool(patch_set and patch_set.layout == "legacy"),
            )
        )
    return components


def _base_trees(
    ws: Workspace, plan: BuildPlan, cache: dict[tuple[str, str, bool], str]
) -> dict[str, str]:
    """name → the tree its patches apply to: FlagScale at the base; pin + base layer (or the
    bare pin, for sets in FlagScale's older layout) for each backend."""
    from flagscale.overlay.layered_trees import flagscale_tree, layered_tree

    key = (FLAGSCALE, plan.flagscale_base, False)
    if key not in cache:
        cache[key] = flagscale_tree(ws, plan.flagscale_base)
    trees = {FLAGSCALE: cache[key]}
    for name in plan.backends:
        patch_set = plan.sets.get(name)
        with_layer = patch_set is None or patch_set.apply_layer
        pin = plan.pins[name]
        key = (name, plan.flagscale_base if with_layer else pin, with_layer)
        if key not in cache:
            _ensure_pin(ws, name, pin, plan.flagscale_base)
            cache[key] = (
                layered_tree(ws, name, plan.flagscale_base) if with_layer else _pin_tree(ws, pin)
            )
        trees[name] = cache[key]
    return trees


def _pin_tree(ws: Workspace, pin: str) -> str:
    scratch = _scratch(ws)
    found = git(["--git-dir", str(scratch), "rev-parse", f"{pin}^{{tree}}"], scratch)
    return found.decode().strip()


def _ensure_pin(ws: Workspace, name: str, pin: str, declared_at: str) -> None:
    """Make sure ``third_party/<name>`` holds ``pin`` (fetched or imported only if missing)."""
    from flagscale.upstream.sync import ensure_pin

    ensure_pin(ws, ws.backend(name), pin, declared_at=declared_at)


def _pieces(
    patch_set: SetPlan | None, blobs: dict[str, bytes], keys: KeyRing
) -> tuple[PatchPiece, ...]:
    """The set's patch files, checked against their recorded sha256 and decrypted, in order."""
    if patch_set is None:
        return ()
    pieces = []
    for stored in patch_set.files:
        data = stored.data if stored.data is not None else blobs[stored.blob]
        if stored.sha256 and hashlib.sha256(data).hexdigest() != stored.sha256:
            raise FlagScaleError(
                f"{stored.path}: its sha256 does not match {patch_set.source}: the file was"
                " changed after the patch set was made",
                hint="restore it from git, or ask the vendor for the patch set",
            )
        if stored.encrypted:
            data = keys.decrypt(patch_set, stored.path, stored.name, stored.scheme, data)
        pieces.append(PatchPiece(label=stored.path, text=data))
    return tuple(pieces)


# --- applying ---------------------------------------------------------------------------------


def _expectations(ws: Workspace, plan: BuildPlan, keys: KeyRing) -> dict[str, Expectation]:
    """backend → what its set promises to produce (checked after its patches are applied)."""
    state = ws.state_dir
    expectations = {}
    for name, patch_set in plan.sets.items():
        key = None
        if patch_set.key_id is not None and any(f.scheme == "fsenc" for f in patch_set.files):
            key = keys.key_for(patch_set)
        source = patch_set.source or patch_set.folder
        expectations[name] = Expectation(source, patch_set.results, key, state)
    return expectations


def _assemble(
    ws: Workspace,
    root: Path,
    plan: BuildPlan,
    components: list[Component],
    assembler: Assembler,
    checks: dict[str, Expectation],
    report: Callable[[str], None],
) -> str:
    """The whole build tree's id; with ``--3way``, conflicts go to ``build/<V_M>.conflicts/``.

    Each patched component is checked against what its set was made to produce, and every
    symlink of the tree as assembled is checked (``flagscale.core.paths.check_links``).
    """
    trees: dict[str, str] = {}
    conflicts: list[tuple[Component, PatchApplyError]] = []
    for component in components:
        _check_reach(component)
        try:
            tree = assembler.patched_tree(component, three_way=plan.three_way)
        except PatchApplyError as exc:
            if not plan.three_way:
                raise
            conflicts.append((component, exc))
            continue
        trees[component.prefix] = tree
        if component.pieces and component.name in checks:
            check = checks[component.name]
            check_results(
                assembler, component, tree, check, three_way=plan.three_way, report=report
            )
    if conflicts:
        _leave_conflicts(ws, root, plan, conflicts, components, assembler, report)
    parts = {prefix: tree for prefix, tree in trees.items() if prefix}
    combined = assembler.combined_tree(trees[""], parts)
    _check_links(ws, plan, components, assembler.symlinks(combined))
    return combined


def _check_links(
    ws: Workspace, plan: BuildPlan, components: list[Component], links: dict[str, str]
) -> None:
    """No symlink of the build tree leads out of the part (FlagScale, a backend) it is in."""
    if not links:
        return
    roots = [component.prefix for component in components]
    check_links(links, lambda path: _link_source(ws, plan, components, path), roots)


def _link_source(ws: Workspace, plan: BuildPlan, components: list[Component], path: str) -> str:
    """``path`` of the build tree with what put it there: a patch file, the base layer, the
    upstream pin, or FlagScale's own files (for error messages only)."""
    holders = [c for c in components if c.prefix and path.startswith(f"{c.prefix}/")]
    component = holders[0] if holders else next(c for c in components if not c.prefix)
    inner = path[len(component.prefix) + 1 :] if component.prefix else path
    label = piece_for_path(component, inner)
    if label is not None:
        return f"{label}: {path}"
    base = plan.flagscale_base[:12]
    if not component.prefix:
        layers = [b.layer for b in ws.backends.values()]
        if any(path.startswith(f"{layer}/") for layer in layers):
            return f"{path} (the base layer at FlagScale {base})"
        return f"{path} (FlagScale's files at {base})"
    backend = ws.backend(component.name)
    if _in_layer(ws, backend.layer, plan.flagscale_base, inner):
        return f"{backend.layer}/{inner} (the base layer at FlagScale {base})"
    pin = plan.pins.get(component.name, "")
    return f"{path} (upstream {component.name} at {pin[:12]})"


def _in_layer(ws: Workspace, layer: str, commit: str, inner: str) -> bool:
    from flagscale.overlay.layered_trees import scratch_repo, tree_entries

    return any(e.path == inner for e in tree_entries(scratch_repo(ws), commit, layer))


def _check_reach(component: Component) -> None:
    """FlagScale's patch set may not write where the backends or builds go."""
    if component.prefix or not component.pieces:
        return
    for piece in component.pieces:
        for line in piece.text.split(b"\n"):
            if not line.startswith(b"diff --git "):
                continue
            names = line[len(b"diff --git ") :].decode("utf-8", "surrogateescape")
            for folder in _ROOT_ONLY:
                if f"a/{folder}/" in names or f"b/{folder}/" in names:
                    raise FlagScaleError(
                        f"{piece.label}: changes {folder}/, which FlagScale's own patch set may"
                        " not touch (backends get their own patch sets)",
                        hint="ask the vendor to regenerate the patch set",
                    )


def _leave_conflicts(
    ws: Workspace,
    root: Path,
    plan: BuildPlan,
    failures: list[tuple[Component, PatchApplyError]],
    components: list[Component],
    assembler: Assembler,
    report: Callable[[str], None],
) -> None:
    """Write the 3-way merge results of the failed components and report their conflicts
    (an earlier conflicts folder someone edited is kept aside, never replaced)."""
    target = conflicts_path(root / plan.device_type)
    staging = staging_path(root, plan.device_type, "conflicts-tmp")
    conflicted: list[str] = []
    try:
        for component, error in failures:
            where = staging / component.prefix if component.prefix else staging
            paths = assembler.three_way(component, where)
            if not paths:
                raise error
            prefix = f"{component.prefix}/" if component.prefix else ""
            conflicted += [f"{prefix}{path}" for path in paths]
        _check_links(ws, plan, components, _folder_links(staging))
        write_state(staging)  # what the next build compares before it removes the folder
        clear_conflicts(target, report)
        replace_directory(staging, target)
    finally:
        remove_tree(staging)
    shown = ", ".join(conflicted[:5]) + (
        f" and {len(conflicted) - 5} more" if len(conflicted) > 5 else ""
    )
    raise ConflictError(
        f"{plan.device_type}: the patch sets conflict with their base in {len(conflicted)}"
        f" file(s): {shown}; the files with conflict markers are in {_shown(target)}/",
        hint=f"inspect them; {_shown(root / plan.device_type)} was left as it was",
    )


def _folder_links(folder: Path) -> dict[str, str]:
    """Every symlink under ``folder`` (relative path → target), as written on disk."""
    links: dict[str, str] = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(base, name)
            if os.path.islink(path):
                links[os.path.relpath(path, folder).replace(os.sep, "/")] = os.readlink(path)
    return links


# --- saving hand edits ------------------------------------------------------------------------


def _save_edits(
    ws: Workspace, target: Path, tree: str, assembler: Assembler, request: BuildRequest
) -> None:
    """Before ``--force`` replaces a changed build, save its changes as a new patch file.

    Each save gets a name of its own (``build/<V_M>.edits-<UTC time>.patch``): a saved patch is
    never overwritten, by a later ``--force`` or anything else.
    """
    paths: list[str] | None = None
    if read_record(target) is not None:
        recorded = _recorded_state(target)
        if recorded is not None:
            paths = [line[2:] for line in hand_changes(target, recorded, limit=1 << 30)]
            if not paths:
                return
    patch = assembler.diff_folder(tree, target, paths)
    if not patch:
        return
    edits = save_new_patch(target.parent, f"{target.name}.edits", patch)
    crash_point("build:edits-saved")
    restore = (
        f"git -C {shlex.quote(str(ws.root))} apply"
        f" --directory={shlex.quote(_shown(target))} {shlex.quote(_shown(edits))}"
    )
    request.report(
        f"saved the changes made in {_shown(target)} to {_shown(edits)}"
        f" (to restore them on the new build, from any folder: {restore})"
    )


def _recorded_state(target: Path) -> FolderState | None:
    try:
        return read_state(target)
    except StateFormatError:
        return None


# --- the heterogeneous map --------------------------------------------------------------------


def _write_hetero_map(root: Path, folders: dict[str, Path], request: BuildRequest) -> None:
    """``build/hetero.json``: device type → absolute build folder, for heterogeneous training."""
    data = {device: str(path.resolve()) for device, path in sorted(folders.items())}
    validate(data, "hetero-map", f"{BUILD_DIR}/{HETERO_MAP}")
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    path = root / HETERO_MAP
    with DeviceLock(root, "hetero"):
        clean_stale(root, "hetero")  # a temporary file of a killed writer
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return
        write_atomically(path, text.encode())
    request.report(f"wrote {_shown(path)}")
