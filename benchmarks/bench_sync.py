"""Benchmark: bringing Megatron-LM (megatron-core 0.16.1's sdist) to its pin.

A workspace holding only this repository's backends/backends.yaml is made in a temporary
folder, with a private HOME (an empty pip cache) and an empty FLAGSCALE_CACHE. Measured with
time.perf_counter around the library calls:

* cold: the sdist fetched from the package index pip is configured with, then the import and
  checkout;
* from cache: third_party/Megatron-LM removed, the archive still cached (no network);
* no-op: ``ensure_checkout`` with the pin present (``--repeat`` times; median and minimum).

Run:  python benchmarks/bench_sync.py [--backend Megatron-LM] [--repeat 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

TOOL_ROOT = Path(__file__).resolve().parent.parent


def make_workspace(folder: Path) -> Path:
    root = folder / "FlagScale"
    (root / "backends").mkdir(parents=True)
    shutil.copy(TOOL_ROOT / "backends" / "backends.yaml", root / "backends" / "backends.yaml")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="Megatron-LM")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        os.environ["HOME"] = str(folder / "home")
        os.environ["FLAGSCALE_CACHE"] = str(folder / "cache")
        from flagscale.upstream.release_import import fetch_artifact
        from flagscale.upstream.sync import ensure_checkout
        from flagscale.upstream.workspace import find_workspace

        workspace = find_workspace(make_workspace(folder))
        backend = workspace.backend(args.backend)
        checkout = workspace.path(backend.checkout)
        download = timed(lambda: fetch_artifact(backend.source, workspace_root=workspace.root))
        cold_import = timed(lambda: ensure_checkout(workspace, backend))
        shutil.rmtree(checkout)
        cached = timed(lambda: ensure_checkout(workspace, backend))
        noop = [timed(lambda: ensure_checkout(workspace, backend)) for _ in range(args.repeat)]
        print(
            f"{args.backend}: cold {download + cold_import:.2f} s"
            f" (download {download:.2f} s + import and checkout {cold_import:.2f} s)"
        )
        print(f"{args.backend}: from the cache {cached:.2f} s")
        print(
            f"{args.backend}: no-op ensure_checkout median {statistics.median(noop) * 1e3:.1f} ms,"
            f" min {min(noop) * 1e3:.1f} ms over {args.repeat}"
        )


if __name__ == "__main__":
    main()
