"""``kill -9`` at every step of ``inv unpatch`` and ``inv patch``: the next run finishes the work.

The killed run and the one after it are real ``inv`` processes; the first is told to SIGKILL
itself at a named point (``FLAGSCALE_CRASH_AT``, see flagscale.core.crashpoints): deterministic,
no timing. The outcome after the kill and one more run must be byte for byte what one
uninterrupted run gives in a copy of the same workspace, and nothing the user wrote may be lost.
Set-up and checks call the library directly (faster than a process each).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flagscale.core.crashpoints import CRASH_VARIABLE
from flagscale.overlay.laid_record import state_paths
from flagscale.overlay.patch import patch
from flagscale.overlay.unpatch import unpatch
from flagscale.upstream.workspace import find_workspace
from tests.gitrepos import TOOL_ROOT, commit_all, inv, run_git, snapshot, write_files
from tests.overlay_workspace import (
    CHECKOUT,
    DELETIONS,
    EXTRA,
    LAYER,
    NAME,
    PACKAGE_INFO,
    overlay_workspace,
)


@pytest.fixture
def workspace(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return overlay_workspace(tmp_path, tmp_path_factory.getbasetemp() / "overlay-template")


def killed_inv(root: Path, point: str, *args: str) -> None:
    """Run ``inv <args>`` and let it SIGKILL itself at ``point``; fail if it never got there."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT), *args],
        cwd=root,
        env={**os.environ, CRASH_VARIABLE: point},
        capture_output=True,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, (
        f"inv {' '.join(args)} was not killed at {point}: exit {result.returncode}\n"
        f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
    )


def lay(root: Path, **options: object) -> bool:
    """``inv unpatch`` in-process; True when it found the checkout up to date."""
    return unpatch(root, echo=lambda _: None, **options)[0].up_to_date  # type: ignore[arg-type]


def harvest(root: Path, **options: object) -> str:
    return patch(root, echo=lambda _: None, **options)[0].summary()  # type: ignore[arg-type]


def twin(root: Path, name: str) -> Path:
    """A copy of the whole workspace (superproject, submodule, state) beside it."""
    copy = root.parent.parent / name
    shutil.copytree(root.parent, copy, symlinks=True)
    return copy / root.name


def trees(root: Path) -> dict[str, dict]:
    return {
        "checkout": snapshot(root / CHECKOUT),
        "backends": snapshot(root / "backends"),
    }


def the_checkout_status(root: Path) -> str:
    return run_git(root / CHECKOUT, "status", "--porcelain", "--untracked-files=all")


# --- unpatch ------------------------------------------------------------------------------------


def change_the_layer(root: Path) -> None:
    """A layer that changed since it was laid: a file changed, one added, one gone, and the
    deletion list changed (a re-lay writes, removes and restores)."""
    write_files(
        root / LAYER,
        {PACKAGE_INFO: "VERSION = 'v2'\n", "megatron/new.py": "NEW\n", "tools/new.sh": "N\n"},
    )
    (root / LAYER / EXTRA).unlink()
    (root / DELETIONS).write_text("version: 1\ndeleted:\n- docs/guide.md\n", encoding="utf-8")


RELAY_POINTS = [
    "unpatch:pending",
    "unpatch:remove",
    "unpatch:restored",
    "unpatch:write",
    "unpatch:write@2",
    "unpatch:indexed",
]


@pytest.mark.parametrize("mode", ["symlink", "copy"])
@pytest.mark.parametrize("point", RELAY_POINTS)
def test_killed_unpatch_is_finished_by_the_next_run(workspace: Path, point: str, mode: str):
    lay(workspace, mode=mode)
    change_the_layer(workspace)
    reference = twin(workspace, "reference")
    lay(reference, mode=mode)

    killed_inv(workspace, point, "unpatch", "--mode", mode)
    inv(workspace, "unpatch", "--mode", mode)

    assert trees(workspace) == trees(reference)
    assert lay(workspace, mode=mode)
    assert the_checkout_status(workspace) == the_checkout_status(reference)


MOVE_POINTS = [
    "unpatch:move-pending",
    "unpatch:move-cleared",
    "unpatch:move-checked-out",
    "unpatch:move-indexed",
    "unpatch:pending",
    "unpatch:write",
]


def bump_the_pin(root: Path) -> None:
    upstream = Path(run_git(root, "config", f"submodule.{CHECKOUT}.url").removeprefix("file://"))
    clone = root.parent / "upstream-v2"
    run_git(root.parent, "clone", "-q", str(upstream), str(clone))
    write_files(clone, {"megatron/core/utils.py": "def util():\n    return 2\n"})
    new_pin = commit_all(clone, "upstream v2")
    checkout = root / CHECKOUT
    run_git(checkout, "fetch", "-q", str(clone), "main")
    run_git(root, "update-index", "--cacheinfo", f"160000,{new_pin},{CHECKOUT}")


@pytest.mark.parametrize("point", MOVE_POINTS)
def test_killed_pin_move_is_finished_by_the_next_run(workspace: Path, point: str) -> None:
    lay(workspace)
    bump_the_pin(workspace)
    reference = twin(workspace, "reference")
    lay(reference)

    killed_inv(workspace, point, "unpatch")
    inv(workspace, "unpatch")

    assert trees(workspace) == trees(reference)
    head = run_git(workspace / CHECKOUT, "rev-parse", "HEAD")
    assert head == run_git(reference / CHECKOUT, "rev-parse", "HEAD")
    assert lay(workspace)


@pytest.mark.parametrize(
    ("point", "mode"),
    [("unpatch:saved", "symlink"), ("unpatch:saved", "copy"), ("unpatch:write", "copy")],
)
def test_killed_forced_unpatch_loses_no_edit(workspace: Path, point: str, mode: str) -> None:
    lay(workspace, mode=mode)
    change_the_layer(workspace)
    write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "mine\n", "notes/n.txt": "n\n"})
    edited = snapshot(workspace / CHECKOUT)

    killed_inv(workspace, point, "unpatch", "--force")
    inv(workspace, "unpatch", "--force")

    assert lay(workspace)
    saved = sorted((workspace / ".flagscale" / "saved").glob(f"{NAME}-*.patch"))
    assert saved, "the edits were not saved"
    run_git(workspace / CHECKOUT, "apply", str(saved[0]))
    restored = snapshot(workspace / CHECKOUT)
    for path in ("megatron/core/utils.py", "notes/n.txt"):
        assert restored[path] == edited[path]


# --- patch --------------------------------------------------------------------------------------


def edit_the_checkout(root: Path) -> None:
    """Edits of each kind a harvest writes: a file changed, added, deleted (into the list), a
    layer file removed (out of backends/), a copy of a layer file replaced (copy mode)."""
    checkout = root / CHECKOUT
    write_files(checkout, {"megatron/core/utils.py": "edited\n", "added/deep/new.py": "N\n"})
    write_files(checkout, {"docs/old.md": "old, revived\n"})
    (checkout / "docs/guide.md").unlink()
    (checkout / EXTRA).unlink()
    (checkout / PACKAGE_INFO).unlink()
    write_files(checkout, {PACKAGE_INFO: "VERSION = 'edited in the checkout'\n"})


PATCH_POINTS = [
    "patch:saved",
    "patch:remove",
    "patch:write",
    "patch:write@2",
    "patch:deletions",
    "patch:repointed",
    "patch:indexed",
]


@pytest.mark.parametrize(
    ("next_run", "mode"), [("patch", "symlink"), ("patch", "copy"), ("unpatch", "copy")]
)
@pytest.mark.parametrize("point", PATCH_POINTS)
def test_killed_patch_loses_nothing(workspace: Path, point: str, mode: str, next_run: str):
    (workspace / LAYER / EXTRA).write_text("EXTRA = 'uncommitted'\n", encoding="utf-8")
    lay(workspace, mode=mode)
    edit_the_checkout(workspace)
    edited = snapshot(workspace / CHECKOUT)
    reference = twin(workspace, "reference")
    harvest(reference)

    killed_inv(workspace, point, "patch")
    finished = inv(workspace, next_run, check=False)

    assert "Traceback" not in finished.stderr
    if next_run == "unpatch" and finished.returncode != 0:
        # it refused: what is not in backends/ yet is still in the checkout
        assert "edit(s) in third_party/Megatron-LM are not in" in finished.stderr
        harvest(workspace)
    else:
        assert finished.returncode == 0, finished.stderr
    assert snapshot(workspace / "backends") == snapshot(reference / "backends")
    saved = sorted((workspace / ".flagscale" / "saved").glob(f"{NAME}-backends-*.patch"))
    assert saved, "what backends/ lost was not saved"
    if next_run == "patch":
        assert snapshot(workspace / CHECKOUT) == edited
    lay(workspace)
    assert harvest(workspace).endswith("already holds every edit")


# --- git's own locks on the tool's private indexes ------------------------------------------------


def test_locks_left_by_a_killed_git_do_not_block_the_next_runs(workspace: Path) -> None:
    """git killed while it wrote one of the tool's private indexes leaves its ``.lock``."""
    lay(workspace, mode="copy")
    state = state_paths(find_workspace(workspace).state_dir, NAME)
    state.index.unlink()  # the next run rebuilds it (through <b>.index.new)
    for index in state.indexes:
        Path(f"{index}.lock").write_bytes(b"")
    write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "mine\n"})

    result = inv(workspace, "unpatch", "--force")

    assert "saved 1 edit(s)" in result.stdout
    for index in state.indexes:
        Path(f"{index}.lock").write_bytes(b"")
    (workspace / LAYER / PACKAGE_INFO).write_text("layer side\n", encoding="utf-8")
    (workspace / CHECKOUT / PACKAGE_INFO).write_text("checkout side\n", encoding="utf-8")
    result = inv(workspace, "patch", "--force")
    assert "saved what backends/Megatron-LM held" in result.stdout
    assert lay(workspace)
