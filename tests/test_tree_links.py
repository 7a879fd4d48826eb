"""One rule for symlinks in every tree the tool makes: relative, and inside the tree they are in.

The rule (``flagscale.core.paths.link_problem``) is checked against the tree as assembled, so a
link that only escapes through another link, or through a link another patch set or the base
layer adds, is refused as well. Each way of making a tree is tried with real repositories and
real processes: ``inv build`` (vendor patch sets, the base layer), a build from a bundle,
``inv unpatch`` and making patch sets (``inv patch --device-type``'s library).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flagscale.core.errors import FlagScaleError
from flagscale.release import signing
from flagscale.release.bundle import create_bundle
from flagscale.upstream.workspace import find_workspace, load_workspace
from tests.build_fixtures import make_sets
from tests.gitrepos import FileMap, Link, commit_all, inv, run_git, snapshot, write_files
from tests.release_fixtures import (
    BACKEND,
    ReleaseWorkspace,
    make_patch,
    make_release_workspace,
    record_history,
    write_patch_set,
)
from tests.vendor_workspace import adapt_backend, adapt_flagscale, make_vendor_workspace

DEVICE = "Metax_C550"
TARGET = f"build/{DEVICE}"
MEGATRON_PATCH = f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch"
FLAGSCALE_PATCH = f"hardware/{DEVICE}/FlagScale/FlagScale.patch"
GOOD = {"megatron/core/a.py": "metax\n"}


# --- the rule itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "target", "links", "root", "problem"),
    [
        ("a/b", "../c", {}, "", None),
        ("a/b", "../../c", {}, "", "leads outside its tree"),
        ("b", "", {}, "", "must be a relative path"),
        ("b", "/etc", {}, "", "must be a relative path"),
        ("b", ".git/config", {}, "", "leads into .git"),
        ("a/b", "../sub/.GIT", {}, "", "leads into .git"),
        ("x", "missing/../y", {}, "", None),  # dangling names are fine if they stay inside
        ("x", "missing/../..", {}, "", "leads outside its tree"),
        # through another link: up -> .. is fine on its own, esc goes up twice from the top
        ("esc", "a/up/../..", {"a/up": ".."}, "", "leads outside its tree"),
        ("esc", "a/up/b", {"a/up": ".."}, "", None),
        ("go", "hop", {"hop": "/etc"}, "", "whose target is not a relative path"),
        ("l1", "l2", {"l2": "l1", "l1": "l2"}, "", "a loop"),
        # a link in third_party/B belongs to B's tree: it may not reach FlagScale's files
        ("third_party/B/x", "../../README.md", {}, "third_party/B", "leads outside its tree"),
        ("third_party/B/x", "megatron/../README.md", {}, "third_party/B", None),
        # leaving the tree and coming back is leaving
        ("third_party/B/x", "../B/y", {}, "third_party/B", "leads outside its tree"),
    ],
)
def test_link_problem(path: str, target: str, links: dict, root: str, problem: str | None) -> None:
    from flagscale.core.paths import link_problem

    found = link_problem(path, target, {**links, path: target}, root)
    assert (found is None) if problem is None else (problem in (found or "")), found


def test_check_links_names_the_file_and_its_source() -> None:
    from flagscale.core.paths import check_links

    links = {"third_party/B/ok": "a", "third_party/B/bad": "../../x", "top": "third_party/B/ok"}
    with pytest.raises(FlagScaleError) as caught:
        check_links(links, lambda path: f"from the set: {path}", ["", "third_party/B"])
    assert str(caught.value).startswith(
        "from the set: third_party/B/bad: symlink target '../../x' leads outside its tree"
    )


# --- inv build: vendor patch sets and the base layer --------------------------------------------


def add_sets(
    rw: ReleaseWorkspace,
    history: list[str],
    megatron: FileMap,
    flagscale: FileMap | None = None,
) -> None:
    """Commit sets of DEVICE made against the current head and append them to the history."""
    base = rw.head()
    write_patch_set(rw, DEVICE, BACKEND, make_patch(rw.upstream, rw.pin, megatron), base=base)
    write_patch_set(
        rw,
        DEVICE,
        "FlagScale",
        make_patch(rw.root, base, flagscale or {"README.md": "FlagScale on Metax\n"}),
        base=base,
    )
    history.append(commit_all(rw.root, "vendor patch sets"))
    record_history(rw, {DEVICE: {"train": {f"FlagScale+{BACKEND}": list(history)}}})


@pytest.fixture
def built(tmp_path: Path) -> tuple[ReleaseWorkspace, list[str]]:
    """A workspace with good sets, built once (the previous build every refusal must keep)."""
    rw = make_release_workspace(tmp_path / "ws")
    history: list[str] = []
    add_sets(rw, history, GOOD)
    inv(rw.root, "build", "--device", DEVICE)
    return rw, history


def refused_build(rw: ReleaseWorkspace, *extra: str) -> str:
    before = snapshot(rw.root / TARGET)
    result = inv(rw.root, "build", "--device", DEVICE, *extra, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert snapshot(rw.root / TARGET) == before
    assert sorted(p.name for p in (rw.root / "build").iterdir()) == [f".{DEVICE}.lock", DEVICE]
    return lines[0]


@pytest.mark.parametrize(
    ("megatron", "flagscale", "expected"),
    [
        (
            {"evil": Link("/etc")},
            None,
            f"{MEGATRON_PATCH}: third_party/{BACKEND}/evil: symlink target '/etc' must be a"
            " relative path",
        ),
        (
            {"megatron/checkout": Link("../../../..")},
            None,
            f"{MEGATRON_PATCH}: third_party/{BACKEND}/megatron/checkout: symlink target"
            " '../../../..' leads outside its tree",
        ),
        (
            {"readme": Link("../../README.md")},  # out of the backend's tree into FlagScale's
            None,
            f"third_party/{BACKEND}/readme: symlink target '../../README.md' leads outside",
        ),
        (
            {},
            {"repo": Link("../../.git")},
            f"{FLAGSCALE_PATCH}: repo: symlink target '../../.git' leads outside its tree",
        ),
        (
            {},
            {"hooks": Link(".git/hooks")},
            f"{FLAGSCALE_PATCH}: hooks: symlink target '.git/hooks' leads into .git",
        ),
        (
            {"megatron/up": Link(".."), "esc": Link("megatron/up/../..")},
            None,
            f"{MEGATRON_PATCH}: third_party/{BACKEND}/esc: symlink target 'megatron/up/../..'"
            " leads outside its tree",
        ),
    ],
)
def test_patch_set_planting_a_link_out_of_the_build_is_refused(
    built: tuple[ReleaseWorkspace, list[str]],
    megatron: FileMap,
    flagscale: FileMap | None,
    expected: str,
) -> None:
    rw, history = built
    add_sets(rw, history, {**GOOD, **megatron}, flagscale)
    assert expected in refused_build(rw)
    assert expected in refused_build(rw, "--force")


def test_base_layer_link_to_an_absolute_path_is_refused_by_build(
    built: tuple[ReleaseWorkspace, list[str]],
) -> None:
    rw, history = built
    write_files(rw.root, {f"backends/{BACKEND}/etc": Link("/etc")})
    commit_all(rw.root, "base layer with a link to /etc")
    add_sets(rw, history, GOOD)

    line = refused_build(rw)

    assert f"backends/{BACKEND}/etc (the base layer at FlagScale" in line
    assert "symlink target '/etc' must be a relative path" in line
    # inv unpatch refuses the same link with the same words
    unpatch = inv(rw.root, "unpatch", check=False)
    assert unpatch.returncode == 1
    assert f"backends/{BACKEND}/etc: symlink target '/etc' must be a relative path" in (
        unpatch.stderr
    )


def test_base_layer_link_that_escapes_through_a_link_of_the_patch_set_is_refused(
    built: tuple[ReleaseWorkspace, list[str]],
) -> None:
    """On its own ``go`` stays inside; the set's ``tools/deep -> ..`` makes it leave."""
    rw, history = built
    write_files(rw.root, {f"backends/{BACKEND}/go": Link("tools/deep/../..")})
    commit_all(rw.root, "base layer link")
    add_sets(rw, history, {**GOOD, "tools/deep": Link("..")})

    line = refused_build(rw)

    assert f"backends/{BACKEND}/go (the base layer at FlagScale" in line
    assert "symlink target 'tools/deep/../..' leads outside its tree" in line


def test_build_from_a_bundle_refuses_the_same_links(
    built: tuple[ReleaseWorkspace, list[str]], tmp_path: Path
) -> None:
    rw, history = built
    add_sets(rw, history, {**GOOD, "evil": Link("/etc")})
    private, public = tmp_path / "k", tmp_path / "k.pub"
    signing.generate_signing_keypair(private, public)
    bundle = create_bundle(
        load_workspace(rw.root),
        [DEVICE],
        version="1",
        sign_key=private,
        out_dir=tmp_path / "dist",
    )

    line = refused_build(rw, "--bundle", str(bundle), "--trust", str(public))

    assert f"third_party/{BACKEND}/evil: symlink target '/etc' must be a relative path" in line


# --- inv unpatch: the base layer over the pin, as laid ------------------------------------------


def test_unpatch_refuses_a_layer_link_that_escapes_through_another(tmp_path: Path) -> None:
    rw = make_release_workspace(tmp_path / "ws")
    layer = {
        f"backends/{BACKEND}/megatron/up": Link(".."),  # alone: the checkout's top
        f"backends/{BACKEND}/esc": Link("megatron/up/../.."),  # through it: out of the checkout
    }
    write_files(rw.root, layer)
    checkout = rw.root / "third_party" / BACKEND

    result = inv(rw.root, "unpatch", check=False)

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: backends/{BACKEND}/esc: symlink target 'megatron/up/../..' leads outside its"
        " tree (a symlink must be relative and stay inside the tree it is in; replace it with"
        " the file it should show, or remove it)"
    ]
    assert not os.path.lexists(checkout / "esc") and not os.path.lexists(checkout / "megatron/up")


# --- inv patch --device-type: making patch sets --------------------------------------------------


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        ({"etc": Link("/etc")}, "third_party/Megatron-LM/etc (for the Megatron-LM patch set):"),
        (
            {"megatron/up": Link(".."), "esc": Link("megatron/up/../..")},
            "third_party/Megatron-LM/esc (for the Megatron-LM patch set): symlink target"
            " 'megatron/up/../..' leads outside its tree",
        ),
        ({"repo": Link("../../.git")}, "symlink target '../../.git' leads outside its tree"),
    ],
)
def test_making_patch_sets_refuses_links_out_of_the_tree(
    tmp_path: Path, links: FileMap, expected: str
) -> None:
    vendor = make_vendor_workspace(tmp_path / "vendor")
    adapt_backend(vendor)
    adapt_flagscale(vendor)
    write_files(vendor.checkout, links)
    head = run_git(vendor.root, "rev-parse", "HEAD")

    with pytest.raises(FlagScaleError) as caught:
        make_sets(vendor.root, DEVICE, vendor.base)

    assert expected in str(caught.value)
    assert run_git(vendor.root, "rev-parse", "HEAD") == head
    assert not (vendor.root / "hardware" / DEVICE).exists()
    assert find_workspace(vendor.root).root == vendor.root


def test_inv_patch_device_type_refuses_a_link_to_an_absolute_path(tmp_path: Path) -> None:
    vendor = make_vendor_workspace(tmp_path / "vendor")
    adapt_backend(vendor)
    write_files(vendor.checkout, {"etc": Link("/etc")})
    before = run_git(vendor.root, "status", "--porcelain")
    patch = inv(
        vendor.root,
        "patch",
        "--device-type",
        DEVICE,
        "--task",
        "train",
        "--backend",
        BACKEND,
        "--commit",
        vendor.base,
        "--contact",
        "Metax Support <support@metax.invalid>",
        "--models",
        "aquila",
        "--backend-version",
        "0.16.1",
        "--message",
        "sets",
        check=False,
    )
    assert patch.returncode == 1, patch.stdout + patch.stderr
    assert "third_party/Megatron-LM/etc (for the Megatron-LM patch set): symlink target '/etc'" in (
        patch.stderr
    )
    assert run_git(vendor.root, "status", "--porcelain") == before
