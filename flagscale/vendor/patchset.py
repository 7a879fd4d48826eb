"""Vendor patch sets: their format on disk, and reading them back.

A patch set is one device type's changes to one backend, against FlagScale at a base commit
with its base layer applied. It lives in ``hardware/<Vendor_Model>/<backend>/``: the patch
(``<backend>.patch``, or ``<backend>.patch.enc`` when encrypted) and ``metadata.yaml``
(schemas/patch-metadata.schema.json). Sets are made by ``flagscale.vendor.make_sets``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, git_ok
from flagscale.core.paths import check_relative
from flagscale.core.schema import parse_document, validate
from flagscale.upstream.workspace import FLAGSCALE, Workspace

__all__ = [
    "DEVICE_TYPE",
    "HARDWARE",
    "TASKS",
    "LoadedPatchSet",
    "PatchMetadata",
    "check_device_type",
    "check_task",
    "dump_metadata",
    "encryption_name",
    "load_patch_set",
    "parse_metadata",
    "read_metadata",
    "read_stored_patches",
    "set_folder",
]

HARDWARE = "hardware"
TASKS = ("train", "inference", "post_train")
DEVICE_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]*_[A-Za-z0-9]+$")
METADATA = "metadata.yaml"
ALGORITHM = "AES-256-GCM"
_QUOTED_KEYS = (
    "flagscale_base",
    "backend_pin",
    "backend_version",
    "sha256",
    "key_id",
    "tool_version",
)
_QUOTED_MAPPINGS = ("results", "results_sealed")


# --- the metadata ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchMetadata:
    """The contents of one set's ``metadata.yaml`` (see schemas/patch-metadata.schema.json)."""

    device_type: str
    backend: str
    flagscale_base: str
    backend_pin: str | None
    backend_version: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    contact: str
    tool_version: str
    patches: tuple[dict[str, Any], ...]
    encryption: dict[str, str] | None
    ci: dict[str, Any] | None = None
    results: dict[str, str | None] | None = None  # target path → blob id (None: deleted)
    results_sealed: dict[str, str] | None = None  # the same as keyed digests (encrypted sets)

    def as_dict(self) -> dict[str, Any]:
        """The document as written (``ci``, ``results``, ``results_sealed`` only when present)."""
        data: dict[str, Any] = {
            "version": 1,
            "device_type": self.device_type,
            "backend": self.backend,
            "flagscale_base": self.flagscale_base,
            "backend_pin": self.backend_pin,
            "backend_version": self.backend_version,
            "models": list(self.models),
            "tasks": list(self.tasks),
            "contact": self.contact,
            "tool_version": self.tool_version,
            "patches": [dict(p) for p in self.patches],
            "encryption": dict(self.encryption) if self.encryption else None,
        }
        if self.ci is not None:
            data["ci"] = self.ci
        if self.results is not None:
            data["results"] = dict(self.results)
        if self.results_sealed is not None:
            data["results_sealed"] = dict(self.results_sealed)
        return data


class _Quoted(str):
    """A string YAML must write in double quotes (commit ids, hashes, versions)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, '"')
)


def _quote_ids(value: Any, key: str = "") -> Any:
    if isinstance(value, dict) and key in _QUOTED_MAPPINGS:  # every value is an id
        return {k: _Quoted(v) if isinstance(v, str) else v for k, v in value.items()}
    if isinstance(value, dict):
        return {k: _quote_ids(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_quote_ids(v, key) for v in value]
    if isinstance(value, str) and key in _QUOTED_KEYS:
        return _Quoted(value)
    return value


def dump_metadata(metadata: PatchMetadata) -> bytes:
    """``metadata.yaml`` bytes: keys sorted, ids quoted, no dates — same metadata, same bytes."""
    text = yaml.dump(
        _quote_ids(metadata.as_dict()),
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=None,
        allow_unicode=True,
        width=4096,
    )
    return text.encode("utf-8")


def parse_metadata(data: bytes, source: str) -> PatchMetadata:
    """Parse and check ``metadata.yaml`` bytes; ``source`` names the file in errors."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FlagScaleError(f"{source}: not UTF-8 text") from None
    doc = validate(parse_document(text, source), "patch-metadata", source)
    metadata = PatchMetadata(
        device_type=doc["device_type"],
        backend=doc["backend"],
        flagscale_base=doc["flagscale_base"],
        backend_pin=doc["backend_pin"],
        backend_version=doc["backend_version"],
        models=tuple(doc["models"]),
        tasks=tuple(doc["tasks"]),
        contact=doc["contact"],
        tool_version=doc["tool_version"],
        patches=tuple(doc["patches"]),
        encryption=doc["encryption"],
        ci=doc.get("ci"),
        results=doc.get("results"),
        results_sealed=doc.get("results_sealed"),
    )
    _check_consistent(metadata, source)
    return metadata


def _check_consistent(metadata: PatchMetadata, source: str) -> None:
    encrypted = {bool(p["encrypted"]) for p in metadata.patches}
    if encrypted == {True} and metadata.encryption is None:
        raise FlagScaleError(f"{source}: patches are encrypted but encryption is null")
    if True not in encrypted and metadata.encryption is not None:
        raise FlagScaleError(f"{source}: encryption is set but no patch is encrypted")
    if (metadata.backend == FLAGSCALE) != (metadata.backend_pin is None):
        raise FlagScaleError(
            f"{source}: backend_pin must be null for {FLAGSCALE} and a commit for upstreams"
        )
    if metadata.encryption is not None and metadata.results is not None:
        raise FlagScaleError(
            f"{source}: an encrypted set records results_sealed, not results (which would show"
            " the paths and contents the encrypted patch changes)"
        )
    if metadata.encryption is None and metadata.results_sealed is not None:
        raise FlagScaleError(f"{source}: results_sealed is for encrypted sets; use results")


def set_folder(device_type: str, backend: str) -> str:
    """``hardware/<device type>/<backend>``, relative to the workspace root."""
    return f"{HARDWARE}/{device_type}/{backend}"


def encryption_name(device_type: str, backend: str, file: str) -> str:
    """The name an encrypted patch file is bound to: its workspace path without ``.enc``."""
    return f"{set_folder(device_type, backend)}/{file.removesuffix('.enc')}"


# --- validation --------------------------------------------------------------------------------


def check_device_type(device_type: str) -> str:
    """``device_type`` if it is ``Vendor_Model`` (one underscore, vendor capitalised)."""
    if not DEVICE_TYPE.match(device_type or ""):
        raise FlagScaleError(
            f"device type {device_type!r} is not Vendor_Model",
            hint="one underscore, vendor capitalised, letters and digits: e.g. Metax_C550",
        )
    return device_type


def check_task(task: str) -> str:
    """``task`` if it is one of TASKS."""
    if task not in TASKS:
        raise FlagScaleError(f"unknown task {task!r}", hint=f"known tasks: {', '.join(TASKS)}")
    return task


# --- reading sets (for builds) -----------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPatchSet:
    """A set read back: its metadata and the plaintext of each patch file, in metadata order."""

    metadata: PatchMetadata
    patches: tuple[bytes, ...]


def _read_file(ws: Workspace, path: str, commit: str | None) -> bytes | None:
    if commit is None:
        full = ws.path(path)
        return full.read_bytes() if full.is_file() else None
    if not git_ok(["cat-file", "-e", f"{commit}:{path}"], ws.root):
        return None
    return git(["cat-file", "blob", f"{commit}:{path}"], ws.root)


def read_metadata(
    ws: Workspace, device_type: str, backend: str, *, commit: str | None = None
) -> PatchMetadata:
    """The metadata of a set, from the work tree or (``commit``) from a FlagScale commit."""
    path = f"{set_folder(device_type, backend)}/{METADATA}"
    source = path if commit is None else f"{path} at {commit}"
    data = _read_file(ws, path, commit)
    if data is None:
        raise FlagScaleError(
            f"{source} does not exist: no {backend} patch set for {device_type}",
            hint="check the device type and backend, or the commit",
        )
    metadata = parse_metadata(data, source)
    if metadata.device_type != device_type or metadata.backend != backend:
        raise FlagScaleError(
            f"{source} describes {metadata.device_type}/{metadata.backend}, not its folder",
            hint="re-run inv patch for this device type",
        )
    return metadata


def read_stored_patches(
    ws: Workspace, metadata: PatchMetadata, *, commit: str | None = None
) -> tuple[bytes, ...]:
    """The stored bytes of each patch file the metadata lists, each checked against its sha256."""
    folder = set_folder(metadata.device_type, metadata.backend)
    stored = []
    for entry in metadata.patches:
        path = f"{folder}/{check_relative(entry['file'], f'{folder}/{METADATA}')}"
        data = _read_file(ws, path, commit)
        if data is None:
            raise FlagScaleError(f"{folder}/{METADATA} lists {entry['file']}, but it is missing")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise FlagScaleError(
                f"{path}: sha256 does not match {folder}/{METADATA}",
                hint="restore it from git or re-run inv patch",
            )
        stored.append(data)
    return tuple(stored)


def load_patch_set(
    ws: Workspace,
    device_type: str,
    backend: str,
    *,
    commit: str | None = None,
    key_path: Path | None = None,
) -> LoadedPatchSet:
    """A set with its patches checked against their sha256 and decrypted (``key_path``)."""
    from flagscale.vendor import crypto

    metadata = read_metadata(ws, device_type, backend, commit=commit)
    folder = set_folder(device_type, backend)
    key = None
    if metadata.encryption is not None:
        if key_path is None:
            contact = f" (ask {metadata.contact})" if metadata.contact else ""
            raise FlagScaleError(
                f"{folder} is encrypted with key {metadata.encryption['key_id']}{contact}",
                hint="pass the key file with --key-path",
            )
        key = crypto.load_key(Path(key_path), contact=metadata.contact or None)
    patches = []
    stored = read_stored_patches(ws, metadata, commit=commit)
    for entry, data in zip(metadata.patches, stored, strict=True):
        path = f"{folder}/{entry['file']}"
        if entry["encrypted"]:
            assert key is not None
            data = crypto.decrypt_file_bytes(
                data,
                key,
                name=encryption_name(device_type, backend, entry["file"]),
                source=path,
                key_label=str(key_path),
            )
        patches.append(data)
    return LoadedPatchSet(metadata, tuple(patches))
