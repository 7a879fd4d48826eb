"""Encrypted sets, a base layer that needs a hand, and sets that stop applying on their base."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from flagscale.vendor import crypto
from tests.gitrepos import inv, run_git, write_files
from tests.refresh_fixtures import (
    BACKEND,
    Refreshable,
    edit,
    insert,
    lines,
    make_refreshable,
    move_upstream,
)

V1 = {"megatron/a.py": lines("a"), "megatron/b.py": lines("b"), "megatron/l.py": lines("l")}
LAYER = {"megatron/l.py": edit(lines("l"), 3, "FlagScale's l")}


def copy_of(found: Refreshable, tmp: Path) -> Path:
    root = tmp / "FlagScale"
    shutil.copytree(found.root, root, symlinks=True)
    return root


@pytest.fixture(scope="module")
def secret(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Refreshable, str]:
    found = make_refreshable(
        tmp_path_factory.mktemp("secret"),
        upstream=V1,
        layer=LAYER,
        devices={
            "Secret_S1": {BACKEND: {"megatron/a.py": edit(lines("a"), 20, "secret a")}},
            "Open_O1": {BACKEND: {"megatron/b.py": edit(lines("b"), 20, "open b")}},
        },
        encrypted=("Secret_S1",),
    )
    move = {
        "megatron/a.py": insert(lines("a"), 1, ["# a header"]),
        "megatron/b.py": insert(lines("b"), 1, ["# b header"]),
    }
    return found, move_upstream(found, move)


def test_an_encrypted_set_without_its_key_is_not_refreshed_and_not_dropped(
    secret: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = secret
    root = copy_of(found, tmp_path)
    before_history = (root / "hardware" / "patch_history.yaml").read_text()
    stored = (root / "hardware/Secret_S1" / BACKEND / f"{BACKEND}.patch.enc").read_bytes()
    key_id = crypto.encrypted_key_id(stored, source="test")

    result = inv(
        root, "refresh", "--backend", BACKEND, "--to", new, "--json", str(tmp_path / "r.json")
    )

    assert (
        f"Secret_S1: not refreshed: hardware/Secret_S1/{BACKEND} is encrypted with key {key_id}"
        in (result.stdout)
    )
    report = json.loads((tmp_path / "r.json").read_text())
    devices = {d["device_type"]: d for d in report["devices"]}
    assert devices["Secret_S1"]["status"] == "not_refreshed"
    assert "pass --key-path" in devices["Secret_S1"]["reason"]
    assert devices["Open_O1"]["status"] == "refreshed"
    # kept as it was: files and history line
    assert (root / "hardware/Secret_S1" / BACKEND / f"{BACKEND}.patch.enc").read_bytes() == stored
    history = (root / "hardware" / "patch_history.yaml").read_text()
    secret_line = before_history.split("Secret_S1:")[1]
    assert history.split("Secret_S1:")[1] == secret_line
    assert history.count('"') == before_history.count('"') + 2  # one entry more: Open_O1's


def test_an_encrypted_set_is_carried_and_encrypted_again_with_its_key(
    secret: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = secret
    root = copy_of(found, tmp_path)
    key = found.keys["Secret_S1"]
    stored = (root / "hardware/Secret_S1" / BACKEND / f"{BACKEND}.patch.enc").read_bytes()

    inv(root, "refresh", "--backend", BACKEND, "--to", new, "--key-path", str(key))

    path = root / "hardware/Secret_S1" / BACKEND / f"{BACKEND}.patch.enc"
    refreshed = path.read_bytes()
    assert refreshed != stored and crypto.is_encrypted(refreshed)
    assert crypto.encrypted_key_id(refreshed, source="t") == crypto.encrypted_key_id(
        stored, source="t"
    )
    plain = crypto.decrypt_file_bytes(
        refreshed,
        crypto.load_key(key),
        name=f"hardware/Secret_S1/{BACKEND}/{BACKEND}.patch",
        source="test",
    )
    assert b"+secret a\n" in plain and b"@@ -18,7 +18,7 @@" in plain  # moved down one line
    metadata = (path.parent / "metadata.yaml").read_text()
    assert f"key_id: {crypto.encrypted_key_id(stored, source='t')}" in metadata.replace('"', "")
    # a user with the key builds it: the vendor's line sits one line lower on the new pin
    inv(root, "build", "--device", "Secret_S1", "--key-path", str(key))
    built = (root / "build/Secret_S1/third_party" / BACKEND / "megatron/a.py").read_text()
    assert built == insert(edit(lines("a"), 20, "secret a"), 1, ["# a header"])
    matrix = inv(root, "matrix", "--strict", "--key-path", str(key))
    assert "2 clean" in matrix.stdout


@pytest.fixture(scope="module")
def layered(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Refreshable, str]:
    found = make_refreshable(
        tmp_path_factory.mktemp("layered"),
        upstream={**V1, "megatron/gone.py": "x\n"},
        layer={**LAYER, "megatron/added.py": "FlagScale's own module\n"},
        devices={"Open_O1": {BACKEND: {"megatron/b.py": edit(lines("b"), 20, "open b")}}},
    )
    move = {
        "megatron/l.py": edit(lines("l"), 3, "upstream's l"),  # the layer's line, changed too
        "megatron/added.py": "upstream's own module\n",  # a file the layer adds, now upstream
    }
    return found, move_upstream(found, move)


def test_a_base_layer_conflict_stops_and_is_settled_into_backends(
    layered: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = layered
    root = copy_of(found, tmp_path)
    stopped = inv(root, "refresh", "--backend", BACKEND, "--to", new, "--no-smoke", check=False)
    assert stopped.returncode == 1
    assert "2 file(s) of the base layer backends/Megatron-LM/" in stopped.stderr
    assert "  megatron/added.py: conflict, needs a hand: added by the layer and by the new pin" in (
        stopped.stdout
    )
    checkout = root / "build" / "refresh"
    text = (checkout / "megatron/l.py").read_text()
    assert ">>>>>>> FlagScale's base layer (backends/Megatron-LM/)" in text
    assert "<<<<<<< " in (checkout / "megatron/added.py").read_text()
    assert run_git(root, "rev-parse", "HEAD") == found.head()  # nothing committed yet

    write_files(checkout, {"megatron/l.py": edit(lines("l"), 3, "FlagScale's l, on upstream's")})
    write_files(checkout, {"megatron/added.py": "upstream's own module\n"})  # take theirs
    run_git(checkout, "add", "megatron/l.py", "megatron/added.py")
    inv(root, "refresh", "--continue", "--no-smoke")

    layer = root / "backends" / BACKEND
    assert (layer / "megatron/l.py").read_text() == edit(
        lines("l"), 3, "FlagScale's l, on upstream's"
    )
    assert not (layer / "megatron/added.py").exists()  # the same as the pin's: left the layer
    assert "1 clean" in inv(root, "matrix", "--strict").stdout


def test_a_set_that_does_not_apply_on_its_own_base_is_reported_not_refreshed(
    secret: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = secret
    root = copy_of(found, tmp_path)
    path = root / "hardware/Open_O1" / BACKEND / f"{BACKEND}.patch"
    broken = path.read_text().replace("-b line 20", "-b line 21")
    path.write_text(broken)
    metadata = path.parent / "metadata.yaml"
    digest = hashlib.sha256(broken.encode()).hexdigest()
    text = metadata.read_text()
    old = text.split('sha256: "')[1].split('"')[0]
    metadata.write_text(text.replace(old, digest))
    run_git(root, "commit", "-qam", "a damaged set")
    inv(root, "record-history", "--device-type", "Open_O1", "--backend", BACKEND)
    run_git(root, "commit", "-qam", "history: the damaged set")
    result = inv(root, "refresh", "--backend", BACKEND, "--to", new, "--no-smoke")
    assert (
        "Open_O1: not refreshed: its Megatron-LM set does not apply to its own base"
        in result.stdout
    )
    assert "patch failed: megatron/b.py:17" in result.stdout
