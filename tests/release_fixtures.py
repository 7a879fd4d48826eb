"""Workspaces with committed vendor patch sets, for the bundle and matrix tests.

Patch sets are written in the documented layout (hardware/<V_M>/<backend>/metadata.yaml and
<backend>.patch[.enc]) from real ``git diff --binary --full-index`` output, and recorded in
hardware/patch_history.yaml at the commit that holds them, all by the real git command line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagscale.vendor import crypto
from flagscale.vendor.history import HISTORY, dump_history
from flagscale.vendor.patchset import PatchMetadata, dump_metadata
from tests.gitrepos import FileMap, commit_all, make_workspace, run_git, write_files

BACKEND = "Megatron-LM"

UPSTREAM: FileMap = {
    "megatron/core/a.py": "".join(f"a line {i}\n" for i in range(1, 21)),
    "megatron/core/b.py": "".join(f"b line {i}\n" for i in range(1, 21)),
    "megatron/core/c.py": "".join(f"c line {i}\n" for i in range(1, 21)),
    "README.md": "Megatron-LM\n",
}


@dataclass
class ReleaseWorkspace:
    """A FlagScale superproject with Megatron-LM as a real submodule."""

    root: Path
    upstream: Path
    tmp: Path

    @property
    def pin(self) -> str:
        return run_git(self.root, "rev-parse", f"HEAD:third_party/{BACKEND}")

    def head(self) -> str:
        return run_git(self.root, "rev-parse", "HEAD")


def make_release_workspace(tmp: Path) -> ReleaseWorkspace:
    root, upstreams = make_workspace(tmp, {BACKEND: dict(UPSTREAM)})
    return ReleaseWorkspace(root=root, upstream=upstreams[BACKEND], tmp=tmp)


def make_patch(
    repo: Path, commit: str, changes: FileMap, *, before: FileMap | None = None
) -> bytes:
    """A binary, full-index patch of ``changes`` made in a clone of ``repo`` at ``commit``.

    With ``before`` those files are committed in the clone first, so the patch expects them:
    such a patch conflicts with ``commit`` itself.
    """
    work = Path(tempfile.mkdtemp(prefix="patchwork-", dir=repo.parent)) / "clone"
    run_git(repo.parent, "clone", "-q", "--no-checkout", str(repo), str(work))
    run_git(work, "checkout", "-q", "--force", commit)
    if before:
        write_files(work, before)
        commit_all(work, "vendor's unrelated base")
    write_files(work, changes)
    run_git(work, "add", "-A")
    patch = run_git_bytes(work, "diff", "--cached", "--binary", "--full-index")
    shutil.rmtree(work.parent)
    return patch


def run_git_bytes(cwd: Path, *args: str) -> bytes:
    """Raw stdout of a git command (patches are bytes)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True).stdout


def write_patch_set(
    rw: ReleaseWorkspace,
    device: str,
    backend: str,
    patch: bytes,
    *,
    base: str,
    tasks: tuple[str, ...] = ("train",),
    key_path: Path | None = None,
) -> None:
    """Write hardware/<device>/<backend>/ (not committed); encrypted when ``key_path`` is given."""
    folder = f"hardware/{device}/{backend}"
    name = f"{backend}.patch"
    stored = patch
    encryption = None
    if key_path is not None:
        key, _ = crypto.load_or_create_key(key_path)
        stored = crypto.encrypt_file_bytes(patch, key, name=f"{folder}/{name}")
        name += crypto.ENCRYPTED_SUFFIX
        encryption = {"algorithm": crypto.ALGORITHM, "key_id": crypto.key_id(key)}
    pin = (
        None
        if backend == "FlagScale"
        else run_git(rw.root, "rev-parse", f"{base}:third_party/{backend}")
    )
    metadata = PatchMetadata(
        device_type=device,
        backend=backend,
        flagscale_base=base,
        backend_pin=pin,
        backend_version="0.16.1",
        models=("llama",),
        tasks=tuple(tasks),
        contact="Vendor <vendor@example.invalid>",
        tool_version="0.1.0",
        patches=(
            {
                "file": name,
                "sha256": hashlib.sha256(stored).hexdigest(),
                "encrypted": key_path is not None,
            },
        ),
        encryption=encryption,
    )
    write_files(
        rw.root,
        {
            f"{folder}/metadata.yaml": dump_metadata(metadata),
            f"{folder}/{name}": stored,
        },
    )


def record_history(
    rw: ReleaseWorkspace, entries: dict[str, dict[str, dict[str, list[str]]]]
) -> str:
    """Write hardware/patch_history.yaml (device → task → key → commits) and commit it."""
    write_files(rw.root, {HISTORY: dump_history(entries)})
    return commit_all(rw.root, "record patch history")


def bump_pin(rw: ReleaseWorkspace, changes: FileMap) -> str:
    """Commit ``changes`` upstream and move FlagScale's pin (the gitlink) to it; commit."""
    write_files(rw.upstream, changes)
    new_pin = commit_all(rw.upstream, "upstream change")
    checkout = rw.root / "third_party" / BACKEND
    run_git(checkout, "fetch", "-q", "origin")
    run_git(checkout, "checkout", "-q", new_pin)
    run_git(rw.root, "add", f"third_party/{BACKEND}")
    return commit_all(rw.root, "bump Megatron-LM pin")


def standard_release(tmp: Path) -> tuple[ReleaseWorkspace, dict[str, str]]:
    """Two device types with Megatron-LM sets (one also with a FlagScale set), committed."""
    rw = make_release_workspace(tmp)
    base = rw.head()
    write_patch_set(
        rw,
        "Metax_C550",
        BACKEND,
        make_patch(rw.upstream, rw.pin, {"megatron/core/a.py": "metax\n"}),
        base=base,
    )
    write_patch_set(
        rw,
        "Metax_C550",
        "FlagScale",
        make_patch(rw.root, base, {"README.md": "FlagScale on Metax\n"}),
        base=base,
    )
    write_patch_set(
        rw,
        "Ascend_910B",
        BACKEND,
        make_patch(
            rw.upstream, rw.pin, {"megatron/core/b.py": "ascend\n", "new dir/ü.bin": b"\0\1\2"}
        ),
        base=base,
    )
    sets_commit = commit_all(rw.root, "vendor patch sets")
    history = record_history(
        rw,
        {
            "Metax_C550": {"train": {"FlagScale+Megatron-LM": [sets_commit]}},
            "Ascend_910B": {"train": {BACKEND: [sets_commit]}},
        },
    )
    return rw, {"base": base, "sets": sets_commit, "history": history}


# --- the matrix scenario ---------------------------------------------------------------------

A, B, C = (f"megatron/core/{name}.py" for name in "abc")


def edit_line(path: str, number: int, text: str) -> dict[str, str]:
    """The upstream file ``path`` with line ``number`` replaced by ``text``."""
    lines = str(UPSTREAM[path]).splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    return {path: "".join(lines)}


def build_scenario(tmp: Path) -> dict[str, Any]:
    rw = make_release_workspace(tmp)
    base, pin = rw.head(), rw.pin
    key = tmp / "keys" / "secret.key"

    def upstream_patch(changes: dict[str, str], before: dict[str, str] | None = None) -> bytes:
        return make_patch(rw.upstream, pin, changes, before=before)

    write_patch_set(rw, "Clean_A1", BACKEND, upstream_patch(edit_line(A, 2, "clean")), base=base)
    flagscale_patch = make_patch(rw.root, base, {"README.md": "FlagScale for Clean_A1\n"})
    write_patch_set(rw, "Clean_A1", "FlagScale", flagscale_patch, base=base)
    write_patch_set(
        rw, "Drift_B1", BACKEND, upstream_patch(edit_line(B, 10, "vendor b")), base=base
    )
    write_patch_set(
        rw, "Drift_C1", BACKEND, upstream_patch(edit_line(C, 10, "vendor c")), base=base
    )
    conflicting = upstream_patch(edit_line(A, 5, "theirs"), before=edit_line(A, 5, "elsewhere"))
    write_patch_set(rw, "Conflict_D1", BACKEND, conflicting, base=base)
    secret = upstream_patch(edit_line(A, 15, "secret"))
    write_patch_set(rw, "Secret_E1", BACKEND, secret, base=base, key_path=key)
    sets = commit_all(rw.root, "vendor patch sets")
    history = {
        "Clean_A1": {"train": {f"FlagScale+{BACKEND}": [sets]}},
        "Drift_B1": {"train": {BACKEND: [sets]}},
        "Drift_C1": {"train": {BACKEND: [sets]}, "inference": {BACKEND: [sets]}},
        "Conflict_D1": {"train": {BACKEND: [sets]}},
        "Secret_E1": {"train": {BACKEND: [sets]}},
    }
    record_history(rw, history)
    # Drift: the pin moves under Drift_B1's hunk, and the base layer replaces Drift_C1's file.
    bump_pin(rw, edit_line(B, 10, "upstream moved b"))
    layered = edit_line(C, 10, "FlagScale's own c")
    write_files(rw.root, {f"backends/{BACKEND}/{C}": layered[C]})
    head = commit_all(rw.root, "base layer changes c.py")
    results = tmp / "logs" / "smoke"
    result = {"version": 1, "case": "tiny_gpt", "reason": None, "losses": [], "golden": None}
    write_files(
        results,
        {
            "Clean_A1/old/result.json": json.dumps(
                {**result, "device_type": "Clean_A1", "status": "failed", "reason": "diverged"}
            ),
            "Clean_A1/tiny_gpt/result.json": json.dumps(
                {**result, "device_type": "Clean_A1", "status": "passed"}
            ),
            "Drift_B1/tiny_gpt/result.json": json.dumps(
                {**result, "device_type": "Drift_B1", "status": "failed", "reason": "step 3"}
            ),
            "broken/result.json": "{not json",
            "other/result.json": json.dumps(["not", "an", "object"]),
        },
    )
    os.utime(results / "Clean_A1/old/result.json", (1735689600, 1735689600))  # 2025-01-01
    os.utime(results / "Clean_A1/tiny_gpt/result.json", (1738368000, 1738368000))  # 2025-02-01
    os.utime(results / "Drift_B1/tiny_gpt/result.json", (1740787200, 1740787200))  # 2025-03-01
    return {"rw": rw, "base": base, "sets": sets, "head": head, "key": key, "results": results}


# --- building archives by hand, for the tamper tests ----------------------------------------


@dataclass(frozen=True)
class Member:
    """An archive entry to write as is: a regular file, or any other tar type."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def pack(members: list[Member]) -> bytes:
    """A .tar.gz of ``members`` in the given order, no checks at all."""
    import gzip

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.linkname = member.linkname
            info.mode = 0o644
            if member.type == tarfile.REGTYPE:
                info.size = len(member.data)
                archive.addfile(info, io.BytesIO(member.data))
            else:
                archive.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


def unpack(data: bytes) -> dict[str, bytes]:
    """Every regular file of a .tar.gz, in order."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive if m.isreg()}  # type: ignore[union-attr]
