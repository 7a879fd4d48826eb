"""A refresh killed with SIGKILL at any named step resumes or aborts cleanly.

``FLAGSCALE_CRASH_AT=refresh:<point>`` makes the refresh send itself SIGKILL when it reaches
that point (flagscale.core.crashpoints): deterministic, no timing. With the commit dates fixed,
a refresh killed and continued must give exactly the commits an uninterrupted one gives; killed
and aborted, exactly the state from before.
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
from tests.gitrepos import TOOL_ROOT, run_git, write_files
from tests.refresh_fixtures import (
    BACKEND,
    Refreshable,
    edit,
    insert,
    lines,
    make_refreshable,
    move_upstream,
    user_state,
)

DATES = {"GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z"}
V1 = {"megatron/a.py": lines("a"), "megatron/b.py": lines("b"), "megatron/l.py": lines("l")}
LAYER = {"megatron/l.py": edit(lines("l"), 3, "layer")}
DEVICES = {
    "Alpha_A1": {BACKEND: {"megatron/a.py": edit(lines("a"), 20, "alpha")}},
    "Beta_B1": {
        BACKEND: {"megatron/b.py": edit(lines("b"), 9, "beta")},
        "FlagScale": {"README.md": "beta\n"},
    },
}
CLEAN_MOVE = {
    "megatron/a.py": insert(lines("a"), 1, ["# header"]),
    "megatron/l.py": edit(lines("l"), 25, "upstream"),
}
CLEAN_POINTS = [
    "started",
    "pin",
    "layer",
    "pin-commit",
    "device",
    "history",
    "proved",
    "publish",
    "sync",
]
CONFLICT_POINTS = ["checkout", "stopped", "resolved"]


@pytest.fixture(scope="module")
def workspace(
    module_env: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Refreshable, str, str]:
    found = make_refreshable(
        tmp_path_factory.mktemp("kill"), upstream=V1, layer=LAYER, devices=DEVICES
    )
    clean = move_upstream(found, CLEAN_MOVE)
    conflict = move_upstream(found, {"megatron/b.py": edit(lines("b"), 9, "upstream beta")})
    return found, clean, conflict


def run(root: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **DATES}
    env.pop(CRASH_VARIABLE, None)
    if kill_at:
        env[CRASH_VARIABLE] = f"refresh:{kill_at}"
    command = [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT), "refresh", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)


def copy_of(found: Refreshable, tmp: Path, name: str = "FlagScale") -> Path:
    root = tmp / name
    shutil.copytree(found.root, root, symlinks=True)
    return root


@pytest.fixture(scope="module")
def reference(
    workspace: tuple[Refreshable, str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """HEAD after an uninterrupted clean refresh (commit dates fixed: ids are reproducible)."""
    found, clean, _ = workspace
    root = copy_of(found, tmp_path_factory.mktemp("reference"))
    done = run(root, "--backend", BACKEND, "--to", clean)
    assert done.returncode == 0, done.stderr
    return run_git(root, "rev-parse", "HEAD")


@pytest.mark.parametrize("point", CLEAN_POINTS)
def test_killed_then_continued_gives_the_same_commits(
    point: str, workspace: tuple[Refreshable, str, str], reference: str, tmp_path: Path
) -> None:
    found, clean, _ = workspace
    root = copy_of(found, tmp_path)
    killed = run(root, "--backend", BACKEND, "--to", clean, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    resumed = run(root, "--continue")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert run_git(root, "rev-parse", "HEAD") == reference
    assert run_git(root, "status", "--porcelain", "--ignore-submodules=all") == ""
    assert run_git(root, "for-each-ref", "refs/flagscale") == ""  # the private ref is gone
    again = run(root, "--continue")
    assert "no refresh is in progress" in again.stderr


@pytest.mark.parametrize("point", CLEAN_POINTS)
def test_killed_then_aborted_gives_back_the_exact_state(
    point: str, workspace: tuple[Refreshable, str, str], tmp_path: Path
) -> None:
    found, clean, _ = workspace
    root = copy_of(found, tmp_path)
    write_files(root, {"flagscale/mine.py": "staged\n"})
    run_git(root, "add", "flagscale/mine.py")
    write_files(root, {"flagscale/mine.py": "staged, then edited\n"})
    before = user_state(root)

    killed = run(root, "--backend", BACKEND, "--to", clean, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    aborted = run(root, "--abort")
    assert aborted.returncode == 0, aborted.stderr
    assert user_state(root) == before


@pytest.mark.parametrize("point", CONFLICT_POINTS)
def test_killed_around_a_conflict_resumes_or_aborts(
    point: str, workspace: tuple[Refreshable, str, str], tmp_path: Path
) -> None:
    found, _, conflict = workspace
    root = copy_of(found, tmp_path)
    checkout = root / "build" / "refresh"
    if point == "resolved":
        stopped = run(root, "--backend", BACKEND, "--to", conflict, "--no-smoke")
        assert stopped.returncode == 1
        write_files(checkout, {"megatron/b.py": edit(lines("b"), 9, "beta")})
        run_git(checkout, "add", "megatron/b.py")
        killed = run(root, "--continue", "--no-smoke", kill_at=point)
    else:
        killed = run(root, "--backend", BACKEND, "--to", conflict, "--no-smoke", kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    if point == "checkout":  # killed before the checkout was in place: it is written again
        assert not checkout.exists()
        again = run(root, "--continue", "--no-smoke")
        assert again.returncode == 1 and "need a hand" in again.stderr
    assert checkout.is_dir()
    if point != "resolved":
        write_files(checkout, {"megatron/b.py": edit(lines("b"), 9, "beta")})
        run_git(checkout, "add", "megatron/b.py")
    done = run(root, "--continue", "--no-smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    patch = (root / "hardware/Beta_B1" / BACKEND / f"{BACKEND}.patch").read_text()
    assert "-upstream beta\n+beta\n" in patch
    assert not checkout.exists() and not list(checkout.parent.glob(".refresh.refresh-new-*"))

    # the same kill, then --abort: nothing left behind
    other = copy_of(found, tmp_path, "Other")
    before = user_state(other)
    killed = run(other, "--backend", BACKEND, "--to", conflict, "--no-smoke", kill_at="checkout")
    assert killed.returncode == -signal.SIGKILL
    assert run(other, "--abort").returncode == 0
    assert user_state(other) == before
    assert not (other / "build" / "refresh").exists()
    assert not list((other / "build").glob(".refresh.refresh-new-*"))


def test_killed_while_aborting_a_published_refresh_aborts_again(
    workspace: tuple[Refreshable, str, str], tmp_path: Path
) -> None:
    found, clean, _ = workspace
    root = copy_of(found, tmp_path)
    before = user_state(root)
    killed = run(root, "--backend", BACKEND, "--to", clean, kill_at="sync")
    assert killed.returncode == -signal.SIGKILL
    half = run(root, "--abort", kill_at="abort")
    assert half.returncode == -signal.SIGKILL
    assert run(root, "--abort").returncode == 0
    assert user_state(root) == before
