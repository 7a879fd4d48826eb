"""Benchmark: ``inv matrix`` over 10 device types x 2 backends against one full build.

Generates a workspace in a temporary folder (nothing outside it is touched):

* Megatron-LM upstream: ``--upstream-files`` files (default 3,000), a real git submodule;
* FlagScale's base layer: ``--layer-files`` whole files over it (default 100);
* 10 device types, each with a Megatron-LM patch set and a FlagScale patch set of
  ``--patch-files`` changed files each (default 100), made with ``git diff --binary
  --full-index`` against the layered tree, committed and recorded in the history;
* then a pin bump and a base-layer change, so some sets drift.

Then it times the matrix (cold: fresh scratch repository; warm: again) and one full
``inv build --device`` of one device type (``flagscale.builds.builder.build_devices``), and
prints the figures (``--json PATH`` writes them too). Run: ``python benchmarks/bench_matrix.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.generated import (  # noqa: E402
    BACKEND,
    commit,
    diff,
    git,
    module,
    timed,
    upstream_path,
    write,
)
from benchmarks.isolation import isolate  # noqa: E402
from flagscale.builds.builder import BuildRequest, build_devices  # noqa: E402
from flagscale.overlay import layered_trees  # noqa: E402
from flagscale.release.matrix import build_matrix, render_table  # noqa: E402
from flagscale.upstream.workspace import load_workspace  # noqa: E402
from tests.release_fixtures import ReleaseWorkspace, write_patch_set  # noqa: E402


def make_workspace(tmp: Path, args: argparse.Namespace) -> tuple[ReleaseWorkspace, dict]:
    upstream = tmp / "upstreams" / BACKEND
    upstream.mkdir(parents=True)
    git(upstream, "init", "-q", "-b", "main")
    write(upstream, {upstream_path(i): module(i) for i in range(args.upstream_files)})
    commit(upstream, "upstream")
    root = tmp / "FlagScale"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    own = {f"flagscale/part{i // 50}/own{i:03d}.py": module(i, "fs") for i in range(500)}
    write(root, {"README.md": "FlagScale\n", ".gitignore": "/build/\n", **own})
    commit(root, "FlagScale")
    git(root, "submodule", "add", "-q", upstream.as_uri(), f"third_party/{BACKEND}")
    layer = {
        f"backends/{BACKEND}/{upstream_path(i)}": module(i, "flagscale layer")
        for i in range(0, args.layer_files * 7, 7)
    }
    declaration = f"version: 1\nbackends:\n  {BACKEND}:\n    source:\n      kind: submodule\n"
    write(root, {"backends/backends.yaml": declaration, **layer})
    base = commit(root, "declare backends, base layer")
    rw = ReleaseWorkspace(root=root, upstream=upstream, tmp=tmp)
    layered = tmp / "layered"
    git(tmp, "clone", "-q", str(upstream), str(layered))
    for relative, text in layer.items():
        write(layered, {relative[len(f"backends/{BACKEND}/") :]: text})
    commit(layered, "base layer applied")
    flagscale_work = tmp / "flagscale-work"
    git(tmp, "clone", "-q", str(root), str(flagscale_work))
    for device_index in range(args.devices):
        device = f"Vendor{device_index}_X1"
        start = 1 + device_index * args.patch_files
        picks = [(start + j * 3) % args.upstream_files for j in range(args.patch_files)]
        write(layered, {upstream_path(i): module(i, f"{device} patch") for i in picks})
        write_patch_set(rw, device, BACKEND, diff(layered), base=base)
        fs_picks = [(device_index * 37 + j) % 500 for j in range(args.patch_files)]
        write(
            flagscale_work,
            {f"flagscale/part{i // 50}/own{i:03d}.py": module(i, f"{device}") for i in fs_picks},
        )
        patch = diff(flagscale_work)
        write_patch_set(rw, device, "FlagScale", patch, base=base)
    sets = commit(root, "vendor patch sets")
    history = "".join(
        f'Vendor{d}_X1:\n  train:\n    FlagScale+{BACKEND}:\n      - "{sets}"\n'
        for d in range(args.devices)
    )
    write(root, {"hardware/patch_history.yaml": history})
    commit(root, "record history")
    # Drift: change a file the first device patches, upstream (pin bump) and in the layer.
    first = upstream_path(1)
    write(upstream, {first: module(1, "upstream moved")})
    new_pin = commit(upstream, "upstream change")
    checkout = root / "third_party" / BACKEND
    git(checkout, "fetch", "-q", "origin")
    git(checkout, "checkout", "-q", new_pin)
    write(root, {f"backends/{BACKEND}/{upstream_path(1 + args.patch_files)}": "changed\n"})
    head = commit(root, "bump pin, change base layer")
    return rw, {"base": base, "sets": sets, "head": head}


def build_trees(ws, commits: dict) -> None:  # type: ignore[no-untyped-def]
    """The four trees the matrix needs (2 backends x recorded base and HEAD), timed alone."""
    for at in (commits["base"], commits["head"]):
        layered_trees.layered_tree(ws, BACKEND, at)
        layered_trees.flagscale_tree(ws, at, exclude=layered_trees.WORKTREE_EXCLUDES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--upstream-files", type=int, default=3000)
    parser.add_argument("--layer-files", type=int, default=100)
    parser.add_argument("--patch-files", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the generated workspace")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    isolate(tmp)
    os.environ["GIT_ALLOW_PROTOCOL"] = "file"
    try:
        setup_s, (rw, commits) = timed(lambda: make_workspace(tmp, args))
        ws = load_workspace(rw.root)
        cold_s, document = timed(lambda: build_matrix(ws))
        warm_s, _ = timed(lambda: build_matrix(ws))
        trees_s, _ = timed(lambda: build_trees(ws, commits))
        build_s, _ = timed(
            lambda: build_devices(ws, BuildRequest(devices=("Vendor0_X1",), report=lambda _: None))
        )
        built = sum(1 for _ in (rw.root / "build" / "Vendor0_X1").rglob("*"))
        figures = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}",
            "device_types": args.devices,
            "backends": 2,
            "patch_sets": len(document["rows"]),
            "upstream_files": args.upstream_files,
            "layer_files": args.layer_files,
            "files_per_patch_set": args.patch_files,
            "summary": document["summary"],
            "setup_s": round(setup_s, 2),
            "matrix_cold_s": round(cold_s, 2),
            "matrix_warm_s": round(warm_s, 2),
            "of_which_4_trees_s": round(trees_s, 2),
            "one_full_build_s": round(build_s, 2),
            "build_tree_entries": built,
            "matrix_vs_build": round(cold_s / build_s, 2),
        }
        print(render_table(document), end="")
        print(json.dumps(figures, indent=2))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"workspace kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
