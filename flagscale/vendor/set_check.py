"""Checking the patch sets in the work tree, as a commit hook does (``flagscale-ci check-sets``).

Each ``hardware/<Vendor_Model>/<backend>/`` holding a ``metadata.yaml`` must be a whole set: the
metadata valid against its schema and naming its own folder, the backend declared (or
``FlagScale``), every patch file it lists present with its sha256, and nothing else in the folder
(a plaintext patch left beside its encrypted copy would publish what the encryption hides).
Encrypted sets are checked without their key: the sha256 is that of the stored bytes.
"""

from __future__ import annotations

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git
from flagscale.upstream.workspace import DECLARATION, FLAGSCALE, Workspace
from flagscale.vendor.patchset import (
    HARDWARE,
    METADATA,
    read_metadata,
    read_stored_patches,
    set_folder,
)

__all__ = ["check_set", "check_sets", "set_folders"]


def set_folders(ws: Workspace) -> list[tuple[str, str]]:
    """``(device type, backend)`` of every folder ``hardware/*/*/`` with a metadata file."""
    found = []
    for path in sorted(ws.path(HARDWARE).glob(f"*/*/{METADATA}")):
        device_type, backend = path.parent.parent.name, path.parent.name
        if not device_type.startswith(".") and not backend.startswith("."):
            found.append((device_type, backend))
    return found


def check_set(ws: Workspace, device_type: str, backend: str) -> None:
    """Raise a one-line FlagScaleError for the first thing wrong with this set."""
    folder = set_folder(device_type, backend)
    metadata = read_metadata(ws, device_type, backend)
    if backend != FLAGSCALE and backend not in ws.backends:
        raise FlagScaleError(
            f"{folder}/{METADATA}: backend {backend} is not declared in {DECLARATION}",
            hint="declare it there, or move the set to the folder of a declared backend",
        )
    read_stored_patches(ws, metadata)
    listed = {METADATA, *(entry["file"] for entry in metadata.patches)}
    for name in _files_in(ws, folder):
        if name not in listed:
            raise FlagScaleError(
                f"{folder}/{name} is not listed in {folder}/{METADATA}",
                hint=f"remove it (git rm -- {folder}/{name}) or re-run inv patch",
            )


def check_sets(ws: Workspace) -> list[str]:
    """One line per set with a problem (see :func:`check_set`); ``[]`` when all are sound."""
    problems = []
    for device_type, backend in set_folders(ws):
        try:
            check_set(ws, device_type, backend)
        except FlagScaleError as exc:
            problems.append(str(exc))
    return problems


def _files_in(ws: Workspace, folder: str) -> list[str]:
    """Names under ``folder`` that git tracks or would add (ignored files do not count)."""
    listed = git(
        ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", f"{folder}/"],
        ws.root,
    )
    names = set()
    for entry in listed.decode("utf-8", "surrogateescape").split("\0"):
        path = ws.root / entry
        if entry and (path.exists() or path.is_symlink()):  # deleted files are not in the set
            names.add(entry[len(folder) + 1 :])
    return sorted(names)
