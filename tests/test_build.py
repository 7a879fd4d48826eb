"""Isolated builds per device type, end to end on real repositories, keys and processes.

The vendor data is made once per module by the patch-set library itself (tests/build_fixtures.py);
every test builds from its own fresh clone of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from flagscale.builds.builder import BuildRequest, build_devices
from flagscale.builds.command import unpatch_device_command
from flagscale.builds.fingerprint import read_record
from flagscale.core.errors import FlagScaleError
from flagscale.upstream.workspace import find_workspace
from flagscale.vendor import crypto
from tests.build_fixtures import (
    BACKENDS,
    CONTACT,
    DEVICE,
    Origin,
    add_history_commit,
    built_flagscale_files,
    clone_user,
    make_origin,
    make_sets,
    quiet,
    record,
    rewrite_set,
    set_patch,
    stat_signature,
    tree_files,
    vendor_backend_files,
    vendor_flagscale_files,
)
from tests.gitrepos import commit_all, inv, run_git, snapshot, write_files
from tests.vendor_workspace import BACKEND, user_state

TARGET = f"build/{DEVICE}"


@pytest.fixture(scope="module")
def origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def encrypted_origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("encrypted"), encrypt=True)


@pytest.fixture
def user(origin: Origin, tmp_path: Path) -> Path:
    return clone_user(origin.root, tmp_path / "user")


def build(root: Path, *devices: str, **options) -> dict[str, Path]:
    """The library call behind ``inv build``, from inside ``root``."""
    request = BuildRequest(devices=devices or (DEVICE,), report=quiet, **options)
    return build_devices(find_workspace(root), request)


def error_of(root: Path, *devices: str, **options) -> str:
    with pytest.raises(FlagScaleError) as caught:
        build(root, *devices, **options)
    return str(caught.value)


# --- the happy path -----------------------------------------------------------------------------


def test_fresh_clone_builds_the_vendor_tree_byte_for_byte(origin: Origin, user: Path) -> None:
    result = inv(user, "build", "--device", DEVICE)

    built = user / TARGET
    assert f"built {TARGET}" in result.stderr
    assert tree_files(built, f"third_party/{BACKEND}") == vendor_backend_files(origin.vendor)
    assert built_flagscale_files(built) == vendor_flagscale_files(origin.vendor)
    # the base layer files themselves are FlagScale's, at the base (not the vendor's edit)
    assert (built / "backends" / BACKEND / "patched_by_layer.py").read_text() == (
        "base = 'flagscale'\n"
    )
    assert all(link.resolve().is_relative_to(built.resolve()) for link in _links(built))
    assert not (built / ".git").exists() and not (built / "hardware").exists()
    assert sorted(p.name for p in (user / "build").iterdir()) == [f".{DEVICE}.lock", DEVICE]


def _links(folder: Path) -> list[Path]:
    return [
        Path(base) / name
        for base, dirs, files in os.walk(folder)
        for name in dirs + files
        if (Path(base) / name).is_symlink()
    ]


def test_build_never_touches_the_users_work_tree_index_or_stash(origin: Origin, tmp_path) -> None:
    user = clone_user(origin.root, tmp_path / "user", init=True)
    write_files(user, {"stashed.txt": "s\n"})
    run_git(user, "stash", "push", "-u", "-q", "-m", "users stash")
    write_files(user, {"flagscale/train.py": "edited by the user\n", "scratch.txt": "mine\n"})
    run_git(user, "add", "scratch.txt")
    write_files(user / "third_party" / BACKEND, {"megatron/core/model.py": "user edit\n"})
    before = user_state(user)

    build(user)

    assert user_state(user) == before
    assert (user / "flagscale/train.py").read_text() == "edited by the user\n"


def test_encrypted_sets_build_the_same_tree_with_the_key(
    origin: Origin, encrypted_origin: Origin, tmp_path: Path
) -> None:
    plain = clone_user(origin.root, tmp_path / "plain")
    secret = clone_user(encrypted_origin.root, tmp_path / "secret")
    assert encrypted_origin.key is not None
    build(plain)
    inv(secret, "build", "--device", DEVICE, "--key-path", str(encrypted_origin.key))

    built = secret / TARGET
    assert tree_files(built, f"third_party/{BACKEND}") == vendor_backend_files(
        encrypted_origin.vendor
    )
    assert built_flagscale_files(built) == vendor_flagscale_files(encrypted_origin.vendor)
    # the two vendor repositories differ only in where their upstream lives (.gitmodules)
    assert _files_but(built) == _files_but(plain / TARGET)
    assert read_record(secret / TARGET).inputs["components"][1]["key_id"] == crypto.key_id(
        crypto.load_key(encrypted_origin.key)
    )


def _files_but(folder: Path) -> dict:
    skip = (".flagscale-build.json", ".flagscale-build.state", ".gitmodules")
    return {k: v for k, v in snapshot(folder).items() if k not in skip}


def test_decrypted_patches_never_reach_a_shared_object_store(
    encrypted_origin: Origin, tmp_path: Path
) -> None:
    user = clone_user(encrypted_origin.root, tmp_path / "user")
    build(user, key_paths=(encrypted_origin.key,))
    marker = b"KERNEL = 'metax'"  # a line only the decrypted Megatron-LM patch holds
    scratch = user / ".git" / "flagscale" / "scratch.git"
    loose = [
        path for path in (scratch / "objects").rglob("*") if path.is_file() and len(path.name) == 38
    ]
    contents = [
        run_git(scratch, "cat-file", "-p", f"{p.parent.name}{p.name}").encode() for p in loose
    ]
    assert not any(marker in content for content in contents)
    assert not list((user / "build").glob(".*tmp*"))


def test_record_holds_the_fingerprinted_inputs(origin: Origin, user: Path) -> None:
    build(user)
    data = json.loads((user / TARGET / ".flagscale-build.json").read_text())
    inputs = data["inputs"]
    base = origin.vendor.base
    assert inputs["flagscale_base"] == base and inputs["history_commit"] == origin.commit
    assert [c["backend"] for c in inputs["components"]] == ["FlagScale", BACKEND]
    megatron = inputs["components"][1]
    assert megatron["pin"] == run_git(origin.root, "rev-parse", f"{base}:third_party/{BACKEND}")
    assert megatron["layer"] == run_git(origin.root, "rev-parse", f"{base}:backends/{BACKEND}")
    assert megatron["patches"][0]["file"] == f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch"
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    assert data["fingerprint"] == hashlib.sha256(canonical).hexdigest()
    assert "date" not in json.dumps(data).lower()


def test_same_inputs_give_the_same_bytes(origin: Origin, tmp_path: Path) -> None:
    first = clone_user(origin.root, tmp_path / "one")
    second = clone_user(origin.root, tmp_path / "two")
    build(first)
    build(second)
    left = {k: v for k, v in snapshot(first / TARGET).items() if k != ".flagscale-build.state"}
    right = {k: v for k, v in snapshot(second / TARGET).items() if k != ".flagscale-build.state"}
    assert left == right


# --- rebuilds -----------------------------------------------------------------------------------


def test_unchanged_rebuild_does_nothing(user: Path) -> None:
    build(user)
    before = list(stat_signature(user / TARGET))

    result = inv(user, "build", "--device", DEVICE)

    assert "up to date" in result.stdout
    assert list(stat_signature(user / TARGET)) == before
    assert sorted(p.name for p in (user / "build").iterdir()) == [f".{DEVICE}.lock", DEVICE]


def test_new_history_entry_rebuilds_and_swaps_in(origin: Origin, user: Path) -> None:
    build(user)
    old_inode = (user / TARGET).stat().st_ino
    patch = set_patch(user, DEVICE, BACKEND).replace(b"metax'", b"metax v2'")
    rewrite_set(user, DEVICE, BACKEND, patch=patch)

    build(user)

    kernel = user / TARGET / "third_party" / BACKEND / "megatron/vendor/kernel.py"
    assert kernel.read_text() == "KERNEL = 'metax v2'\n"
    assert (user / TARGET).stat().st_ino != old_inode
    assert not list((user / "build").glob(f".{DEVICE}.*-*"))


def test_older_commit_from_the_history_builds_the_older_sets(origin: Origin, user: Path) -> None:
    patch = set_patch(user, DEVICE, BACKEND).replace(b"metax'", b"metax v2'")
    rewrite_set(user, DEVICE, BACKEND, patch=patch)

    build(user, commit=origin.commit[:10])

    kernel = user / TARGET / "third_party" / BACKEND / "megatron/vendor/kernel.py"
    assert kernel.read_text() == "KERNEL = 'metax'\n"
    assert read_record(user / TARGET).inputs["history_commit"] == origin.commit


def test_hand_edited_build_is_refused_then_saved_with_force(user: Path) -> None:
    build(user)
    model = user / TARGET / "third_party" / BACKEND / "megatron/core/model.py"
    model.write_text("hand edit\n")
    (user / TARGET / "new file.txt").write_text("added by hand\n")
    (user / TARGET / "README.md").unlink()

    message = error_of(user)
    assert f"{TARGET} was changed since it was built" in message
    assert f"M third_party/{BACKEND}/megatron/core/model.py" in message
    assert "D README.md" in message and "A new file.txt" in message
    assert "--force" in message

    result = inv(user, "build", "--device", DEVICE, "--force")
    (edits,) = (user / "build").glob(f"{DEVICE}.edits-*.patch")
    assert f"saved the changes made in {TARGET} to build/{edits.name}" in result.stdout
    assert edits.stat().st_mode & 0o777 == 0o600
    assert model.read_text() == "class Model:\n    layers = 4  # vendor\n"
    run_git(user, "apply", f"--directory={TARGET}", str(edits))
    assert model.read_text() == "hand edit\n"
    assert (user / TARGET / "new file.txt").read_text() == "added by hand\n"
    assert not (user / TARGET / "README.md").exists()


def test_folder_not_made_by_build_is_refused(user: Path) -> None:
    write_files(user, {f"{TARGET}/mine.txt": "not a build\n"})
    assert "was not made by inv build" in error_of(user)
    build(user, force=True)
    assert len(list((user / "build").glob(f"{DEVICE}.edits-*.patch"))) == 1
    assert not (user / TARGET / "mine.txt").exists()


# --- the unpatch spelling -----------------------------------------------------------------------


def test_unpatch_device_type_builds_the_same_tree(user: Path, tmp_path: Path) -> None:
    path = unpatch_device_command(
        DEVICE, task=["train"], backends=["Megatron-LM", "FlagScale"], start=user
    )
    assert path == user / TARGET
    assert read_record(path).inputs["task"] == "train"
    message = _unpatch_error(user, backends=["Megatron-LM"])
    assert "with backends ['Megatron-LM']" in message or "Megatron-LM" in message


def test_inv_unpatch_device_type_spelling_of_seed_000(user: Path) -> None:
    result = inv(
        user, "unpatch", "--backend", "Megatron-LM FlagScale", "--task", "train",
        "--device-type", DEVICE,
    )  # fmt: skip
    assert f"built {TARGET}" in result.stderr
    assert read_record(user / TARGET).inputs["task"] == "train"
    checkout = user / "third_party" / BACKEND  # the workspace itself is not laid or patched
    assert (checkout / "patched_by_layer.py").read_text() == "base = 'upstream'\n"
    assert not (checkout / "megatron/vendor").exists()
    wrong = inv(user, "unpatch", "--device-type", DEVICE, "--task", "inference", check=False)
    assert wrong.returncode == 1 and "has no entry for Metax_C550 with task inference" in (
        wrong.stderr
    )


def _unpatch_error(user: Path, **options) -> str:
    with pytest.raises(FlagScaleError) as caught:
        unpatch_device_command(DEVICE, task="train", start=user, **options)
    return str(caught.value)


# --- keys ---------------------------------------------------------------------------------------


def test_encrypted_set_without_key_names_the_key_and_contact(
    encrypted_origin: Origin, tmp_path: Path
) -> None:
    user = clone_user(encrypted_origin.root, tmp_path / "user")
    result = inv(user, "build", "--device", DEVICE, check=False)
    key_id = crypto.key_id(crypto.load_key(encrypted_origin.key))
    assert result.returncode == 1
    assert f"is encrypted with key {key_id}: no --key-path given" in result.stderr
    assert CONTACT in result.stderr
    assert not (user / TARGET).exists()


def test_wrong_key_is_named(encrypted_origin: Origin, tmp_path: Path) -> None:
    user = clone_user(encrypted_origin.root, tmp_path / "user")
    other, _ = crypto.load_or_create_key(tmp_path / "other.key")
    message = error_of(user, key_paths=(tmp_path / "other.key",))
    expected = crypto.key_id(crypto.load_key(encrypted_origin.key))
    assert f"encrypted with key {expected}" in message
    assert crypto.key_id(other) in message


def test_right_key_among_several_is_picked(encrypted_origin: Origin, tmp_path: Path) -> None:
    user = clone_user(encrypted_origin.root, tmp_path / "user")
    crypto.load_or_create_key(tmp_path / "other.key")
    build(user, key_paths=(tmp_path / "other.key", encrypted_origin.key))
    assert (user / TARGET / "third_party" / BACKEND / "megatron/vendor/kernel.py").is_file()


def test_tampered_ciphertext_is_refused(encrypted_origin: Origin, tmp_path: Path) -> None:
    user = clone_user(encrypted_origin.root, tmp_path / "user")
    stored = bytearray(set_patch(user, DEVICE, BACKEND))
    stored[-5] ^= 0x01
    folder = user / "hardware" / DEVICE / BACKEND
    (folder / f"{BACKEND}.patch.enc").write_bytes(bytes(stored))
    commit = commit_all(user, "tampered, sha256 left as it was")
    add_history_commit(user, DEVICE, commit)
    message = error_of(user, key_paths=(encrypted_origin.key,))
    assert f"{BACKEND}.patch.enc: its sha256 does not match" in message

    rewrite_set(user, DEVICE, BACKEND, patch=bytes(stored))  # sha256 updated as well
    message = error_of(user, key_paths=(encrypted_origin.key,))
    assert "authentication failed" in message and f"{BACKEND}.patch" in message


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["metax_c550", "Metax-C550", "Metax_C550_X", "Metax"])
def test_device_type_must_be_vendor_model(user: Path, device: str) -> None:
    assert "is not Vendor_Model" in error_of(user, device)


def test_unknown_device_type_task_and_backend_key(user: Path) -> None:
    assert "has no entry for Nvidia_A100" in error_of(user, "Nvidia_A100")
    unknown = inv(user, "build", "--device", "Nvidia_A100", check=False)
    assert unknown.returncode == 1
    assert f"known device types: {DEVICE} (or ask the vendor" in unknown.stderr
    assert "with task inference" in error_of(user, task="inference")
    assert "backends" in error_of(user, backends=("vllm",))


def test_history_naming_an_undeclared_backend(user: Path) -> None:
    history = user / "hardware" / "patch_history.yaml"
    text = history.read_text().replace("FlagScale+Megatron-LM", "FlagScale+Paddle")
    history.write_text(text)
    assert "unknown backend 'Paddle'" in error_of(user)


def test_commit_that_does_not_exist_or_is_not_in_the_history(origin: Origin, user: Path) -> None:
    assert "--commit 0123456789ab: no such commit" in error_of(user, commit="0123456789ab")
    base = origin.vendor.base
    assert f"has no entry for {DEVICE} with commit {base}" in error_of(user, commit=base)


def test_history_failing_its_schema(user: Path) -> None:
    history = user / "hardware" / "patch_history.yaml"
    history.write_text(history.read_text().replace('"', "").replace("train", "training"))
    message = error_of(user)
    assert "hardware/patch_history.yaml" in message and "training" in message


def test_metadata_failing_its_schema(user: Path) -> None:
    folder = user / "hardware" / DEVICE / BACKEND / "metadata.yaml"
    text = folder.read_text().replace("contact:", "kontakt:")
    rewrite_set(user, DEVICE, BACKEND, raw_metadata=text.encode())
    message = error_of(user)
    assert f"hardware/{DEVICE}/{BACKEND}/metadata.yaml" in message and "kontakt" in message


def test_patch_reaching_outside_its_tree(user: Path) -> None:
    evil = (
        b"diff --git a/../../escape.txt b/../../escape.txt\nnew file mode 100644\n"
        b"--- /dev/null\n+++ b/../../escape.txt\n@@ -0,0 +1 @@\n+gotcha\n"
    )
    rewrite_set(user, DEVICE, BACKEND, patch=set_patch(user, DEVICE, BACKEND) + evil)
    message = error_of(user)
    assert f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch" in message
    assert "unsafe path '../../escape.txt'" in message
    assert not (user.parent / "escape.txt").exists()


def test_flagscale_set_may_not_write_into_third_party(user: Path) -> None:
    sneaky = (
        b"diff --git a/third_party/Megatron-LM/x.py b/third_party/Megatron-LM/x.py\n"
        b"new file mode 100644\n--- /dev/null\n+++ b/third_party/Megatron-LM/x.py\n"
        b"@@ -0,0 +1 @@\n+x\n"
    )
    rewrite_set(user, DEVICE, "FlagScale", patch=set_patch(user, DEVICE, "FlagScale") + sneaky)
    assert "changes third_party/, which FlagScale's own patch set may not touch" in error_of(user)


def test_set_made_against_another_pin(origin: Origin, user: Path) -> None:
    other = run_git(origin.vendor.upstream, "rev-parse", "HEAD").replace("0", "1", 1)
    other = other if other != run_git(origin.vendor.upstream, "rev-parse", "HEAD") else "1" * 40
    rewrite_set(user, DEVICE, BACKEND, metadata={"backend_pin": other})
    message = error_of(user)
    assert f"made against {BACKEND} {other}" in message
    pin = run_git(origin.root, "rev-parse", f"{origin.vendor.base}:third_party/{BACKEND}")
    assert f"pins {BACKEND} at {pin}" in message


def test_sets_with_different_bases_are_refused(origin: Origin, user: Path) -> None:
    head = run_git(user, "rev-parse", "HEAD~2")  # "vendor: metax device", not the base
    rewrite_set(user, DEVICE, "FlagScale", metadata={"flagscale_base": head})
    assert "were made against different FlagScale commits" in error_of(user)


def test_unknown_base_commit(user: Path) -> None:
    rewrite_set(user, DEVICE, "FlagScale", metadata={"flagscale_base": "a" * 40})
    rewrite_set(user, DEVICE, BACKEND, metadata={"flagscale_base": "a" * 40})
    assert f"flagscale_base {'a' * 40} is not a commit" in error_of(user)


def test_history_entry_without_the_sets(origin: Origin, user: Path) -> None:
    add_history_commit(user, DEVICE, origin.vendor.base)
    assert f"hardware/{DEVICE}/FlagScale does not exist at {origin.vendor.base}" in error_of(user)


# --- conflicts ----------------------------------------------------------------------------------


def conflicting_user(origin: Origin, tmp_path: Path) -> tuple[Path, str]:
    """A user clone whose newest Megatron-LM set was made against another model.py.

    The upstream gains a commit with a different model.py; a patch from that version is stored
    as the set (its pin left as recorded), so the hunk does not apply to the pin's model.py while
    the blob it names exists for a 3-way merge.
    """
    user = clone_user(origin.root, tmp_path / "user", init=True)
    checkout = user / "third_party" / BACKEND
    write_files(checkout, {"megatron/core/model.py": "class Model:\n    layers = 3\n"})
    run_git(checkout, "commit", "-q", "-am", "upstream moves on")
    moved = run_git(checkout, "rev-parse", "HEAD")
    write_files(checkout, {"megatron/core/model.py": "class Model:\n    layers = 8  # vendor\n"})
    patch = run_git(checkout, "diff", "--binary", "--full-index").encode() + b"\n"
    run_git(checkout, "checkout", "-q", "--", ".")
    rewrite_set(user, DEVICE, BACKEND, patch=patch)
    return user, moved


def test_conflicting_patch_names_file_and_hunk(origin: Origin, tmp_path: Path) -> None:
    user, _ = conflicting_user(origin, tmp_path)
    message = error_of(user)
    assert f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch: hunk @@ -1,2 +1,2 @@" in message
    assert "does not apply to megatron/core/model.py" in message
    assert "--3way" in message


def test_three_way_leaves_conflict_markers_and_keeps_the_previous_build(
    origin: Origin, tmp_path: Path
) -> None:
    user, _ = conflicting_user(origin, tmp_path)
    result = inv(user, "build", "--device", DEVICE, "--3way", check=False)
    assert result.returncode == 1
    assert "conflict" in result.stderr and "megatron/core/model.py" in result.stderr
    conflicted = user / "build" / f"{DEVICE}.conflicts" / "third_party" / BACKEND
    text = (conflicted / "megatron/core/model.py").read_text()
    assert "<<<<<<<" in text and ">>>>>>>" in text and "layers = 8" in text
    assert not (user / TARGET).exists()


def test_an_edited_conflicts_folder_is_kept_aside_never_replaced_or_removed(
    origin: Origin, tmp_path: Path
) -> None:
    user, _ = conflicting_user(origin, tmp_path)
    folder = user / "build" / f"{DEVICE}.conflicts"
    model = f"third_party/{BACKEND}/megatron/core/model.py"
    inv(user, "build", "--device", DEVICE, "--3way", check=False)
    inv(user, "build", "--device", DEVICE, "--3way", check=False)  # unedited: simply replaced
    assert not list(folder.parent.glob(f"{DEVICE}.conflicts-kept-*"))

    resolved = "class Model:\n    layers = 8  # resolved by hand\n"
    (folder / model).write_text(resolved)
    again = inv(user, "build", "--device", DEVICE, "--3way", check=False)
    assert again.returncode == 1
    (kept,) = folder.parent.glob(f"{DEVICE}.conflicts-kept-*")
    assert f"{folder.name}/ was edited since the build wrote it: kept as {kept}/" in again.stdout
    assert (kept / model).read_text() == resolved
    assert "<<<<<<<" in (folder / model).read_text()  # the new conflicts, beside the kept ones

    (folder / model).write_text(resolved)  # edited again, then the set is fixed: the build passes
    original = subprocess.run(
        ["git", "show", f"origin/HEAD:hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch"],
        cwd=user,
        capture_output=True,
        check=True,
    ).stdout
    rewrite_set(user, DEVICE, BACKEND, patch=original)
    built = inv(user, "build", "--device", DEVICE)
    assert (user / TARGET).is_dir() and not folder.exists()
    kept_now = sorted(folder.parent.glob(f"{DEVICE}.conflicts-kept-*"))
    assert len(kept_now) == 2 and "was edited since the build wrote it" in built.stdout
    assert all((path / model).read_text() == resolved for path in kept_now)


# --- heterogeneous builds -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hetero_origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    """Sets for two device types; the second commit holds both and is recorded for both."""
    origin = make_origin(tmp_path_factory.mktemp("hetero"))
    write_files(origin.vendor.checkout, {"megatron/vendor/kernel.py": "KERNEL = 'nvidia'\n"})
    make_sets(origin.root, "Nvidia_A100", origin.vendor.base)
    shared = record(origin.root, "Nvidia_A100")
    record(origin.root, DEVICE, commit=shared)
    return origin


def test_heterogeneous_build_shares_one_commit_and_writes_the_map(
    hetero_origin: Origin, tmp_path: Path
) -> None:
    user = clone_user(hetero_origin.root, tmp_path / "user")
    result = inv(user, "build", "--device", DEVICE, "--device", "Nvidia_A100", "--jobs", "2")

    mapping = json.loads((user / "build" / "hetero.json").read_text())
    assert mapping == {
        DEVICE: str((user / TARGET).resolve()),
        "Nvidia_A100": str((user / "build" / "Nvidia_A100").resolve()),
    }
    metax, nvidia = read_record(user / TARGET), read_record(user / "build" / "Nvidia_A100")
    assert metax.inputs["history_commit"] == nvidia.inputs["history_commit"]
    kernel = "third_party/Megatron-LM/megatron/vendor/kernel.py"
    assert (user / "build" / "Nvidia_A100" / kernel).read_text() == "KERNEL = 'nvidia'\n"
    assert (user / TARGET / kernel).read_text() == "KERNEL = 'metax'\n"
    assert "up to date" not in result.stdout

    again = inv(user, "build", "--device", f"{DEVICE},Nvidia_A100")
    assert again.stdout.count("up to date") == 2


def test_heterogeneous_build_without_a_shared_commit_uses_each_newest(
    hetero_origin: Origin, tmp_path: Path
) -> None:
    user = clone_user(hetero_origin.root, tmp_path / "user")
    history = user / "hardware" / "patch_history.yaml"
    data = yaml.safe_load(history.read_text())
    data[DEVICE]["train"]["+".join(BACKENDS)] = data[DEVICE]["train"]["+".join(BACKENDS)][:1]
    history.write_text(yaml.safe_dump(data).replace("'", '"'))
    lines: list[str] = []

    build_devices(
        find_workspace(user),
        BuildRequest(devices=(DEVICE, "Nvidia_A100"), report=lines.append),
    )

    metax, nvidia = read_record(user / TARGET), read_record(user / "build" / "Nvidia_A100")
    assert metax.inputs["history_commit"] != nvidia.inputs["history_commit"]
    assert metax.inputs["flagscale_base"] == nvidia.inputs["flagscale_base"]
    assert any("wrote build/hetero.json" in line or "hetero.json" in line for line in lines)


def test_jobs_must_not_be_negative(user: Path) -> None:
    result = inv(user, "build", "--device", DEVICE, "--jobs", "-1", check=False)
    assert result.returncode == 1 and "--jobs -1" in result.stderr


def test_verbose_shows_the_traceback_only_when_asked(user: Path) -> None:
    quiet_run = inv(user, "build", "--device", "bad", check=False)
    loud_run = inv(user, "build", "--device", "bad", "--verbose", check=False)
    assert "Traceback" not in quiet_run.stderr and "Traceback" in loud_run.stderr


def test_build_outside_a_workspace(tmp_path: Path) -> None:
    result = subprocess.run(
        ["git", "init", "-q", str(tmp_path / "empty")], capture_output=True, check=True
    )
    assert result.returncode == 0
    outcome = inv(tmp_path / "empty", "build", "--device", DEVICE, check=False)
    assert outcome.returncode == 1 and "not inside a FlagScale workspace" in outcome.stderr


def test_patch_with_a_section_git_cannot_read(user: Path) -> None:
    corrupt = (
        b"diff --git a/blob.bin b/blob.bin\nnew file mode 100644\n"
        b"GIT binary patch\nliteral 10\nnot base85 at all\n\n"
    )
    rewrite_set(user, DEVICE, BACKEND, patch=corrupt + set_patch(user, DEVICE, BACKEND))
    message = error_of(user)
    assert f"{BACKEND}.patch: corrupt binary patch at line 5 (not base85 at all)" in message


def test_patch_section_git_would_skip_silently(user: Path) -> None:
    lonely = b"diff --git a/lonely.txt b/lonely.txt\n"
    rewrite_set(user, DEVICE, BACKEND, patch=set_patch(user, DEVICE, BACKEND) + lonely)
    message = error_of(user)
    assert f"{BACKEND}.patch: the change to lonely.txt is corrupt" in message
