"""Flow 5 end to end on patch sets made by the real tools (inv patch's library, the history):
bundle, verify, matrix, and a build from the bundle in a user's clone, also in a clone that lacks
the commit the bundle was cut from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flagscale.builds.command import build_command
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git_ok
from flagscale.release import signing
from flagscale.release.bundle import create_bundle, verify_bundle
from flagscale.release.bundle_build import build_from_bundle
from flagscale.release.matrix import build_matrix
from flagscale.upstream.workspace import load_workspace
from tests.build_fixtures import DEVICE, Origin, clone_user, make_origin, stat_signature
from tests.gitrepos import inv, run_git, snapshot
from tests.release_fixtures import Member, pack, unpack

STATE = ".flagscale-build.state"  # sizes and mtimes as written: local bookkeeping only


def older_clone(origin: Origin, destination: Path, at: str) -> Path:
    """A user's clone of only the history up to ``at`` (an older main), submodules initialised."""
    run_git(origin.root, "branch", "-f", "older-main", at)
    run_git(
        destination.parent,
        "clone",
        "-q",
        "--no-local",  # a local clone would copy every object, the newer commits too
        "--single-branch",
        "-b",
        "older-main",
        str(origin.root),
        str(destination),
    )
    run_git(destination, "submodule", "update", "--init", "-q")
    assert not git_ok(["cat-file", "-e", f"{origin.commit}^{{commit}}"], destination)
    return destination


def built(root: Path) -> tuple[dict[str, tuple[str, bytes]], dict]:
    """The build tree's files (without the local state file) and its build record."""
    tree = root / "build" / DEVICE
    files = snapshot(tree)
    files.pop(STATE)
    return files, json.loads((tree / ".flagscale-build.json").read_text())


def untouched(root: Path) -> tuple[str, str]:
    """What a build must leave alone: the work tree and index, and every ref."""
    return run_git(root, "status", "--porcelain"), run_git(root, "for-each-ref")


@pytest.mark.slow
def test_real_patch_sets_bundle_verify_matrix_and_build_from_bundle(tmp_path: Path) -> None:
    origin = make_origin(tmp_path / "origin", encrypt=True)
    private, public = tmp_path / "release.key", tmp_path / "release.key.pub"
    signing.generate_signing_keypair(private, public)
    ws = load_workspace(origin.root)
    path = create_bundle(ws, [DEVICE], version="1.0", sign_key=private, out_dir=tmp_path / "dist")
    bundle = verify_bundle(path, public)
    patch_sets = bundle.manifest["device_types"][DEVICE]["patch_sets"]
    assert sorted(patch_sets) == ["FlagScale", "Megatron-LM"]
    assert {ps["commit"] for ps in patch_sets.values()} == {origin.commit}
    assert all(ps["encrypted"] for ps in patch_sets.values())

    without_key = build_matrix(ws)
    assert {row["verdict"] for row in without_key["rows"]} == {"unknown"}
    with_key = build_matrix(ws, key_paths=[origin.key])
    rows = {row["backend"]: row for row in with_key["rows"]}
    assert rows["FlagScale"]["on_base"]["status"] == "applies"
    assert rows["Megatron-LM"]["verdict"] == "clean"
    # The vendor's HEAD already carries one of the FlagScale-side commits the set holds, so the
    # set cannot be applied to HEAD itself: the matrix says so, naming the file.
    assert rows["FlagScale"]["verdict"] == "drifting"
    assert (
        "flagscale/metax.py: already exists in index" in rows["FlagScale"]["on_current"]["detail"]
    )

    user = clone_user(origin.root, tmp_path / "user", init=True)
    result = inv(
        user,
        "build",
        "--device",
        DEVICE,
        "--bundle",
        str(path),
        "--trust",
        str(public),
        "--key-path",
        str(origin.key),
    )
    assert "verified bundle 1.0" in result.stdout
    record = json.loads((user / "build" / DEVICE / ".flagscale-build.json").read_text())
    assert record["inputs"]["history_commit"] == origin.commit
    assert run_git(user, "status", "--porcelain") == ""

    # An older main without the history commit builds from the bundle's own patch sets, and
    # gets the same bytes and fingerprint; encrypted sets still need their key.
    older = older_clone(origin, tmp_path / "older", origin.vendor.base)
    before = untouched(older)
    options = dict(bundle=str(path), trust=str(public), start=older)
    with pytest.raises(
        FlagScaleError,
        match=r"Metax_C550/FlagScale/FlagScale\.patch\.enc is "
        r"encrypted with key fsk1-\w+: no --key-path given",
    ):
        build_from_bundle([DEVICE], **options)
    assert not (older / "build" / DEVICE).exists()
    build_from_bundle([DEVICE], key_paths=[str(origin.key)], **options)
    assert built(older) == built(user)
    assert untouched(older) == before
    assert not (older / "hardware").exists()  # nothing of the bundle lands in the work tree
    stamp = list(stat_signature(older / "build" / DEVICE))
    again = inv(older, "build", "--device", DEVICE, "--bundle", str(path), "--trust", str(public))
    assert f"build/{DEVICE}: up to date ({DEVICE} at FlagScale" in again.stdout
    assert list(stat_signature(older / "build" / DEVICE)) == stamp


@pytest.mark.slow
def test_bundle_builds_match_git_builds_need_the_base_and_refuse_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_origin(tmp_path / "origin")
    private, public = tmp_path / "release.key", tmp_path / "release.key.pub"
    signing.generate_signing_keypair(private, public)
    ws = load_workspace(origin.root)
    path = create_bundle(ws, [DEVICE], version="2.0", sign_key=private, out_dir=tmp_path / "dist")
    options = dict(bundle=str(path), trust=str(public))

    # In a clone with the history commit, the bundle's sets are the commit's: a build from
    # the bundle has the fingerprint of the plain build there, so it finds it up to date.
    user = clone_user(origin.root, tmp_path / "user", init=True)
    build_command([DEVICE], start=user)
    capsys.readouterr()
    build_from_bundle([DEVICE], start=user, **options)
    assert f"build/{DEVICE}: up to date" in capsys.readouterr().out

    # A tampered bundle is refused before anything is written.
    older = older_clone(origin, tmp_path / "older", origin.vendor.base)
    before = untouched(older)
    files = unpack(path.read_bytes())
    patch = f"hardware/{DEVICE}/FlagScale/FlagScale.patch"
    files[patch] = files[patch].replace(b"metax", b"evil!")
    tampered = tmp_path / "tampered.tar.gz"
    tampered.write_bytes(pack([Member(name, data) for name, data in files.items()]))
    with pytest.raises(FlagScaleError, match=f"file {patch} was changed after signing"):
        build_from_bundle([DEVICE], start=older, bundle=str(tampered), trust=str(public))
    assert not (older / "build").exists() and not (older / ".git" / "flagscale").exists()
    assert untouched(older) == before

    # The genuine bundle builds there, the same tree as the clone with the commit.
    build_from_bundle([DEVICE], start=older, **options)
    assert built(older) == built(user)
    assert untouched(older) == before

    # A clone without the sets' FlagScale base: one error naming the commit and how to fetch it.
    oldest = older_clone(origin, tmp_path / "oldest", f"{origin.vendor.base}~1")
    result = inv(
        oldest,
        "build",
        "--device",
        DEVICE,
        "--bundle",
        str(path),
        "--trust",
        str(public),
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: hardware/{DEVICE}/FlagScale/metadata.yaml in {path.name}: flagscale_base"
        f" {origin.vendor.base} is not a commit in {oldest} (fetch it (git fetch origin"
        f" {origin.vendor.base}) or update your clone, then retry)"
    ]
    assert not (oldest / "build").exists()
