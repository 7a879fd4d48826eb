"""Vendor data for the build tests: real patch sets made by ``inv patch``'s library, real clones.

``make_origin`` builds a vendor's FlagScale (tests/vendor_workspace.py), turns the adaptation into
patch sets with ``flagscale.vendor.make_sets.create_patch_sets``, records the history and commits
it. A user then clones that repository (``clone_user``) and builds from the clone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from flagscale.upstream.workspace import find_workspace
from flagscale.vendor.history import load_history, write_history
from flagscale.vendor.history_record import record_history
from flagscale.vendor.make_sets import PatchRequest, create_patch_sets
from tests.gitrepos import commit_all, run_git, snapshot, write_files
from tests.vendor_workspace import (
    BACKEND,
    VendorWorkspace,
    adapt_backend,
    adapt_flagscale,
    make_vendor_workspace,
)

DEVICE = "Metax_C550"
BACKENDS = ["FlagScale", BACKEND]
CONTACT = "Metax Support <support@metax.invalid>"
SKIP = (".git",)
OWN = (".flagscale-build.json", ".flagscale-build.state")


@dataclass(frozen=True)
class Origin:
    """The vendor's repository after ``inv patch`` and recording the history."""

    vendor: VendorWorkspace
    key: Path | None
    commit: str  # the history commit

    @property
    def root(self) -> Path:
        return self.vendor.root


def quiet(_line: str) -> None:
    """A report callable that drops the tool's progress lines."""


def make_origin(tmp: Path, *, device: str = DEVICE, encrypt: bool = False) -> Origin:
    """A vendor FlagScale holding patch sets for ``device`` (encrypted with a new key if asked)."""
    vendor = make_vendor_workspace(tmp / "vendor")
    adapt_backend(vendor)
    adapt_flagscale(vendor)
    key = tmp / "keys" / f"{device}.key" if encrypt else None
    make_sets(vendor.root, device, vendor.base, key)
    commit = record(vendor.root, device)
    return Origin(vendor, key, commit)


def make_sets(
    root: Path, device: str, base: str, key: Path | None = None, tasks=("train",)
) -> None:
    """``inv patch --device-type <device> --backend FlagScale Megatron-LM --commit <base>``."""
    ws = find_workspace(root)
    create_patch_sets(
        ws,
        PatchRequest(
            device_type=device,
            tasks=list(tasks),
            backends=BACKENDS,
            commit=base,
            key_path=key,
            backend_version="0.16.1",
            models=["aquila"],
            message=f"{device}: patch sets",
            contact=CONTACT,
            report=quiet,
        ),
    )


def record(root: Path, device: str, commit: str | None = None) -> str:
    """Record the commit holding ``device``'s sets in the history and commit the history."""
    ws = find_workspace(root)
    entries = record_history(ws, device, backends=BACKENDS, commit=commit, report=quiet)
    run_git(root, "add", "hardware/patch_history.yaml")
    run_git(root, "commit", "-q", "-m", f"history: {device}")
    return entries[0].commit


def clone_user(origin_root: Path, destination: Path, *, init: bool = False) -> Path:
    """A user's fresh clone of the vendor's FlagScale (submodules initialised if ``init``)."""
    run_git(destination.parent, "clone", "-q", str(origin_root), str(destination))
    if init:
        run_git(destination, "submodule", "update", "--init", "-q")
    return destination


def add_history_commit(root: Path, device: str, commit: str, task: str = "train") -> None:
    """Append ``commit`` to ``device``'s history line by hand and commit the history."""
    ws = find_workspace(root)
    history = load_history(ws)
    line = history.setdefault(device, {}).setdefault(task, {}).setdefault("+".join(BACKENDS), [])
    line.append(commit)
    write_history(ws, history)
    run_git(root, "add", "hardware/patch_history.yaml")
    run_git(root, "commit", "-q", "-m", f"history: {device} {commit[:7]}")


def rewrite_set(
    root: Path,
    device: str,
    backend: str,
    *,
    patch: bytes | None = None,
    metadata: dict | None = None,
    raw_metadata: bytes | None = None,
    keep_results: bool = False,
) -> str:
    """Change a committed set by hand (patch bytes, metadata keys), commit it and record it.

    The patch's sha256 in the metadata follows the new bytes unless ``metadata`` sets it. A new
    patch makes the set one without recorded results (as sets made before they were recorded),
    unless ``keep_results``: then the metadata promises what the old patch produced.
    Returns the new history commit.
    """
    folder = root / "hardware" / device / backend
    meta_path = folder / "metadata.yaml"
    data = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    entry = data["patches"][0]
    if patch is not None:
        (folder / entry["file"]).write_bytes(patch)
        entry["sha256"] = hashlib.sha256(patch).hexdigest()
        if not keep_results:
            data.pop("results", None)
            data.pop("results_sealed", None)
    for key, value in (metadata or {}).items():
        data[key] = value
    text = raw_metadata or yaml.safe_dump(data, sort_keys=True).encode()
    meta_path.write_bytes(text)
    commit = commit_all(root, f"{device}/{backend}: changed by hand")
    add_history_commit(root, device, commit)
    return commit


def set_patch(root: Path, device: str, backend: str) -> bytes:
    """The stored bytes of a set's (single) patch file."""
    folder = root / "hardware" / device / backend
    data = yaml.safe_load((folder / "metadata.yaml").read_text(encoding="utf-8"))
    return (folder / data["patches"][0]["file"]).read_bytes()


# --- what the vendor had ------------------------------------------------------------------------


def resolved_snapshot(folder: Path, layer: Path) -> dict[str, tuple[str, bytes]]:
    """``snapshot`` with overlay symlinks into ``layer`` replaced by what they point to."""
    entries = snapshot(folder, skip=SKIP)
    real_layer = os.path.realpath(layer)
    for path, (kind, _content) in list(entries.items()):
        if kind != "link":
            continue
        target = os.path.realpath(folder / path)
        if target.startswith(real_layer + os.sep):
            mode = "exec" if os.access(target, os.X_OK) else "file"
            entries[path] = (mode, Path(target).read_bytes())
    return entries


def vendor_backend_files(vendor: VendorWorkspace) -> dict[str, tuple[str, bytes]]:
    """The vendor's third_party/Megatron-LM as a build should reproduce it."""
    entries = resolved_snapshot(vendor.checkout, vendor.root / "backends" / BACKEND)
    entries.pop(".git")  # the submodule's gitdir pointer
    entries.pop("run.log")  # ignored by the upstream's .gitignore: never part of a patch
    return entries


def vendor_flagscale_files(vendor: VendorWorkspace) -> dict[str, tuple[str, bytes]]:
    """The vendor's own FlagScale files (outside third_party/, hardware/, backends/)."""
    entries = snapshot(vendor.root, skip=(".git", "third_party", "hardware", "backends", "build"))
    return entries


def built_flagscale_files(build: Path) -> dict[str, tuple[str, bytes]]:
    entries = snapshot(build, skip=(".git", "third_party", "backends"))
    for name in OWN:
        entries.pop(name, None)
    return entries


def tree_files(build: Path, relative: str) -> dict[str, tuple[str, bytes]]:
    return snapshot(build / relative, skip=SKIP)


def copy_tree(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True)
    return destination


def stat_signature(folder: Path) -> Iterator[tuple[str, int, int]]:
    """(path, inode, mtime_ns) of the folder and everything in it."""
    yield ("", folder.stat().st_ino, folder.stat().st_mtime_ns)
    for base, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            info = os.lstat(os.path.join(base, name))
            yield (os.path.relpath(os.path.join(base, name), folder), info.st_ino, info.st_mtime_ns)


def write_and_commit(root: Path, files: dict, message: str) -> str:
    write_files(root, files)
    return commit_all(root, message)


# --- a generated, bigger workspace (kill tests, benchmark) --------------------------------------


@dataclass(frozen=True)
class BigOrigin:
    """A generated FlagScale with a large upstream, its base layer and one device's sets."""

    root: Path
    base: str
    pin: str
    commit: str  # the history commit
    patches: dict[str, bytes]  # backend → plaintext patch


def module_text(index: int, lines: int = 40) -> str:
    """Deterministic Python-looking source of about 1.5 KB."""
    body = "".join(
        f"    value_{n} = {index * 31 + n}  # line {n} of module {index}\n" for n in range(lines)
    )
    return f'"""Module {index}."""\n\n\ndef compute_{index}():\n{body}    return value_0\n'


def make_big_origin(
    tmp: Path,
    *,
    files: int = 3000,
    layer: int = 100,
    patched: int = 100,
    device: str = DEVICE,
) -> BigOrigin:
    """Upstream of ``files`` files, a base layer overriding ``layer`` of them, and a vendor set
    changing ``patched`` others (plus one FlagScale file), made with ``git diff --binary
    --full-index`` against the layered tree and written in the documented layout."""
    from flagscale.overlay.layered_trees import export_tree, layered_tree
    from flagscale.vendor.patchset import PatchMetadata, dump_metadata
    from tests.gitrepos import make_workspace

    upstream = {f"pkg{i // 100:02d}/module_{i:04d}.py": module_text(i) for i in range(files)}
    names = sorted(upstream)
    root, _ = make_workspace(tmp, {BACKEND: upstream}, extra={"flagscale/train.py": "T = 1\n"})
    overrides = {
        f"backends/{BACKEND}/{name}": upstream[name].replace("line 1 ", "line 1 (flagscale) ")
        for name in names[:layer]
    }
    base = write_and_commit(root, overrides, "base layer")
    ws = find_workspace(root)
    pin = run_git(root, "rev-parse", f"{base}:third_party/{BACKEND}")

    layered = tmp / "layered"
    export_tree(ws, layered_tree(ws, BACKEND, base), layered)
    run_git(layered, "init", "-q")
    run_git(layered, "add", "-A")
    edits = {
        name: (layered / name).read_text().replace("line 20 ", "line 20 (vendor) ")
        for name in names[layer : layer + patched]
    }
    write_files(layered, edits)
    backend_patch = run_git(layered, "diff", "--binary", "--full-index").encode() + b"\n"

    flagscale_patch = (
        b"diff --git a/flagscale/train.py b/flagscale/train.py\n"
        b"--- a/flagscale/train.py\n+++ b/flagscale/train.py\n@@ -1 +1 @@\n-T = 1\n+T = 2\n"
    )
    patches = {BACKEND: backend_patch, "FlagScale": flagscale_patch}
    for backend, data in patches.items():
        metadata = PatchMetadata(
            device_type=device,
            backend=backend,
            flagscale_base=base,
            backend_pin=None if backend == "FlagScale" else pin,
            backend_version="1.0",
            models=("gpt",),
            tasks=("train",),
            contact=CONTACT,
            tool_version="0.1.0",
            patches=(
                {
                    "file": f"{backend}.patch",
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "encrypted": False,
                },
            ),
            encryption=None,
        )
        folder = f"hardware/{device}/{backend}"
        write_files(
            root,
            {f"{folder}/{backend}.patch": data, f"{folder}/metadata.yaml": dump_metadata(metadata)},
        )
    commit_all(root, f"{device}: patch sets")
    commit = record(root, device)
    return BigOrigin(root, base, pin, commit, patches)
