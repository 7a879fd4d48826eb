"""FlagScale's existing vendor data (tools/patch layout) built by ``inv build``.

Sets are written here the way FlagScale's older ``tools/patch/patch.py`` wrote them: a
``diff.yaml`` and one ``diff.patch`` (or one ``<path>.patch`` per file, or the oldest
``<short commit>.patch`` + ``<short commit>.yaml``), plain or RSA/AES-CBC ``.encrypted``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from flagscale.builds.builder import BuildRequest, build_devices
from flagscale.builds.fingerprint import read_record
from flagscale.core.errors import FlagScaleError
from flagscale.upstream.workspace import find_workspace
from flagscale.vendor.legacy import parse_diff_yaml
from flagscale.vendor.legacy_crypto import encrypt_legacy
from tests.build_fixtures import clone_user, quiet
from tests.flagscale_checkout import apply_like_flagscale, rsa_key_folder, scratch_clone
from tests.gitrepos import Exec, commit_all, inv, make_workspace, run_git, snapshot, write_files

DEVICE = "BI_V150"
BACKEND = "Megatron-LM"
UPSTREAM = {
    "megatron/core/model.py": "class Model:\n    layers = 2\n",
    "megatron/old.py": "OLD = 1\n",
    "tools/run.sh": Exec(b"#!/bin/sh\necho run\n"),
    "weights.bin": bytes(range(256)) * 4,
}


@dataclass(frozen=True)
class LegacyOrigin:
    root: Path
    base: str
    pin: str
    commit: str
    backend_files: dict  # what third_party/Megatron-LM must hold after the build
    flagscale_files: dict  # FlagScale's own files after the build (outside third_party/)


def split_per_file(diff: bytes) -> dict[str, bytes]:
    """The older tool's per-file layout: ``<path>.patch``, that file's diff and a newline."""
    chunks = re.split(rb"(?m)^(?=diff --git a/)", diff)
    files = {}
    for chunk in filter(None, chunks):
        path = re.match(rb"diff --git a/(.+?) b/\1\n", chunk).group(1).decode()
        files[f"{path}.patch"] = chunk + b"\n"  # the tool added a newline to each piece
    return files


def make_legacy_origin(
    tmp: Path, *, layout: str = "single", keys: Path | None = None, whitespace: bool = False
) -> LegacyOrigin:
    root, upstreams = make_workspace(
        tmp, {BACKEND: UPSTREAM}, extra={"flagscale/train.py": "def train():\n    pass\n"}
    )
    # a base layer exists, but the older tool never laid it under a vendor patch
    write_files(root, {f"backends/{BACKEND}/megatron/old.py": "OLD = 'flagscale'\n"})
    base = commit_all(root, "base")
    pin = run_git(root, "rev-parse", f"{base}:third_party/{BACKEND}")

    checkout = root / "third_party" / BACKEND
    added = "VENDOR = 'iluvatar'   \n" if whitespace else "VENDOR = 'iluvatar'\n"
    write_files(
        checkout,
        {
            "megatron/core/model.py": "class Model:\n    layers = 4\n",
            "megatron/vendor.py": added,
            "weights.bin": bytes(range(256)) * 3,
        },
    )
    (checkout / "megatron/old.py").unlink()
    run_git(checkout, "add", "-A")
    # like GitPython's output, stripped of its final newlines; the tool added one back
    backend_diff = run_git(checkout, "diff", "--cached", "--binary", pin).encode() + b"\n"
    run_git(checkout, "reset", "-q", "--hard", pin)

    write_files(root, {"flagscale/train.py": "def train():\n    return 'bi'\n"})
    write_files(root, {"flagscale/bi.py": "DEVICE = 'BI'\n"})
    run_git(root, "add", "-A", "flagscale")
    flagscale_diff = run_git(root, "diff", "--cached", "--binary", base, "--", "flagscale")
    flagscale_diff = flagscale_diff.encode() + b"\n"
    expected_flagscale = snapshot(root, skip=(".git", "third_party"))
    run_git(root, "reset", "-q", "--hard", base)

    for backend, diff in (("FlagScale", flagscale_diff), (BACKEND, backend_diff)):
        folder = f"hardware/{DEVICE}/{backend}"
        meta = {
            "backends_commit": {BACKEND: pin} if backend == BACKEND else {},
            "backends_version": {backend: "0.8.0"},
            "commit": base,
            "contact": "fanglai <vendor@iluvatar.invalid>",
            "device_type": DEVICE,
            "models": ["llama3-70b"],
            "task": ["train"],
        }
        if layout == "short":
            short = base[:7]
            meta.pop("commit")
            files = {f"{short}.patch": diff, f"{short}.yaml": yaml.safe_dump(meta)}
        else:
            patches = split_per_file(diff) if layout == "per-file" else {"diff.patch": diff}
            files = {**patches, "diff.yaml": yaml.safe_dump(meta)}
        if backend == BACKEND:
            expected_backend = applied_like_flagscale(upstreams[BACKEND], pin, files, tmp)
        if keys is not None:
            files = {
                (f"{name}.encrypted" if name.endswith(".patch") else name): (
                    encrypt_legacy(data, keys) if name.endswith(".patch") else data
                )
                for name, data in files.items()
            }
        write_files(root, {f"{folder}/{name}": data for name, data in files.items()})
    commit = commit_all(root, "hardware: BI_V150")
    history = (
        f"{DEVICE}:\n  train:\n    FlagScale+{BACKEND}:\n    - {commit}\n"
        f"    {BACKEND}:\n    - {commit}\n    FlagScale:\n    - {commit}\n"
    )
    write_files(root, {"hardware/patch_history.yaml": history})
    commit_all(root, "history")
    expected_flagscale.pop("hardware/patch_history.yaml", None)
    return LegacyOrigin(root, base, pin, commit, expected_backend, expected_flagscale)


def applied_like_flagscale(upstream: Path, pin: str, files: dict, tmp: Path) -> dict:
    """What FlagScale's tool makes of the stored patch files: each applied to the pin with plain
    ``git apply`` (strict, then --whitespace=fix), in a scratch clone."""
    work = scratch_clone(upstream, pin, tmp / "expected")
    for name in sorted(files):
        if name.endswith(".patch"):
            patch = tmp / "piece.patch"
            patch.write_bytes(files[name] if isinstance(files[name], bytes) else b"")
            apply_like_flagscale(work, patch)
    return snapshot(work, skip=(".git",))


def build(root: Path, **options) -> Path:
    request = BuildRequest(devices=(DEVICE,), task="train", report=quiet, **options)
    return build_devices(find_workspace(root), request)[DEVICE]


def check_tree(origin: LegacyOrigin, built: Path) -> None:
    assert snapshot(built / "third_party" / BACKEND) == origin.backend_files
    own = {k: v for k, v in snapshot(built, skip=(".git", "third_party")).items()}
    own.pop(".flagscale-build.json")
    own.pop(".flagscale-build.state")
    assert own == origin.flagscale_files


@pytest.mark.parametrize("layout", ["single", "per-file", "short"])
def test_legacy_layouts_build_the_vendor_tree(tmp_path: Path, layout: str) -> None:
    origin = make_legacy_origin(tmp_path / "origin", layout=layout)
    user = clone_user(origin.root, tmp_path / "user")

    result = inv(user, "build", "--device", DEVICE, "--task", "train")

    built = user / "build" / DEVICE
    assert "built build/BI_V150" in result.stderr
    check_tree(origin, built)
    record = read_record(built)
    assert record.inputs["layout"] == "legacy"
    megatron = record.inputs["components"][1]
    assert megatron["pin"] == origin.pin and megatron["base_layer"] is False


def test_encrypted_legacy_sets_need_the_private_key(tmp_path: Path) -> None:
    keys = rsa_key_folder(tmp_path / "keys")
    origin = make_legacy_origin(tmp_path / "origin", layout="per-file", keys=keys)
    user = clone_user(origin.root, tmp_path / "user")

    missing = inv(user, "build", "--device", DEVICE, "--task", "train", check=False)
    assert missing.returncode == 1
    assert "is encrypted: no --key-path given" in missing.stderr
    assert "fanglai <vendor@iluvatar.invalid>" in missing.stderr

    wrong = rsa_key_folder(tmp_path / "wrong")
    with pytest.raises(FlagScaleError) as caught:
        build(user, key_paths=(wrong,))
    assert "cannot unwrap the file key" in str(caught.value)

    check_tree(origin, build(user, key_paths=(keys,)))
    check_tree(origin, build(user, key_paths=(wrong, keys / "private_key.pem"), force=True))


def test_legacy_sets_keep_added_trailing_whitespace_like_the_tool(tmp_path: Path) -> None:
    origin = make_legacy_origin(tmp_path / "origin", whitespace=True)
    user = clone_user(origin.root, tmp_path / "user")
    check_tree(origin, build(user))
    built = user / "build" / DEVICE / "third_party" / BACKEND / "megatron/vendor.py"
    assert built.read_bytes() == b"VENDOR = 'iluvatar'   \n"


def test_a_binary_change_git_skips_is_skipped_and_named(tmp_path: Path) -> None:
    """The tool cut the blank line that ends a binary hunk at the end of diff.patch: git skips
    that file's change (exit 0), so FlagScale's tree keeps the old file; so does the build."""
    origin = make_legacy_origin(tmp_path / "origin", layout="single")
    user = clone_user(origin.root, tmp_path / "user")
    result = inv(user, "build", "--device", DEVICE, "--task", "train")
    check_tree(origin, user / "build" / DEVICE)
    assert origin.backend_files["weights.bin"] == ("file", UPSTREAM["weights.bin"])
    assert f"hardware/{DEVICE}/{BACKEND}/diff.patch: corrupt binary patch at line" in result.stdout
    assert "git skips this part (as it did in FlagScale's tool)" in result.stdout


def test_backends_commit_other_than_the_gitlink_is_used(tmp_path: Path) -> None:
    origin = make_legacy_origin(tmp_path / "origin")
    upstream = tmp_path / "origin" / "upstreams" / BACKEND
    write_files(upstream, {"NEWER.md": "a later upstream commit\n"})
    newer = commit_all(upstream, "newer")
    user = clone_user(origin.root, tmp_path / "user", init=True)
    meta_path = user / "hardware" / DEVICE / BACKEND / "diff.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["backends_commit"] = {BACKEND: newer}
    meta_path.write_text(yaml.safe_dump(meta))
    _record(user, commit_all(user, "backend at a newer commit"))

    built = build(user)

    assert (built / "third_party" / BACKEND / "NEWER.md").is_file()
    assert read_record(built).inputs["components"][1]["pin"] == newer


def _record(user: Path, commit: str) -> None:
    history = user / "hardware" / "patch_history.yaml"
    key = f"FlagScale+{BACKEND}"
    data = yaml.safe_load(history.read_text())
    data[DEVICE]["train"][key].append(commit)
    history.write_text(yaml.safe_dump(data))
    commit_all(user, "history")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("commit"), "no 'commit' key"),
        (lambda m: m.update(task=["training"]), "at task[0]: 'training'"),
        (lambda m: m.update(device_type="Other_X"), "is for device type Other_X"),
        (lambda m: m.update(task=["inference"]), "is for tasks inference, not train"),
        (lambda m: m.update(commit="e" * 40), f"FlagScale commit {'e' * 40} does not exist in"),
        (lambda m: m.update(backends_commit={BACKEND: "abc1234"}), "not a full commit id"),
    ],
)
def test_bad_diff_yaml_is_named(tmp_path: Path, change, message: str) -> None:
    origin = make_legacy_origin(tmp_path / "origin")
    user = clone_user(origin.root, tmp_path / "user")
    meta_path = user / "hardware" / DEVICE / BACKEND / "diff.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    change(meta)
    meta_path.write_text(yaml.safe_dump(meta))
    _record(user, commit_all(user, "diff.yaml changed by hand"))
    with pytest.raises(FlagScaleError) as caught:
        build(user)
    assert f"hardware/{DEVICE}/{BACKEND}/diff.yaml" in str(caught.value)
    assert message in str(caught.value)


def test_set_folder_without_patch_or_metadata(tmp_path: Path) -> None:
    origin = make_legacy_origin(tmp_path / "origin")
    user = clone_user(origin.root, tmp_path / "user")
    (user / "hardware" / DEVICE / BACKEND / "diff.patch").unlink()
    _record(user, commit_all(user, "patch removed"))
    with pytest.raises(FlagScaleError) as caught:
        build(user)
    assert "has diff.yaml but no .patch or .patch.encrypted file" in str(caught.value)

    (user / "hardware" / DEVICE / BACKEND / "diff.yaml").unlink()
    write_files(user, {f"hardware/{DEVICE}/{BACKEND}/notes.txt": "x\n"})
    _record(user, commit_all(user, "metadata removed"))
    with pytest.raises(FlagScaleError) as caught:
        build(user)
    assert "has neither metadata.yaml nor FlagScale's older diff.yaml" in str(caught.value)


def test_parse_diff_yaml_reads_the_older_tools_values() -> None:
    text = (
        "backends_commit: {}\nbackends_version:\n  FlagScale: main\n"
        "commit: 1234567890123456789012345678901234567890\ncontact: ''\n"
        "device_type: Cambricon_MLU\nmodels:\n- aquila\ntask:\n- inference\n"
    )
    metadata = parse_diff_yaml(text.encode(), "diff.yaml")
    assert metadata.commit == "1234567890123456789012345678901234567890"
    assert metadata.tasks == ("inference",) and metadata.backends_commit == {}
    with pytest.raises(FlagScaleError) as caught:
        parse_diff_yaml(b"commit: [1, 2]\n", "x/diff.yaml")
    assert "x/diff.yaml: at commit" in str(caught.value)
