"""Flow 5 end to end on patch sets made by the real tools (inv patch's library, the history):
bundle, verify, matrix, and a build from the bundle in a user's clone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flagscale import signing
from flagscale.bundle import create_bundle, verify_bundle
from flagscale.matrix import build_matrix
from flagscale.workspace import load_workspace
from tests.build_fixtures import DEVICE, clone_user, make_origin
from tests.gitrepos import inv, run_git


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
