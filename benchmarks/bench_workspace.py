"""How fast ``inv unpatch`` and ``inv patch`` are on an upstream of realistic size.

Not a test: ``python benchmarks/bench_workspace.py [--files 3000] [--layer 100] [--runs 5]``.

Builds, in a temporary folder with its own HOME and git identity, an upstream of ~3,000 files
in nested folders (sizes drawn like a Python code base, a few binaries) as a real submodule of
a FlagScale superproject with a 100-file base layer, then reports medians over several runs of:

- ``git status`` in the checkout (the yardstick),
- ``inv unpatch`` when nothing changed, and the library call alone (no process, no imports),
- ``inv unpatch --mode copy`` re-laying after 100 layer files changed in backends/,
- ``inv patch`` harvesting 100 edits,

each as an absolute median and as a ratio to ``git status`` measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TOOL_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOOL_ROOT))

from benchmarks.isolation import isolate  # noqa: E402
from tests.gitrepos import Exec, commit_all, make_workspace, write_files  # noqa: E402

NAME = "Megatron-LM"


def upstream_files(count: int, rng: random.Random) -> dict[str, bytes | Exec]:
    """``count`` files in nested folders; sizes log-normal around 4 KiB, 2% binary, 1% exec."""
    files: dict[str, bytes | Exec] = {}
    folders = [""]
    while len(files) < count:
        if rng.random() < 0.08 or len(folders) < 4:
            parent = rng.choice(folders)
            folders.append(f"{parent}pkg{len(folders)}/")
        folder = rng.choice(folders)
        size = min(int(rng.lognormvariate(8.2, 1.0)), 200_000)
        name = f"{folder}m{len(files)}"
        if rng.random() < 0.02:
            files[name + ".bin"] = rng.randbytes(size)
        elif rng.random() < 0.01:
            files[name + ".sh"] = Exec(b"#!/bin/sh\n" + _text(size, rng))
        else:
            files[name + ".py"] = _text(size, rng)
    return files


def _text(size: int, rng: random.Random) -> bytes:
    line = f"value_{rng.randrange(10**6)} = compute(x, y)  # comment\n".encode()
    return (line * (size // len(line) + 1))[:size]


def median_of(
    runs: int, action: Callable[[], None], before: Callable[[], None] | None = None
) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(command: list[str], cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)


def inv(cwd: Path, *args: str) -> None:
    run([sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT), *args], cwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--layer", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    rng = random.Random(20250101)
    with tempfile.TemporaryDirectory(prefix="bench-workspace-") as scratch:
        tmp = Path(scratch)
        isolate(tmp / "home")
        report(build(tmp, options.files, options.layer, rng), options.layer, options.runs)


def build(tmp: Path, count: int, layer_size: int, rng: random.Random) -> Path:
    files = upstream_files(count, rng)
    root, _ = make_workspace(tmp, {NAME: files})
    chosen = rng.sample(sorted(p for p in files if p.endswith(".py")), layer_size)
    layer = {p: b"# FlagScale\n" + bytes(_content(files[p])) for p in chosen[: layer_size - 10]}
    layer.update({f"flagscale_extra/f{i}.py": b"EXTRA = %d\n" % i for i in range(10)})
    write_files(root / "backends" / NAME, layer)
    commit_all(root, "base layer")
    sizes = [len(_content(c)) for c in files.values()]
    print(
        f"upstream: {len(files)} files, {sum(sizes) / 2**20:.1f} MiB, median"
        f" {statistics.median(sizes) / 1024:.1f} KiB; base layer: {len(layer)} files"
    )
    return root


def _content(value: bytes | Exec) -> bytes:
    return value.content if isinstance(value, Exec) else value


def report(root: Path, layer_size: int, runs: int) -> None:
    from flagscale.overlay.patch import patch
    from flagscale.overlay.unpatch import unpatch

    quiet = {"echo": lambda _: None}
    checkout = root / "third_party" / NAME
    layer_files = sorted(p for p in (root / "backends" / NAME).rglob("*.py"))
    inv(root, "unpatch")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=checkout, check=True, capture_output=True
    ).stdout.split(b"\0")
    editable = [checkout / p.decode() for p in tracked if p.endswith(b".py")]
    layered = {p.relative_to(root / "backends" / NAME) for p in layer_files}
    edits = [p for p in editable if p.relative_to(checkout) not in layered][:layer_size]
    counter = iter(range(1_000_000))

    def touch_layer() -> None:
        version = next(counter)
        for path in layer_files[:layer_size]:
            path.write_bytes(path.read_bytes().split(b"\n#v", 1)[0] + b"\n#v%d\n" % version)

    def edit_checkout() -> None:
        version = next(counter)
        for path in edits:
            path.write_bytes(path.read_bytes().split(b"\n#e", 1)[0] + b"\n#e%d\n" % version)

    results: list[tuple[str, float]] = []
    status = median_of(runs, lambda: run(["git", "status", "--porcelain"], checkout))
    results.append(("git status (checkout, same tree)", status))
    results.append(
        (
            "python -c pass (interpreter floor)",
            median_of(runs, lambda: run([sys.executable, "-c", "pass"], root)),
        )
    )
    results.append(("inv --list (invoke floor)", median_of(runs, lambda: inv(root, "--list"))))
    results.append(("inv unpatch, nothing changed", median_of(runs, lambda: inv(root, "unpatch"))))
    results.append(
        ("  library unpatch(), nothing changed", median_of(runs, lambda: unpatch(root, **quiet)))
    )
    inv(root, "unpatch", "--mode", "copy")
    results.append(
        (
            f"inv unpatch --mode copy, {layer_size} layer files changed",
            median_of(runs, lambda: inv(root, "unpatch", "--mode", "copy"), touch_layer),
        )
    )
    results.append(
        (
            f"  library unpatch(mode='copy'), {layer_size} changed",
            median_of(runs, lambda: unpatch(root, mode="copy", **quiet), touch_layer),
        )
    )
    results.append(
        (
            "inv unpatch --mode copy, nothing changed",
            median_of(runs, lambda: inv(root, "unpatch", "--mode", "copy")),
        )
    )
    inv(root, "unpatch", "--mode", "symlink")  # without --mode it keeps the mode laid
    results.append(
        (
            f"inv patch, {len(edits)} edits",
            median_of(runs, lambda: inv(root, "patch"), edit_checkout),
        )
    )
    results.append(
        (
            f"  library patch(), {len(edits)} edits",
            median_of(runs, lambda: patch(root, **quiet), edit_checkout),
        )
    )
    results.append(("inv patch, nothing edited", median_of(runs, lambda: inv(root, "patch"))))
    print(f"medians over {runs} runs (ratio to git status = {status * 1000:.1f} ms):")
    for label, seconds in results:
        print(f"  {label:<48} {seconds * 1000:8.1f} ms  {seconds / status:6.1f}x")


if __name__ == "__main__":
    main()
