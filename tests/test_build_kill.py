"""All or nothing: a build killed part-way, a held or stale lock, an interrupted swap.

Real ``inv build`` processes are killed with SIGKILL while their staging folder exists; the
previous build must stay as it was and the next build must succeed.
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
from flagscale.core.pause import PAUSE_AT, PAUSE_FIFO
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


@pytest.fixture(scope="module")
def origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> BigOrigin:
    """Big enough (800 upstream files) that writing the tree takes a moment."""
    return make_big_origin(tmp_path_factory.mktemp("kill"), files=800, layer=20, patched=40)


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


def new_inputs(root: Path, label: str) -> None:
    """A newer history entry whose Megatron-LM set differs (so a rebuild has work to do)."""
    patch = set_patch(root, DEVICE, BACKEND).replace(b"(vendor)", f"(vendor {label})".encode())
    rewrite_set(root, DEVICE, BACKEND, patch=patch)


def start_build(root: Path, point: str) -> subprocess.Popen[bytes]:
    """``inv build`` held at the pause point ``point`` (flagscale.core.pause) until killed."""
    fifo = root.parent / f"pause-{point}"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT)]
    process = subprocess.Popen(
        [*command, "build", "--device", DEVICE],
        cwd=root,
        env={**os.environ, PAUSE_AT: point, PAUSE_FIFO: str(fifo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stderr is not None
    seen = []
    for raw in process.stderr:  # ends early only if the build ends without pausing
        seen.append(raw.decode(errors="replace").strip())
        if seen[-1].endswith(f"paused at {point}"):
            return process
    process.wait()
    raise AssertionError(f"the build never reached {point}: {seen}")


@pytest.mark.slow
@pytest.mark.parametrize("point", ["build-staging-made", "build-tree-written"])
def test_sigkill_part_way_keeps_the_previous_build(user: Path, point: str) -> None:
    target = user / BUILD / DEVICE
    before = snapshot(target)
    new_inputs(user, point)
    process = start_build(user, point)
    staging = user / BUILD / f".{DEVICE}.tmp-{process.pid}"
    assert staging.is_dir()
    assert (staging / "tree").is_dir() == (point == "build-tree-written")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    assert process.returncode == -signal.SIGKILL
    assert snapshot(target) == before
    assert f".{DEVICE}.tmp-{process.pid}" in leftovers(user)
    assert (user / BUILD / f".{DEVICE}.lock").read_text().strip() == str(process.pid)

    result = inv(user, "build", "--device", DEVICE)

    assert "built build/" in result.stderr
    assert leftovers(user) == [f".{DEVICE}.lock"]
    kernel = target / "third_party" / BACKEND / "pkg00/module_0020.py"
    assert f"(vendor {point})" in kernel.read_text()


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
