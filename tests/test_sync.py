"""Bringing third_party/<backend> to its pin: real submodules, mirrors, and release imports."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from flagscale.core.errors import FlagScaleError
from flagscale.upstream.release_import import cache_dir, import_release
from flagscale.upstream.sync import ensure_checkout, ensure_pin, has_commit
from flagscale.upstream.workspace import Workspace, load_workspace
from tests.gitrepos import (
    commit_all,
    declare_backends,
    make_repo,
    make_workspace,
    run_git,
    snapshot,
    write_files,
)
from tests.releases import SAMPLE, Member, make_tar, release_entry, source_for

UPSTREAM = {"README.md": "upstream\n", "src/core.py": "VERSION = 1\n"}


# --- submodule backends -----------------------------------------------------------------------


def fresh_clone(tmp_path: Path, *, url: str | None = None) -> tuple[Path, Path]:
    """A superproject with submodule third_party/Up, cloned without its submodules.

    With ``url`` the superproject's .gitmodules names that address instead of the upstream's.
    Returns (clone root, upstream repository).
    """
    root, upstreams = make_workspace(tmp_path, {"Up": UPSTREAM})
    if url is not None:
        run_git(root, "config", "-f", ".gitmodules", "submodule.third_party/Up.url", url)
        commit_all(root, "point the submodule elsewhere")
    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", str(root), str(clone))
    return clone, upstreams["Up"]


def sync(root: Path, name: str = "Up") -> Path:
    workspace = load_workspace(root)
    return ensure_checkout(workspace, workspace.backend(name))


def add_upstream_commits(upstream: Path, count: int) -> list[str]:
    commits = []
    for number in range(count):
        write_files(upstream, {"src/core.py": f"VERSION = {number + 2}\n"})
        commits.append(commit_all(upstream, f"upstream change {number}"))
    return commits


def move_gitlink(root: Path, commit: str) -> None:
    run_git(root, "update-index", "--cacheinfo", f"160000,{commit},third_party/Up")


def test_fresh_submodule_is_cloned_at_its_gitlink(tmp_path: Path) -> None:
    clone, upstream = fresh_clone(tmp_path)
    checkout = sync(clone)
    assert checkout == clone / "third_party" / "Up"
    assert run_git(checkout, "rev-parse", "HEAD") == run_git(upstream, "rev-parse", "HEAD")
    assert (checkout / "src" / "core.py").read_text() == "VERSION = 1\n"


def test_present_pin_needs_no_network(tmp_path: Path) -> None:
    clone, upstream = fresh_clone(tmp_path)
    checkout = sync(clone)
    shutil.rmtree(upstream)  # any fetch would now fail
    assert sync(clone) == checkout


def test_missing_pin_is_fetched_by_its_id_without_touching_the_work_tree(tmp_path: Path) -> None:
    clone, upstream = fresh_clone(tmp_path)
    checkout = sync(clone)
    old = run_git(checkout, "rev-parse", "HEAD")
    middle, _tip = add_upstream_commits(upstream, 2)
    move_gitlink(clone, middle)
    (checkout / "README.md").write_text("local edit\n")
    sync(clone)
    assert has_commit(checkout, middle)
    assert run_git(checkout, "rev-parse", "HEAD") == old
    assert (checkout / "README.md").read_text() == "local edit\n"
    # Fetched by id alone: the remote-tracking branch did not move to the new tip.
    assert run_git(checkout, "rev-parse", "refs/remotes/origin/main") == old


def test_server_refusing_fetch_by_id_falls_back_to_all_branches(tmp_path: Path) -> None:
    clone, upstream = fresh_clone(tmp_path)
    checkout = sync(clone)
    middle, tip = add_upstream_commits(upstream, 2)
    move_gitlink(clone, middle)
    run_git(tmp_path, "config", "--global", "protocol.version", "0")  # v0 servers refuse it
    refused = subprocess.run(
        ["git", "fetch", "--dry-run", "origin", middle], cwd=checkout, capture_output=True
    )
    assert b"does not allow request for unadvertised object" in refused.stderr
    sync(clone)
    assert has_commit(checkout, middle)
    assert run_git(checkout, "rev-parse", "refs/remotes/origin/main") == tip


def test_fresh_clone_from_an_unreachable_url_says_how_to_use_a_mirror(tmp_path: Path) -> None:
    missing = (tmp_path / "gone" / "Up").as_uri()
    clone, _ = fresh_clone(tmp_path, url=missing)
    with pytest.raises(FlagScaleError) as failure:
        sync(clone)
    message = str(failure.value)
    assert message.startswith(f"Up: cannot fetch from {missing}: fatal: ")
    assert f"git config --global url.<mirror-url>.insteadOf {missing}" in message
    assert not any((clone / "third_party" / "Up").iterdir())  # nothing half-made is left


def test_fetch_from_an_unreachable_url_says_how_to_use_a_mirror(tmp_path: Path) -> None:
    clone, upstream = fresh_clone(tmp_path)
    sync(clone)
    middle, _ = add_upstream_commits(upstream, 2)
    move_gitlink(clone, middle)
    shutil.move(upstream, tmp_path / "moved")
    with pytest.raises(FlagScaleError, match=r"Up: cannot fetch from file://.*insteadOf"):
        sync(clone)


def test_insteadof_points_clone_and_fetch_at_a_mirror(tmp_path: Path) -> None:
    public = "file:///nonexistent/public/Up"
    clone, upstream = fresh_clone(tmp_path, url=public)
    mirror = tmp_path / "mirror" / "Up.git"
    run_git(tmp_path, "clone", "-q", "--mirror", str(upstream), str(mirror))
    run_git(tmp_path, "config", "--global", f"url.{mirror.as_uri()}.insteadOf", public)
    checkout = sync(clone)
    assert run_git(checkout, "rev-parse", "HEAD") == run_git(upstream, "rev-parse", "HEAD")
    # A later pin bump is fetched from the mirror as well; the upstream itself is gone.
    (newer,) = add_upstream_commits(upstream, 1)
    run_git(mirror, "fetch", "-q", str(upstream), "+refs/heads/*:refs/heads/*")
    shutil.rmtree(upstream)
    move_gitlink(clone, newer)
    sync(clone)
    assert has_commit(checkout, newer)


def test_pin_that_does_not_exist_upstream_is_named(tmp_path: Path) -> None:
    clone, _ = fresh_clone(tmp_path)
    ghost = "1" * 40
    move_gitlink(clone, ghost)
    expected = rf"Up: pin {ghost} \(the gitlink of third_party/Up\) does not exist in file://"
    with pytest.raises(FlagScaleError, match=expected):
        sync(clone)  # fresh: the clone works, the pin is not there
    with pytest.raises(FlagScaleError, match=expected):
        sync(clone)  # again, now with a checkout that lacks the pin


def test_checkout_folder_that_is_not_a_repository_is_left_alone(tmp_path: Path) -> None:
    clone, _ = fresh_clone(tmp_path)
    write_files(clone / "third_party" / "Up", {"notes.txt": "mine\n"})
    with pytest.raises(FlagScaleError) as failure:
        sync(clone)
    assert str(failure.value).startswith("third_party/Up exists but is not a git repository")
    assert "move it elsewhere (nothing in it was changed)" in str(failure.value)
    assert snapshot(clone / "third_party" / "Up") == {"notes.txt": ("file", b"mine\n")}


# --- release backends -------------------------------------------------------------------------


def release_workspace(tmp_path: Path, members: list[Member] = SAMPLE) -> tuple[Path, str]:
    """A superproject declaring release backend 'demo' (file:// url); returns (root, pin)."""
    source = source_for(make_tar(tmp_path / "dist" / "demo_pkg-1.0.tar.gz", members))
    pin = import_release(source, tmp_path / "scratch")
    root = tmp_path / "ws"
    make_repo(root, {"README.md": "FlagScale\n"})
    declare_backends(root, {"demo": release_entry(source, pin)})
    commit_all(root, "declare demo")
    shutil.rmtree(cache_dir())  # the scratch import filled it
    return root, pin


def test_fresh_release_checkout_is_imported_at_the_pin(tmp_path: Path) -> None:
    root, pin = release_workspace(tmp_path)
    checkout = sync(root, "demo")
    assert run_git(checkout, "rev-parse", "HEAD") == pin
    assert (checkout / "tools" / "run.sh").read_bytes() == b"#!/bin/sh\necho run\n"
    assert sorted(p.name for p in (root / "third_party").iterdir()) == ["demo"]


def test_release_with_its_pin_present_downloads_nothing(tmp_path: Path) -> None:
    root, pin = release_workspace(tmp_path)
    sync(root, "demo")
    shutil.rmtree(tmp_path / "dist")
    shutil.rmtree(cache_dir())
    assert run_git(sync(root, "demo"), "rev-parse", "HEAD") == pin


def test_release_bump_adds_the_new_commit_and_keeps_the_work_tree(tmp_path: Path) -> None:
    root, old = release_workspace(tmp_path)
    checkout = sync(root, "demo")
    (checkout / "README.md").write_text("local edit\n")
    archive = make_tar(
        tmp_path / "v2" / "demo_pkg-2.0.tar.gz", [*SAMPLE, Member("demo_pkg-1.0/NEW", b"n\n")]
    )
    source = source_for(archive, version="2.0")
    new = import_release(source, tmp_path / "scratch2")
    declare_backends(root, {"demo": release_entry(source, new)})
    sync(root, "demo")
    assert has_commit(checkout, new)
    assert run_git(checkout, "rev-parse", "HEAD") == old
    assert (checkout / "README.md").read_text() == "local edit\n"
    assert run_git(checkout, "rev-parse", "refs/flagscale/releases/2.0") == new


def test_release_giving_another_commit_than_the_pin_is_refused(tmp_path: Path) -> None:
    root, pin = release_workspace(tmp_path)
    workspace = load_workspace(root)
    backend = workspace.backend("demo")
    wrong = replace(backend, declared_pin="2" * 40)
    with pytest.raises(FlagScaleError) as failure:
        ensure_checkout(Workspace(root, {"demo": wrong}), wrong)
    message = str(failure.value)
    assert f"demo: importing demo_pkg-1.0.tar.gz (sha256 {backend.source.sha256})" in message
    assert f"gives commit {pin}, but backends/backends.yaml pins {'2' * 40}" in message
    assert "record the commit it prints as pin" in message
    assert list((root / "third_party").iterdir()) == []


def test_release_checkout_folder_that_is_not_a_repository_is_left_alone(tmp_path: Path) -> None:
    root, _ = release_workspace(tmp_path)
    write_files(root / "third_party" / "demo", {"notes.txt": "mine\n"})
    with pytest.raises(FlagScaleError, match=r"third_party/demo exists but is not a git repo"):
        sync(root, "demo")
    assert snapshot(root / "third_party" / "demo") == {"notes.txt": ("file", b"mine\n")}


def test_release_checkout_left_empty_is_filled(tmp_path: Path) -> None:
    root, pin = release_workspace(tmp_path)
    (root / "third_party" / "demo").mkdir(parents=True)
    assert run_git(sync(root, "demo"), "rev-parse", "HEAD") == pin


def test_an_older_release_pin_is_imported_from_the_declaration_that_recorded_it(
    tmp_path: Path,
) -> None:
    root, old = release_workspace(tmp_path)
    recorded_at = run_git(root, "rev-parse", "HEAD")
    archive = make_tar(
        tmp_path / "v2" / "demo_pkg-2.0.tar.gz", [*SAMPLE, Member("demo_pkg-1.0/NEW", b"n\n")]
    )
    source = source_for(archive, version="2.0")
    new = import_release(source, tmp_path / "scratch2")
    declare_backends(root, {"demo": release_entry(source, new)})
    commit_all(root, "bump demo")
    workspace = load_workspace(root)
    checkout = ensure_checkout(workspace, workspace.backend("demo"))
    assert not has_commit(checkout, old)
    ensure_pin(workspace, workspace.backend("demo"), old, declared_at=recorded_at)
    assert has_commit(checkout, old)
    assert run_git(checkout, "rev-parse", "HEAD") == new


def test_an_older_pin_no_declaration_explains_is_refused(tmp_path: Path) -> None:
    root, _ = release_workspace(tmp_path)
    workspace = load_workspace(root)
    with pytest.raises(FlagScaleError, match="demo: no release declared at FlagScale commit"):
        ensure_pin(workspace, workspace.backend("demo"), "3" * 40, declared_at=None)
