"""Flags a person can guess: one spelling per idea (the other accepted as an alias), short flags
that mean one thing in every task, paths never split, and flags that do not apply refused."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from invoke import Collection

from flagscale.core.cli import help_request
from tests.build_fixtures import DEVICE, clone_user, make_origin
from tests.gitrepos import TOOL_ROOT, inv, make_workspace


def tasks_collection() -> Collection:
    """The tasks exactly as ``inv`` loads them from tasks.py."""
    from invoke.loader import FilesystemLoader

    module, parent = FilesystemLoader(start=str(TOOL_ROOT)).load("tasks")
    return Collection.from_module(module, loaded_from=parent)


def flag_names() -> dict[str, dict[str, tuple[str, ...]]]:
    """task → argument → every name it answers to (long and short)."""
    namespace = tasks_collection()
    return {
        name: {
            (arg.attr_name or arg.name): tuple(arg.names) for arg in namespace[name].get_arguments()
        }
        for name in namespace.task_names
    }


def test_device_and_device_type_name_one_flag_in_every_task() -> None:
    names = flag_names()
    with_device = {
        task: args.get("device") or args.get("device_type")
        for task, args in names.items()
        if "device" in args or "device_type" in args
    }
    assert {"build", "smoke", "bundle", "patch", "unpatch", "record-history"} <= set(with_device)
    for task, spellings in with_device.items():
        assert {"device", "device-type", "d"} <= set(spellings), task


def test_a_short_flag_means_one_thing_in_every_task_and_never_shadows_help() -> None:
    meaning: dict[str, set[str]] = {}
    for task, args in flag_names().items():
        for attr, spellings in args.items():
            for short in (s for s in spellings if len(s) == 1):
                concept = "device" if attr in ("device", "device_type") else attr
                meaning.setdefault(short, set()).add(concept)
                assert short != "h", f"{task}: -h is --help, not --{attr}"
    assert {short: concepts for short, concepts in meaning.items() if len(concepts) > 1} == {}
    assert meaning["m"] == {"message"}  # as in git commit -m
    assert meaning["v"] == {"verbose"}
    assert "e" not in meaning


def test_device_type_reaches_build_and_device_reaches_unpatch(tmp_path: Path) -> None:
    root, _ = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    for args in (
        ("build", "--device-type", "Acme_X1"),
        ("unpatch", "--device", "Acme_X1"),
        ("smoke", "--device-type", "Acme_X1"),
    ):
        result = inv(root, *args, check=False)
        assert result.returncode == 1, args
        assert "No idea what" not in result.stderr, args
        assert result.stderr.startswith("error: "), args
        assert "Acme_X1" in result.stderr or args[0] == "smoke", args  # smoke: no case here


def test_matrix_dash_h_is_help(tmp_path: Path) -> None:
    result = inv(tmp_path, "matrix", "-h")
    assert "Usage: inv[oke] [--core-opts] matrix" in result.stdout
    assert "--html" in result.stdout


def test_help_after_any_task_is_its_help(tmp_path: Path) -> None:
    # Tasks whose first argument is positional (record-history's device type, bundle's version)
    # would otherwise take the word --help as that value.
    spellings = [[name, "--help"] for name in tasks_collection().task_names]
    spellings += [["record_history", "-h"], ["bundle", "-h"], ["record-history", "Acme_X1", "-h"]]
    for words in spellings:
        shown = words[0].replace("_", "-")
        result = inv(tmp_path, *words)
        assert f"Usage: inv[oke] [--core-opts] {shown} [--options]" in result.stdout, words


def test_help_request_names_the_task_before_the_help_flag() -> None:
    tasks = ["bundle", "record-history", "build"]
    assert help_request(["bundle", "--help"], tasks) == "bundle"
    assert help_request(["build", "-d", "X", "-h"], tasks) == "build"
    assert help_request(["record_history", "-h"], [*tasks, "record_history"]) == "record-history"
    assert help_request(["build", "--device", "X"], tasks) is None
    assert help_request(["--help"], tasks) is None  # invoke's own bare --help


def test_patch_dash_m_is_the_commit_message(tmp_path: Path) -> None:
    origin = make_origin(tmp_path / "origin")
    result = inv(
        origin.root,
        "patch",
        "--device-type",
        "Acme_X1",
        "--task",
        "train",
        "--backend",
        "FlagScale",
        "--commit",
        origin.vendor.base,
        "-m",
        "Acme_X1: sets",
        check=False,
    )
    assert result.returncode == 1
    missing = result.stderr.strip()
    assert missing.startswith("error: missing --models:"), missing
    assert "--message" not in missing


# --- paths are never split; flags that do not apply are refused (issue 8, items 11 and 12) ----


@pytest.fixture(scope="module")
def encrypted_user(tmp_path_factory: pytest.TempPathFactory, module_env: Path) -> dict:
    """A user's clone of encrypted sets, and the key in a folder whose name has spaces."""
    tmp = tmp_path_factory.mktemp("encrypted")
    origin = make_origin(tmp / "origin", encrypt=True)
    user = clone_user(origin.root, tmp / "user", init=True)
    spaced = tmp / "keys dir" / "with space" / "metax key.key"
    spaced.parent.mkdir(parents=True)
    shutil.copy2(origin.key, spaced)
    return {"user": user, "key": spaced}


@pytest.mark.parametrize(
    "command",
    [
        ("build", "--device", DEVICE),
        ("unpatch", "--device-type", DEVICE, "--task", "train"),
        ("matrix",),
    ],
    ids=["build", "unpatch --device-type", "matrix"],
)
def test_a_key_path_with_spaces_is_one_path(encrypted_user: dict, command: tuple) -> None:
    user, key = encrypted_user["user"], encrypted_user["key"]
    result = inv(user, *command, "--key-path", str(key), check=False)
    assert result.returncode == 0, result.stderr
    assert "not found" not in result.stderr
    if command[0] == "matrix":  # every set decrypted and checked: none left unknown
        assert re.search(r"patch sets at \w+: .*\b0 unknown\b", result.stdout), result.stdout


def test_unpatch_refuses_build_flags_without_device_type(tmp_path: Path) -> None:
    root, _ = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    key = tmp_path / "k.key"
    key.write_text("x")
    for flag, value in (("--commit", "HEAD"), ("--key-path", str(key)), ("--task", "train")):
        result = inv(root, "unpatch", flag, value, check=False)
        assert result.returncode == 1, flag
        assert result.stderr.strip().splitlines() == [
            f"error: {flag} applies only with --device-type (building build/<Vendor_Model>/);"
            " inv unpatch alone lays the base layer at the checked-out pin"
        ]
    assert not (root / ".git" / "flagscale" / "overlay").exists()  # nothing was laid


def test_patch_refuses_force_with_device_type(tmp_path: Path) -> None:
    root, _ = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    result = inv(root, "patch", "--device-type", "Acme_X1", "--force", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --force does not apply with --device-type: making patch sets overwrites nothing"
        " (uncommitted edits in hardware/<V_M>/ are refused, never discarded)"
    ]


@pytest.mark.parametrize(
    "command",
    [("build", "--device", DEVICE), ("unpatch", "--device-type", DEVICE), ("matrix",)],
    ids=["build", "unpatch --device-type", "matrix"],
)
def test_a_missing_key_file_is_refused_even_when_no_set_is_encrypted(
    tmp_path: Path, command: tuple
) -> None:
    origin = make_origin(tmp_path / "origin")  # nothing encrypted
    missing = tmp_path / "nonexistent" / "k.key"
    result = inv(origin.root, *command, "--key-path", str(missing), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: --key-path {missing}: no such file (check the path; a key file is"
        " never created here)"
    ]
    assert not (origin.root / "build" / DEVICE).exists()


def test_outside_a_workspace_inv_r_names_the_clone_to_cd_into(tmp_path: Path) -> None:
    for command in (("build", "--device", DEVICE), ("matrix",), ("unpatch",)):
        result = inv(tmp_path, *command, check=False)  # tasks.py found with -r, cwd elsewhere
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"error: not inside a FlagScale workspace: no backends/backends.yaml in"
            f" {tmp_path.resolve()} or its parents (cd {TOOL_ROOT} first; paths you pass may"
            " point anywhere)"
        ]
