"""Benchmark: ``inv build --device`` against the floor of extracting the same trees.

Generates a FlagScale workspace (tests/build_fixtures.make_big_origin): an upstream of ~3,000
files as a real submodule, a base layer of 100 whole files, and one device type's vendor patch
set changing 100 other files (plus one FlagScale file). A user clone then builds it.

Measured, each ``--repeat`` times (medians reported):

* floor: ``git archive <tree> | tar -x`` of FlagScale's tree and of the layered backend tree,
  then one ``git apply`` of each patch set (the least any build of the same tree must do);
* cold build: ``build/<V_M>`` removed, then the library call ``build_devices`` (and, separately,
  the whole ``inv build`` process);
* unchanged rebuild: the same, with the build in place (prints "up to date").

Run:  python benchmarks/bench_build.py [--files 3000] [--layer 100] [--patched 100] [--repeat 5]
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IDENTITY = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@flagscale.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@flagscale.invalid",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "protocol.file.allow",
    "GIT_CONFIG_VALUE_0": "always",
    "GIT_ALLOW_PROTOCOL": "file",
}


Step = tuple[Callable[[], object], Callable[[], object]]  # (prepare, untimed; action, timed)


def interleaved(steps: dict[str, Step], repeat: int) -> dict[str, list[float]]:
    """Time every step once per round, ``repeat`` rounds: a load change hits all steps alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, (prepare, action) in steps.items():
            prepare()
            started = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - started)
    return times


def settle(folder: Path | None = None) -> None:
    """Remove ``folder`` and flush the disk, so one step's deletes do not slow the next."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    os.sync()


def floor_once(scratch: Path, trees: dict[str, str], patches: dict[str, bytes], out: Path) -> None:
    """``git archive | tar -x`` of each tree, then one ``git apply`` per patch, outside any repo."""
    from tests.build_fixtures import BACKEND

    places = {"FlagScale": out, BACKEND: out / "third_party" / BACKEND}
    for name, tree in trees.items():
        places[name].mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(
            ["git", "--git-dir", str(scratch), "archive", tree], stdout=subprocess.PIPE
        )
        subprocess.run(["tar", "-x", "-C", str(places[name])], stdin=archive.stdout, check=True)
        archive.stdout.close()  # type: ignore[union-attr]
        if archive.wait() != 0:
            raise SystemExit("git archive failed")
    for name, patch in patches.items():
        subprocess.run(["git", "apply", "--binary", "-"], cwd=places[name], input=patch, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000, help="upstream files")
    parser.add_argument("--layer", type=int, default=100, help="base layer files")
    parser.add_argument("--patched", type=int, default=100, help="files the vendor set changes")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the generated workspace")
    args = parser.parse_args()
    os.environ.update(IDENTITY)

    from flagscale.builds.builder import BuildRequest, build_devices
    from flagscale.overlay.layered_trees import flagscale_tree, layered_tree, scratch_repo
    from flagscale.upstream.workspace import find_workspace
    from tests.build_fixtures import BACKEND, DEVICE, clone_user, make_big_origin

    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        started = time.perf_counter()
        origin = make_big_origin(
            work / "origin", files=args.files, layer=args.layer, patched=args.patched
        )
        user = clone_user(origin.root, work / "user", init=True)
        setup = time.perf_counter() - started
        ws = find_workspace(user)
        request = BuildRequest(devices=(DEVICE,), report=lambda line: None)
        target = user / "build" / DEVICE

        started = time.perf_counter()
        build_devices(ws, request)
        first = time.perf_counter() - started

        scratch = scratch_repo(ws)
        trees = {
            "FlagScale": flagscale_tree(ws, origin.base),
            BACKEND: layered_tree(ws, BACKEND, origin.base),
        }
        floor_dir = work / "floor"
        command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "build"]
        command += ["--device", DEVICE]

        def cli() -> None:
            subprocess.run(command, cwd=user, check=True, capture_output=True)

        def nothing() -> None:
            settle()

        times = interleaved(
            {
                "floor": (
                    lambda: settle(floor_dir),
                    lambda: floor_once(scratch, trees, origin.patches, floor_dir),
                ),
                "cold": (
                    lambda: settle(target),
                    lambda: build_devices(ws, request),
                ),
                "unchanged": (nothing, lambda: build_devices(ws, request)),
                "cli_cold": (lambda: settle(target), cli),
                "cli_unchanged": (nothing, cli),
            },
            args.repeat,
        )
        floor, cold, unchanged, cli_cold, cli_unchanged = (
            statistics.median(times[name])
            for name in ("floor", "cold", "unchanged", "cli_cold", "cli_unchanged")
        )
        files = sum(len(f) for _d, _s, f in os.walk(target))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    results = {
        "files_in_build": files,
        "setup_s": round(setup, 3),
        "first_build_s": round(first, 3),
        "floor_s": round(floor, 3),
        "cold_build_s": round(cold, 3),
        "cold_ratio": round(cold / floor, 2),
        "unchanged_rebuild_s": round(unchanged, 3),
        "unchanged_ratio": round(unchanged / floor, 3),
        "cli_cold_build_s": round(cli_cold, 3),
        "cli_unchanged_rebuild_s": round(cli_unchanged, 3),
        "runs": times,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(f"build tree: {files} files; setup {setup:.1f}s; first build {first:.2f}s")
    print(f"floor (archive|tar + git apply), median of {args.repeat}: {floor:.3f}s")
    print(f"cold build (library):        {cold:.3f}s  = {cold / floor:.2f} x floor")
    print(f"unchanged rebuild (library): {unchanged:.3f}s  = {unchanged / floor:.3f} x floor")
    print(f"cold build (inv process):    {cli_cold:.3f}s")
    print(f"unchanged (inv process):     {cli_unchanged:.3f}s")
    print(f"load average during the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
