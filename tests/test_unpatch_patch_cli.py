"""``inv unpatch`` and ``inv patch`` as real processes: flags, output, exit codes, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gitrepos import (
    Exec,
    Link,
    commit_all,
    inv,
    make_workspace,
    run_git,
    snapshot,
    write_files,
)

UPSTREAMS = {
    "Megatron-LM": {"megatron/model.py": "upstream\n", "run.sh": Exec(b"#!/bin/sh\n")},
    "vllm": {"vllm/engine.py": "engine\n", "link": Link("vllm/engine.py")},
}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root, _ = make_workspace(tmp_path, UPSTREAMS)
    write_files(root / "backends/Megatron-LM", {"megatron/model.py": "flagscale\n"})
    write_files(root / "backends/vllm", {"vllm/extra.py": "extra\n"})
    commit_all(root, "base layer")
    return root


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_tasks_are_listed(workspace: Path) -> None:
    listing = inv(workspace, "--list").stdout
    assert "unpatch" in listing and "patch" in listing
    assert "Bring third_party/<backend> to its pin" in listing


@pytest.mark.slow
def test_unpatch_edit_patch_round(workspace: Path, tmp_path: Path) -> None:
    laid = inv(workspace, "unpatch")
    assert "Megatron-LM: laid base layer (symlink" in laid.stdout
    assert "vllm: laid base layer (symlink" in laid.stdout
    assert "up to date" in inv(workspace, "unpatch").stdout
    checkout = workspace / "third_party/Megatron-LM"
    write_files(checkout, {"megatron/new file ü.py": "new\n"})
    (checkout / "run.sh").chmod(0o644)
    edited = snapshot(checkout)
    harvested = inv(workspace, "patch", "--backend", "Megatron-LM")
    assert "Megatron-LM: base layer updated: 2 file(s) written" in harvested.stdout
    assert "vllm" not in harvested.stdout
    commit_all(workspace, "patched")
    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", str(workspace), str(clone))
    inv(clone, "unpatch", "--mode", "copy", "--backend", "Megatron-LM,vllm")
    fresh = snapshot(clone / "third_party/Megatron-LM")
    model = checkout / "megatron/model.py"
    edited["megatron/model.py"] = ("file", model.read_bytes())
    assert fresh == edited


def test_dirty_tree_is_one_error_line_and_exit_1(workspace: Path) -> None:
    inv(workspace, "unpatch", "--backend", "vllm")
    write_files(workspace / "third_party/vllm", {"vllm/engine.py": "mine\n"})
    result = inv(workspace, "unpatch", "--backend", "vllm", check=False)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: vllm: 1 edit(s) in third_party/vllm are not in backends/vllm"
    )
    assert "vllm/engine.py" in lines[0]
    assert "Traceback" not in result.stderr
    assert (workspace / "third_party/vllm/vllm/engine.py").read_text() == "mine\n"


def test_force_prints_where_the_edits_went(workspace: Path) -> None:
    inv(workspace, "unpatch", "--backend", "vllm")
    engine = workspace / "third_party/vllm/vllm/engine.py"
    engine.write_text("mine\n")
    result = inv(workspace, "unpatch", "--backend", "vllm", "--force")
    saved = [w for w in result.stdout.split() if w.endswith(".patch")]
    assert saved and Path(saved[0]).is_file()
    assert engine.read_text() == "engine\n"
    run_git(workspace / "third_party/vllm", "apply", saved[0])
    assert engine.read_text() == "mine\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("unpatch", "--backend", "nope"), "error: unknown backend 'nope'"),
        (("unpatch", "--mode", "hard"), "error: unknown layer mode 'hard'"),
        (("patch", "--backend", "vllm"), "error: vllm: third_party/vllm was never laid"),
    ],
)
def test_bad_input_is_one_line(workspace: Path, args: tuple[str, ...], expected: str) -> None:
    result = inv(workspace, *args, check=False)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected)


def test_outside_the_repository(tmp_path: Path) -> None:
    result = inv(tmp_path, "unpatch", check=False)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert lines[0].startswith("error: not inside a FlagScale workspace")


def test_verbose_shows_the_traceback(workspace: Path) -> None:
    os.symlink("/etc/passwd", workspace / "backends/vllm/evil")
    result = inv(workspace, "unpatch", "--verbose", check=False)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "backends/vllm/evil: symlink target '/etc/passwd' must be a relative path" in (
        result.stderr
    )
