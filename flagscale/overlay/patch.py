"""Writing edits made inside ``third_party/<b>`` back into the base layer (``inv patch``).

The new layer is every path whose state in the checkout differs from the pin; a file reached
through an overlay symlink counts by the layer file it shows, so edits made through links are
already in place and paths reverted to upstream leave the layer. Each path is decided three ways
(as laid, as in ``backends/<b>`` now, as in the checkout now) so that a change made directly in
``backends/<b>`` since ``inv unpatch`` is kept, and a path changed on both sides is a conflict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.core.crashpoints import crash_point
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitlisting import listed_entries
from flagscale.core.paths import check_relative, ensure_inside
from flagscale.core.repository_lock import repository_lock
from flagscale.core.savededits import (
    save_tree_diff,
    tree_from_entries,
    write_blobs,
)
from flagscale.overlay.checkout import (
    SHOWN_PATHS,
    Checkout,
    apply_command,
    refuse_symlinked_checkout,
    saved_folder,
)
from flagscale.overlay.checkout_state import DELETED, PinTree, State, actual_state, read_head
from flagscale.overlay.harvest_plan import HarvestPlan, plan_path
from flagscale.overlay.laid_record import LaidRecord, backend_lock, fingerprint
from flagscale.overlay.layer import Layer, overlay_target, read_layer
from flagscale.overlay.layer_files import (
    blob_oid,
    check_link_target,
    deletions_change,
    deletions_text,
    link_oid,
    remove_path,
    write_deletions,
    write_file,
    write_link,
)
from flagscale.overlay.layer_shown import LayerPath, refuse_layer_at_pin
from flagscale.upstream.workspace import Backend, Workspace, find_workspace

__all__ = ["HarvestResult", "harvest_base_layer", "patch"]

Echo = Callable[[str], None]
_MODES = {"file": "100644", "exec": "100755", "link": "120000"}


@dataclass
class HarvestResult:
    """What ``inv patch`` wrote into one backend's layer."""

    backend: str
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    deletions: int = 0
    deletions_changed: bool = False
    saved: Path | None = None

    def summary(self) -> str:
        if not (self.written or self.removed or self.deletions_changed):
            return f"{self.backend}: base layer already holds every edit"
        return (
            f"{self.backend}: base layer updated: {len(self.written)} file(s) written,"
            f" {len(self.removed)} removed, {self.deletions} upstream file(s) deleted"
        )


@dataclass
class _Decision:
    """One path: what the checkout holds (``have``, and ``mine`` relative to the pin), what the
    layer holds (``theirs``), and the outcome (``result``; None = as at the pin)."""

    path: str
    have: State | None
    mine: State | None
    theirs: State | None
    overlay: bool
    from_checkout: bool

    @property
    def result(self) -> State | None:
        return self.mine if self.from_checkout else self.theirs


def patch(
    start: Path | None = None,
    backends: list[str] | None = None,
    *,
    force: bool = False,
    echo: Echo = print,
) -> list[HarvestResult]:
    """``inv patch``: write the edits in the named (default: non-optional) checkouts back."""
    workspace = find_workspace(start)
    selected = workspace.select(backends)
    state_dir = workspace.state_dir
    results = []
    with repository_lock(workspace.root, "inv patch"):
        for backend in selected:
            result = harvest_base_layer(
                workspace, backend, force=force, state_dir=state_dir, echo=echo
            )
            echo(result.summary())
            results.append(result)
    return results


def harvest_base_layer(
    workspace: Workspace,
    backend: Backend,
    *,
    force: bool = False,
    state_dir: Path | None = None,
    echo: Echo = print,
) -> HarvestResult:
    """Write every edit in ``third_party/<b>`` into ``backends/<b>``; return what changed."""
    refuse_symlinked_checkout(workspace, backend)
    checkout = Checkout(workspace, backend, state_dir or workspace.state_dir)
    with backend_lock(checkout.state.lock, backend.name):
        record = _laid_record(checkout)
        checkout.ensure_index(record, record.pin)
        changed = checkout.changed_paths()
        layer = read_layer(workspace, backend, record.sources)
        pin = checkout.tree(record.pin)
        plan_file = plan_path(checkout.state.record)
        earlier = HarvestPlan.load(plan_file, backend.name, record.pin)
        decisions, conflicts = _decide(checkout, record, layer, pin, changed, earlier)
        refuse_layer_at_pin(
            backend,
            _layer_paths(pin, decisions),
            f"writing them back would remove them from {backend.layer}",
        )
        if conflicts and not force:
            raise _conflict_error(backend, conflicts)
        result = HarvestResult(backend.name)
        plan = _plan_layer(checkout, layer, decisions)
        result.saved = _save_losses(checkout, layer, plan, conflicts)
        if result.saved is not None:
            restore = apply_command(workspace.root, result.saved)
            echo(
                f"{backend.name}: saved what {backend.layer} held at the path(s) this run"
                f" replaces ({len(plan.losses(conflicts))}) to {result.saved}"
                f" (restore with `{restore}`)"
            )
        crash_point("patch:saved")
        if plan.changes_layer:
            planned = {d.path: d.result for d in decisions if d.from_checkout}
            HarvestPlan(backend.name, record.pin, planned).save(plan_file)
            _write_layer(checkout, layer, plan, result)
        _settle_checkout(checkout, record, layer, decisions, changed)
        plan_file.unlink(missing_ok=True)
        return result


def _laid_record(checkout: Checkout) -> LaidRecord:
    backend = checkout.backend
    record = checkout.load_record()
    if record is None or not (checkout.root / ".git").exists():
        raise FlagScaleError(
            f"{backend.name}: {backend.checkout} was never laid by `inv unpatch`, so its edits"
            f" cannot be told from {backend.layer}",
            hint=f"run `inv unpatch --backend {backend.name}` first",
        )
    if record.pending is not None:
        raise FlagScaleError(
            f"{backend.name}: an earlier `inv unpatch` of {backend.checkout} did not finish",
            hint=f"run `inv unpatch --backend {backend.name}` first",
        )
    head = read_head(checkout.root)
    if head != record.pin:
        raise FlagScaleError(
            f"{backend.name}: {backend.checkout} is at {head or 'no commit'}, but its base layer"
            f" was laid on {record.pin}",
            hint=f"run `inv unpatch --backend {backend.name}` first",
        )
    return record


def _decide(
    checkout: Checkout,
    record: LaidRecord,
    layer: Layer,
    pin: PinTree,
    changed: list[str],
    earlier: HarvestPlan | None = None,
) -> tuple[list[_Decision], list[_Decision]]:
    """Decide every path that was laid, is in the layer, or changed in the checkout.

    ``earlier`` is the plan of a run cut short: what it wrote into the layer is no conflict.
    """
    name = checkout.backend.name
    contents = layer.contents(pin)
    candidates = set(record.entries) | set(changed) | set(contents)
    parents: dict[str, bool] = {}
    decisions, conflicts = [], []
    for path in sorted(candidates):
        if pin.is_gitlink(path) or _below_gitlink(pin, path):
            continue
        have = actual_state(checkout.root, path, parents)
        theirs = pin.normalize(path, contents[path]) if path in contents else None
        overlay = have is not None and have == ("link", overlay_target(name, path))
        mine = theirs if overlay else pin.normalize(path, have)
        laid = record.entries.get(path)
        from_checkout = not overlay and not _unchanged(pin, path, laid, have)
        decision = _Decision(path, have, mine, theirs, overlay, from_checkout)
        decisions.append(decision)
        if (
            from_checkout
            and theirs != mine
            and _layer_moved(name, pin, path, laid, theirs)
            and not (earlier is not None and earlier.wrote(path, theirs))
        ):
            conflicts.append(decision)
    return decisions, conflicts


def _layer_moved(
    backend: str, pin: PinTree, path: str, laid: State | None, theirs: State | None
) -> bool:
    """True when ``backends/<b>`` changed at ``path`` since it was laid (copies only: a symlink
    overlay always shows the layer, so it cannot fall behind)."""
    if laid == ("link", overlay_target(backend, path)):
        return False
    return theirs != (None if laid is None else pin.normalize(path, laid))


def _below_gitlink(pin: PinTree, path: str) -> bool:
    parent = path.rpartition("/")[0]
    while parent:
        if pin.is_gitlink(parent):
            return True
        parent = parent.rpartition("/")[0]
    return False


def _unchanged(pin: PinTree, path: str, laid: State | None, have: State | None) -> bool:
    """True when the checkout still holds what was laid at ``path``."""
    if laid is None:
        return pin.matches(path, have)
    if laid == DELETED:
        return have is None
    return have == laid


def _layer_paths(pin: PinTree, decisions: list[_Decision]) -> list[LayerPath]:
    """Every path the layer changes, and whether the checkout shows the pin's version there
    (so that writing it back would drop the layer's change)."""
    return [
        LayerPath(d.path, pin.has_file(d.path), d.from_checkout and d.mine is None)
        for d in decisions
        if d.theirs is not None
    ]


def _conflict_error(backend: Backend, conflicts: list[_Decision]) -> FlagScaleError:
    names = [d.path for d in conflicts]
    shown = ", ".join(names[:SHOWN_PATHS])
    more = f" and {len(names) - SHOWN_PATHS} more" if len(names) > SHOWN_PATHS else ""
    return FlagScaleError(
        f"{backend.name}: {len(names)} file(s) changed both in {backend.layer} and in"
        f" {backend.checkout} since `inv unpatch`: {shown}{more}; merge them by hand, or run"
        f" `inv patch --force` to save the {backend.layer} side as a patch file and keep the"
        f" {backend.checkout} side"
    )


def _new_deletions(decisions: list[_Decision]) -> list[str]:
    """The deletion list: upstream files the new layer removes, except those its own files
    already replace (a file where a folder was, a folder where a file was)."""
    files = {d.path for d in decisions if d.result is not None and d.result != DELETED}
    folders = {parent for path in files for parent in _parents(path)}
    return sorted(
        d.path
        for d in decisions
        if d.result == DELETED
        and d.path not in folders
        and not any(parent in files for parent in _parents(d.path))
    )


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


@dataclass
class _LayerPlan:
    """What ``inv patch`` changes in ``backends/<b>``: paths removed, files written (over an
    existing one or new), and the deletion list (None when it stays as it is)."""

    decisions: dict[str, _Decision]
    removals: list[str]
    writes: list[_Decision]
    replaced: list[str]  # written over a file the layer has now
    deletions: list[str]
    deletions_change: bool

    @property
    def changes_layer(self) -> bool:
        return bool(self.removals or self.writes or self.deletions_change)

    def losses(self, conflicts: list[_Decision]) -> list[str]:
        """Paths whose current content in ``backends/<b>`` this plan removes or replaces."""
        found = set(self.removals) | set(self.replaced)
        return sorted(found | {d.path for d in conflicts})


def _plan_layer(checkout: Checkout, layer: Layer, decisions: list[_Decision]) -> _LayerPlan:
    """Only what changed: removals, whole files, and the deletion list when its list changes."""
    backend = checkout.backend
    removals, writes, replaced = [], [], []
    for decision in decisions:
        current = layer.state(decision.path)
        current = None if current == DELETED else current
        outcome = decision.result
        if outcome is None or outcome == DELETED:
            if current is not None:
                removals.append(decision.path)
        elif decision.from_checkout and current != outcome:
            writes.append(decision)
            if current is not None:
                replaced.append(decision.path)
    deleted = _new_deletions(decisions)
    change = deletions_change(checkout.workspace.path(backend.deletions), deleted, layer.deletions)
    by_path = {d.path: d for d in decisions}
    return _LayerPlan(by_path, removals, writes, replaced, deleted, change)


def _write_layer(checkout: Checkout, layer: Layer, plan: _LayerPlan, result: HarvestResult) -> None:
    """Write the plan into ``backends/<b>``: removals, the deletion list, then whole files.

    In this order the layer is valid after every step (no path both deleted and a file), so a
    run cut short leaves a layer the next run can read.
    """
    backend = checkout.backend
    for path in plan.removals:
        remove_path(layer.root, path)
        result.removed.append(path)
        crash_point("patch:remove")
    result.deletions = len(plan.deletions)
    if plan.deletions_change:
        where = backend.deletions
        write_deletions(checkout.workspace.path(where), plan.deletions, where)
        result.deletions_changed = True
    crash_point("patch:deletions")
    for decision in plan.writes:
        _write_one(checkout, layer, decision)
        result.written.append(decision.path)
        crash_point("patch:write")


def _write_one(checkout: Checkout, layer: Layer, decision: _Decision) -> None:
    backend = checkout.backend
    path = decision.path
    check_relative(path, backend.checkout)
    target = ensure_inside(layer.root, path, backend.layer)
    if target.is_dir() and not target.is_symlink():
        raise FlagScaleError(
            f"{backend.layer}/{path}: a folder is in the way of a file from {backend.checkout}",
            hint="move it away and run `inv patch` again",
        )
    assert decision.result is not None
    kind, value = decision.result
    if kind == "link":
        check_link_target(path, value, f"{backend.checkout}/{path}")
        write_link(target, value)
    else:
        data = (checkout.root / path).read_bytes()
        write_file(target, data, executable=kind == "exec")


def _settle_checkout(
    checkout: Checkout,
    record: LaidRecord,
    layer: Layer,
    decisions: list[_Decision],
    changed: list[str],
) -> None:
    """Record the checkout as laid now; re-point overlay links whose layer file went away."""
    pin = checkout.tree(record.pin)
    entries: dict[str, State] = {}
    restores: list[str] = []
    touched: set[str] = set(changed)
    for decision in decisions:
        path, now = decision.path, decision.have
        if decision.overlay and (
            decision.result is None or decision.result[0] in ("link", "deleted")
        ):
            now = _repoint(checkout, pin, path, decision.result, restores)
            touched.add(path)
        state = pin.normalize(path, now)
        if state is not None:
            entries[path] = now if now is not None else DELETED
    checkout.index.restore(pin.commit, restores)
    crash_point("patch:repointed")
    checkout.index.record(sorted(touched - set(restores)))
    crash_point("patch:indexed")
    inputs = _inputs_if_laid(checkout, record, entries)
    LaidRecord(
        checkout.backend.name, record.pin, record.mode, entries, inputs, layer.prune_sources()
    ).save(checkout.state.record)


def _inputs_if_laid(checkout: Checkout, record: LaidRecord, entries: dict[str, State]) -> str:
    """The fingerprint of the written layer when the checkout already shows it as unpatch
    would lay it (so the next ``inv unpatch`` has nothing to do), else ""."""
    layer = read_layer(checkout.workspace, checkout.backend, record.sources)
    if layer.desired(record.mode, checkout.tree(record.pin)) != entries:
        return ""
    return fingerprint(record.pin, record.mode, layer.raw(record.mode))


def _repoint(
    checkout: Checkout, pin: PinTree, path: str, outcome: State | None, restores: list[str]
) -> State | None:
    """Give an overlay link whose layer file is gone what the layer now says; return it."""
    remove_path(checkout.root, path)
    if outcome is not None and outcome[0] == "link":
        write_link(checkout.root / path, outcome[1])
        return outcome
    if outcome is None and pin.has_file(path):
        restores.append(path)
        mode, oid = pin.entries[path]
        kind = {"100644": "file", "100755": "exec", "120000": "link"}[mode]
        return (kind, oid) if kind != "link" else _pin_link(checkout, oid)
    return None


def _pin_link(checkout: Checkout, oid: str) -> State:
    from flagscale.core.gitcli import git

    return (
        "link",
        git(["cat-file", "blob", oid], checkout.root).decode("utf-8", "surrogateescape"),
    )


def _save_losses(
    checkout: Checkout, layer: Layer, plan: _LayerPlan, conflicts: list[_Decision]
) -> Path | None:
    """Save what ``backends/<b>`` holds at the paths the plan removes or replaces, where no
    commit holds it (FlagScale's HEAD differs), and always at conflicting paths; the patch goes
    from the new layer back to the current one. Returns its path, or None when nothing is lost.
    """
    workspace, backend = checkout.workspace, checkout.backend
    if not plan.losses(conflicts) and not plan.deletions_change:
        return None
    committed = _committed(workspace, backend)
    must = {d.path for d in conflicts}
    before: dict[str, tuple[str, Path]] = {}
    after: dict[str, tuple[str, Path]] = {}
    for path in plan.losses(conflicts):
        name = f"{backend.layer}/{path}"
        current = layer.state(path)
        if current is None or current == DELETED:
            continue
        if path not in must and committed.get(name) == _entry_id(current):
            continue
        before[name] = (_MODES[current[0]], layer.root / path)
        outcome = plan.decisions[path].result
        if outcome is not None and outcome != DELETED:
            after[name] = (_MODES[outcome[0]], checkout.root / path)
    old_list = workspace.path(backend.deletions)
    list_lost = (
        plan.deletions_change
        and old_list.is_file()
        and committed.get(backend.deletions) != ("100644", blob_oid(old_list.read_bytes()))
    )
    if not before and not list_lost:
        return None
    files = sorted({source for _, source in [*before.values(), *after.values()]})
    ids = dict(zip(files, write_blobs(workspace.root, files), strict=True))
    entries_before = {n: (m, ids[s]) for n, (m, s) in before.items()}
    entries_after = {n: (m, ids[s]) for n, (m, s) in after.items()}
    if list_lost:
        entries_before[backend.deletions] = ("100644", _blob(workspace.root, old_list.read_bytes()))
        if plan.deletions:
            text = deletions_text(plan.deletions).encode("utf-8")
            entries_after[backend.deletions] = ("100644", _blob(workspace.root, text))
    scratch = checkout.state.layer_save_index
    old_tree = tree_from_entries(workspace.root, entries_after, scratch)
    new_tree = tree_from_entries(workspace.root, entries_before, scratch)
    label = f"{backend.name}-backends"
    return save_tree_diff(workspace.root, old_tree, new_tree, saved_folder(workspace), label)


def _committed(workspace: Workspace, backend: Backend) -> dict[str, tuple[str, str]]:
    """(mode, blob id) of the layer's files and deletion list in FlagScale's HEAD."""
    from flagscale.core.gitcli import git, git_ok

    if not git_ok(["rev-parse", "--verify", "-q", "HEAD^{commit}"], workspace.root):
        return {}
    raw = git(
        ["ls-tree", "-r", "-z", "HEAD", "--", f"{backend.layer}/", backend.deletions],
        workspace.root,
    )
    return listed_entries(raw)


def _entry_id(state: State) -> tuple[str, str]:
    kind, value = state
    return (_MODES[kind], link_oid(value) if kind == "link" else value)


def _blob(repo: Path, data: bytes) -> str:
    from flagscale.core.gitcli import git

    return git(["hash-object", "-w", "--stdin"], repo, stdin=data).decode().strip()
