"""One backend's checkout together with the tool's private state about it.

Groups what ``inv unpatch`` and ``inv patch`` both need: the pin trees (read once), the
laid-state record and index, the scan for paths that differ from what was laid, and saving
such edits as a patch file before a forced run discards them.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.paths import first_symlink
from flagscale.core.savededits import save_tree_diff
from flagscale.overlay.checkout_state import DELETED, LaidIndex, PinTree, State, actual_state
from flagscale.overlay.laid_record import LaidRecord, StatePaths, state_paths
from flagscale.overlay.layer_files import is_leftover
from flagscale.upstream.workspace import Backend, Workspace

__all__ = ["SHOWN_PATHS", "Checkout", "apply_command", "refuse_symlinked_checkout", "saved_folder"]

SHOWN_PATHS = 20  # paths named in an error before "and N more"


def saved_folder(workspace: Workspace) -> Path:
    """Where saved edits go: ``.flagscale/saved/`` of this work tree (never overwritten)."""
    return workspace.root / ".flagscale" / "saved"


def apply_command(repository: Path, patch: Path) -> str:
    """A ``git apply`` command that restores ``patch`` in ``repository``, pasted from anywhere."""
    return f"git -C {shlex.quote(str(repository))} apply {shlex.quote(str(patch))}"


def refuse_symlinked_checkout(workspace: Workspace, backend: Backend) -> None:
    """Refuse a checkout reached through a symlink: writing there writes into another tree."""
    linked = first_symlink(workspace.root, backend.checkout)
    if linked is None:
        return
    target = os.readlink(workspace.path(linked))
    raise FlagScaleError(
        f"{linked} is a symlink (to {target}): `inv unpatch` and `inv patch` write only inside"
        f" the workspace, never into the tree it leads to",
        hint=f"remove the link (`rm {linked}`) and run `inv unpatch` again to make the checkout"
        f" in place, or move the tree it leads to into {linked}",
    )


class Checkout:
    """One backend's checkout together with the tool's private state about it."""

    def __init__(self, workspace: Workspace, backend: Backend, state_dir: Path) -> None:
        self.workspace = workspace
        self.backend = backend
        self.root = workspace.path(backend.checkout)
        self.state: StatePaths = state_paths(state_dir, backend.name)
        self.index = LaidIndex(self.root, self.state.index)
        self._trees: dict[str, PinTree] = {}

    def tree(self, commit: str) -> PinTree:
        """The files of ``commit`` (read once)."""
        if commit not in self._trees:
            self._trees[commit] = PinTree.read(self.root, commit)
        return self._trees[commit]

    def load_record(self) -> LaidRecord | None:
        return LaidRecord.load(self.state.record, self.backend.name)

    def ensure_index(self, record: LaidRecord | None, pin: str) -> None:
        """Rebuild the laid index from the record when it is missing (it is only a cache)."""
        self.index.clear_stale_lock(self.state.indexes[1:])
        if not self.index.exists():
            base = record.pin if record else pin
            self.index.rebuild(self.tree(base), record.entries if record else {})

    def changed_paths(self) -> list[str]:
        """Paths differing from the laid index; temporary files of a killed run are removed."""
        changed = []
        for path in self.index.changed_paths():
            if is_leftover(os.path.basename(path)):
                (self.root / path).unlink(missing_ok=True)
            else:
                changed.append(path)
        return changed

    def unexplained(
        self,
        changed: list[str],
        interrupted: Sequence[tuple[str, dict]],
        held: Sequence[tuple[str, dict]] = (),
    ) -> list[str]:
        """The changed paths that are edits: they match no state a run cut short may have left
        (``interrupted``) and no state that holds nothing new (``held``: the pin, the layer).
        Each alternative is a (commit, laid entries) pair.

        A path missing from disk that an interrupted run names is taken as removed by that run,
        not by the user (its content is in the pin or the layer either way).
        """
        alternatives = [*interrupted, *held]
        if not changed or not alternatives:
            return changed
        parents: dict[str, bool] = {}
        edits = []
        for path in changed:
            have = actual_state(self.root, path, parents)
            if have is None and any(path in laid for _, laid in interrupted):
                continue
            if not any(self._matches(commit, laid, path, have) for commit, laid in alternatives):
                edits.append(path)
        return edits

    def _matches(self, commit: str, laid: dict[str, State], path: str, have: State | None) -> bool:
        want = laid.get(path)
        if want is None:
            return self.tree(commit).matches(path, have)
        if want == DELETED:
            return have is None
        return have == want

    def save_edits(self, edits: list[str]) -> Path:
        """Save ``edits`` (paths differing from the laid tree) as a patch; return its path."""
        expected = self.index.write_tree()
        scratch = self.index.copy_to(self.state.save_index)
        try:
            scratch.record(edits)
            actual = scratch.write_tree()
        finally:
            scratch.path.unlink(missing_ok=True)
        return save_tree_diff(
            self.root, expected, actual, saved_folder(self.workspace), self.backend.name
        )
