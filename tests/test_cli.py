"""The command line: one-line errors, and several values after one flag (seed 000's spelling)."""

from __future__ import annotations

from pathlib import Path

from flagscale.core.cli import spread_values
from tests.gitrepos import inv, make_workspace

TASKS = {
    "build": {"--device", "--device-type", "-d"},
    "patch": {"--backend", "--task"},
    "unpatch": {"--backend", "--task"},
}


def test_words_after_a_multi_value_flag_become_repeated_flags() -> None:
    argv = ["patch", "--backend", "Megatron-LM", "FlagScale", "--task", "train", "post_train"]
    assert spread_values(argv, TASKS) == [
        "patch",
        "--backend", "Megatron-LM", "--backend", "FlagScale",
        "--task", "train", "--task", "post_train",
    ]  # fmt: skip


def test_spreading_stops_at_the_next_flag_or_task_name() -> None:
    argv = ["unpatch", "--backend", "A", "--mode", "copy", "build", "--device", "X_Y", "Z_W"]
    assert spread_values(argv, TASKS) == [
        "unpatch", "--backend", "A", "--mode", "copy",
        "build", "--device", "X_Y", "--device", "Z_W",
    ]  # fmt: skip


def test_single_value_flags_and_equals_forms_are_left_alone() -> None:
    argv = ["patch", "--device-type", "X_Y", "--backend=A", "--commit", "abc"]
    assert spread_values(argv, TASKS) == argv


def test_a_flag_spreads_only_in_the_task_where_it_takes_several_values() -> None:
    argv = ["unpatch", "--device-type", "X_Y", "Z_W", "build", "-d", "X_Y", "Z_W"]
    assert spread_values(argv, TASKS) == [
        "unpatch", "--device-type", "X_Y", "Z_W",
        "build", "-d", "X_Y", "-d", "Z_W",
    ]  # fmt: skip


def test_seed_spelling_reaches_the_task(tmp_path: Path) -> None:
    root, _ = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    result = inv(root, "unpatch", "--backend", "Up", "Nope", check=False)
    assert result.returncode == 1
    assert "No idea what" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown backend 'Nope': backends/backends.yaml declares Up"
    ]


def test_mode_with_device_type_is_refused(tmp_path: Path) -> None:
    root, _ = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    result = inv(root, "unpatch", "--device-type", "Acme_X1", "--mode", "copy", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --mode does not apply with --device-type: build trees are always copies"
    )
