"""Benchmark: ``inv refresh`` with nothing to settle against building every device type once.

Generates, in a temporary folder, the workspace of ``benchmarks/bench_matrix.py`` (a 3,000-file
upstream as a real submodule, a 100-file base layer, 10 device types each with a 100-file
Megatron-LM set and a 100-file FlagScale set, all committed and recorded in the history), with
vendor sets that change one line of each file. Then the upstream moves on:

* 200 files no set touches change (their sets stay ``unchanged``);
* the 10 files of Vendor0's set that it patches gain a header line (``moved``);
* 5 files of Vendor1's set change two lines below the vendor's line (``merged``);
* 10 base layer files change far from FlagScale's line (the layer ``merged``).

Measured in the same run: the whole refresh (library call, no smoke jobs: the workspace has no
smoke case); building all 10 device types once (``build_devices``); and, for one unchanged set,
what carrying it costs against a plain ``git apply --check --cached`` of it on an index of its
tree (the "unchanged sets cost about a git apply --check" claim).

Run: ``python benchmarks/bench_refresh.py [--devices 10] [--upstream-files 3000] [--json F]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
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
from flagscale.overlay.layered_trees import layered_tree, scratch_git  # noqa: E402
from flagscale.refresh.carry import carry_patch  # noqa: E402
from flagscale.refresh.flow import Options, start_refresh  # noqa: E402
from flagscale.refresh.objects import Objects  # noqa: E402
from flagscale.refresh.set_carry import Trees, step_between  # noqa: E402
from flagscale.upstream.workspace import load_workspace  # noqa: E402
from tests.release_fixtures import ReleaseWorkspace, write_patch_set  # noqa: E402


def edited(text: str, value: int, tag: str) -> str:
    """``text`` with the line of ``value_<value>`` tagged."""
    return text.replace(f"    value_{value} = ", f"    value_{value} = {tag} and ", 1)


def picks(device: int, args: argparse.Namespace) -> list[int]:
    start = 1 + device * args.patch_files
    return [(start + j * 3) % args.upstream_files for j in range(args.patch_files)]


def make_workspace(tmp: Path, args: argparse.Namespace) -> tuple[Path, Path, list[int]]:
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
    layer_files = list(range(0, args.layer_files * 7, 7))
    layer = {
        f"backends/{BACKEND}/{upstream_path(i)}": edited(module(i), 2, "flagscale")
        for i in layer_files
    }
    declaration = f"version: 1\nbackends:\n  {BACKEND}:\n    source:\n      kind: submodule\n"
    write(root, {"backends/backends.yaml": declaration, **layer})
    base = commit(root, "declare backends, base layer")
    rw = ReleaseWorkspace(root=root, upstream=upstream, tmp=tmp)
    layered = tmp / "layered"
    git(tmp, "clone", "-q", str(upstream), str(layered))
    write(layered, {p[len(f"backends/{BACKEND}/") :]: t for p, t in layer.items()})
    commit(layered, "base layer applied")
    flagscale_work = tmp / "flagscale-work"
    git(tmp, "clone", "-q", str(root), str(flagscale_work))
    for device in range(args.devices):
        name = f"Vendor{device}_X1"
        current = {i: (layered / upstream_path(i)).read_text() for i in picks(device, args)}
        write(layered, {upstream_path(i): edited(t, 5, name) for i, t in current.items()})
        write_patch_set(rw, name, BACKEND, diff(layered), base=base)
        fs_picks = [(device * 37 + j) % 500 for j in range(args.patch_files)]
        own_files = {f"flagscale/part{i // 50}/own{i:03d}.py": i for i in fs_picks}
        write(flagscale_work, {p: edited(module(i, "fs"), 5, name) for p, i in own_files.items()})
        write_patch_set(rw, name, "FlagScale", diff(flagscale_work), base=base)
    sets = commit(root, "vendor patch sets")
    history = "".join(
        f'Vendor{d}_X1:\n  train:\n    FlagScale+{BACKEND}:\n      - "{sets}"\n'
        for d in range(args.devices)
    )
    write(root, {"hardware/patch_history.yaml": history})
    commit(root, "record history")
    return root, upstream, layer_files


def move_upstream(upstream: Path, args: argparse.Namespace, layer_files: list[int]) -> str:
    touched = {i for d in range(args.devices) for i in picks(d, args)} | set(layer_files)
    untouched = [i for i in range(args.upstream_files) if i not in touched][:200]
    changes = {upstream_path(i): module(i, "upstream moved") for i in untouched}
    for i in picks(0, args)[:10]:  # moved: a header line above the vendor's hunk
        changes[upstream_path(i)] = "# a new header line\n" + module(i)
    for i in picks(1, args)[:5]:  # merged: a change inside the vendor's hunk's context
        changes[upstream_path(i)] = edited(module(i), 7, "upstream")
    for i in layer_files[:10]:  # the base layer merges
        changes[upstream_path(i)] = edited(module(i), 35, "upstream")
    write(upstream, changes)
    return commit(upstream, "upstream moves on")


def unchanged_set_cost(root: Path, args: argparse.Namespace, repeat: int) -> dict[str, float]:
    """Carrying one unchanged set, against ``git apply --check --cached`` of it on its tree."""
    ws = load_workspace(root)
    device = f"Vendor{args.devices - 1}_X1"
    history_commit = git(root, "log", "-1", "--format=%H", "--grep=vendor patch sets")
    base = git(root, "rev-parse", f"{history_commit}~1")
    patch = (root / "hardware" / device / BACKEND / f"{BACKEND}.patch").read_bytes()
    head = git(root, "rev-parse", "HEAD")
    objects = Objects(ws)
    trees = Trees(ws, objects)
    step = step_between(ws, trees, BACKEND, base, head, device)
    objects.changed_paths(step.old, step.new)  # once per refresh, shared by every set
    carry_patch(objects, step, patch, device)  # reads the old tree's index, once per refresh
    tree = layered_tree(ws, BACKEND, base)
    index = Path(tempfile.mkdtemp()) / "index"
    scratch_git(ws, ["read-tree", tree], index=index)
    apply_check = ["apply", "--check", "--cached", "-"]
    carry, check = [], []
    for _ in range(repeat):  # alternated, so that both see the same machine
        carry.append(timed(lambda: carry_patch(objects, step, patch, device))[0])
        check.append(timed(lambda: scratch_git(ws, apply_check, stdin=patch, index=index))[0])
    shutil.rmtree(index.parent)
    return {
        "carry_unchanged_set_s": statistics.median(carry),
        "git_apply_check_s": statistics.median(check),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--upstream-files", type=int, default=3000)
    parser.add_argument("--layer-files", type=int, default=100)
    parser.add_argument("--patch-files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the generated workspace")
    args = parser.parse_args()
    if args.devices < 3:  # upstream moves under devices 0 and 1; the last one must stay unchanged
        parser.error("--devices must be at least 3")

    tmp = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    isolate(tmp)
    try:
        setup_s, (root, upstream, layer_files) = timed(lambda: make_workspace(tmp, args))
        new = move_upstream(upstream, args, layer_files)
        ws = load_workspace(root)
        report = io.StringIO()
        options = Options(smoke=False, report=lambda _line: None)
        with contextlib.redirect_stdout(report), contextlib.redirect_stderr(io.StringIO()):
            refresh_s, document = timed(
                lambda: start_refresh(ws, BACKEND, new, checkout=None, options=options)
            )
        devices = tuple(f"Vendor{d}_X1" for d in range(args.devices))
        ws = load_workspace(root)
        build_s, _ = timed(
            lambda: build_devices(ws, BuildRequest(devices=devices, report=lambda _line: None))
        )
        per_set = unchanged_set_cost(root, args, args.repeat)
        sets = [s for d in document["devices"] for s in d["sets"]]
        figures = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}",
            "device_types": args.devices,
            "patch_sets": len(sets),
            "set_statuses": {
                status: sum(s["status"] == status for s in sets)
                for status in ("unchanged", "carried")
            },
            "file_classes": document["summary"],
            "layer": document["layer"]["status"],
            "upstream_files": args.upstream_files,
            "setup_s": round(setup_s, 2),
            "refresh_s": round(refresh_s, 2),
            "build_every_device_once_s": round(build_s, 2),
            "refresh_vs_builds": round(refresh_s / build_s, 2),
            **{key: round(value, 4) for key, value in per_set.items()},
            "unchanged_set_vs_apply_check": round(
                per_set["carry_unchanged_set_s"] / per_set["git_apply_check_s"], 2
            ),
        }
        print(report.getvalue().split("\n\n")[0])
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
