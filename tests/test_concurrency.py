"""Concurrent writers in one repository, tested with real processes and no timing.

A first ``inv`` is held at a named point (``flagscale.core.pause``: it waits on a FIFO this test
controls) or the repository lock is held by the test itself, while a second command runs. After
every outcome the user's index and work tree are compared with what they were.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flagscale.core.crashpoints import CRASH_VARIABLE
from flagscale.core.pause import PAUSE_AT, PAUSE_FIFO
from flagscale.core.repository_lock import repository_lock, repository_lock_path
from flagscale.upstream.workspace import FLAGSCALE
from tests.gitrepos import TOOL_ROOT, inv, run_git
from tests.vendor_workspace import (
    BACKEND,
    VendorWorkspace,
    adapt_backend,
    adapt_flagscale,
    make_vendor_workspace,
)

FIRST, SECOND = "Metax_C550", "Iluvatar_BI150"


@pytest.fixture
def adapted(tmp_path: Path) -> VendorWorkspace:
    vendor = make_vendor_workspace(tmp_path)
    adapt_backend(vendor)
    adapt_flagscale(vendor)
    return vendor


def patch_args(vendor: VendorWorkspace, device: str) -> list[str]:
    return [
        "patch",
        "--device-type",
        device,
        "--task",
        "train",
        "--backend",
        f"{BACKEND},{FLAGSCALE}",
        "--commit",
        vendor.base,
        "--backend-version",
        "0.16.1",
        "--models",
        "llama",
        "--message",
        f"{device}: adapt",
        "--contact",
        "",
    ]


def record_args(device: str) -> list[str]:
    return ["record-history", "--device-type", device, "--backend", f"{BACKEND},{FLAGSCALE}"]


def repo_state(root: Path) -> dict[str, str]:
    """The user's side of the repository: branch, index (every entry), work tree, git's lock."""
    return {
        "head": run_git(root, "rev-parse", "HEAD"),
        "index": run_git(root, "ls-files", "--stage", "-z"),
        "status": run_git(root, "status", "--porcelain", "-z", "--untracked-files=all"),
        "index.lock": str((root / ".git" / "index.lock").exists()),
    }


def outside_hardware(state: dict[str, str]) -> dict[str, object]:
    """``state`` without the branch and without what is under ``hardware/``."""

    def keep(records: str, cut: int) -> list[str]:
        return [r for r in records.split("\0") if r and not r[cut:].startswith("hardware/")]

    index = [r for r in state["index"].split("\0") if r and "\thardware/" not in r]
    return {"index": index, "status": keep(state["status"], 3), "lock": state["index.lock"]}


def assert_committed_cleanly(root: Path, before: dict[str, str]) -> None:
    """The sets are committed, nothing under hardware/ is left over, the rest is as before."""
    assert run_git(root, "status", "--porcelain", "--untracked-files=all", "--", "hardware") == ""
    assert run_git(root, "diff", "--cached", "--name-only", "--", "hardware") == ""
    assert outside_hardware(repo_state(root)) == outside_hardware(before)


class Paused:
    """A real ``inv`` process held at a pause point until ``resume``."""

    def __init__(self, root: Path, point: str, args: list[str], fifo: Path) -> None:
        os.mkfifo(fifo)
        self.fifo = fifo
        env = {**os.environ, PAUSE_AT: point, PAUSE_FIFO: str(fifo)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT), *args],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        seen = []
        assert self.process.stderr is not None
        for raw in self.process.stderr:  # ends when the process ends without pausing
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line == f"paused at {point}":
                return
            seen.append(line)
        out, _ = self.process.communicate()
        raise AssertionError(
            f"inv {' '.join(args)} never reached {point} (exit {self.process.returncode}):\n"
            + out.decode(errors="replace")
            + "\n".join(seen)
        )

    def resume(self) -> tuple[int, str]:
        """Let it go on and wait for it: (exit status, stdout + stderr after the pause)."""
        with open(self.fifo, "wb"):  # opens once the process waits on the FIFO; closing resumes
            pass
        out, err = self.process.communicate()
        return self.process.returncode, (out + err).decode("utf-8", "replace")

    def kill(self) -> None:
        """``kill -9`` the process and everything it started."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate()


@contextmanager
def paused(root: Path, point: str, args: list[str]) -> Iterator[Paused]:
    held = Paused(root, point, args, root.parent / f"pause-{point}")
    try:
        yield held
    finally:
        if held.process.poll() is None:
            held.kill()


def assert_refused_by(result: subprocess.CompletedProcess[str], holder: str, pid: int) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: another command is writing in "), lines[0]
    assert f"`{holder}` (pid {pid}, since " in lines[0]
    assert "wait for it to finish, then run this again" in lines[0]


# --- the lock ------------------------------------------------------------------------------------


def test_a_held_lock_refuses_patch_and_names_its_holder(adapted: VendorWorkspace) -> None:
    before = repo_state(adapted.root)
    with repository_lock(adapted.root, "a release script"):
        result = inv(adapted.root, *patch_args(adapted, FIRST), check=False)
        assert_refused_by(result, "a release script", os.getpid())
        assert repo_state(adapted.root) == before
    inv(adapted.root, *patch_args(adapted, FIRST))
    assert run_git(adapted.root, "rev-parse", "HEAD") != before["head"]
    assert_committed_cleanly(adapted.root, before)


def test_second_patch_is_refused_while_the_first_is_committing(adapted: VendorWorkspace) -> None:
    before = repo_state(adapted.root)
    with paused(adapted.root, "patch-sets:swapped", patch_args(adapted, FIRST)) as first:
        second = inv(adapted.root, *patch_args(adapted, SECOND), check=False)
        assert_refused_by(second, f"inv patch --device-type {FIRST}", first.process.pid)
        assert not (adapted.root / "hardware" / SECOND).exists()
        code, output = first.resume()
    assert code == 0, output
    assert run_git(adapted.root, "log", "-1", "--format=%s") == f"{FIRST}: adapt"
    assert_committed_cleanly(adapted.root, before)
    inv(adapted.root, *patch_args(adapted, SECOND))
    assert run_git(adapted.root, "log", "-2", "--format=%s").splitlines() == [
        f"{SECOND}: adapt",
        f"{FIRST}: adapt",
    ]
    assert_committed_cleanly(adapted.root, before)
    assert run_git(adapted.root, "diff", "--cached", "--name-only") == "tools/x.txt"


def test_history_writers_the_overlay_and_refresh_wait_for_a_patch(adapted: VendorWorkspace) -> None:
    inv(adapted.root, *patch_args(adapted, SECOND))
    before = repo_state(adapted.root)
    with paused(adapted.root, "patch-sets:swapped", patch_args(adapted, FIRST)) as first:
        holder = f"inv patch --device-type {FIRST}"
        for args in (
            record_args(SECOND),
            ["check-history", "--repair"],
            ["unpatch"],
            ["patch"],
            ["refresh", "--continue"],
            ["refresh", "--abort"],
            ["bisect-upstream", "--device", FIRST, "--good", "v1", "--bad", "v2"],
        ):
            assert_refused_by(inv(adapted.root, *args, check=False), holder, first.process.pid)
        assert not (adapted.root / "hardware" / "patch_history.yaml").exists()
        code, output = first.resume()
    assert code == 0, output
    assert_committed_cleanly(adapted.root, before)
    inv(adapted.root, *record_args(SECOND))
    assert (adapted.root / "hardware" / "patch_history.yaml").is_file()


def test_two_record_history_runs_do_not_lose_an_entry(adapted: VendorWorkspace) -> None:
    inv(adapted.root, *patch_args(adapted, FIRST))
    inv(adapted.root, *patch_args(adapted, SECOND))
    history = adapted.root / "hardware" / "patch_history.yaml"
    with paused(adapted.root, "history:read", record_args(FIRST)) as first:
        second = inv(adapted.root, *record_args(SECOND), check=False)
        assert_refused_by(second, f"inv record-history --device-type {FIRST}", first.process.pid)
        code, output = first.resume()
    assert code == 0, output
    inv(adapted.root, *record_args(SECOND))
    text = history.read_text(encoding="utf-8")
    assert f"{FIRST}:" in text and f"{SECOND}:" in text


def test_the_lock_of_a_killed_holder_is_taken_over(adapted: VendorWorkspace) -> None:
    before = repo_state(adapted.root)
    with paused(adapted.root, "patch-sets:swapped", patch_args(adapted, FIRST)) as first:
        first.kill()
    lock = repository_lock_path(adapted.root)
    assert f'"pid": {first.process.pid}' in lock.read_text(encoding="utf-8")
    inv(adapted.root, *patch_args(adapted, SECOND))  # takes the dead holder's lock
    assert f'"pid": {first.process.pid}' not in lock.read_text(encoding="utf-8")
    # the killed run's swapped-in folder was put back by the next run
    assert not (adapted.root / "hardware" / FIRST).exists()
    assert_committed_cleanly(adapted.root, before)


def test_import_flagscale_waits_for_the_lock_too(adapted: VendorWorkspace, tmp_path: Path) -> None:
    """inv import-flagscale moves the branch: it takes the same lock, before anything else."""
    elsewhere = tmp_path / "FlagScale-upstream"
    with repository_lock(adapted.root, "a release script"):
        refused = inv(adapted.root, "import-flagscale", str(elsewhere), check=False)
        assert_refused_by(refused, "a release script", os.getpid())
    free = inv(adapted.root, "import-flagscale", str(elsewhere), check=False)
    assert free.returncode == 1 and "another command is writing" not in free.stderr


def test_each_worktree_has_its_own_lock(adapted: VendorWorkspace, tmp_path: Path) -> None:
    other = tmp_path / "other-worktree"
    run_git(adapted.root, "worktree", "add", "-q", "--detach", str(other))
    assert repository_lock_path(other) != repository_lock_path(adapted.root)
    with repository_lock(adapted.root, "a release script"):
        here = inv(other, "check-history", "--repair", check=False)
        assert "another command is writing" not in here.stderr, here.stderr
        there = inv(adapted.root, "check-history", "--repair", check=False)
        assert_refused_by(there, "a release script", os.getpid())


# --- failures half-way leave index and work tree exact ------------------------------------------


def test_git_taking_the_index_half_way_leaves_index_and_tree_exact(
    adapted: VendorWorkspace,
) -> None:
    """Another git command takes the index right after a ``git add`` (a post-index-change hook
    plays it): nothing is staged, no set folder is left, the message is true."""
    before = repo_state(adapted.root)
    hook = adapted.root / ".git" / "hooks" / "post-index-change"
    hook.write_text(
        "#!/bin/sh\n"  # an index holding the sets was written: take git's lock
        'if [ -n "$(git ls-files -- hardware)" ]; then\n'
        '  : > "$(git rev-parse --git-dir)/index.lock"\n'
        "fi\n"
    )
    hook.chmod(0o755)
    result = inv(adapted.root, *patch_args(adapted, FIRST), check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert repo_state(adapted.root) == {**before, "index.lock": "True"}
    assert not (adapted.root / "hardware" / FIRST).exists()
    assert "index.lock" in result.stderr and "Traceback" not in result.stderr
    assert "nothing was changed" in result.stderr.lower()
    hook.unlink()
    (adapted.root / ".git" / "index.lock").unlink()
    inv(adapted.root, *patch_args(adapted, FIRST))
    assert_committed_cleanly(adapted.root, before)


def test_a_branch_moved_before_the_commit_lands_changes_nothing(adapted: VendorWorkspace) -> None:
    """``HEAD`` moves by compare-and-swap: a branch moved by someone else (``git update-ref``
    needs no index) between the commit and its landing is left alone, and so is the rest."""
    before = repo_state(adapted.root)
    other = run_git(adapted.root, "commit-tree", "-p", "HEAD", "-m", "elsewhere", "HEAD^{tree}")
    with paused(adapted.root, "patch-sets:commit-made", patch_args(adapted, FIRST)) as first:
        run_git(adapted.root, "update-ref", "HEAD", other)
        code, output = first.resume()
    assert code == 1 and "could not commit the patch sets" in output, output
    assert "nothing was changed" in output
    assert repo_state(adapted.root) == {**before, "head": other}
    private = adapted.root / ".git" / "flagscale"
    assert not [p.name for p in private.iterdir() if p.name.startswith("index.")]


@pytest.mark.parametrize(
    "point",
    [
        "patch-sets:swapped",
        "patch-sets:index-locked",
        "patch-sets:commit-made",
        "patch-sets:head-moved",
    ],
)
def test_kill_9_at_each_step_is_finished_or_undone_by_the_next_run(
    adapted: VendorWorkspace, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = repo_state(adapted.root)
    with monkeypatch.context() as crashing:
        crashing.setenv(CRASH_VARIABLE, point)  # the command SIGKILLs itself there
        killed = inv(adapted.root, *patch_args(adapted, FIRST), check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    committed = point == "patch-sets:head-moved"
    assert (run_git(adapted.root, "rev-parse", "HEAD") != before["head"]) == committed
    inv(adapted.root, *patch_args(adapted, FIRST))
    assert run_git(adapted.root, "log", "--format=%s", f"{before['head']}..").splitlines() == [
        f"{FIRST}: adapt"
    ]
    assert_committed_cleanly(adapted.root, before)
    private = adapted.root / ".git" / "flagscale"
    assert not [p.name for p in private.iterdir() if p.name.startswith("index.")]
