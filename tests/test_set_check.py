"""``flagscale-ci check-sets`` / ``check-history``: what the pre-commit hooks run, on real sets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagscale.upstream.workspace import load_workspace
from flagscale.vendor.set_check import check_sets, set_folders
from tests.build_fixtures import DEVICE, Origin, make_origin
from tests.gitrepos import run_git

SET = f"hardware/{DEVICE}/Megatron-LM"
OWN_SET = f"hardware/{DEVICE}/FlagScale"


@pytest.fixture(scope="module")
def origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("origin"))


@pytest.fixture
def root(origin: Origin) -> Iterator[Path]:
    """The vendor's workspace; whatever a test changes is put back afterwards."""
    yield origin.vendor.root
    run_git(origin.vendor.root, "checkout", "-q", "--", ".")
    run_git(origin.vendor.root, "clean", "-q", "-fdx", "--", "hardware")


def flagscale_ci(root: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flagscale.ci", "--root", str(root), command],
        capture_output=True,
        text=True,
        check=False,
    )


def test_sound_sets_and_history_pass(root: Path) -> None:
    assert set_folders(load_workspace(root)) == [(DEVICE, "FlagScale"), (DEVICE, "Megatron-LM")]
    sets = flagscale_ci(root, "check-sets")
    assert (sets.returncode, sets.stdout, sets.stderr) == (0, "patch sets: ok\n", "")
    history = flagscale_ci(root, "check-history")
    assert (history.returncode, history.stdout) == (0, "hardware/patch_history.yaml: ok\n")


def test_each_broken_set_is_one_line(root: Path) -> None:
    (root / SET / "Megatron-LM.patch").unlink()
    (root / OWN_SET / "FlagScale.patch.orig").write_text("a leftover\n")
    result = flagscale_ci(root, "check-sets")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {OWN_SET}/FlagScale.patch.orig is not listed in {OWN_SET}/metadata.yaml"
        f" (remove it (git rm -- {OWN_SET}/FlagScale.patch.orig) or re-run inv patch)",
        f"error: {SET}/metadata.yaml lists Megatron-LM.patch, but it is missing",
    ]


def test_a_set_of_an_undeclared_backend_or_in_another_folder(root: Path) -> None:
    moved = root / f"hardware/{DEVICE}/vllm"
    (root / SET).rename(moved)
    assert check_sets(load_workspace(root)) == [
        f"hardware/{DEVICE}/vllm/metadata.yaml describes {DEVICE}/Megatron-LM, not its folder"
        " (re-run inv patch for this device type)"
    ]
    metadata = moved / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace("backend: Megatron-LM", "backend: vllm"))
    assert check_sets(load_workspace(root)) == [
        f"hardware/{DEVICE}/vllm/metadata.yaml: backend vllm is not declared in"
        " backends/backends.yaml (declare it there, or move the set to the folder of a declared"
        " backend)"
    ]


def test_ignored_files_and_staging_folders_do_not_count(root: Path) -> None:
    (root / ".git" / "info" / "exclude").write_text("*.swp\n")
    (root / SET / ".metadata.yaml.swp").write_text("an editor's\n")
    staging = root / f"hardware/{DEVICE}/.Megatron-LM.new-1234"
    staging.mkdir()
    (staging / "metadata.yaml").write_text("not: a set\n")
    assert check_sets(load_workspace(root)) == []


def test_check_history_names_a_commit_the_repository_lacks(root: Path, origin: Origin) -> None:
    history = root / "hardware" / "patch_history.yaml"
    lost = "0123456789abcdef0123456789abcdef01234567"
    history.write_text(history.read_text().replace(origin.commit, lost))
    result = flagscale_ci(root, "check-history")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and lost in result.stderr
    assert len(result.stderr.splitlines()) == 1
