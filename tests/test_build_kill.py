"""All or nothing: a build killed at any step, a held or stale lock, an interrupted swap.

Real ``inv build`` processes die by ``SIGKILL`` at named steps: ``FLAGSCALE_CRASH_AT=<step>``
makes the build kill itself exactly there (``flagscale.core.crashpoints``), so no test depends on
timing. Whatever the step, the previous build (or the user's hand edits) must stay as they were,
a saved patch must never be lost or half-written, and the next build must succeed and clean up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flagscale.builds.builder import BuildRequest, build_devices
from flagscale.builds.fingerprint import read_record
from flagscale.builds.lock import DeviceLock, clean_stale, replace_directory
from flagscale.core.errors import FlagScaleError
from flagscale.upstream.workspace import find_workspace
from tests.build_fixtures import (
    DEVICE,
    BigOrigin,
    clone_user,
    make_big_origin,
    quiet,
    rewrite_set,
    set_patch,
)
from tests.gitrepos import TOOL_ROOT, inv, snapshot
from tests.vendor_workspace import BACKEND

BUILD = Path("build")
KERNEL = f"third_party/{BACKEND}/pkg00/module_0020.py"


@pytest.fixture(scope="module")
def origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> BigOrigin:
    return make_big_origin(tmp_path_factory.mktemp("kill"), files=200, layer=20, patched=40)


@pytest.fixture
def user(origin: BigOrigin, tmp_path: Path) -> Path:
    root = clone_user(origin.root, tmp_path / "user", init=True)
    build(root)
    return root


def build(root: Path, **options) -> dict[str, Path]:
    request = BuildRequest(devices=(DEVICE,), report=quiet, **options)
    return build_devices(find_workspace(root), request)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / BUILD).iterdir() if p.name.startswith(f".{DEVICE}."))


def saved_patches(root: Path) -> list[Path]:
    return sorted((root / BUILD).glob(f"{DEVICE}.edits-*.patch"))


def new_inputs(root: Path, label: str) -> None:
    """A newer history entry whose Megatron-LM set differs (so a rebuild has work to do)."""
    patch = set_patch(root, DEVICE, BACKEND).replace(b"(vendor)", f"(vendor {label})".encode())
    rewrite_set(root, DEVICE, BACKEND, patch=patch)


def killed_build(root: Path, step: str, *flags: str) -> int:
    """Run ``inv build`` that kills itself at ``step``; return its pid (it must have died)."""
    command = [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT)]
    process = subprocess.run(
        [*command, "build", "--device", DEVICE, *flags],
        cwd=root,
        env={**os.environ, "FLAGSCALE_CRASH_AT": step},
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stdout + process.stderr
    return int((root / BUILD / f".{DEVICE}.lock").read_text())


@pytest.mark.parametrize("step", ["build:staging-made", "build:tree-written"])
def test_kill_before_the_swap_keeps_the_previous_build(user: Path, step: str) -> None:
    target = user / BUILD / DEVICE
    before = snapshot(target)
    new_inputs(user, step)

    pid = killed_build(user, step)

    assert snapshot(target) == before
    assert f".{DEVICE}.tmp-{pid}" in leftovers(user)
    result = inv(user, "build", "--device", DEVICE)
    assert "built build/" in result.stderr
    assert leftovers(user) == [f".{DEVICE}.lock"]
    assert f"(vendor {step})" in (target / KERNEL).read_text()


def test_kill_right_after_the_swap_leaves_the_new_build_and_the_next_run_cleans(
    user: Path,
) -> None:
    target = user / BUILD / DEVICE
    new_inputs(user, "swapped")

    pid = killed_build(user, "build:swapped")

    assert "(vendor swapped)" in (target / KERNEL).read_text()  # the new tree, complete
    assert read_record(target) is not None
    assert f".{DEVICE}.tmp-{pid}" in leftovers(user)  # holding the previous tree
    result = inv(user, "build", "--device", DEVICE)
    assert "up to date" in result.stdout
    assert leftovers(user) == [f".{DEVICE}.lock"]


def test_kill_while_saving_edits_keeps_them_and_leaves_no_partial_patch(user: Path) -> None:
    target = user / BUILD / DEVICE
    (target / KERNEL).write_text("hand edit\n")
    new_inputs(user, "saving")
    before = snapshot(target)

    pid = killed_build(user, "save:temporary-written", "--force")

    assert snapshot(target) == before  # the edits are still in the tree
    assert saved_patches(user) == []  # no saved name holds a partial patch
    assert any(name.endswith(f".tmp-{pid}") for name in leftovers(user))
    inv(user, "build", "--device", DEVICE, "--force")
    (saved,) = saved_patches(user)
    assert "+hand edit" in saved.read_text()
    assert leftovers(user) == [f".{DEVICE}.lock"]


def test_kill_after_saving_edits_then_force_again_keeps_both_saves(user: Path) -> None:
    target = user / BUILD / DEVICE
    (target / KERNEL).write_text("hand edit\n")
    new_inputs(user, "saved")

    killed_build(user, "build:edits-saved", "--force")

    (first,) = saved_patches(user)
    first_bytes = first.read_bytes()
    assert b"+hand edit" in first_bytes
    assert (target / KERNEL).read_text() == "hand edit\n"  # not swapped yet
    inv(user, "build", "--device", DEVICE, "--force")
    assert len(saved_patches(user)) == 2 and first.read_bytes() == first_bytes
    assert "(vendor saved)" in (target / KERNEL).read_text()
    assert leftovers(user) == [f".{DEVICE}.lock"]


def test_kill_while_cleaning_a_dead_builds_leftovers(user: Path) -> None:
    target = user / BUILD / DEVICE
    before = snapshot(target)
    new_inputs(user, "cleaning")
    first = killed_build(user, "build:tree-written")

    killed_build(user, "build:cleaning")

    assert snapshot(target) == before
    assert f".{DEVICE}.tmp-{first}" in leftovers(user)
    inv(user, "build", "--device", DEVICE)
    assert leftovers(user) == [f".{DEVICE}.lock"]
    assert "(vendor cleaning)" in (target / KERNEL).read_text()


def test_live_lock_is_refused_with_the_holders_pid(user: Path) -> None:
    new_inputs(user, "locked")
    with DeviceLock(user / BUILD, DEVICE), pytest.raises(FlagScaleError) as caught:
        build(user)
    message = str(caught.value)
    assert f"build/{DEVICE} is being built by another process (pid {os.getpid()})" in message
    build(user)  # released: the next build goes ahead
    assert (
        "(vendor locked)"
        in (user / BUILD / DEVICE / "third_party" / BACKEND / "pkg00/module_0020.py").read_text()
    )


def test_stale_lock_of_a_dead_process_is_taken_over(user: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (user / BUILD / f".{DEVICE}.lock").write_text(f"{dead}\n")
    (user / BUILD / f".{DEVICE}.tmp-{dead}" / "tree").mkdir(parents=True)
    new_inputs(user, "after a dead holder")
    build(user)
    assert leftovers(user) == [f".{DEVICE}.lock"]
    assert (user / BUILD / f".{DEVICE}.lock").read_text().strip() == str(os.getpid())


def test_swap_interrupted_between_renames_is_repaired(user: Path) -> None:
    target = user / BUILD / DEVICE
    before = snapshot(target)
    fingerprint = read_record(target).fingerprint
    os.rename(target, user / BUILD / f".{DEVICE}.old-424242")  # killed right after this rename

    build(user)

    assert snapshot(target) == before and read_record(target).fingerprint == fingerprint
    assert leftovers(user) == [f".{DEVICE}.lock"]


def test_failed_build_keeps_the_previous_one(user: Path) -> None:
    target = user / BUILD / DEVICE
    before = snapshot(target)
    broken = set_patch(user, DEVICE, BACKEND).replace(
        b"\n-    value_20 = ", b"\n-    value_20 = 1 + ", 1
    )
    rewrite_set(user, DEVICE, BACKEND, patch=broken)
    with pytest.raises(FlagScaleError):
        build(user)
    assert snapshot(target) == before
    assert leftovers(user) == [f".{DEVICE}.lock"]


def test_replace_directory_and_clean_stale(tmp_path: Path) -> None:
    root = tmp_path / "build"
    (root / "Vendor_X").mkdir(parents=True)
    (root / "Vendor_X" / "old.txt").write_text("old")
    staging = root / ".Vendor_X.tmp-1"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    replace_directory(staging, root / "Vendor_X")
    assert sorted(p.name for p in root.iterdir()) == ["Vendor_X"]
    assert (root / "Vendor_X" / "new.txt").read_text() == "new"

    (root / ".Vendor_X.tmp-7").mkdir()
    (root / ".Vendor_X.conflicts-tmp-7").mkdir()
    (root / ".Vendor_XY.tmp-7").mkdir()  # another device type's: left alone
    clean_stale(root, "Vendor_X")
    assert sorted(p.name for p in root.iterdir()) == [".Vendor_XY.tmp-7", "Vendor_X"]
