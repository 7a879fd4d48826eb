"""Release bundles: cut from committed patch sets, signed, deterministic, tamper-evident."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.release import signing
from flagscale.release.bundle import (
    MANIFEST,
    SIGNATURE,
    BundleError,
    bundle_name,
    create_bundle,
    extract_verified,
    open_verified_bundle,
    verify_bundle,
)
from flagscale.release.bundle_build import build_from_bundle, bundle_commit
from flagscale.upstream.workspace import load_workspace
from tests.gitrepos import inv, run_git, write_files
from tests.isolation import isolated_git
from tests.release_fixtures import (
    BACKEND,
    Member,
    pack,
    standard_release,
    unpack,
)

PATCH = f"hardware/Metax_C550/{BACKEND}/{BACKEND}.patch"


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One signed bundle of the standard release, shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("released")
    home = tmp_path_factory.mktemp("released-home")
    with isolated_git(home):
        rw, _ = standard_release(tmp)
        key = tmp / "keys" / "release.key"
        signing.generate_signing_keypair(key, key.with_name("release.key.pub"))
        path = create_bundle(
            load_workspace(rw.root), None, all_devices=True, version="1.0", sign_key=key
        )
    return {"root": rw.root, "bundle": path, "key": key, "pub": key.with_name("release.key.pub")}


def keypair(folder: Path, name: str = "k") -> tuple[Path, Path]:
    private = folder / name
    public = folder / f"{name}.pub"
    signing.generate_signing_keypair(private, public)
    return private, public


# --- keygen ------------------------------------------------------------------------------------


def test_keygen_writes_private_0600_and_public_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = inv(tmp_path, "keygen", "--out", "keys/K")
    private, public = tmp_path / "keys" / "K", tmp_path / "keys" / "K.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    fingerprint = signing.public_key_fingerprint(public)
    assert fingerprint in result.stdout
    assert private.read_text() not in result.stdout + result.stderr  # never printed

    again = inv(tmp_path, "keygen", "--out", "keys/K", check=False)
    assert again.returncode == 1
    assert "refusing to overwrite existing signing key" in again.stderr
    assert signing.public_key_fingerprint(public) == fingerprint

    inv(tmp_path, "keygen", "--out", "keys/K", "--force")
    assert signing.public_key_fingerprint(public) != fingerprint
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_keygen_refuses_an_out_path_naming_the_public_half(tmp_path: Path) -> None:
    result = inv(tmp_path, "keygen", "--out", "K.pub", check=False)
    assert result.returncode == 1
    assert "names the public half" in result.stderr
    assert not (tmp_path / "K.pub").exists()


# --- making bundles ------------------------------------------------------------------------------


def test_bundle_holds_committed_sets_history_slice_and_signed_manifest(tmp_path: Path) -> None:
    rw, commits = standard_release(tmp_path)
    private, public = keypair(tmp_path)
    result = inv(
        rw.root, "bundle", "--device", "Metax_C550", "--version", "2.0", "--sign-key", str(private)
    )
    path = rw.root / "build" / "bundles" / bundle_name("2.0")
    assert str(path) in result.stdout
    assert hashlib.sha256(path.read_bytes()).hexdigest() in result.stdout

    files = unpack(path.read_bytes())
    assert sorted(files) == [
        "hardware/Metax_C550/FlagScale/FlagScale.patch",
        "hardware/Metax_C550/FlagScale/metadata.yaml",
        f"hardware/Metax_C550/{BACKEND}/{BACKEND}.patch",
        f"hardware/Metax_C550/{BACKEND}/metadata.yaml",
        "hardware/patch_history.yaml",
        MANIFEST,
        SIGNATURE,
    ]
    for name in files:
        if name.startswith("hardware/Metax_C550/"):
            committed = run_git(rw.root, "show", f"{commits['sets']}:{name}").encode()
            assert files[name].rstrip(b"\n") == committed
    history = yaml.safe_load(files["hardware/patch_history.yaml"])
    assert history == {"Metax_C550": {"train": {"FlagScale+Megatron-LM": [commits["sets"]]}}}
    assert f'- "{commits["sets"]}"' in files["hardware/patch_history.yaml"].decode()

    manifest = json.loads(files[MANIFEST])
    assert manifest["schema_version"] == 1
    assert manifest["bundle_version"] == "2.0"
    assert manifest["tool_version"] == "0.1.0"
    assert manifest["source_commit"] == commits["history"]
    assert manifest["signer"] == signing.public_key_fingerprint(public)
    assert manifest["pins"] == {BACKEND: rw.pin}
    patch_sets = manifest["device_types"]["Metax_C550"]["patch_sets"]
    assert patch_sets[BACKEND]["flagscale_base"] == commits["base"]
    assert patch_sets[BACKEND]["commit"] == commits["sets"]
    assert patch_sets[BACKEND]["backend_pin"] == rw.pin
    assert patch_sets["FlagScale"]["backend_pin"] is None
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert set(listed) == set(files) - {MANIFEST, SIGNATURE}
    for name, entry in listed.items():
        assert entry == {
            "path": name,
            "sha256": hashlib.sha256(files[name]).hexdigest(),
            "size": len(files[name]),
        }
    signing.verify_bytes(files[MANIFEST], files[SIGNATURE], public, source="test")

    verified = inv(rw.root, "verify-bundle", str(path), "--trust", str(public))
    assert "verified bundle 2.0" in verified.stdout
    assert signing.public_key_fingerprint(public) in verified.stdout


def test_archive_entries_have_fixed_metadata(released: dict[str, Path]) -> None:
    data = released["bundle"].read_bytes()
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert data[3] & 0x08 == 0  # no file name in the gzip header
    import io

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    for member in members:
        assert member.isreg()
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            0,
            0,
            0,
            "",
            "",
        )
        assert member.mode == 0o644


def test_bundle_reads_committed_state_not_work_tree_edits(tmp_path: Path) -> None:
    rw, commits = standard_release(tmp_path)
    private, public = keypair(tmp_path)
    write_files(rw.root, {PATCH: "uncommitted edit\n", "hardware/Metax_C550/extra.txt": "x"})
    path = create_bundle(
        load_workspace(rw.root), ["Metax_C550"], version="1", sign_key=private, out_dir=tmp_path
    )
    files = verify_bundle(path, public).files
    assert files[PATCH] == run_git(rw.root, "show", f"{commits['sets']}:{PATCH}").encode() + b"\n"
    assert "hardware/Metax_C550/extra.txt" not in files


def test_encrypted_patch_sets_stay_encrypted(tmp_path: Path) -> None:
    from tests.release_fixtures import (
        commit_all,
        make_patch,
        make_release_workspace,
        record_history,
        write_patch_set,
    )

    rw = make_release_workspace(tmp_path)
    base = rw.head()
    patch = make_patch(rw.upstream, rw.pin, {"megatron/core/c.py": "secret\n"})
    write_patch_set(rw, "Secret_X1", BACKEND, patch, base=base, key_path=tmp_path / "vendor.key")
    sets = commit_all(rw.root, "encrypted set")
    record_history(rw, {"Secret_X1": {"train": {BACKEND: [sets]}}})
    private, public = keypair(tmp_path)
    path = create_bundle(
        load_workspace(rw.root), ["Secret_X1"], version="1", sign_key=private, out_dir=tmp_path
    )
    bundle = verify_bundle(path, public)
    stored = bundle.files[f"hardware/Secret_X1/{BACKEND}/{BACKEND}.patch.enc"]
    assert stored.startswith(b"FSENC\0") and b"secret" not in stored
    assert bundle.manifest["device_types"]["Secret_X1"]["patch_sets"][BACKEND]["encrypted"]


def test_same_inputs_give_the_same_bytes_also_from_another_clone(tmp_path: Path) -> None:
    rw, _ = standard_release(tmp_path)
    private, _ = keypair(tmp_path)
    ws = load_workspace(rw.root)
    first = create_bundle(
        ws, None, all_devices=True, version="3", sign_key=private, out_dir=tmp_path / "a"
    )
    second = create_bundle(
        ws, None, all_devices=True, version="3", sign_key=private, out_dir=tmp_path / "b"
    )
    assert first.read_bytes() == second.read_bytes()

    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", str(rw.root), str(clone))
    result = inv(
        clone, "bundle", "--all", "--version", "3", "--sign-key", str(private), "--out", "c"
    )
    assert "bundle: wrote" in result.stderr  # progress, one line per step off a terminal
    assert (clone / "c" / bundle_name("3")).read_bytes() == first.read_bytes()


def test_device_order_and_repeats_do_not_change_the_bundle(tmp_path: Path) -> None:
    rw, _ = standard_release(tmp_path)
    private, _ = keypair(tmp_path)
    ws = load_workspace(rw.root)
    one = create_bundle(
        ws, ["Metax_C550", "Ascend_910B"], version="1", sign_key=private, out_dir=tmp_path / "1"
    )
    two = create_bundle(
        ws,
        ["Ascend_910B", "Metax_C550", "Ascend_910B"],
        version="1",
        sign_key=private,
        out_dir=tmp_path / "2",
    )
    assert one.read_bytes() == two.read_bytes()


def test_missing_signing_key_says_how_to_make_one(tmp_path: Path) -> None:
    rw, _ = standard_release(tmp_path)
    env_free = inv(rw.root, "bundle", "--all", "--version", "1", check=False)
    assert env_free.returncode == 1
    assert "no signing key given" in env_free.stderr and "inv keygen --out K" in env_free.stderr

    missing = inv(
        rw.root, "bundle", "--all", "--version", "1", "--sign-key", "nope.key", check=False
    )
    assert missing.returncode == 1
    assert "signing key nope.key not found" in missing.stderr
    assert "inv keygen" in missing.stderr
    assert not (rw.root / "build" / "bundles").exists()


def test_public_key_as_signing_key_is_refused(tmp_path: Path) -> None:
    rw, _ = standard_release(tmp_path)
    _, public = keypair(tmp_path)
    with pytest.raises(BundleError, match="is a public key; signing needs the private key"):
        create_bundle(load_workspace(rw.root), None, all_devices=True, version="1", sign_key=public)


def test_unknown_device_types_are_named(tmp_path: Path) -> None:
    rw, _ = standard_release(tmp_path)
    private, _ = keypair(tmp_path)
    result = inv(
        rw.root,
        "bundle",
        "--device",
        "Metax_C550 Nope_X1,Gone_Y2",
        "--version",
        "1",
        "--sign-key",
        str(private),
        check=False,
    )
    assert result.returncode == 1
    assert "does not know device type(s) Nope_X1, Gone_Y2" in result.stderr
    assert "it knows: Ascend_910B, Metax_C550" in result.stderr


@pytest.mark.parametrize(
    ("version", "message"),
    [("../x", "bundle version '../x' is not allowed"), ("", "bundle version '' is not allowed")],
)
def test_bad_versions_are_refused(tmp_path: Path, version: str, message: str) -> None:
    rw, _ = standard_release(tmp_path)
    private, _ = keypair(tmp_path)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(".", r"\.")):
        create_bundle(
            load_workspace(rw.root), None, all_devices=True, version=version, sign_key=private
        )


def test_device_and_all_together_or_neither_are_refused(tmp_path: Path) -> None:
    rw, _ = standard_release(tmp_path)
    private, _ = keypair(tmp_path)
    ws = load_workspace(rw.root)
    with pytest.raises(BundleError, match="either --device or --all, not both"):
        create_bundle(ws, ["Metax_C550"], all_devices=True, version="1", sign_key=private)
    with pytest.raises(BundleError, match="name the device types to bundle with --device"):
        create_bundle(ws, [], version="1", sign_key=private)


def test_metadata_hash_mismatch_in_the_commit_is_refused(tmp_path: Path) -> None:
    from tests.release_fixtures import commit_all, record_history

    rw, commits = standard_release(tmp_path)
    write_files(rw.root, {PATCH: "changed without re-running inv patch\n"})
    sets = commit_all(rw.root, "hand edit")
    record_history(
        rw, {"Metax_C550": {"train": {"FlagScale+Megatron-LM": [commits["sets"], sets]}}}
    )
    private, _ = keypair(tmp_path)
    with pytest.raises(BundleError if False else Exception, match=f"{PATCH} at {sets} has sha256"):
        create_bundle(load_workspace(rw.root), ["Metax_C550"], version="1", sign_key=private)


def test_history_without_a_committed_patch_set_is_refused(tmp_path: Path) -> None:
    from tests.release_fixtures import record_history

    rw, commits = standard_release(tmp_path)
    record_history(rw, {"Ghost_G1": {"train": {BACKEND: [commits["sets"]]}}})
    private, _ = keypair(tmp_path)
    with pytest.raises(
        FlagScaleError, match="names backend Megatron-LM for Ghost_G1, but hardware/"
    ):
        create_bundle(load_workspace(rw.root), ["Ghost_G1"], version="1", sign_key=private)


# --- verifying bundles: every way to tamper ----------------------------------------------------


def members_of(path: Path) -> list[Member]:
    return [Member(name, data) for name, data in unpack(path.read_bytes()).items()]


def resign(members: list[Member], key: Path, change: Callable[[dict], None]) -> list[Member]:
    """Members with the manifest changed by ``change`` and signed again with ``key``."""
    out = []
    manifest = json.loads(next(m.data for m in members if m.name == MANIFEST))
    change(manifest)
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    for member in members:
        if member.name == MANIFEST:
            member = Member(MANIFEST, manifest_bytes)
        elif member.name == SIGNATURE:
            member = Member(SIGNATURE, signing.sign_bytes(manifest_bytes, key))
        out.append(member)
    return out


def change_byte(members: list[Member]) -> list[Member]:
    out = []
    for m in members:
        if m.name == PATCH:
            data = bytearray(m.data)
            data[len(data) // 2] ^= 0x01
            m = Member(m.name, bytes(data))
        out.append(m)
    return out


def rename(members: list[Member]) -> list[Member]:
    return [Member(PATCH + ".orig", m.data) if m.name == PATCH else m for m in members]


TAMPERS: dict[str, tuple[Callable[[list[Member]], list[Member]], str]] = {
    "changed byte": (change_byte, f"file {PATCH} was changed after signing: sha256"),
    "added file": (
        lambda ms: [*ms, Member("hardware/Metax_C550/evil.sh", b"rm -rf /\n")],
        "file hardware/Metax_C550/evil.sh is in the bundle but not in its signed manifest.json",
    ),
    "removed file": (
        lambda ms: [m for m in ms if m.name != PATCH],
        f"file {PATCH} listed in manifest.json is missing from the bundle",
    ),
    "renamed file": (rename, f"file {PATCH} was renamed to {PATCH}.orig after signing"),
    "traversal entry": (
        lambda ms: [*ms, Member("hardware/../../evil", b"x")],
        "unsafe path 'hardware/../../evil': '..' leads outside the tree",
    ),
    "absolute entry": (
        lambda ms: [*ms, Member("/etc/evil", b"x")],
        "unsafe path '/etc/evil': absolute paths are not allowed",
    ),
    "symlink entry": (
        lambda ms: [*ms, Member("hardware/link", type=tarfile.SYMTYPE, linkname="/etc/passwd")],
        "entry 'hardware/link' is a symbolic link (-> '/etc/passwd'); a bundle holds only regular",
    ),
    "hardlink entry": (
        lambda ms: [*ms, Member("hardware/hard", type=tarfile.LNKTYPE, linkname=PATCH)],
        f"entry 'hardware/hard' is a hard link (-> '{PATCH}')",
    ),
    "device entry": (
        lambda ms: [*ms, Member("hardware/dev", type=tarfile.CHRTYPE)],
        "entry 'hardware/dev' is a character device",
    ),
    "fifo entry": (
        lambda ms: [*ms, Member("hardware/fifo", type=tarfile.FIFOTYPE)],
        "entry 'hardware/fifo' is a FIFO",
    ),
    "duplicate entry": (
        lambda ms: [*ms, Member(PATCH, b"second copy\n")],
        f"entry '{PATCH}' appears twice",
    ),
    "missing signature": (
        lambda ms: [m for m in ms if m.name != SIGNATURE],
        "manifest.json.sig is missing: not a signed FlagScale bundle",
    ),
    "manifest edited": (
        lambda ms: [
            Member(m.name, m.data.replace(b'"1.0"', b'"9.9"')) if m.name == MANIFEST else m
            for m in ms
        ],
        "the signature of manifest.json does not verify against trusted key ed25519:",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_bundles_are_rejected_naming_what_failed(
    released: dict[str, Path], tmp_path: Path, case: str
) -> None:
    tamper, message = TAMPERS[case]
    path = tmp_path / "tampered.tar.gz"
    path.write_bytes(pack(tamper(members_of(released["bundle"]))))
    with pytest.raises(BundleError) as caught:
        verify_bundle(path, released["pub"])
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    dest = tmp_path / "out"
    with pytest.raises(BundleError):
        open_verified_bundle(path, released["pub"], dest)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tampered.tar.gz"]  # nothing written


def test_unknown_manifest_schema_version_is_rejected_even_when_signed(
    released: dict[str, Path], tmp_path: Path
) -> None:
    def bump(manifest: dict) -> None:
        manifest["schema_version"] = 2

    path = tmp_path / "future.tar.gz"
    path.write_bytes(pack(resign(members_of(released["bundle"]), released["key"], bump)))
    with pytest.raises(BundleError, match="manifest.json has schema_version 2; this tool reads 1"):
        verify_bundle(path, released["pub"])


def test_signed_manifest_that_breaks_its_schema_is_rejected(
    released: dict[str, Path], tmp_path: Path
) -> None:
    def break_schema(manifest: dict) -> None:
        manifest["files"][0]["sha256"] = "not-a-hash"

    path = tmp_path / "bad.tar.gz"
    path.write_bytes(pack(resign(members_of(released["bundle"]), released["key"], break_schema)))
    with pytest.raises(BundleError, match=r"manifest.json: at files\[0\].sha256: 'not-a-hash'"):
        verify_bundle(path, released["pub"])


def test_wrong_trust_key_names_both_fingerprints(released: dict[str, Path], tmp_path: Path) -> None:
    _, other = keypair(tmp_path, "other")
    with pytest.raises(BundleError) as caught:
        verify_bundle(released["bundle"], other)
    message = str(caught.value)
    assert f"signed by key {signing.public_key_fingerprint(released['pub'])}" in message
    assert f"the trusted key {other} is {signing.public_key_fingerprint(other)}" in message


def test_private_key_as_trust_is_refused(released: dict[str, Path]) -> None:
    with pytest.raises(signing.KeyFileError, match="holds a private key; trust the public key"):
        verify_bundle(released["bundle"], released["key"])


def test_missing_trust_key_file_is_named(released: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(signing.KeyFileError, match="trusted public key .*nope.pub not found"):
        verify_bundle(released["bundle"], tmp_path / "nope.pub")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated archive (the gzip stream ends early)"),
        (lambda data: data[:-4], "truncated archive"),
        (lambda data: data[:10], "truncated archive"),
        (lambda data: b"", "empty file, not a bundle"),
        (lambda data: b"PK\3\4 not gzip", "not a gzip file"),
        (lambda data: data + b"trailing", "unexpected bytes after the end of the gzip stream"),
        (
            lambda data: data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:],
            "corrupted gzip data",
        ),
        (
            lambda data: data[:40] + bytes([data[40] ^ 0x55]) + data[41:],
            "corrupted gzip data",
        ),
    ],
    ids=["half", "no-size", "header-only", "empty", "zip", "trailing", "crc", "flipped-bit"],
)
def test_truncated_or_corrupted_archives_are_rejected(
    released: dict[str, Path], tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    path = tmp_path / "damaged.tar.gz"
    path.write_bytes(damage(released["bundle"].read_bytes()))
    with pytest.raises(BundleError) as caught:
        verify_bundle(path, released["pub"])
    assert message in str(caught.value)


def test_truncated_tar_inside_intact_gzip_is_rejected(
    released: dict[str, Path], tmp_path: Path
) -> None:
    import gzip

    tar_bytes = gzip.decompress(released["bundle"].read_bytes())
    path = tmp_path / "short.tar.gz"
    path.write_bytes(gzip.compress(tar_bytes[:1000], mtime=0))
    with pytest.raises(BundleError, match="damaged tar archive|is truncated"):
        verify_bundle(path, released["pub"])


def test_verify_bundle_command_fails_with_one_line(
    released: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "tampered.tar.gz"
    path.write_bytes(pack(change_byte(members_of(released["bundle"]))))
    result = inv(tmp_path, "verify-bundle", str(path), "--trust", str(released["pub"]), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "was changed after signing" in result.stderr
    assert "Traceback" not in result.stderr
    no_trust = inv(tmp_path, "verify-bundle", str(released["bundle"]), check=False)
    assert no_trust.returncode == 1 and "--trust K.pub" in no_trust.stderr


# --- extracting verified bundles ---------------------------------------------------------------


def test_extract_verified_writes_every_file_all_at_once(
    released: dict[str, Path], tmp_path: Path
) -> None:
    bundle = verify_bundle(released["bundle"], released["pub"])
    dest = extract_verified(bundle, tmp_path / "extracted")
    written = {
        p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()
    }
    assert written == bundle.files
    assert all(stat.S_IMODE(os.stat(dest / name).st_mode) == 0o644 for name in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extracted"]  # no staging left

    with pytest.raises(BundleError, match="exists and is not an empty folder"):
        extract_verified(bundle, dest)
    (tmp_path / "empty").mkdir()
    assert extract_verified(bundle, tmp_path / "empty") == tmp_path / "empty"


def test_open_verified_bundle_gives_a_folder_with_hardware(released: dict[str, Path]) -> None:
    folder = open_verified_bundle(released["bundle"], released["pub"])
    try:
        assert (folder / "hardware" / "patch_history.yaml").is_file()
        assert (folder / PATCH).is_file()
    finally:
        import shutil

        shutil.rmtree(folder.parent)


# --- building from a verified bundle -----------------------------------------------------------


def test_build_from_bundle_uses_the_signed_patch_sets(tmp_path: Path) -> None:
    rw, commits = standard_release(tmp_path)
    private, public = keypair(tmp_path)
    path = create_bundle(
        load_workspace(rw.root),
        None,
        all_devices=True,
        version="1",
        sign_key=private,
        out_dir=tmp_path / "dist",
    )
    bundle = verify_bundle(path, public)
    assert bundle_commit(load_workspace(rw.root), bundle, "Metax_C550") == commits["sets"]
    result = inv(
        rw.root, "build", "--device", "Metax_C550", "--bundle", str(path), "--trust", str(public)
    )
    assert "verified bundle 1" in result.stdout
    tree = rw.root / "build" / "Metax_C550"
    assert (tree / "README.md").read_text() == "FlagScale on Metax\n"
    assert (tree / "third_party" / BACKEND / "megatron" / "core" / "a.py").read_text() == "metax\n"


def test_build_from_bundle_refuses_without_trust_or_with_a_foreign_bundle(tmp_path: Path) -> None:
    rw, _ = standard_release(tmp_path / "one")
    other, theirs = standard_release(tmp_path / "two")  # same files, other commits
    private, public = keypair(tmp_path)
    path = create_bundle(
        load_workspace(other.root),
        ["Metax_C550"],
        version="1",
        sign_key=private,
        out_dir=tmp_path / "dist",
    )
    no_trust = inv(rw.root, "build", "--device", "Metax_C550", "--bundle", str(path), check=False)
    assert no_trust.returncode == 1 and "--bundle needs --trust" in no_trust.stderr
    foreign = inv(
        rw.root,
        "build",
        "--device",
        "Metax_C550",
        "--bundle",
        str(path),
        "--trust",
        str(public),
        check=False,
    )
    # The sets come from the bundle; the FlagScale base they were made against must be here.
    assert foreign.returncode == 1
    assert foreign.stderr.startswith(
        "error: hardware/Metax_C550/FlagScale/metadata.yaml in flagscale-patches-1.tar.gz:"
        f" flagscale_base {theirs['base']} is not a commit in {rw.root}"
    )
    assert f"(fetch it (git fetch <remote> {theirs['base']}) or update your clone" in foreign.stderr
    assert not (rw.root / "build" / "Metax_C550").exists()
    with pytest.raises(
        BundleError, match="holds no patch sets for Ascend_910B; it holds Metax_C550"
    ):
        bundle_commit(load_workspace(other.root), verify_bundle(path, public), "Ascend_910B")


def test_build_from_bundle_refuses_a_clone_whose_sets_differ(tmp_path: Path) -> None:
    rw, commits = standard_release(tmp_path)
    private, public = keypair(tmp_path)
    path = create_bundle(
        load_workspace(rw.root),
        ["Metax_C550"],
        version="1",
        sign_key=private,
        out_dir=tmp_path / "dist",
    )
    # Re-sign a bundle whose patch differs from the clone's commit (as a rogue release would).
    members = [Member(m.name, b"rogue patch\n") if m.name == PATCH else m for m in members_of(path)]

    def rehash(manifest: dict) -> None:
        for entry in manifest["files"]:
            if entry["path"] == PATCH:
                entry.update(sha256=hashlib.sha256(b"rogue patch\n").hexdigest(), size=12)

    rogue = tmp_path / "rogue.tar.gz"
    rogue.write_bytes(pack(resign(members, private, rehash)))
    with pytest.raises(BundleError, match=f"{PATCH} at FlagScale commit {commits['sets']} differs"):
        bundle_commit(load_workspace(rw.root), verify_bundle(rogue, public), "Metax_C550")


def test_build_bundle_flags_that_do_not_go_together(tmp_path: Path) -> None:
    with pytest.raises(FlagScaleError, match="--trust is only used with --bundle PATH"):
        build_from_bundle(["Metax_C550"], trust="k.pub", start=tmp_path)
    with pytest.raises(BundleError, match="--commit and --bundle exclude each other"):
        build_from_bundle(["Metax_C550"], bundle="b.tar.gz", trust="k.pub", commit="HEAD")


def test_build_from_bundle_takes_the_entry_from_the_bundles_history(tmp_path: Path) -> None:
    rw, commits = standard_release(tmp_path)
    private, public = keypair(tmp_path)
    path = create_bundle(
        load_workspace(rw.root), ["Metax_C550"], version="1", sign_key=private, out_dir=tmp_path
    )
    options = dict(bundle=str(path), trust=str(public), start=rw.root)
    with pytest.raises(
        BundleError,
        match=f"its hardware/patch_history.yaml has no entry for Metax_C550 task inference at"
        f" {commits['sets']}, the commit its patch sets were cut from",
    ):
        build_from_bundle(["Metax_C550"], task="inference", **options)
    with pytest.raises(BundleError, match="holds no patch sets for Ascend_910B; it holds Metax_C5"):
        build_from_bundle(["Ascend_910B"], **options)
    assert not (rw.root / "build").exists()
