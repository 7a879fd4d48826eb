"""Benchmark: ``inv import-flagscale`` on the largest FlagScale fixture, then ``inv build`` of a
converted device type against the floor of extracting the same trees.

Generates the FlagScale checkout of tests/flagscale_checkout.py (base patches, six device types'
vendor sets in every layout, one with 89 per-file patch files, RSA-encrypted sets) with
``--extra`` more upstream files, and a workspace of this tool that never saw FlagScale.

Measured:

* import: the whole ``inv import-flagscale`` process (base layer, every set converted and proved
  by tree hash, history), into fresh clones of the workspace, ``--repeat`` times (median);
* then, in the imported workspace, each ``--repeat`` times interleaved (medians):
  - floor: ``git archive <tree> | tar -x`` of FlagScale's tree and of the layered Megatron-LM tree
    at the import's base commit, then one ``git apply`` of each converted patch set;
  - cold build: ``build/Iluvatar_BI150`` removed, then the library call ``build_devices``.

Run:  python benchmarks/bench_import.py [--extra 1500] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_build import IDENTITY, floor_once, interleaved, settle  # noqa: E402


def run_import(workspace: Path, checkout: Path, keys: Path, new_keys: Path) -> float:
    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "import-flagscale"]
    command += [str(checkout), "--key-path", str(keys), "--new-keys", str(new_keys)]
    started = time.perf_counter()
    subprocess.run(command, cwd=workspace, check=True, capture_output=True)
    return time.perf_counter() - started


def converted_patches(root: Path, device: str) -> dict[str, bytes]:
    """The plain patch of each converted set of ``device`` (backend → bytes)."""
    import yaml

    patches = {}
    for folder in sorted((root / "hardware" / device).iterdir()):
        meta = yaml.safe_load((folder / "metadata.yaml").read_text(encoding="utf-8"))
        patches[folder.name] = (folder / meta["patches"][0]["file"]).read_bytes()
    return patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=int, default=1500, help="more Megatron-LM files")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = parser.parse_args()
    os.environ.update(IDENTITY)

    from flagscale.builds.builder import BuildRequest, build_devices
    from flagscale.overlay.layered_trees import flagscale_tree, layered_tree, scratch_repo
    from flagscale.upstream.workspace import find_workspace
    from tests.flagscale_checkout import BIG, MEGATRON, make_flagscale_checkout
    from tests.gitrepos import make_workspace, run_git

    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        started = time.perf_counter()
        checkout = make_flagscale_checkout(work / "site", extra_files=args.extra)
        pristine, _ = make_workspace(work / "pristine", {"Other": {"other.py": "OTHER = 1\n"}})
        setup = time.perf_counter() - started
        keys, new_keys = checkout.keys["Cambricon"], work / "new-keys"

        imports = []
        for run in range(args.repeat):
            workspace = work / f"workspace-{run}"
            run_git(work, "clone", "-q", str(pristine), str(workspace))
            imports.append(run_import(workspace, checkout.root, keys, new_keys))
        imported = work / "workspace-0"
        report = json.loads((imported / "build/import-flagscale.json").read_text())

        ws = find_workspace(imported)
        request = BuildRequest(devices=(BIG,), report=lambda line: None)
        target = imported / "build" / BIG
        build_devices(ws, request)
        base = run_git(imported, "log", "--format=%H", "-1", "--grep=base-layer")
        scratch = scratch_repo(ws)
        trees = {"FlagScale": flagscale_tree(ws, base), MEGATRON: layered_tree(ws, MEGATRON, base)}
        patches = converted_patches(imported, BIG)
        floor_dir = work / "floor"
        times = interleaved(
            {
                "floor": (
                    lambda: settle(floor_dir),
                    lambda: floor_once(scratch, trees, patches, floor_dir),
                ),
                "cold": (lambda: settle(target), lambda: build_devices(ws, request)),
            },
            args.repeat,
        )
        floor, cold = statistics.median(times["floor"]), statistics.median(times["cold"])
        files = sum(len(f) for _d, _s, f in os.walk(target))
        patch_files = checkout.patch_counts[(BIG, MEGATRON)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    results = {
        "setup_s": round(setup, 3),
        "import_s": round(statistics.median(imports), 3),
        "import_runs": imports,
        "sets": report["summary"],
        "size": report["size"],
        "build_files": files,
        "big_set_patch_files": patch_files,
        "floor_s": round(floor, 3),
        "cold_build_s": round(cold, 3),
        "cold_ratio": round(cold / floor, 2),
        "runs": times,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(f"fixture: {args.extra} extra upstream files; setup {setup:.1f}s")
    print(f"inv import-flagscale, median of {args.repeat}: {statistics.median(imports):.2f}s")
    print(f"  sets: {report['summary']}; data {report['size']}")
    print(f"{BIG} ({patch_files} patch files in FlagScale's layout): build tree {files} files")
    print(f"floor (archive|tar + git apply), median of {args.repeat}: {floor:.3f}s")
    print(f"cold build (library): {cold:.3f}s  = {cold / floor:.2f} x floor")
    print(f"load average during the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
