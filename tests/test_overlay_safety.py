"""Never lose work, never leave the tree: ``inv unpatch`` / ``inv patch`` against careless users.

Real processes (``inv``), real submodules, real git worktrees. Each test is one way a user's
work could be lost or a tree outside the workspace written, and checks that it is not.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.gitrepos import TOOL_ROOT, commit_all, inv, run_git, snapshot, write_files
from tests.overlay_workspace import (
    BASE_LAYER,
    CHECKOUT,
    DELETIONS,
    EXTRA,
    LAYER,
    NAME,
    PACKAGE_INFO,
    UPSTREAM,
    overlay_workspace,
)


@pytest.fixture
def workspace(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FlagScale with a committed base layer: an override, a layer-only file, a deletion."""
    return overlay_workspace(tmp_path, tmp_path_factory.getbasetemp() / "overlay-template")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def saved_patches(root: Path) -> list[Path]:
    folder = root / ".flagscale" / "saved"
    return sorted(folder.glob("*.patch")) if folder.is_dir() else []


def reset_to_the_pin(root: Path) -> None:
    """What ``git checkout -f`` and ``git clean`` do to a laid checkout."""
    checkout = root / CHECKOUT
    run_git(checkout, "checkout", "-f", "HEAD", "--", ".")
    run_git(checkout, "clean", "-q", "-fd")


def restore_command(output: str) -> str:
    """The restore command an ``inv`` run printed (between backquotes after 'restore with')."""
    found = re.search(r"restore with `([^`]+)`", output)
    assert found, output
    return found.group(1)


def run_pasted(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command as a user pastes it into a shell in ``cwd``."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, check=False
    )


# --- 1. a reset checkout plus one edit ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_reset_checkout_plus_one_edit_keeps_the_base_layer(workspace: Path, mode: str) -> None:
    inv(workspace, "unpatch", "--mode", mode)
    # an uncommitted base-layer edit (through the symlink, as documented; directly in copy mode)
    (workspace / LAYER / PACKAGE_INFO).write_text("VERSION = 'mine'\n", encoding="utf-8")
    reset_to_the_pin(workspace)
    with (workspace / CHECKOUT / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("one more line\n")
    before = snapshot(workspace / "backends")

    result = inv(workspace, "patch", check=False)

    assert result.returncode == 1, result.stdout
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {NAME}: "), result.stderr
    assert PACKAGE_INFO in lines[0] and "docs/old.md" in lines[0]
    assert "inv unpatch" in lines[0]
    assert snapshot(workspace / "backends") == before


def test_one_path_reset_by_git_is_not_dropped_from_the_layer(workspace: Path) -> None:
    inv(workspace, "unpatch")
    run_git(workspace / CHECKOUT, "checkout", "--", PACKAGE_INFO)  # the rest stays laid
    write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "def util():\n    return 2\n"})
    before = snapshot(workspace / "backends")

    result = inv(workspace, "patch", check=False)

    assert result.returncode == 1
    assert PACKAGE_INFO in result.stderr and "docs/old.md" not in result.stderr
    assert snapshot(workspace / "backends") == before


def test_a_layer_file_the_user_removed_is_saved_before_it_leaves_backends(
    workspace: Path, tmp_path: Path
) -> None:
    inv(workspace, "unpatch")
    layer_file = workspace / LAYER / EXTRA
    (workspace / CHECKOUT / EXTRA).write_text("EXTRA = 'uncommitted'\n", encoding="utf-8")
    (workspace / CHECKOUT / EXTRA).unlink()  # the user removes it where it was laid

    result = inv(workspace, "patch")

    assert not layer_file.exists()
    [saved] = saved_patches(workspace)
    assert str(saved) in result.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pasted = run_pasted(restore_command(result.stdout), elsewhere)
    assert pasted.returncode == 0, pasted.stderr
    assert layer_file.read_text(encoding="utf-8") == "EXTRA = 'uncommitted'\n"


def test_committed_layer_files_are_not_saved_again(workspace: Path) -> None:
    inv(workspace, "unpatch")
    (workspace / CHECKOUT / EXTRA).unlink()
    inv(workspace, "patch")
    assert not (workspace / LAYER / EXTRA).exists()
    assert saved_patches(workspace) == []  # git still has it: `git checkout HEAD -- <path>`


def test_copy_mode_overwrite_of_an_uncommitted_layer_file_is_saved(workspace: Path) -> None:
    inv(workspace, "unpatch", "--mode", "copy")
    (workspace / LAYER / PACKAGE_INFO).write_text("VERSION = 'layer side'\n", encoding="utf-8")
    inv(workspace, "unpatch", "--mode", "copy")  # laid: the copy shows the uncommitted version
    (workspace / CHECKOUT / PACKAGE_INFO).write_text("VERSION = 'checkout'\n", encoding="utf-8")

    result = inv(workspace, "patch")

    assert (workspace / LAYER / PACKAGE_INFO).read_text() == "VERSION = 'checkout'\n"
    pasted = run_pasted(restore_command(result.stdout), workspace)
    assert pasted.returncode == 0, pasted.stderr
    assert (workspace / LAYER / PACKAGE_INFO).read_text() == "VERSION = 'layer side'\n"


# --- 2. the vendor flow refuses the same state ----------------------------------------------------


def vendor_patch(root: Path, base: str) -> subprocess.CompletedProcess[str]:
    return inv(
        root,
        "patch",
        "--device-type",
        "Metax_C550",
        "--task",
        "train",
        "--backend",
        NAME,
        "--commit",
        base,
        "--backend-version",
        "0.16.1",
        "--models",
        "llama",
        "--message",
        "Metax C550 adaptation",
        check=False,
    )


def test_vendor_flow_refuses_a_reset_checkout_like_the_developer_flow(workspace: Path) -> None:
    inv(workspace, "unpatch")
    base = run_git(workspace, "rev-parse", "HEAD")
    reset_to_the_pin(workspace)
    with (workspace / CHECKOUT / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("vendor line\n")
    developer = inv(workspace, "patch", check=False)

    result = vendor_patch(workspace, base)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and PACKAGE_INFO in lines[0] and "docs/old.md" in lines[0]
    dev_line = error_lines(developer.stderr)[0]
    assert lines[0].split(";")[0] == dev_line.split(";")[0]  # the same check, the same words
    assert run_git(workspace, "rev-parse", "HEAD") == base
    assert not (workspace / "hardware").exists()


def test_vendor_flow_on_a_laid_checkout_still_makes_its_set(workspace: Path) -> None:
    inv(workspace, "unpatch")
    base = run_git(workspace, "rev-parse", "HEAD")
    with (workspace / CHECKOUT / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("vendor line\n")
    result = vendor_patch(workspace, base)
    assert result.returncode == 0, result.stderr
    patch = (workspace / "hardware/Metax_C550" / NAME / f"{NAME}.patch").read_text()
    assert "+vendor line" in patch and PACKAGE_INFO not in patch


# --- 3. git worktrees keep their own state --------------------------------------------------------


def add_worktree(root: Path, name: str = "wt") -> Path:
    tree = root.parent / name
    run_git(root, "worktree", "add", "-q", str(tree))
    return tree


def test_worktrees_keep_their_own_overlay_record(workspace: Path) -> None:
    inv(workspace, "unpatch")
    tree = add_worktree(workspace)
    inv(tree, "unpatch")
    assert (tree / CHECKOUT / PACKAGE_INFO).read_text() == BASE_LAYER[PACKAGE_INFO]

    again = inv(workspace, "unpatch")  # the main checkout: no phantom edits
    assert "up to date" in again.stdout
    with (workspace / CHECKOUT / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("main edit\n")
    before = snapshot(workspace / "backends")
    inv(workspace, "patch")
    after = snapshot(workspace / "backends")
    assert after.pop("Megatron-LM/README.md")[1] == b"upstream readme\nmain edit\n"
    assert after == before
    assert "up to date" in inv(tree, "unpatch").stdout


def test_force_in_a_worktree_of_an_unpatched_checkout(workspace: Path) -> None:
    inv(workspace, "unpatch")
    tree = add_worktree(workspace)
    run_git(tree, "submodule", "update", "--init", "-q", "--", CHECKOUT)
    write_files(tree / CHECKOUT, {"megatron/core/utils.py": "worktree edit\n"})

    result = inv(tree, "unpatch", "--force")

    [saved] = saved_patches(tree)
    assert saved_patches(workspace) == []
    assert (tree / CHECKOUT / PACKAGE_INFO).read_text() == BASE_LAYER[PACKAGE_INFO]
    assert run_pasted(restore_command(result.stdout), tree).returncode == 0
    assert (tree / CHECKOUT / "megatron/core/utils.py").read_text() == "worktree edit\n"


def test_each_worktree_keeps_its_state_in_its_own_git_folder(workspace: Path) -> None:
    tree = add_worktree(workspace)
    inv(tree, "unpatch")
    base = run_git(workspace, "rev-parse", "HEAD")
    vendor_patch(tree, base)  # uses the scratch repository (refused: nothing changed)
    own = Path(run_git(tree, "rev-parse", "--path-format=absolute", "--git-dir"))
    assert (own / "flagscale" / "overlay" / f"{NAME}.json").is_file()
    assert (own / "flagscale" / "overlay" / f"{NAME}.index").is_file()
    assert (own / "flagscale" / "scratch.git").is_dir()
    assert not (workspace / ".git" / "flagscale").exists()


# --- 6. a checkout that is exactly its pin is laid again ------------------------------------------


def deinit(root: Path) -> None:
    run_git(root, "submodule", "deinit", "-q", "-f", CHECKOUT)


def remove_checkout(root: Path) -> None:
    shutil.rmtree(root / CHECKOUT)


def checkout_and_clean(root: Path) -> None:
    run_git(root / CHECKOUT, "checkout", "-f", ".")
    run_git(root / CHECKOUT, "clean", "-q", "-fd")


@pytest.mark.parametrize("undo", [deinit, remove_checkout, checkout_and_clean])
@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_checkout_at_its_pin_is_simply_laid_again(workspace: Path, undo, mode: str) -> None:
    inv(workspace, "unpatch", "--mode", mode)
    layer_edit = workspace / LAYER / PACKAGE_INFO  # uncommitted, in backends/: never lost
    layer_edit.write_text("VERSION = 'uncommitted'\n", encoding="utf-8")
    undo(workspace)

    laid = inv(workspace, "unpatch", "--mode", mode)

    assert "laid base layer" in laid.stdout
    assert saved_patches(workspace) == []
    assert layer_edit.read_text() == "VERSION = 'uncommitted'\n"
    assert (workspace / CHECKOUT / PACKAGE_INFO).read_text() == "VERSION = 'uncommitted'\n"
    assert not (workspace / CHECKOUT / "docs/old.md").exists()
    assert "already holds every edit" in inv(workspace, "patch").stdout
    assert "up to date" in inv(workspace, "unpatch", "--mode", mode).stdout


def test_a_real_edit_in_a_reset_checkout_is_still_refused(workspace: Path) -> None:
    inv(workspace, "unpatch")
    reset_to_the_pin(workspace)
    write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "mine\n"})
    result = inv(workspace, "unpatch", check=False)
    assert result.returncode == 1
    assert "1 edit(s)" in result.stderr and "megatron/core/utils.py" in result.stderr
    assert (workspace / CHECKOUT / "megatron/core/utils.py").read_text() == "mine\n"


# --- 9. a symlinked checkout is never written through ---------------------------------------------


def other_clone(root: Path) -> Path:
    clone = root.parent / "other-clone"
    run_git(root.parent, "clone", "-q", str(root / CHECKOUT), str(clone))
    return clone


@pytest.mark.parametrize("linked", [CHECKOUT, "third_party"])
@pytest.mark.parametrize("command", [("unpatch", "--mode", "copy"), ("patch",)])
def test_symlinked_checkout_is_refused(
    workspace: Path, linked: str, command: tuple[str, ...]
) -> None:
    run_git(workspace, "submodule", "update", "--init", "-q", "--", CHECKOUT)
    if linked == CHECKOUT:
        target = other_clone(workspace)
    else:
        target = workspace.parent / "other-third-party"
        shutil.move(workspace / "third_party", target)
    shutil.rmtree(workspace / linked, ignore_errors=True)
    os.symlink(target, workspace / linked)
    before = snapshot(target, skip=())

    result = inv(workspace, *command, check=False)

    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {linked} is a symlink"), lines
    assert snapshot(target, skip=()) == before


# --- 17. committed files are left alone -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["version: 1\ndeleted: []\n", "# kept by hand\nversion: 1\ndeleted: [docs/old.md]\n"],
)
def test_committed_deletion_list_is_left_alone(workspace: Path, text: str) -> None:
    (workspace / DELETIONS).write_text(text, encoding="utf-8")
    commit_all(workspace, "deletion list as the project keeps it")
    inv(workspace, "unpatch")
    write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "edited\n"})
    inv(workspace, "patch")
    assert (workspace / DELETIONS).read_text(encoding="utf-8") == text


# --- restore commands that work when pasted -------------------------------------------------------


def test_printed_restore_command_works_from_any_folder(workspace: Path, tmp_path: Path) -> None:
    inv(workspace, "unpatch")
    write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "mine\n", "new dir/é.txt": "n\n"})
    result = inv(workspace, "unpatch", "--force")
    assert (workspace / CHECKOUT / "megatron/core/utils.py").read_text() == UPSTREAM[
        "megatron/core/utils.py"
    ]
    pasted = run_pasted(restore_command(result.stdout), tmp_path)
    assert pasted.returncode == 0, pasted.stderr
    assert (workspace / CHECKOUT / "megatron/core/utils.py").read_text() == "mine\n"
    assert (workspace / CHECKOUT / "new dir/é.txt").read_text() == "n\n"


def doc_restore_commands() -> list[str]:
    text = (TOOL_ROOT / "docs" / "developer-workflow.md").read_text(encoding="utf-8")
    found = re.findall(r"`(git [^`]*\.flagscale/saved/[^`]*)`", text)
    assert found, "docs/developer-workflow.md shows no restore command"
    return found


def test_restore_commands_in_the_guide_work_from_the_workspace_root(workspace: Path) -> None:
    inv(workspace, "unpatch", "--mode", "copy")
    for command in doc_restore_commands():
        checkout_side = "third_party" in command
        if checkout_side:
            write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "mine\n"})
            result = inv(workspace, "unpatch", "--mode", "copy", "--force")
            target = workspace / CHECKOUT / "megatron/core/utils.py"
        else:
            (workspace / LAYER / PACKAGE_INFO).write_text("layer side\n", encoding="utf-8")
            (workspace / CHECKOUT / PACKAGE_INFO).write_text("checkout side\n", encoding="utf-8")
            result = inv(workspace, "patch", "--force")
            target = workspace / LAYER / PACKAGE_INFO
        saved = Path(restore_command(result.stdout).split()[-1].strip("'"))
        pasted = command.replace("<backend>", NAME).replace("<b>", NAME)
        pasted = re.sub(r"<[^>]*file[^>]*>", saved.stem, pasted)
        assert run_pasted(pasted, workspace).returncode == 0, pasted
        expected = "mine\n" if checkout_side else "layer side\n"
        assert target.read_text() == expected, pasted
        inv(workspace, "unpatch", "--mode", "copy", "--force")


def test_force_keeps_the_mode_the_checkout_was_laid_in(workspace: Path) -> None:
    inv(workspace, "unpatch", "--mode", "copy")
    (workspace / CHECKOUT / PACKAGE_INFO).write_text("copy edited\n", encoding="utf-8")
    result = inv(workspace, "unpatch", "--force")
    assert "(copy, pin" in result.stdout
    assert not (workspace / CHECKOUT / PACKAGE_INFO).is_symlink()
    command = restore_command(result.stdout)
    assert shlex.split(command)[0] == "git"
    pasted = run_pasted(command, workspace)
    assert pasted.returncode == 0, pasted.stderr
    assert (workspace / CHECKOUT / PACKAGE_INFO).read_text() == "copy edited\n"
