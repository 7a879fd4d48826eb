"""Release bundles: the vendor patch sets of a release in one signed, deterministic archive.

A bundle is ``flagscale-patches-<version>.tar.gz`` holding, with workspace-relative names:

    manifest.json                        what is inside: every file's sha256 and size, pins, bases
    manifest.json.sig                    detached Ed25519 signature of manifest.json (64 bytes)
    hardware/patch_history.yaml          the history, cut down to the bundled device types
    hardware/<V_M>/<backend>/metadata.yaml
    hardware/<V_M>/<backend>/<backend>.patch[.enc]

Everything is read from git objects of one FlagScale commit (HEAD unless told otherwise), never
from the work tree, so uncommitted edits cannot slip into a release. ``verify_bundle`` checks the
signature and every hash in memory before anything is written to disk. docs/bundles.md has the
user's side.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flagscale
from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.paths import check_relative
from flagscale.core.progress import Progress
from flagscale.core.schema import SchemaError, validate
from flagscale.release import signing
from flagscale.release.tarball import ArchiveError, read_archive, write_archive
from flagscale.upstream.workspace import FLAGSCALE, Workspace, find_workspace
from flagscale.vendor.committed import HISTORY, CommittedPatchSet, CommittedState
from flagscale.vendor.history import dump_history

__all__ = [
    "BUNDLE_PREFIX",
    "BUNDLE_SUFFIX",
    "HISTORY",
    "MANIFEST",
    "SCHEMA_VERSION",
    "SIGNATURE",
    "BundleError",
    "VerifiedBundle",
    "bundle_command",
    "bundle_name",
    "create_bundle",
    "extract_verified",
    "generate_release_keys",
    "git_blob_id",
    "keygen_command",
    "open_verified_bundle",
    "verify_bundle",
    "verify_command",
]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
BUNDLE_PREFIX = "flagscale-patches-"
BUNDLE_SUFFIX = ".tar.gz"
DEFAULT_OUT = "build/bundles"
MAX_BUNDLE_BYTES = 256 << 20

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_KEYGEN_HINT = (
    "make a release key pair with: inv keygen --out K, then pass --sign-key K "
    "or set FLAGSCALE_SIGNING_KEY=K"
)


class BundleError(FlagScaleError):
    """A bundle cannot be made, or a bundle failed verification."""


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature and every file hash were checked; contents held in memory."""

    path: Path
    manifest: dict[str, Any]
    files: dict[str, bytes]  # every archive member, manifest and signature included
    signer: str  # fingerprint of the trusted key that verified it

    @property
    def version(self) -> str:
        """The release version the bundle was cut for."""
        return str(self.manifest["bundle_version"])

    @property
    def device_types(self) -> list[str]:
        """The device types the bundle holds patch sets for, sorted."""
        return sorted(self.manifest["device_types"])

    def summary(self) -> str:
        """One line for the user: what was verified."""
        devices = ", ".join(self.device_types)
        return (
            f"{self.path}: verified bundle {self.version} signed by {self.signer}: "
            f"{len(self.manifest['files'])} files, device types {devices}"
        )


# --- keys --------------------------------------------------------------------------------------


def generate_release_keys(out: Path, *, force: bool = False) -> str:
    """Write the release signing pair ``out`` (private, 0600) and ``out.pub``; a summary line."""
    out = Path(out)
    if out.name.endswith(".pub"):
        raise BundleError(
            f"--out {out} names the public half; give the private key's path",
            hint="inv keygen --out release.key writes release.key and release.key.pub",
        )
    public = out.with_name(out.name + ".pub")
    fingerprint = signing.generate_signing_keypair(out, public, force=force)
    return (
        f"wrote private signing key {out} (mode 0600, keep it secret) and public key {public} "
        f"(hand this one out), fingerprint {fingerprint}"
    )


# --- making bundles ----------------------------------------------------------------------------


def bundle_name(version: str) -> str:
    """The file name of the bundle for release ``version``."""
    return f"{BUNDLE_PREFIX}{version}{BUNDLE_SUFFIX}"


def create_bundle(
    workspace: Workspace,
    devices: list[str] | None,
    *,
    version: str,
    sign_key: Path | None,
    out_dir: Path | None = None,
    all_devices: bool = False,
    ref: str = "HEAD",
) -> Path:
    """Cut the signed bundle for ``version`` from commit ``ref``; return its path.

    ``devices`` names the device types to include, or ``all_devices`` takes every one in the
    history. The same commit, devices, version and key always give the same bytes.
    """
    _check_version(version)
    key = _check_sign_key(sign_key)
    state = CommittedState(workspace.root, ref)
    history = state.history
    chosen = _choose_devices(history, devices, all_devices, ref)
    progress = Progress("bundle", total=len(chosen) + 1)
    files: dict[str, bytes] = {HISTORY: dump_history({d: history[d] for d in chosen})}
    device_entries: dict[str, Any] = {}
    for device in chosen:
        progress.step(device)
        patch_sets = {}
        for backend in state.backends(device):
            patch_set = state.patch_set(device, backend)
            patch_sets[backend] = _patch_set_entry(patch_set)
            files[patch_set.metadata_path] = patch_set.metadata_bytes
            files.update(patch_set.patch_files)
        device_entries[device] = {"patch_sets": patch_sets}
    progress.step("signing")
    backends = sorted({b for entry in device_entries.values() for b in entry["patch_sets"]})
    pins = state.head.pins([b for b in backends if b != FLAGSCALE])
    signer = signing.signer_fingerprint(key)
    manifest = _manifest(version, state.head.commit, signer, pins, device_entries, files)
    manifest_bytes = _dump_manifest(manifest)
    files[MANIFEST] = manifest_bytes
    files[SIGNATURE] = signing.sign_bytes(manifest_bytes, key)
    target = Path(out_dir) if out_dir else workspace.path(DEFAULT_OUT)
    path = write_atomically(target / bundle_name(version), write_archive(files))
    progress.finish(f"wrote {path}")
    return path


def _check_version(version: str) -> None:
    if not version or not _VERSION.match(version):
        raise BundleError(
            f"bundle version {version!r} is not allowed",
            hint="use letters, digits and . _ + - (at most 64), starting with a letter or digit",
        )


def _check_sign_key(sign_key: Path | None) -> Path:
    if sign_key is None:
        raise BundleError("no signing key given: bundles are always signed", hint=_KEYGEN_HINT)
    key = Path(sign_key)
    if not key.exists():
        raise BundleError(f"signing key {key} not found", hint=_KEYGEN_HINT)
    try:
        head = key.read_bytes()[:4096]
    except OSError:
        return key  # signing reports unreadable keys in its own words
    if b"PUBLIC KEY-----" in head and b"PRIVATE KEY-----" not in head:
        raise BundleError(
            f"signing key {key} is a public key; signing needs the private key",
            hint="pass the file inv keygen --out wrote, not its .pub",
        )
    return key


def _choose_devices(
    history: dict[str, Any], devices: list[str] | None, all_devices: bool, ref: str
) -> list[str]:
    known = sorted(history)
    if all_devices and devices:
        raise BundleError("give either --device or --all, not both")
    if all_devices:
        if not known:
            raise BundleError(f"{HISTORY} at {ref} names no device types; nothing to bundle")
        return known
    if not devices:
        raise BundleError("name the device types to bundle with --device V_M, or use --all")
    unknown = [d for d in devices if d not in history]
    if unknown:
        raise BundleError(
            f"{HISTORY} at {ref} does not know device type(s) {', '.join(unknown)}; "
            f"it knows: {', '.join(known) or 'none'}",
        )
    return sorted(dict.fromkeys(devices))


def _patch_set_entry(patch_set: CommittedPatchSet) -> dict[str, Any]:
    return {
        "commit": patch_set.commit,
        "layout": patch_set.layout,
        "flagscale_base": patch_set.flagscale_base,
        "backend_pin": patch_set.backend_pin,
        "backend_version": patch_set.backend_version,
        "encrypted": patch_set.encrypted,
        "metadata": patch_set.metadata_path,
        "patches": list(patch_set.patch_files),
    }


def _manifest(
    version: str,
    commit: str,
    signer: str,
    pins: dict[str, str],
    device_entries: dict[str, Any],
    files: dict[str, bytes],
) -> dict[str, Any]:
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": "flagscale-patch-bundle",
        "bundle_version": version,
        "tool_version": flagscale.__version__,
        "source_commit": commit,
        "signer": signer,
        "pins": pins,
        "device_types": device_entries,
        "files": [
            {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for path, data in sorted(files.items())
        ],
    }
    return validate(manifest, "bundle-manifest", MANIFEST)


def _dump_manifest(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --- verifying bundles -------------------------------------------------------------------------


def verify_bundle(path: Path, trust: Path) -> VerifiedBundle:
    """Check ``path`` against the trusted public key ``trust``; nothing is written to disk.

    Order: archive structure (only regular files, safe names), signature of the manifest, the
    manifest's schema version and schema, then the file list and every file's size and sha256.
    Each failure raises BundleError naming what failed.
    """
    path = Path(path)
    source = str(path)
    trusted = signing.public_key_fingerprint(Path(trust))  # also refuses private keys
    files = _read_bundle_files(path)
    for required in (MANIFEST, SIGNATURE):
        if required not in files:
            raise BundleError(f"{source}: {required} is missing: not a signed FlagScale bundle")
    manifest_bytes, signature = files[MANIFEST], files[SIGNATURE]
    _check_signature(source, manifest_bytes, signature, Path(trust), trusted)
    manifest = _load_manifest(manifest_bytes, source)
    _check_files(source, manifest, files)
    return VerifiedBundle(path=path, manifest=manifest, files=files, signer=trusted)


def _read_bundle_files(path: Path) -> dict[str, bytes]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BundleError(f"bundle {path} not found") from None
    if not path.is_file():
        raise BundleError(f"bundle {path} is not a file")
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path}: {size} bytes is too large for a bundle; refusing to read it")
    try:
        return read_archive(path.read_bytes(), str(path))
    except ArchiveError as exc:
        raise BundleError(exc.message, hint=exc.hint) from None


def _check_signature(
    source: str, manifest_bytes: bytes, signature: bytes, trust: Path, trusted: str
) -> None:
    try:
        signing.verify_bytes(manifest_bytes, signature, trust, source=source)
    except signing.BadSignatureError:
        claimed = _claimed_signer(manifest_bytes)
        if claimed and claimed != trusted:
            raise BundleError(
                f"{source}: signed by key {claimed}, but the trusted key {trust} is {trusted}",
                hint="get the release manager's public key, or do not use this bundle",
            ) from None
        raise BundleError(
            f"{source}: the signature of {MANIFEST} does not verify against trusted key "
            f"{trusted} ({trust}): the manifest or its signature was changed",
            hint="do not use this bundle; download it again from the release page",
        ) from None


def _claimed_signer(manifest_bytes: bytes) -> str | None:
    """The signer the (unverified) manifest claims, only to word an error message."""
    try:
        signer = json.loads(manifest_bytes).get("signer")
    except (ValueError, AttributeError):
        return None
    return signer if isinstance(signer, str) else None


def _load_manifest(manifest_bytes: bytes, source: str) -> dict[str, Any]:
    where = f"{source}: {MANIFEST}"
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BundleError(f"{where} is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{where} is not a JSON object")
    schema_version = manifest.get("schema_version")
    if schema_version != SCHEMA_VERSION:
        raise BundleError(
            f"{where} has schema_version {schema_version!r}; this tool reads {SCHEMA_VERSION}",
            hint="use the FlagScale tools of the release that made the bundle (upgrade flagscale)",
        )
    try:
        return validate(manifest, "bundle-manifest", where)
    except SchemaError as exc:
        raise BundleError(exc.message) from None


def _check_files(source: str, manifest: dict[str, Any], files: dict[str, bytes]) -> None:
    listed = {entry["path"]: entry for entry in manifest["files"]}
    present = {name for name in files if name not in (MANIFEST, SIGNATURE)}
    missing = sorted(set(listed) - present)
    added = sorted(present - set(listed))
    for old in missing:
        for new in added:
            if hashlib.sha256(files[new]).hexdigest() == listed[old]["sha256"]:
                raise BundleError(
                    f"{source}: file {old} was renamed to {new} after signing",
                    hint="do not use this bundle; download it again",
                )
    if missing:
        raise BundleError(
            f"{source}: file {missing[0]} listed in {MANIFEST} is missing from the bundle"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            hint="do not use this bundle; download it again",
        )
    if added:
        raise BundleError(
            f"{source}: file {added[0]} is in the bundle but not in its signed {MANIFEST}"
            + (f" (and {len(added) - 1} more)" if len(added) > 1 else ""),
            hint="do not use this bundle; download it again",
        )
    for name in sorted(listed):
        data, expected = files[name], listed[name]
        actual = hashlib.sha256(data).hexdigest()
        if len(data) != expected["size"] or actual != expected["sha256"]:
            raise BundleError(
                f"{source}: file {name} was changed after signing: sha256 {actual} "
                f"({len(data)} bytes), the manifest says {expected['sha256']} "
                f"({expected['size']} bytes)",
                hint="do not use this bundle; download it again",
            )


# --- using verified bundles --------------------------------------------------------------------


def extract_verified(bundle: VerifiedBundle, dest: Path) -> Path:
    """Write a verified bundle's files under ``dest`` (new or empty), all at once; return it.

    The files land in a sibling temporary folder first and are renamed into place, so ``dest``
    either holds the whole bundle or is left as it was.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(
            f"cannot extract {bundle.path} into {dest}: it exists and is not an empty folder",
            hint="choose a new folder",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        for name, data in sorted(bundle.files.items()):
            target = staging / check_relative(name, f"{bundle.path}: entry")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as handle:
                handle.write(data)
            os.chmod(target, 0o644)
        if dest.exists():
            dest.rmdir()
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def open_verified_bundle(path: Path, trust: Path, dest: Path | None = None) -> Path:
    """Verify ``path`` against ``trust`` and extract it; return the folder holding ``hardware/``.

    Without ``dest`` a new temporary folder is made; the caller removes it when done.
    """
    bundle = verify_bundle(path, trust)
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix="flagscale-bundle-")) / "bundle"
    return extract_verified(bundle, dest)


# --- commands ----------------------------------------------------------------------------------

SIGN_KEY_ENV = "FLAGSCALE_SIGNING_KEY"


def keygen_command(out: str, *, force: bool = False) -> None:
    """``inv keygen``: write a release key pair and say where."""
    print(generate_release_keys(Path(out), force=force))


def bundle_command(
    devices: list[str],
    *,
    version: str,
    all_devices: bool = False,
    sign_key: str | None = None,
    out_dir: str | None = None,
    ref: str = "HEAD",
) -> Path:
    """``inv bundle``: cut a signed bundle in the current workspace; print its path and sha256.

    Without ``sign_key`` the key named by ``$FLAGSCALE_SIGNING_KEY`` is used.
    """
    key = sign_key or os.environ.get(SIGN_KEY_ENV) or None
    path = create_bundle(
        find_workspace(),
        devices,
        version=version,
        sign_key=Path(key) if key else None,
        out_dir=Path(out_dir) if out_dir else None,
        all_devices=all_devices,
        ref=ref,
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"{path} sha256 {digest}")
    return path


def verify_command(path: str, trust: str | None) -> VerifiedBundle:
    """``inv verify-bundle``: verify a bundle against a trusted public key; print what it holds."""
    if not trust:
        raise BundleError(
            "no trusted key given", hint="pass the release manager's public key with --trust K.pub"
        )
    bundle = verify_bundle(Path(path), Path(trust))
    print(bundle.summary())
    return bundle


# --- the id git gives a file -----------------------------------------------------------------


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob holding ``data`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
