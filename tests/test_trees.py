"""Tree objects through git plumbing: real repositories, no checkout in the user's repository."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from flagscale.core.errors import FlagScaleError
from flagscale.core.paths import UnsafePathError
from flagscale.overlay import layered_trees
from flagscale.upstream.workspace import load_workspace
from tests.gitrepos import commit_all, declare_backends, make_repo, run_git, write_files
from tests.vendor_workspace import (
    BACKEND,
    adapt_backend,
    adapt_flagscale,
    make_vendor_workspace,
)


def paths_of(ws, tree: str) -> dict[str, str]:
    """path → mode of every file in a scratch tree."""
    return {
        e.path: e.mode for e in layered_trees.tree_entries(layered_trees.scratch_repo(ws), tree)
    }


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def loose_objects(git_dir: Path) -> set[str]:
    objects = git_dir / "objects"
    return {
        f"{folder.name}{name.name}"
        for folder in objects.iterdir()
        if len(folder.name) == 2
        for name in folder.iterdir()
    }


@pytest.fixture
def vendor(tmp_path: Path):
    return make_vendor_workspace(tmp_path)


def test_scratch_repo_is_bare_with_alternates_and_reused(vendor) -> None:
    ws = load_workspace(vendor.root)
    scratch = layered_trees.scratch_repo(ws)
    assert scratch == vendor.root / ".git" / "flagscale" / "scratch.git"
    assert run_git(scratch, "rev-parse", "--is-bare-repository") == "true"
    alternates = (scratch / "objects" / "info" / "alternates").read_text().splitlines()
    assert alternates == [
        str(vendor.root / ".git" / "objects"),
        str(vendor.root / ".git" / "modules" / "third_party" / BACKEND / "objects"),
    ]
    marker = scratch / "marker"
    marker.write_text("kept")
    assert layered_trees.scratch_repo(ws) == scratch and marker.read_text() == "kept"
    assert not [p for p in scratch.parent.iterdir() if p.name.startswith(".scratch-")]


def test_flagscale_tree_drops_third_party_build_and_gitlinks(vendor) -> None:
    write_files(vendor.root, {"build/Metax_C550/x": "x\n", "hardware/Metax_C550/a": "a\n"})
    run_git(vendor.root, "add", "-f", "build/Metax_C550/x", "hardware")
    commit = commit_all(vendor.root, "with build and hardware")
    ws = load_workspace(vendor.root)
    files = paths_of(ws, layered_trees.flagscale_tree(ws, commit))
    assert "hardware/Metax_C550/a" in files and "flagscale/train.py" in files
    assert not [p for p in files if p.startswith(("third_party", "build/"))]
    assert "160000" not in files.values()
    without = paths_of(
        ws, layered_trees.flagscale_tree(ws, commit, exclude=("third_party", "hardware"))
    )
    assert "build/Metax_C550/x" in without and "hardware/Metax_C550/a" not in without


def test_layered_tree_is_pin_plus_layer_minus_deletions(vendor) -> None:
    ws = load_workspace(vendor.root)
    scratch = layered_trees.scratch_repo(ws)
    layered = layered_trees.layered_tree(ws, BACKEND, vendor.base)
    files = paths_of(ws, layered)
    pin = run_git(vendor.root, "ls-tree", vendor.base, f"third_party/{BACKEND}").split()[2]
    upstream = set(run_git(vendor.upstream, "ls-tree", "-r", "--name-only", pin).splitlines())
    assert set(files) == (upstream - {"dropped_by_layer.py"}) | {"megatron/flagscale_extra.py"}
    assert files["tools/run.sh"] == "100755" and files["docs/link"] == "120000"
    blob = run_git(scratch, "cat-file", "-p", f"{layered}:patched_by_layer.py")
    assert blob == "base = 'flagscale'"


def test_layered_tree_deletes_folders_and_resolves_file_folder_clashes(vendor) -> None:
    write_files(
        vendor.root,
        {
            f"backends/{BACKEND}.layer.yaml": "version: 1\ndeleted: [megatron/core, tools]\n",
            f"backends/{BACKEND}/weights.bin/part0": "folder replaces a file\n",
        },
    )
    commit = commit_all(vendor.root, "layer clashes")
    ws = load_workspace(vendor.root)
    files = paths_of(ws, layered_trees.layered_tree(ws, BACKEND, commit))
    assert not [p for p in files if p.startswith(("megatron/core/", "tools/"))]
    assert "weights.bin/part0" in files and "weights.bin" not in files


def test_layered_tree_uses_the_pin_recorded_at_that_commit(vendor) -> None:
    ws = load_workspace(vendor.root)
    old_pin = layered_trees.pin_at(ws, BACKEND, vendor.base)
    write_files(vendor.upstream, {"megatron/new_upstream.py": "NEW = 1\n"})
    new_pin = commit_all(vendor.upstream, "upstream moves on")
    checkout = vendor.root / "third_party" / BACKEND
    run_git(checkout, "fetch", "-q", "origin")
    run_git(checkout, "checkout", "-q", new_pin)
    run_git(vendor.root, "add", f"third_party/{BACKEND}")
    bumped = commit_all(vendor.root, "bump pin")
    assert layered_trees.pin_at(ws, BACKEND, bumped) == new_pin != old_pin
    assert layered_trees.pin_at(ws, BACKEND, vendor.base) == old_pin
    assert "megatron/new_upstream.py" not in paths_of(
        ws, layered_trees.layered_tree(ws, BACKEND, vendor.base)
    )
    assert "megatron/new_upstream.py" in paths_of(
        ws, layered_trees.layered_tree(ws, BACKEND, bumped)
    )


def test_release_backend_pin_comes_from_the_declaration(tmp_path: Path) -> None:
    root = tmp_path / "FlagScale"
    pin = make_repo(root / "third_party" / "vllm", {"vllm/__init__.py": "V = 1\n"})
    run_git(root, "init", "-q", "-b", "main")
    write_files(root, {".gitignore": "/third_party/\n"})
    release = {
        "kind": "release",
        "package": "vllm",
        "version": "0.1",
        "filename": "vllm-0.1.tar.gz",
        "sha256": "0" * 64,
    }
    declare_backends(root, {"vllm": {"source": release, "pin": pin}})
    write_files(root, {"backends/vllm/vllm/extra.py": "E = 1\n"})
    commit = commit_all(root, "declare a release backend")
    ws = load_workspace(root)
    assert layered_trees.pin_at(ws, "vllm", commit) == pin
    files = paths_of(ws, layered_trees.layered_tree(ws, "vllm", commit))
    assert set(files) == {"vllm/__init__.py", "vllm/extra.py"}


def test_pin_not_fetched_names_the_unpatch_command_for_that_backend(tmp_path: Path) -> None:
    root = tmp_path / "FlagScale"
    run_git(root.parent, "init", "-q", "-b", "main", root.name)
    release = {
        "kind": "release",
        "package": "vllm",
        "version": "0.1",
        "filename": "vllm-0.1.tar.gz",
        "sha256": "0" * 64,
    }
    declare_backends(root, {"vllm": {"source": release, "pin": "1" * 40, "optional": True}})
    commit = commit_all(root, "declare an optional release backend, never fetched")
    ws = load_workspace(root)
    with pytest.raises(FlagScaleError) as caught:
        layered_trees.layered_tree(ws, "vllm", commit)
    message = str(caught.value)
    assert f"vllm: pin {'1' * 40} is not in third_party/vllm" in message
    assert "run `inv unpatch --backend vllm` to fetch it" in message
    assert "submodule" not in message


def test_pin_missing_at_commit_is_an_error_naming_backend_and_commit(vendor) -> None:
    ws = load_workspace(vendor.root)
    first = run_git(vendor.root, "rev-list", "--max-parents=0", "HEAD")
    with pytest.raises(
        FlagScaleError, match=rf"{BACKEND}: FlagScale commit {first} records no pin"
    ):
        layered_trees.layered_tree(ws, BACKEND, first)
    with pytest.raises(FlagScaleError, match="--commit: commit 'no-such-ref' does not exist"):
        layered_trees.layered_tree(ws, BACKEND, "no-such-ref")


def test_layer_path_escaping_its_tree_is_refused(vendor) -> None:
    write_files(vendor.root, {f"backends/{BACKEND}.layer.yaml": "version: 1\ndeleted: [../x]\n"})
    commit = commit_all(vendor.root, "bad deletion")
    ws = load_workspace(vendor.root)
    with pytest.raises(UnsafePathError, match=r"layer.yaml at .*: unsafe path '../x'"):
        layered_trees.layered_tree(ws, BACKEND, commit)


def test_untouched_overlay_work_tree_equals_layered_tree(vendor) -> None:
    ws = load_workspace(vendor.root)
    assert layered_trees.worktree_tree(ws, BACKEND) == layered_trees.layered_tree(
        ws, BACKEND, vendor.base
    )


def test_worktree_tree_reads_edits_through_links_and_honours_gitignore(vendor) -> None:
    adapt_backend(vendor)
    ws = load_workspace(vendor.root)
    scratch = layered_trees.scratch_repo(ws)
    tree = layered_trees.worktree_tree(ws, BACKEND)
    files = paths_of(ws, tree)
    assert files["patched_by_layer.py"] == "100644"  # an overlay link counts as its content
    assert files["megatron/flagscale_extra.py"] == "100644"
    assert files["docs/vendor-link"] == "120000" and files["tools/setup.py"] == "100755"
    assert "run.log" not in files and "megatron/legacy.py" not in files
    content = run_git(scratch, "cat-file", "-p", f"{tree}:patched_by_layer.py")
    assert content == "base = 'flagscale+metax'"
    crlf = run_git(scratch, "cat-file", "blob", f"{tree}:crlf.txt")
    assert "\r\n" in crlf


def test_worktree_tree_keeps_tracked_files_that_match_gitignore(tmp_path: Path) -> None:
    vendor = make_vendor_workspace(tmp_path)
    write_files(vendor.upstream, {"kept.log": "tracked although ignored\n"})
    run_git(vendor.upstream, "add", "-f", "kept.log")
    run_git(vendor.upstream, "commit", "-q", "-m", "tracked log")
    checkout = vendor.root / "third_party" / BACKEND
    run_git(checkout, "fetch", "-q", "origin")
    run_git(checkout, "checkout", "-q", "origin/main", "--", "kept.log")
    run_git(checkout, "reset", "-q")
    run_git(vendor.root, "-C", str(checkout), "update-ref", "HEAD", "origin/main")
    run_git(vendor.root, "add", f"third_party/{BACKEND}")
    ws = load_workspace(vendor.root)
    assert "kept.log" in paths_of(ws, layered_trees.worktree_tree(ws, BACKEND))


def test_dangling_overlay_link_counts_as_deleted(vendor) -> None:
    (vendor.root / "backends" / BACKEND / "megatron" / "flagscale_extra.py").unlink()
    ws = load_workspace(vendor.root)
    assert "megatron/flagscale_extra.py" not in paths_of(
        ws, layered_trees.worktree_tree(ws, BACKEND)
    )


def test_worktree_tree_needs_a_checkout(vendor) -> None:
    run_git(vendor.root, "submodule", "deinit", "-q", "-f", f"third_party/{BACKEND}")
    ws = load_workspace(vendor.root)
    with pytest.raises(FlagScaleError, match=f"third_party/{BACKEND} is not checked out"):
        layered_trees.worktree_tree(ws, BACKEND)


def test_flagscale_worktree_tree_sees_all_uncommitted_work_and_excludes(vendor) -> None:
    adapt_flagscale(vendor)
    write_files(vendor.root, {"hardware/Metax_C550/env.sh": "A=1\n", "build/x/y": "y\n"})
    write_files(vendor.root, {".gitignore": "/build/\n*.tmp\n", "scratch.tmp": "ignored\n"})
    ws = load_workspace(vendor.root)
    scratch = layered_trees.scratch_repo(ws)
    tree = layered_trees.flagscale_worktree_tree(ws)
    files = paths_of(ws, tree)
    assert {"flagscale/metax.py", "flagscale/notes é.md", "tools/x.txt"} <= set(files)
    assert not [p for p in files if p.startswith(("hardware/", "build/", "third_party"))]
    assert "scratch.tmp" not in files
    assert run_git(scratch, "cat-file", "-p", f"{tree}:flagscale/train.py").endswith("'metax'")


def test_tree_functions_leave_user_repositories_untouched(vendor) -> None:
    adapt_backend(vendor)
    adapt_flagscale(vendor)
    root = vendor.root
    module_dir = root / ".git" / "modules" / "third_party" / BACKEND

    def state() -> tuple:
        # status first: it may refresh stat data in an index, which is not a change of ours
        return (
            run_git(root, "status", "--porcelain=v2", "-z"),
            run_git(root / "third_party" / BACKEND, "status", "--porcelain=v2", "-z"),
            file_hash(root / ".git" / "index"),
            file_hash(module_dir / "index"),
            loose_objects(root / ".git"),
            loose_objects(module_dir),
        )

    before = state()
    ws = load_workspace(root)
    layered_trees.worktree_tree(ws, BACKEND)
    layered_trees.flagscale_worktree_tree(ws)
    layered_trees.layered_tree(ws, BACKEND, vendor.base)
    assert state() == before


def test_diff_is_the_same_bytes_whatever_the_user_configuration(vendor) -> None:
    adapt_backend(vendor)
    ws = load_workspace(vendor.root)
    scratch = layered_trees.scratch_repo(ws)
    old = layered_trees.layered_tree(ws, BACKEND, vendor.base)
    new = layered_trees.worktree_tree(ws, BACKEND)
    plain = layered_trees.diff_trees(scratch, old, new)
    hostile = {
        "diff.noprefix": "true",
        "diff.mnemonicPrefix": "true",
        "diff.renames": "copies",
        "diff.algorithm": "patience",
        "diff.context": "9",
        "diff.orderFile": str(vendor.root / "order"),
        "color.ui": "always",
        "core.quotepath": "false",
        "core.autocrlf": "true",
    }
    (vendor.root / "order").write_text("weights.bin\n*\n")
    for name, value in hostile.items():
        run_git(vendor.root, "config", "--global", name, value)
    assert layered_trees.diff_trees(scratch, old, new) == plain
    assert layered_trees.worktree_tree(ws, BACKEND) == new
    assert b'diff --git "a/donn\\303\\251es du mod\\303\\250le.txt"' in plain
    assert b"GIT binary patch" in plain and b"\x1b[" not in plain


def test_changed_entries_lists_modes_of_both_sides(vendor) -> None:
    adapt_backend(vendor)
    ws = load_workspace(vendor.root)
    scratch = layered_trees.scratch_repo(ws)
    changes = {
        after.path: (before.mode, after.mode)
        for before, after in layered_trees.changed_entries(
            scratch,
            layered_trees.layered_tree(ws, BACKEND, vendor.base),
            layered_trees.worktree_tree(ws, BACKEND),
        )
    }
    assert changes["tools/setup.py"] == ("100644", "100755")
    assert changes["megatron/legacy.py"] == ("100644", "000000")
    assert changes["docs/vendor-link"] == ("000000", "120000")


def test_export_tree_writes_plain_files_with_modes_and_links(vendor, tmp_path: Path) -> None:
    ws = load_workspace(vendor.root)
    destination = tmp_path / "export"
    layered_trees.export_tree(ws, layered_trees.layered_tree(ws, BACKEND, vendor.base), destination)
    assert (destination / "patched_by_layer.py").read_text() == "base = 'flagscale'\n"
    assert os.readlink(destination / "docs" / "link") == "../megatron/legacy.py"
    assert os.access(destination / "tools" / "run.sh", os.X_OK)
    assert not (destination / ".git").exists()


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_real_unpatch_gives_the_layered_tree(tmp_path: Path, mode: str) -> None:
    from flagscale.overlay.unpatch import unpatch

    vendor = make_vendor_workspace(tmp_path)
    run_git(vendor.root / "third_party" / BACKEND, "checkout", "-q", "--", ".")
    run_git(vendor.root / "third_party" / BACKEND, "clean", "-q", "-f")
    unpatch(vendor.root, [BACKEND], mode=mode)
    ws = load_workspace(vendor.root)
    assert layered_trees.worktree_tree(ws, BACKEND) == layered_trees.layered_tree(
        ws, BACKEND, vendor.base
    )


def test_overlay_links_are_not_followed_out_of_the_layer(vendor, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not for the patch\n")
    os.symlink(outside, vendor.root / "backends" / BACKEND / "out")
    os.symlink(f"../../backends/{BACKEND}/out/secret", vendor.checkout / "leak")
    ws = load_workspace(vendor.root)
    tree = layered_trees.worktree_tree(ws, BACKEND)
    assert paths_of(ws, tree)["leak"] == "120000"
    blob = run_git(layered_trees.scratch_repo(ws), "cat-file", "blob", f"{tree}:leak")
    assert blob == f"../../backends/{BACKEND}/out/secret"
