"""Laying FlagScale's base layer over upstream checkouts (``inv unpatch``).

For each backend: make sure ``third_party/<b>`` holds the pin, refuse when it holds edits that
are not in ``backends/<b>`` (or save them with ``force``), then bring it to pin + base layer,
touching only the paths that changed since the last run. What was laid is recorded (see
flagscale.overlay.laid_record) so the no-change case is a fingerprint check and one ``git ls-files``
scan. Harvesting edits back into the layer (``inv patch``) is in flagscale.overlay.patch.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git
from flagscale.core.paths import check_relative
from flagscale.overlay.checkout import SHOWN_PATHS, Checkout
from flagscale.overlay.checkout_state import DELETED, PinTree, State, actual_state, read_head
from flagscale.overlay.laid_links import check_laid_links
from flagscale.overlay.laid_record import MODES, LaidRecord, backend_lock, fingerprint
from flagscale.overlay.layer import Layer, read_layer
from flagscale.overlay.layer_files import (
    blob_oid,
    prune_empty_parents,
    remove_path,
    write_file,
    write_link,
)
from flagscale.upstream.sync import ensure_checkout
from flagscale.upstream.workspace import Backend, Workspace, find_workspace

__all__ = ["LayResult", "lay_base_layer", "unpatch"]

Echo = Callable[[str], None]


@dataclass
class LayResult:
    """What ``inv unpatch`` did to one backend."""

    backend: str
    mode: str
    pin: str
    up_to_date: bool = False
    written: int = 0
    restored: int = 0
    removed: int = 0
    saved: Path | None = None

    def summary(self) -> str:
        if self.up_to_date:
            return f"{self.backend}: up to date ({self.mode}, pin {self.pin})"
        return (
            f"{self.backend}: laid base layer ({self.mode}, pin {self.pin}):"
            f" {self.written} written, {self.restored} restored from the pin,"
            f" {self.removed} removed"
        )


def unpatch(
    start: Path | None = None,
    backends: list[str] | None = None,
    *,
    mode: str = "symlink",
    force: bool = False,
    echo: Echo = print,
) -> list[LayResult]:
    """``inv unpatch``: lay the base layer of the named (default: non-optional) backends."""
    if mode not in MODES:
        raise FlagScaleError(f"unknown layer mode {mode!r}", hint="use --mode symlink or copy")
    workspace = find_workspace(start)
    selected = workspace.select(backends)
    state_dir = workspace.state_dir
    results = []
    for backend in selected:
        result = lay_base_layer(
            workspace, backend, mode=mode, force=force, state_dir=state_dir, echo=echo
        )
        echo(result.summary())
        results.append(result)
    return results


def lay_base_layer(
    workspace: Workspace,
    backend: Backend,
    *,
    mode: str = "symlink",
    force: bool = False,
    state_dir: Path | None = None,
    echo: Echo = print,
) -> LayResult:
    """Bring ``third_party/<b>`` to its pin + base layer; refuse (or save, with ``force``) edits."""
    ensure_checkout(workspace, backend)
    pin = workspace.pin(backend)
    checkout = Checkout(workspace, backend, state_dir or workspace.state_dir)
    with backend_lock(checkout.state.lock, backend.name):
        record = checkout.load_record()
        checkout.ensure_index(record, pin)
        base = record.pin if record else pin
        head = read_head(checkout.root)
        edits = checkout.unexplained(checkout.changed_paths(), _alternatives(record, base, head))
        layer = read_layer(workspace, backend, record.sources if record else None)
        inputs = fingerprint(pin, mode, layer.raw(mode))
        result = LayResult(backend.name, mode, pin)
        if not edits and _up_to_date(record, pin, mode, head, inputs):
            result.up_to_date = True
            _save_sources(checkout, record, layer)
            return result
        check_laid_links(checkout, layer, pin)
        if edits:
            if not force:
                raise _dirty_error(backend, edits)
            result.saved = checkout.save_edits(edits)
            echo(
                f"{backend.name}: saved {len(edits)} edit(s) to {result.saved}"
                f" (restore with `git -C {backend.checkout} apply {result.saved}`)"
            )
        _lay(checkout, record, layer, inputs, pin, mode, head, set(edits), result)
        return result


def _alternatives(record: LaidRecord | None, base: str, head: str) -> list[tuple[str, dict]]:
    """States a path may be in that are not user edits: a run cut short, or a moved HEAD."""
    found: list[tuple[str, dict]] = []
    if record is not None and record.pending is not None:
        found.append(record.pending)
    if head and head != base:
        found.append((head, record.entries if record else {}))
    return found


def _up_to_date(record: LaidRecord | None, pin: str, mode: str, head: str, inputs: str) -> bool:
    return (
        record is not None
        and record.pending is None
        and record.pin == pin == head
        and record.mode == mode
        and record.fingerprint == inputs
    )


def _save_sources(checkout: Checkout, record: LaidRecord | None, layer: Layer) -> None:
    """Keep the stat cache fresh so the next run hashes nothing (only written when it changed)."""
    if record is None:
        return
    sources = layer.prune_sources()
    if sources != record.sources:
        record.sources = sources
        record.save(checkout.state.record)


def _dirty_error(backend: Backend, edits: list[str]) -> FlagScaleError:
    shown = ", ".join(edits[:SHOWN_PATHS])
    more = f" and {len(edits) - SHOWN_PATHS} more" if len(edits) > SHOWN_PATHS else ""
    return FlagScaleError(
        f"{backend.name}: {len(edits)} edit(s) in {backend.checkout} are not in {backend.layer}:"
        f" {shown}{more}; run `inv patch` to keep them, or `inv unpatch --force` to save them as"
        " a patch file and discard them"
    )


def _lay(
    checkout: Checkout,
    record: LaidRecord | None,
    layer: Layer,
    inputs: str,
    pin: str,
    mode: str,
    head: str,
    edits: set[str],
    result: LayResult,
) -> None:
    """Move the checkout from what was laid to the layer on ``pin``; record it at each step."""
    name = checkout.backend.name
    laid = dict(record.entries) if record else {}
    base = record.pin if record else pin
    extra = set(edits)
    if record is not None and record.pending is not None:
        extra |= set(record.pending[1])
    desired = layer.desired(mode, checkout.tree(pin))
    if head != pin or base != pin:
        _move_to_pin(checkout, laid, base, pin, extra, mode, layer)
        laid, extra = {}, set()
    LaidRecord(name, pin, mode, laid, "", layer.sources, (pin, desired)).save(checkout.state.record)
    laid_now = _transition(checkout, laid, desired, checkout.tree(pin), extra, layer, result)
    inputs = inputs if laid_now == desired else ""
    LaidRecord(name, pin, mode, laid_now, inputs, layer.prune_sources()).save(checkout.state.record)


def _move_to_pin(
    checkout: Checkout,
    laid: dict[str, State],
    base: str,
    pin: str,
    extra: set[str],
    mode: str,
    layer: Layer,
) -> None:
    """Clear the old layer, then check out ``pin`` detached (the tree holds no edits by now)."""
    record = LaidRecord(checkout.backend.name, base, mode, laid, "", layer.sources, (pin, {}))
    record.save(checkout.state.record)
    for path in sorted(set(laid) | extra):
        remove_path(checkout.root, path)
    git(["checkout", "--quiet", "--force", "--detach", pin], checkout.root)
    checkout.index.path.unlink(missing_ok=True)
    checkout.index.rebuild(checkout.tree(pin), {})
    LaidRecord(checkout.backend.name, pin, mode, {}, "", layer.sources).save(checkout.state.record)


def _transition(
    checkout: Checkout,
    laid: dict[str, State],
    desired: dict[str, State],
    pin: PinTree,
    extra: Iterable[str],
    layer: Layer,
    result: LayResult,
) -> dict[str, State]:
    """Make every path whose laid state changes (plus ``extra``) what ``desired`` says.

    Each path is checked before it is written, so running this again after an interruption
    only finishes the work. Returns the states now laid.
    """
    paths = {p for p in laid.keys() | desired.keys() if laid.get(p) != desired.get(p)}
    paths |= set(extra)
    parents: dict[str, bool] = {}
    removals: list[str] = []
    restores: list[str] = []
    writes: list[tuple[str, State]] = []
    for path in sorted(paths):
        if pin.is_gitlink(path):
            continue
        want = desired.get(path)
        have = actual_state(checkout.root, path, parents)
        # Files are replaced by rename and restored by git over what is there, so a run cut
        # short never leaves a path missing that it was about to rewrite.
        if want is None:
            if pin.matches(path, have):
                continue
            if pin.has_file(path):
                restores.append(path)
            elif have is not None:
                removals.append(path)
        elif want == DELETED:
            if have is not None:
                removals.append(path)
        elif have != want:
            writes.append((path, want))
    for path in removals:
        remove_path(checkout.root, path)
    for path in restores:
        _clear_folder(checkout, path)
    checkout.index.restore(pin.commit, restores)
    laid_now = dict(desired)
    folders: dict[str, str] = {}
    for path, want in writes:
        laid_now[path] = _write(checkout, layer, path, want, folders)
    # Every path looked at, not only those written: after an interrupted run a path may hold
    # its new state on disk while the laid index still has the old one.
    checkout.index.record(sorted(paths - set(restores)))
    result.written += len(writes)
    result.restored += len(restores)
    result.removed += len(removals)
    return laid_now


def _clear_folder(checkout: Checkout, path: str) -> None:
    """Make room for a file where a folder holds no files any more (only empty folders)."""
    target = checkout.root / path
    if target.is_dir() and not target.is_symlink():
        if any(files for _, _, files in os.walk(target)):
            raise FlagScaleError(
                f"{checkout.backend.checkout}/{path}: a folder with files is in the way of a file",
                hint="move those files away and run `inv unpatch` again",
            )
        shutil.rmtree(target)
        prune_empty_parents(checkout.root, path)


def _write(
    checkout: Checkout, layer: Layer, path: str, want: State, folders: dict[str, str]
) -> State:
    """Lay one layer entry; return the state actually laid (copies: of the bytes written)."""
    check_relative(path, checkout.backend.layer)
    _refuse_symlinked_parents(checkout, path, folders)
    _clear_folder(checkout, path)
    target = checkout.root / path
    kind, value = want
    if kind == "link":
        write_link(target, value)
        return want
    data = (layer.root / path).read_bytes()
    write_file(target, data, executable=kind == "exec")
    return (kind, blob_oid(data))


def _refuse_symlinked_parents(checkout: Checkout, path: str, folders: dict[str, str]) -> None:
    """Nothing is laid through a symlink (it could lead outside the checkout) or a file."""
    parent = os.path.dirname(path)
    while parent:
        kind = folders.get(parent)
        if kind is None:
            kind = folders[parent] = _kind_on_disk(checkout.root / parent)
        if kind in ("link", "file"):
            raise FlagScaleError(
                f"{checkout.backend.layer}/{path}: {checkout.backend.checkout}/{parent} is a"
                f" {'symlink' if kind == 'link' else 'file'}, so the file cannot be laid below it",
                hint=f"add {parent!r} to {checkout.backend.deletions}",
            )
        parent = os.path.dirname(parent)


def _kind_on_disk(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(mode):
        return "link"
    return "folder" if stat.S_ISDIR(mode) else "file"
