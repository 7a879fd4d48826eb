"""Laying and harvesting the base layer (flagscale.overlay: unpatch, patch) on real repositories.

Every test works on a real FlagScale superproject with a real git submodule. The edited
third_party tree must come back byte for byte (modes and symlinks included) from a fresh clone
after ``inv patch`` + ``inv unpatch --mode copy``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from flagscale.core.errors import FlagScaleError
from flagscale.overlay.laid_record import backend_lock, state_paths
from flagscale.overlay.patch import patch
from flagscale.overlay.unpatch import unpatch
from flagscale.upstream.workspace import find_workspace
from tests.gitrepos import Exec, Link, commit_all, make_workspace, run_git, snapshot, write_files

NAME = "Megatron-LM"
CHECKOUT = f"third_party/{NAME}"
LAYER = f"backends/{NAME}"
DELETIONS = f"backends/{NAME}.layer.yaml"

UPSTREAM = {
    "README.md": "upstream readme\n",
    "megatron/core/model.py": "class Model:\n    pass\n",
    "megatron/core/utils.py": "def util():\n    return 1\n",
    "megatron/training.py": "def train():\n    pass\n",
    "tools/run.sh": Exec(b"#!/bin/sh\necho run\n"),
    "tools/plain.sh": "#!/bin/sh\necho plain\n",
    "docs/guide.md": "guide\n",
    "docs/old.md": "old\n",
    "latest": Link("megatron/training.py"),
    "data/blob.bin": b"\x00\x01\x02\xff\x00",
    "win.bat": b"echo a\r\necho b\r\n",
    "conf": "key: value\n",
    "assets/a.txt": "asset\n",
    ".gitignore": "*.pyc\n",
}
BASE_LAYER = {
    "megatron/core/model.py": "class Model:\n    flagscale = True\n",
    "megatron/flagscale/extra.py": "EXTRA = 1\n",
    "tools/fs.sh": Exec(b"#!/bin/sh\necho flagscale\n"),
    "fs-link": Link("megatron/training.py"),
}
BASE_DELETIONS = "version: 1\ndeleted:\n- docs/old.md\n"

_TEMPLATE: dict[str, Path] = {}


@pytest.fixture
def workspace(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FlagScale superproject with a committed base layer (built once, copied per test)."""
    if "root" not in _TEMPLATE:
        base = tmp_path_factory.mktemp("template")
        root, _ = make_workspace(base, {NAME: UPSTREAM})
        write_files(root / LAYER, BASE_LAYER)
        (root / DELETIONS).write_text(BASE_DELETIONS, encoding="utf-8")
        commit_all(root, "base layer")
        _TEMPLATE["root"] = base
    shutil.copytree(_TEMPLATE["root"], tmp_path / "ws", symlinks=True)
    return tmp_path / "ws" / "FlagScale"


def lay(root: Path, **kwargs: object) -> list:
    return unpatch(root, **kwargs, echo=lambda _: None)  # type: ignore[arg-type]


def harvest(root: Path, **kwargs: object) -> list:
    return patch(root, **kwargs, echo=lambda _: None)  # type: ignore[arg-type]


def seen(root: Path) -> dict[str, tuple[str, bytes]]:
    """The checkout as a program sees it: overlay symlinks replaced by the file they show."""
    checkout = root / CHECKOUT
    entries = {}
    for path, (kind, value) in snapshot(checkout).items():
        if path == ".git":
            continue
        if kind == "link" and f"backends/{NAME}/" in value.decode():
            target = checkout / path
            kind = "exec" if os.access(target, os.X_OK) else "file"
            value = target.read_bytes()
        entries[path] = (kind, value)
    return entries


def fresh_copy_unpatch(root: Path, tmp: Path) -> dict[str, tuple[str, bytes]]:
    """Commit the superproject, clone it, ``unpatch --mode copy`` there; return the checkout."""
    commit_all(root, "patched")
    clone = tmp / "clone"
    run_git(tmp, "clone", "-q", str(root), str(clone))
    lay(clone, mode="copy")
    return {k: v for k, v in snapshot(clone / CHECKOUT).items() if k != ".git"}


def mtimes(folder: Path, *, folders: bool = False) -> dict[str, tuple[int, int]]:
    """(inode, modification time) of the files and symlinks (and folders, if asked) under
    ``folder``. Files are rewritten by rename, so a rewrite changes the inode even within one
    tick of the file system's clock (the modification time alone may not change)."""
    found = {}
    for current, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files + [d for d in dirs if folders or Path(current, d).is_symlink()]:
            path = Path(current, name)
            info = os.lstat(path)
            found[str(path)] = (info.st_ino, info.st_mtime_ns)
    return found


def own_upstream(root: Path) -> Path:
    """Point the copied workspace's submodule at its own copy of the upstream; return it."""
    upstream = root.parent / "upstreams" / NAME
    url = upstream.as_uri()
    run_git(root, "config", f"submodule.{CHECKOUT}.url", url)
    run_git(root / CHECKOUT, "remote", "set-url", "origin", url)
    return upstream


# --- edits, one kind each -------------------------------------------------------------------------


def _chmod(path: Path, executable: bool) -> None:
    mode = path.stat().st_mode
    path.chmod(mode | 0o111 if executable else mode & ~0o111)


def _rename(tp: Path) -> None:
    (tp / "megatron/training.py").rename(tp / "megatron/train2.py")


def _file_to_folder(tp: Path) -> None:
    (tp / "conf").unlink()
    write_files(tp, {"conf/settings.yaml": "a: 1\n"})


def _folder_to_symlink(tp: Path) -> None:
    shutil.rmtree(tp / "assets")
    os.symlink("data", tp / "assets")


def _delete_layer_file(tp: Path) -> None:
    (tp / "megatron/flagscale/extra.py").unlink()


def _revert_layer_file(tp: Path) -> None:
    """Write upstream's version through the overlay link, as an editor would."""
    target = tp / "megatron/core/model.py"
    content = UPSTREAM["megatron/core/model.py"]
    assert isinstance(content, str) and target.is_symlink()
    target.write_text(content, encoding="utf-8")


EDITS: dict[str, Callable[[Path], None]] = {
    "modify": lambda tp: write_files(tp, {"megatron/core/utils.py": "def util():\n    return 2\n"}),
    "modify-layer-file": lambda tp: (tp / "megatron/core/model.py").write_text("edited\n"),
    "add-nested": lambda tp: write_files(tp, {"new/deep/dir/file.py": "NEW = 1\n"}),
    "delete": lambda tp: (tp / "docs/guide.md").unlink(),
    "delete-layer-file": _delete_layer_file,
    "rename": _rename,
    "chmod+x": lambda tp: _chmod(tp / "tools/plain.sh", True),
    "chmod-x": lambda tp: _chmod(tp / "tools/run.sh", False),
    "chmod-layer-file": lambda tp: _chmod(tp / "tools/fs.sh", False),
    "symlink-add": lambda tp: write_files(tp, {"newlink": Link("README.md")}),
    "symlink-retarget": lambda tp: write_files(tp, {"latest": Link("README.md")}),
    "binary": lambda tp: write_files(tp, {"data/blob.bin": b"\x00\xfe\x00\x00binary\x00"}),
    "non-ascii-name": lambda tp: write_files(tp, {"docs/über-ü 说明.md": "ü\n"}),
    "spaces-in-name": lambda tp: write_files(tp, {"docs/with  two spaces .md": "s\n"}),
    "crlf": lambda tp: write_files(tp, {"win.bat": b"echo c\r\n", "new.bat": b"x\r\ny\r\n"}),
    "file-to-folder": _file_to_folder,
    "folder-to-symlink": _folder_to_symlink,
}


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_each_kind_of_edit_round_trips(workspace: Path, tmp_path: Path, kind: str) -> None:
    lay(workspace, mode="copy")
    EDITS[kind](workspace / CHECKOUT)
    edited = seen(workspace)
    harvest(workspace)
    assert fresh_copy_unpatch(workspace, tmp_path) == edited
    assert lay(workspace, mode="copy")[0].up_to_date


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_all_edits_at_once_round_trip(workspace: Path, tmp_path: Path, mode: str) -> None:
    lay(workspace, mode=mode)
    for _name, edit in sorted(EDITS.items()):
        edit(workspace / CHECKOUT)
    edited = seen(workspace)
    harvest(workspace)
    assert seen(workspace) == edited
    assert fresh_copy_unpatch(workspace, tmp_path) == edited


def test_base_layer_is_laid_as_relative_symlinks(workspace: Path) -> None:
    lay(workspace)
    checkout = workspace / CHECKOUT
    assert os.readlink(checkout / "megatron/core/model.py") == (
        "../../../../backends/Megatron-LM/megatron/core/model.py"
    )
    assert os.readlink(checkout / "fs-link") == "megatron/training.py"  # the same link, not a link
    assert not (checkout / "docs/old.md").exists()
    assert (checkout / "tools/fs.sh").read_bytes() == b"#!/bin/sh\necho flagscale\n"
    assert os.access(checkout / "tools/fs.sh", os.X_OK)


def test_copy_mode_keeps_modes_and_links(workspace: Path) -> None:
    lay(workspace, mode="copy")
    entries = snapshot(workspace / CHECKOUT)
    assert entries["tools/fs.sh"] == ("exec", b"#!/bin/sh\necho flagscale\n")
    assert entries["megatron/core/model.py"] == ("file", b"class Model:\n    flagscale = True\n")
    assert entries["fs-link"] == ("link", b"megatron/training.py")
    assert "docs/old.md" not in entries


def test_edits_through_symlinks_are_not_duplicated(workspace: Path) -> None:
    lay(workspace)
    model = workspace / CHECKOUT / "megatron/core/model.py"
    model.write_text("through the link\n", encoding="utf-8")
    before = mtimes(workspace / LAYER)
    result = harvest(workspace)[0]
    assert result.written == [] and result.removed == []
    assert model.is_symlink()
    assert (workspace / LAYER / "megatron/core/model.py").read_text() == "through the link\n"
    assert mtimes(workspace / LAYER) == before
    assert lay(workspace)[0].up_to_date


def test_reverting_through_a_link_leaves_the_layer(workspace: Path) -> None:
    lay(workspace)
    _revert_layer_file(workspace / CHECKOUT)
    result = harvest(workspace)[0]
    assert result.removed == ["megatron/core/model.py"]
    target = workspace / CHECKOUT / "megatron/core/model.py"
    assert not target.is_symlink()  # re-pointed at the pin, not left dangling
    assert target.read_text() == UPSTREAM["megatron/core/model.py"]
    assert lay(workspace)[0].up_to_date


# --- idempotence and incremental re-laying -------------------------------------------------------


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_second_unpatch_changes_nothing(workspace: Path, mode: str) -> None:
    # Layer files changed in the last 2 s are hashed again by the next run (racily clean, as in
    # git) and enter the record's stat cache then. Made long ago, the cache is whole at once,
    # whatever the time between the runs.
    for path in (workspace / "backends").rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    lay(workspace, mode=mode)
    record = state_paths(find_workspace(workspace).state_dir, NAME).record
    before = mtimes(workspace / CHECKOUT, folders=True) | mtimes(workspace / "backends")
    record_before = (record.stat().st_ino, record.stat().st_mtime_ns)
    result = lay(workspace, mode=mode)[0]
    assert result.up_to_date
    after = mtimes(workspace / CHECKOUT, folders=True) | mtimes(workspace / "backends")
    assert after == before
    assert (record.stat().st_ino, record.stat().st_mtime_ns) == record_before


def test_changed_layer_file_is_relaid_alone(workspace: Path) -> None:
    lay(workspace, mode="copy")
    checkout = workspace / CHECKOUT
    (workspace / LAYER / "megatron/core/model.py").write_text("v2\n", encoding="utf-8")
    before = mtimes(checkout)
    result = lay(workspace, mode="copy")[0]
    assert (result.written, result.restored, result.removed) == (1, 0, 0)
    after = mtimes(checkout)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == {str(checkout / "megatron/core/model.py")}
    assert (checkout / "megatron/core/model.py").read_text() == "v2\n"


def test_paths_leaving_the_layer_go_back_to_the_pin(workspace: Path) -> None:
    lay(workspace)
    shutil.rmtree(workspace / LAYER / "megatron")
    (workspace / DELETIONS).unlink()
    result = lay(workspace)[0]
    assert (result.restored, result.removed) == (2, 1)
    checkout = workspace / CHECKOUT
    assert (checkout / "megatron/core/model.py").read_text() == UPSTREAM["megatron/core/model.py"]
    assert (checkout / "docs/old.md").read_text() == "old\n"
    assert not (checkout / "megatron/flagscale").exists()
    assert run_git(checkout, "status", "--porcelain", "--", "megatron", "docs") == ""


def test_switching_modes(workspace: Path) -> None:
    lay(workspace)
    lay(workspace, mode="copy")
    model = workspace / CHECKOUT / "megatron/core/model.py"
    assert not model.is_symlink()
    lay(workspace, mode="symlink")
    assert model.is_symlink()


def test_pin_bump_detaches_to_the_new_pin(workspace: Path) -> None:
    lay(workspace)
    upstream = own_upstream(workspace)
    write_files(upstream, {"megatron/training.py": "def train():\n    return 'v2'\n"})
    new_pin = commit_all(upstream, "upstream v2")
    checkout = workspace / CHECKOUT
    run_git(checkout, "fetch", "-q", "origin")
    run_git(workspace, "update-index", "--cacheinfo", f"160000,{new_pin},{CHECKOUT}")
    result = lay(workspace)[0]
    assert result.pin == new_pin
    assert run_git(checkout, "rev-parse", "HEAD") == new_pin
    assert (checkout / "megatron/training.py").read_text() == "def train():\n    return 'v2'\n"
    assert (checkout / "megatron/core/model.py").is_symlink()
    assert lay(workspace)[0].up_to_date


def test_submodule_update_after_pin_bump_is_not_an_edit(workspace: Path) -> None:
    lay(workspace, mode="copy")
    upstream = own_upstream(workspace)
    write_files(upstream, {"README.md": "readme v2\n"})
    new_pin = commit_all(upstream, "upstream v2")
    run_git(workspace, "update-index", "--cacheinfo", f"160000,{new_pin},{CHECKOUT}")
    run_git(workspace, "submodule", "update", "--", CHECKOUT)  # moves HEAD, keeps the copies
    result = lay(workspace, mode="copy")[0]
    assert result.saved is None
    assert (workspace / CHECKOUT / "README.md").read_text() == "readme v2\n"


# --- refusing to lose edits ----------------------------------------------------------------------


def test_dirty_checkout_is_refused_with_the_files_listed(workspace: Path) -> None:
    lay(workspace)
    checkout = workspace / CHECKOUT
    write_files(checkout, {"megatron/core/utils.py": "mine\n", "notes/new file.txt": "n\n"})
    (checkout / "docs/guide.md").unlink()
    _chmod(checkout / "tools/plain.sh", True)
    (checkout / "ignored.pyc").write_bytes(b"ignored by upstream's .gitignore")
    with pytest.raises(FlagScaleError) as caught:
        lay(workspace)
    message = str(caught.value)
    assert "4 edit(s) in third_party/Megatron-LM are not in backends/Megatron-LM" in message
    for name in ("megatron/core/utils.py", "notes/new file.txt", "docs/guide.md", "tools/plain.sh"):
        assert name in message
    assert "ignored.pyc" not in message
    assert "run `inv patch` to keep them, or `inv unpatch --force`" in message
    assert (checkout / "megatron/core/utils.py").read_text() == "mine\n"


def test_dirty_list_is_cut_after_twenty(workspace: Path) -> None:
    lay(workspace)
    write_files(workspace / CHECKOUT, {f"extra/f{i:02}.py": "x\n" for i in range(25)})
    with pytest.raises(FlagScaleError, match=r"25 edit\(s\).*extra/f19.py and 5 more;"):
        lay(workspace)


def test_edits_through_overlay_links_are_not_dirty(workspace: Path) -> None:
    lay(workspace)
    (workspace / CHECKOUT / "megatron/core/model.py").write_text("via link\n", encoding="utf-8")
    assert lay(workspace)[0].up_to_date


def test_copy_mode_edit_of_laid_file_is_dirty(workspace: Path) -> None:
    lay(workspace, mode="copy")
    (workspace / CHECKOUT / "megatron/core/model.py").write_text("mine\n", encoding="utf-8")
    with pytest.raises(FlagScaleError, match=r"1 edit\(s\).*megatron/core/model.py"):
        lay(workspace, mode="copy")


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_force_saves_a_patch_that_git_apply_restores(workspace: Path, mode: str) -> None:
    lay(workspace, mode=mode)
    checkout = workspace / CHECKOUT
    for kind in ("modify", "add-nested", "delete", "chmod+x", "symlink-retarget", "binary"):
        EDITS[kind](checkout)
    EDITS["non-ascii-name"](checkout)
    if mode == "copy":
        (checkout / "megatron/core/model.py").write_text("copy edited\n", encoding="utf-8")
    edited = seen(workspace)
    laid = lay(workspace, mode=mode, force=True)[0]
    assert laid.saved is not None and laid.saved.is_file()
    assert laid.saved.parent == workspace / ".flagscale" / "saved"
    assert seen(workspace) != edited
    assert lay(workspace, mode=mode)[0].up_to_date
    run_git(checkout, "apply", str(laid.saved))
    assert seen(workspace) == edited


def test_never_unpatched_checkout_cannot_be_patched(workspace: Path) -> None:
    run_git(workspace, "submodule", "update", "--init", "--", CHECKOUT)
    before = snapshot(workspace / "backends")
    with pytest.raises(FlagScaleError, match="never laid by `inv unpatch`.*run `inv unpatch"):
        harvest(workspace)
    assert snapshot(workspace / "backends") == before


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_checkout_reset_to_the_pin_does_not_wipe_the_layer(workspace: Path, mode: str) -> None:
    lay(workspace, mode=mode)
    checkout = workspace / CHECKOUT
    run_git(checkout, "checkout", "-q", "--force", "HEAD")
    run_git(checkout, "clean", "-q", "-fdx")
    before = snapshot(workspace / "backends")
    with pytest.raises(FlagScaleError, match="looks reset to the pin.*run `inv unpatch"):
        harvest(workspace)
    assert snapshot(workspace / "backends") == before


def test_patch_after_pin_moved_under_it_is_refused(workspace: Path) -> None:
    lay(workspace)
    checkout = workspace / CHECKOUT
    write_files(checkout, {"extra.txt": "x\n"})
    run_git(checkout, "add", "extra.txt")
    run_git(checkout, "commit", "-q", "-m", "local commit")
    with pytest.raises(FlagScaleError, match="laid on [0-9a-f]{40}.*run `inv unpatch"):
        harvest(workspace)


def test_edit_on_both_sides_is_a_conflict(workspace: Path) -> None:
    lay(workspace, mode="copy")
    (workspace / LAYER / "megatron/core/model.py").write_text("layer side\n", encoding="utf-8")
    (workspace / CHECKOUT / "megatron/core/model.py").write_text("checkout side\n")
    with pytest.raises(FlagScaleError, match=r"1 file\(s\) changed both in backends/Megatron-LM"):
        harvest(workspace)
    assert (workspace / LAYER / "megatron/core/model.py").read_text() == "layer side\n"
    result = harvest(workspace, force=True)[0]
    assert result.saved is not None
    assert (workspace / LAYER / "megatron/core/model.py").read_text() == "checkout side\n"
    run_git(workspace, "apply", str(result.saved))
    assert (workspace / LAYER / "megatron/core/model.py").read_text() == "layer side\n"


def test_layer_change_with_untouched_checkout_is_kept(workspace: Path) -> None:
    lay(workspace, mode="copy")
    (workspace / LAYER / "megatron/core/model.py").write_text("pulled\n", encoding="utf-8")
    write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "edited\n"})
    result = harvest(workspace)[0]
    assert result.written == ["megatron/core/utils.py"]
    assert (workspace / LAYER / "megatron/core/model.py").read_text() == "pulled\n"
    lay(workspace, mode="copy")
    assert (workspace / CHECKOUT / "megatron/core/model.py").read_text() == "pulled\n"


def test_deletion_dropped_in_backends_alone_is_kept(workspace: Path) -> None:
    """A deletion taken out of the list (by hand, or a `git pull`) while the checkout still
    lacks the file is a change in backends/ alone: `inv patch` keeps it."""
    lay(workspace)
    (workspace / DELETIONS).unlink()
    write_files(workspace / CHECKOUT, {"megatron/core/utils.py": "edited\n"})
    harvest(workspace)
    assert not (workspace / DELETIONS).exists()
    assert (workspace / LAYER / "megatron/core/utils.py").read_text() == "edited\n"
    lay(workspace)
    assert (workspace / CHECKOUT / "docs/old.md").read_text() == "old\n"


def test_patch_with_nothing_edited_writes_nothing(workspace: Path) -> None:
    lay(workspace)
    before = mtimes(workspace / "backends")
    result = harvest(workspace)[0]
    assert not (result.written or result.removed or result.deletions_changed)
    assert mtimes(workspace / "backends") == before


def test_deletion_list_is_removed_when_empty(workspace: Path) -> None:
    lay(workspace)
    write_files(workspace / CHECKOUT, {"docs/old.md": "old, revived\n"})
    harvest(workspace)
    assert not (workspace / DELETIONS).exists()
    assert (workspace / LAYER / "docs/old.md").read_text() == "old, revived\n"


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_upstream_bytes_put_back_in_the_checkout_do_not_drop_layer_paths(
    workspace: Path, tmp_path: Path, mode: str
) -> None:
    """Restoring upstream's exact version is what a reset does: the layer is changed in
    backends/ instead, and then the round trip holds."""
    lay(workspace, mode=mode)
    checkout = workspace / CHECKOUT
    write_files(checkout, {"docs/old.md": "old\n"})
    if mode == "copy":
        (checkout / "megatron/core/model.py").write_text(UPSTREAM["megatron/core/model.py"])
    before = snapshot(workspace / "backends")
    with pytest.raises(FlagScaleError, match=r"shows the pin's version.*docs/old.md") as caught:
        harvest(workspace)
    assert ("megatron/core/model.py" in str(caught.value)) == (mode == "copy")
    assert snapshot(workspace / "backends") == before
    (workspace / DELETIONS).unlink()  # the documented way: change the layer itself
    if mode == "copy":
        (workspace / LAYER / "megatron/core/model.py").unlink()
    edited = seen(workspace)
    harvest(workspace)
    assert fresh_copy_unpatch(workspace, tmp_path) == edited


def test_deletion_list_is_sorted_and_stable(workspace: Path) -> None:
    lay(workspace)
    for name in ("tools/plain.sh", "README.md", "docs/guide.md"):
        (workspace / CHECKOUT / name).unlink()
    harvest(workspace)
    assert (workspace / DELETIONS).read_text() == (
        "version: 1\ndeleted:\n- README.md\n- docs/guide.md\n- docs/old.md\n- tools/plain.sh\n"
    )


# --- bad input -----------------------------------------------------------------------------------


def test_unknown_backend(workspace: Path) -> None:
    with pytest.raises(FlagScaleError, match="unknown backend 'vllm'.*declares Megatron-LM"):
        lay(workspace, backends=["vllm"])


def test_unknown_mode(workspace: Path) -> None:
    with pytest.raises(FlagScaleError, match="unknown layer mode 'hard'.*symlink or copy"):
        lay(workspace, mode="hard")


def test_outside_the_repository(tmp_path: Path) -> None:
    with pytest.raises(FlagScaleError, match="not inside a FlagScale workspace"):
        lay(tmp_path)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("../../../outside", "leads outside its tree"),
        ("/etc/passwd", "must be a relative path"),
        ("../Megatron-LM.layer.yaml", "leads outside its tree"),
    ],
)
def test_symlink_in_layer_leading_outside(workspace: Path, target: str, reason: str) -> None:
    os.symlink(target, workspace / LAYER / "evil")
    with pytest.raises(
        FlagScaleError, match=f"backends/Megatron-LM/evil: symlink target .*{reason}"
    ):
        lay(workspace)
    assert not os.path.lexists(workspace / CHECKOUT / "evil")


def test_layer_folder_that_is_a_symlink(workspace: Path, tmp_path: Path) -> None:
    shutil.move(workspace / LAYER, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", workspace / LAYER)
    with pytest.raises(FlagScaleError, match="backends/Megatron-LM is a symlink"):
        lay(workspace)


def test_layer_entry_named_git(workspace: Path) -> None:
    write_files(workspace / LAYER, {"sub/.git/config": "x\n"})
    with pytest.raises(FlagScaleError, match="backends/Megatron-LM: unsafe path 'sub/.git/config'"):
        lay(workspace)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("../escape.py", "'..' leads outside the tree"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("a/../../b", "'..' leads outside the tree"),
        (".git/config", "'.git' is not part of a tree"),
    ],
)
def test_deletion_list_line_escaping(workspace: Path, line: str, reason: str) -> None:
    (workspace / DELETIONS).write_text(f"version: 1\ndeleted:\n- {line}\n", encoding="utf-8")
    with pytest.raises(FlagScaleError, match=f"{DELETIONS}: unsafe path .*{reason}"):
        lay(workspace)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\ndeleted: docs/old.md\n", "at deleted: 'docs/old.md' should be of type array"),
        ("version: 2\ndeleted: []\n", "at version: 2"),
        ("version: 1\ndeleted: []\nextra: 1\n", "unknown key"),
        ("version: 1\ndeleted: [a, a]\n", "at deleted"),
        ("version: 1\ndeleted: [\n", "not valid YAML"),
    ],
)
def test_schema_invalid_deletion_list(workspace: Path, text: str, expected: str) -> None:
    (workspace / DELETIONS).write_text(text, encoding="utf-8")
    with pytest.raises(FlagScaleError) as caught:
        lay(workspace)
    assert str(caught.value).startswith(DELETIONS)
    assert expected in str(caught.value)


def test_layer_file_also_listed_as_deleted(workspace: Path) -> None:
    (workspace / DELETIONS).write_text("version: 1\ndeleted: [megatron/core]\n", encoding="utf-8")
    with pytest.raises(FlagScaleError, match="'megatron/core' is listed as deleted but backends/"):
        lay(workspace)


def test_deleting_a_folder_deletes_its_files(workspace: Path) -> None:
    (workspace / DELETIONS).write_text("version: 1\ndeleted: [docs]\n", encoding="utf-8")
    lay(workspace)
    assert not (workspace / CHECKOUT / "docs").exists()
    assert lay(workspace)[0].up_to_date
    write_files(workspace / CHECKOUT, {"docs/guide.md": "guide v2\n"})  # bring one file back
    harvest(workspace)
    assert (workspace / DELETIONS).read_text() == "version: 1\ndeleted:\n- docs/old.md\n"
    assert (workspace / LAYER / "docs/guide.md").read_text() == "guide v2\n"


def test_layer_file_replaces_an_upstream_folder(workspace: Path) -> None:
    shutil.rmtree(workspace / LAYER / "megatron")
    write_files(workspace / LAYER, {"docs": "docs is a file now\n"})
    lay(workspace, mode="copy")
    assert (workspace / CHECKOUT / "docs").read_text() == "docs is a file now\n"
    lay(workspace, mode="symlink")
    (workspace / LAYER / "docs").unlink()
    lay(workspace)
    assert (workspace / CHECKOUT / "docs/guide.md").read_text() == "guide\n"


def test_patch_refuses_a_symlink_leading_outside(workspace: Path) -> None:
    lay(workspace)
    os.symlink("../../../../etc", workspace / CHECKOUT / "escape")
    with pytest.raises(FlagScaleError, match="third_party/Megatron-LM/escape: symlink target"):
        harvest(workspace)
    assert not os.path.lexists(workspace / LAYER / "escape")


def test_another_run_holding_the_lock(workspace: Path) -> None:
    lay(workspace)
    lock = state_paths(find_workspace(workspace).state_dir, NAME).lock
    with backend_lock(lock, NAME), pytest.raises(FlagScaleError, match="another `inv unpatch`"):
        lay(workspace)


def test_lost_private_state_is_rebuilt(workspace: Path) -> None:
    lay(workspace, mode="copy")
    paths = state_paths(find_workspace(workspace).state_dir, NAME)
    paths.index.unlink()
    assert lay(workspace, mode="copy")[0].up_to_date
    (workspace / CHECKOUT / "megatron/core/utils.py").write_text("mine\n")
    paths.index.unlink()
    with pytest.raises(FlagScaleError, match="megatron/core/utils.py"):
        lay(workspace, mode="copy")


def _mutations(record: dict) -> list[object]:
    """Records that break the schema in one place each (plus the good one, first)."""
    entry = next(iter(record["entries"]))
    bad: list[object] = [record, [], {**record, "version": 2}, {**record, "version": True}]
    bad += [{**record, "pin": "abc"}, {**record, "mode": "hard"}, {**record, "backend": ""}]
    bad += [{**record, "fingerprint": "x" * 64}, {**record, "extra": 1}]
    bad += [{k: v for k, v in record.items() if k != "sources"}]
    for value in (["file", "zz"], ["link", ""], ["deleted", "x"], ["exec"], "file", ["gone", ""]):
        bad.append({**record, "entries": {**record["entries"], entry: value}})
    bad.append({**record, "sources": {"a": [1, 2, 3, 4]}})
    bad.append({**record, "sources": {"a": [1, 2, 3, 4.5, "0" * 40]}})
    bad.append({**record, "pending": {"pin": record["pin"]}})
    bad.append({**record, "pending": {"pin": record["pin"], "entries": {}}})
    return bad


def test_fast_record_check_agrees_with_the_schema(workspace: Path) -> None:
    import json

    from flagscale.core.schema import SchemaError, validate
    from flagscale.overlay.laid_record import well_formed

    lay(workspace, mode="copy")
    record = state_paths(find_workspace(workspace).state_dir, NAME).record
    for candidate in _mutations(json.loads(record.read_text())):
        try:
            validate(candidate, "overlay-state", "record")
            valid = True
        except SchemaError:
            valid = False
        assert well_formed(candidate) == valid, candidate


def test_record_breaking_the_schema_is_reported(workspace: Path) -> None:
    lay(workspace)
    record = state_paths(find_workspace(workspace).state_dir, NAME).record
    record.write_text(record.read_text().replace('"mode": "symlink"', '"mode": "hard"'))
    with pytest.raises(FlagScaleError, match=r"Megatron-LM.json .*at mode: 'hard'"):
        lay(workspace)


def test_corrupt_record_is_reported(workspace: Path) -> None:
    lay(workspace)
    record = state_paths(find_workspace(workspace).state_dir, NAME).record
    record.write_text("{not json", encoding="utf-8")
    with pytest.raises(FlagScaleError, match=r"Megatron-LM.json.*not valid JSON"):
        lay(workspace)
