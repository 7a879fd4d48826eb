"""Release backends: the pin moves between published versions, found through the package index
pip is configured with (here a real index on disk, read by real pip, offline).

A round trip (1.0 -> 1.1 -> 1.0) gives back the declaration, the base layer and the set byte for
byte; a step whose change meets the vendor's stops with the version step named; and
``inv bisect-upstream`` walks the published versions, skipping one that cannot be had at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from flagscale.vendor.history import HISTORY, dump_history
from flagscale.vendor.patchset import PatchMetadata, dump_metadata
from tests.gitrepos import commit_all, inv, make_repo, run_git, write_files
from tests.refresh_fixtures import (
    BACKEND,
    edit,
    insert,
    layered_patch,
    lines,
    local_index,
    use_index,
)

PACKAGE = "demo-core"
CORE = lines("core")
RELEASES = {
    "1.0": {"demo/core.py": CORE, "demo/util.py": lines("util"), "demo/layered.py": lines("lay")},
    "1.1": {
        "demo/core.py": insert(CORE, 1, ["# 1.1", "# header"]),
        "demo/util.py": lines("util"),
        "demo/layered.py": edit(lines("lay"), 25, "1.1 lay"),
    },
    "1.2": {"demo/core.py": CORE, "demo/util.py": lines("util"), "demo/layered.py": lines("lay")},
    "1.3": {
        "demo/core.py": insert(CORE, 1, ["# 1.1", "# header"]),
        "demo/util.py": edit(lines("util"), 1, "1.3 util"),
        "demo/layered.py": edit(lines("lay"), 25, "1.1 lay"),
    },
    "1.4": {
        "demo/core.py": edit(CORE, 10, "1.4 core"),
        "demo/util.py": lines("util"),
        "demo/layered.py": lines("lay"),
    },
    "2.0": {
        "demo/core.py": edit(CORE, 10, "2.0 core"),
        "demo/util.py": lines("util"),
        "demo/layered.py": lines("lay"),
    },
}
LAYER = {"demo/layered.py": edit(lines("lay"), 3, "FlagScale's lay")}
VENDOR = {"demo/core.py": edit(CORE, 10, "vendor core")}
DECLARATION = """# Backends of this test workspace; comments stay where they are.
version: 1
backends:
  Megatron-LM:
    description: a demo release  # kept too
    source:
      kind: release
      package: demo-core
      version: "1.0"
      filename: demo_core-1.0.tar.gz
      sha256: {sha256}
      strip_prefix: demo_core-1.0
    pin: "{pin}"
"""


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("index")
    url = local_index(folder, PACKAGE, RELEASES)
    (folder / "files" / "demo_core-1.2.tar.gz").unlink()  # published, but cannot be had
    return url, folder


@pytest.fixture(scope="module")
def workspace(
    module_env: Path, index: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    url, folder = index
    tmp = tmp_path_factory.mktemp("release")
    with pytest.MonkeyPatch.context() as patch:
        use_index(patch, url)
        root = tmp / "FlagScale"
        sha = hashlib.sha256((folder / "files" / "demo_core-1.0.tar.gz").read_bytes()).hexdigest()
        ignore = "/build/\n/logs/\n/third_party/*\n"  # release checkouts are not tracked
        make_repo(root, {"README.md": "FlagScale\n", ".gitignore": ignore})
        write_files(root, {"backends/backends.yaml": DECLARATION.format(sha256=sha, pin="0" * 40)})
        imported = inv(root, "import-release", "--backend", BACKEND).stdout
        pin = imported.split('pin: "')[1].split('"')[0]
        write_files(root, {"backends/backends.yaml": DECLARATION.format(sha256=sha, pin=pin)})
        write_files(root, {f"backends/{BACKEND}/{p}": c for p, c in LAYER.items()})
        base = commit_all(root, "declare the release, base layer")
        patch_bytes = layered_patch(root / "third_party" / BACKEND, pin, LAYER, [], VENDOR)
        write_set(root, "Vendor_V1", patch_bytes, base=base, pin=pin)
        sets = commit_all(root, "Vendor_V1's set")
        write_files(root, {HISTORY: dump_history({"Vendor_V1": {"train": {BACKEND: [sets]}}})})
        commit_all(root, "history")
    return root, url


def write_set(root: Path, device: str, patch: bytes, *, base: str, pin: str) -> None:
    folder = f"hardware/{device}/{BACKEND}"
    metadata = PatchMetadata(
        device_type=device,
        backend=BACKEND,
        flagscale_base=base,
        backend_pin=pin,
        backend_version="1.0",
        models=("demo",),
        tasks=("train",),
        contact="Vendor <vendor@example.invalid>",
        tool_version="0.1.0",
        patches=(
            {
                "file": f"{BACKEND}.patch",
                "sha256": hashlib.sha256(patch).hexdigest(),
                "encrypted": False,
            },
        ),
        encryption=None,
    )
    write_files(
        root,
        {f"{folder}/metadata.yaml": dump_metadata(metadata), f"{folder}/{BACKEND}.patch": patch},
    )


def copy_of(source: Path, tmp: Path) -> Path:
    root = tmp / "FlagScale"
    shutil.copytree(source, root, symlinks=True)
    return root


def test_a_round_trip_between_versions_gives_the_set_back_byte_for_byte(
    workspace: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, url = workspace
    use_index(monkeypatch, url)
    root = copy_of(source, tmp_path)
    files = ["backends/backends.yaml", f"backends/{BACKEND}/demo/layered.py"]
    files += [f"hardware/Vendor_V1/{BACKEND}/{BACKEND}.patch"]
    original = {path: (root / path).read_bytes() for path in files}
    original_metadata = (root / f"hardware/Vendor_V1/{BACKEND}/metadata.yaml").read_text()

    forth = inv(
        root, "refresh", "--backend", BACKEND, "--to", "1.1", "--json", str(tmp_path / "1.json")
    )
    assert f"refresh {BACKEND} 1.0 -> 1.1: done" in forth.stdout
    declaration = (root / "backends/backends.yaml").read_text()
    assert 'version: "1.1"' in declaration and "strip_prefix: demo_core-1.1" in declaration
    assert "# Backends of this test workspace" in declaration and "# kept too" in declaration
    report = json.loads((tmp_path / "1.json").read_text())
    [vendor] = report["devices"]
    assert vendor["sets"][0]["summary"]["moved"] == 1
    assert (root / f"backends/{BACKEND}/demo/layered.py").read_text() == edit(
        edit(lines("lay"), 25, "1.1 lay"), 3, "FlagScale's lay"
    )
    assert (
        'backend_version: "1.1"'
        in (root / f"hardware/Vendor_V1/{BACKEND}/metadata.yaml").read_text()
    )

    back = inv(root, "refresh", "--backend", BACKEND, "--to", "1.0")
    assert f"refresh {BACKEND} 1.1 -> 1.0: done" in back.stdout
    assert {path: (root / path).read_bytes() for path in files} == original
    metadata = (root / f"hardware/Vendor_V1/{BACKEND}/metadata.yaml").read_text()
    differing = [
        (a, b)
        for a, b in zip(original_metadata.splitlines(), metadata.splitlines(), strict=True)
        if a != b
    ]
    assert [a.split(":")[0] for a, _ in differing] == ["flagscale_base"]  # the commit it names
    assert "1 clean" in inv(root, "matrix", "--strict").stdout


def test_a_conflicting_version_names_the_version_step(
    workspace: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, url = workspace
    use_index(monkeypatch, url)
    root = copy_of(source, tmp_path)
    stopped = inv(root, "refresh", "--backend", BACKEND, "--to", "1.4", "--no-smoke", check=False)
    assert stopped.returncode == 1
    assert "demo/core.py line 10 changed in demo-core 1.0 -> 1.4 (now line 10)" in stopped.stdout
    assert inv(root, "refresh", "--abort").returncode == 0
    assert run_git(root, "show-ref") == run_git(source, "show-ref")
    assert run_git(root / "third_party" / BACKEND, "show-ref") == run_git(
        source / "third_party" / BACKEND, "show-ref"
    )  # the release ref the refresh made is gone again


def test_a_version_that_is_not_published_is_refused_before_anything_starts(
    workspace: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, url = workspace
    use_index(monkeypatch, url)
    root = copy_of(source, tmp_path)
    refused = inv(root, "refresh", "--backend", BACKEND, "--to", "9.9", check=False)
    assert refused.returncode == 1
    assert "pip download demo-core==9.9 (source archive) failed" in refused.stderr
    assert "no refresh is in progress" in inv(root, "refresh", "--abort", check=False).stderr


def test_bisect_walks_published_versions_and_skips_one_that_cannot_be_had(
    workspace: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, url = workspace
    use_index(monkeypatch, url)
    root = copy_of(source, tmp_path)
    before = run_git(root, "status", "--porcelain")
    result = inv(
        root,
        "bisect-upstream",
        "--device",
        "Vendor_V1",
        "--good",
        "1.0",
        "--bad",
        "2.0",
        "--json",
        str(tmp_path / "b.json"),
    )
    assert "first bad step: 1.4 (last good: 1.3)" in result.stdout
    document = json.loads((tmp_path / "b.json").read_text())
    assert document["steps"] == ["1.0", "1.1", "1.2", "1.3", "1.4", "2.0"]
    verdicts = {p["step"]: p["verdict"] for p in document["probes"]}
    assert verdicts == {
        "1.0": "good",
        "2.0": "bad",
        "1.2": "skip",
        "1.1": "good",
        "1.3": "good",
        "1.4": "bad",
    }
    skipped = next(p for p in document["probes"] if p["step"] == "1.2")
    assert skipped["reason"].startswith("cannot be built: pip download demo-core==1.2")
    bad = next(p for p in document["probes"] if p["step"] == "1.4")
    assert "the set stops applying: patch failed: demo/core.py:7" in bad["reason"]
    assert run_git(root, "status", "--porcelain") == before
    assert run_git(root / "third_party" / BACKEND, "show-ref") == run_git(
        source / "third_party" / BACKEND, "show-ref"
    )

    hidden = inv(root, "bisect-upstream", "--device", "Vendor_V1", "--good", "1.1", "--bad", "1.3")
    assert "no step breaks the sets: 1.3 is good too" in hidden.stdout
    wrong = inv(
        root,
        "bisect-upstream",
        "--device",
        "Vendor_V1",
        "--good",
        "1.4",
        "--bad",
        "2.0",
        check=False,
    )
    assert (
        wrong.returncode == 1 and "--good 1.4 is not good: the set stops applying" in wrong.stderr
    )
