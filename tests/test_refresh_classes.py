"""Every class a refresh gives a base layer file or a vendor patch file, on one real pin move.

The upstream (a real submodule) moves so that each file of the base layer and of Vendor_A1's
Megatron-LM set meets a different fate. The refresh stops on Vendor_A1's conflicts with a git
checkout to settle them in; once settled, ``--continue`` records the result, and plain
``git apply`` of the refreshed patch onto the new pin with the carried layer gives exactly the
tree a person would have made by hand.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepos import commit_all, inv, run_git, write_files
from tests.refresh_fixtures import (
    BACKEND,
    Refreshable,
    edit,
    insert,
    lines,
    make_refreshable,
    move_upstream,
)

VENDOR_BIN = bytes(range(256)) * 2 + b"vendor"
UPSTREAM_BIN = bytes(range(256)) * 2 + b"upstream"
V1 = {
    "megatron/unchanged.py": lines("u"),
    "megatron/moved.py": lines("m"),
    "megatron/merged.py": lines("g"),
    "megatron/upstream.py": lines("p"),
    "megatron/renamed.py": lines("r"),
    "megatron/deleted.py": lines("d"),
    "megatron/conflict.py": lines("c"),
    "data/blob.bin": bytes(range(256)) * 2,
    "data/other.bin": bytes(range(256)) * 2 + b"old",
    "layer_same.py": lines("ls"),
    "layer_merge.py": lines("lm"),
    "layer_up.py": lines("lu"),
    "layer_renamed.py": lines("lr"),
    "gone_upstream.py": "going\n",
    "still_there.py": "staying\n",
}
LAYER = {
    "layer_same.py": edit(lines("ls"), 3, "fs same"),
    "layer_merge.py": edit(lines("lm"), 3, "fs merge"),
    "layer_up.py": edit(lines("lu"), 4, "fs up"),
    "layer_renamed.py": edit(lines("lr"), 5, "fs renamed"),
    "layer_new.py": "FlagScale adds this\n",
}
DELETIONS = ["gone_upstream.py", "still_there.py"]
VENDOR = {
    "megatron/unchanged.py": edit(lines("u"), 10, "vendor u"),
    "megatron/moved.py": edit(lines("m"), 20, "vendor m"),
    "megatron/merged.py": edit(lines("g"), 10, "vendor g"),
    "megatron/upstream.py": edit(lines("p"), 5, "shared fix"),
    "megatron/renamed.py": edit(lines("r"), 8, "vendor r"),
    "megatron/deleted.py": edit(lines("d"), 3, "vendor d"),
    "megatron/conflict.py": edit(lines("c"), 15, "vendor c"),
    "data/blob.bin": VENDOR_BIN,
    "data/other.bin": VENDOR_BIN + b"other",
    "megatron/vendor_new.py": "the vendor adds this\n",
    "megatron/added_both.py": "the vendor adds this too\n",
}
V2_CHANGES = {
    "megatron/moved.py": insert(lines("m"), 1, ["# one", "# two", "# three"]),
    "megatron/merged.py": edit(lines("g"), 12, "upstream g"),
    "megatron/upstream.py": edit(lines("p"), 5, "shared fix"),
    "megatron/renamed2.py": edit(lines("r"), 25, "upstream r"),
    "megatron/deleted.py": None,
    "megatron/conflict.py": edit(lines("c"), 15, "upstream c"),
    "data/other.bin": UPSTREAM_BIN,
    "megatron/added_both.py": "upstream adds this\n",
    "layer_merge.py": edit(lines("lm"), 20, "upstream merge"),
    "layer_up.py": edit(lines("lu"), 4, "fs up"),
    "layer_renamed2.py": edit(lines("lr"), 25, "upstream lr"),
    "gone_upstream.py": None,
    "still_there.py": "staying, changed\n",
}
RENAMES = {"megatron/renamed.py": "megatron/renamed2.py", "layer_renamed.py": "layer_renamed2.py"}


@pytest.fixture(scope="module")
def moved(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Refreshable, str]:
    found = make_refreshable(
        tmp_path_factory.mktemp("classes"),
        upstream=V1,
        layer=LAYER,
        deletions=DELETIONS,
        devices={
            "Vendor_A1": {BACKEND: VENDOR},
            "Vendor_B1": {
                BACKEND: {"megatron/unchanged.py": edit(lines("u"), 2, "b1")},
                "FlagScale": {"README.md": "FlagScale for B1\n"},
            },
        },
    )
    new = move_upstream(found, V2_CHANGES, RENAMES)
    return found, new


def copy_of(found: Refreshable, tmp: Path) -> Path:
    """A private copy of the workspace (the upstream repository stays shared, read only)."""
    root = tmp / "FlagScale"
    shutil.copytree(found.root, root, symlinks=True)
    return root


def started(root: Path, new: str, tmp: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = tmp / "report.json"
    result = inv(
        root,
        "refresh",
        "--backend",
        BACKEND,
        "--to",
        new,
        "--no-smoke",
        "--json",
        str(report),
        check=False,
    )
    return result, json.loads(report.read_text())


def by_path(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["path"]: item for item in files}


def test_every_class_is_named_with_hunks_and_the_upstream_change_it_met(
    moved: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = moved
    root = copy_of(found, tmp_path)
    result, report = started(root, new, tmp_path)

    assert result.returncode == 1
    assert "refresh stopped: 4 file(s) of Vendor_A1's Megatron-LM set" in result.stderr
    assert report["status"] == "stopped"
    layer = by_path(report["layer"]["files"])
    assert {p: f["class"] for p, f in layer.items()} == {
        "layer_same.py": "unchanged",
        "layer_merge.py": "merged",
        "layer_up.py": "already_upstream",
        "layer_renamed.py": "target_gone",
        "layer_new.py": "unchanged",
        "gone_upstream.py": "target_gone",
        "still_there.py": "unchanged",
    }
    assert layer["layer_renamed.py"]["new_path"] == "layer_renamed2.py"
    assert "deletion is dropped" in layer["gone_upstream.py"]["detail"]

    files = by_path(report["conflict"]["files"])
    assert {p: (f["class"], f["resolved"]) for p, f in files.items()} == {
        "megatron/unchanged.py": ("unchanged", True),
        "megatron/moved.py": ("moved", True),
        "megatron/merged.py": ("merged", True),
        "megatron/upstream.py": ("already_upstream", True),
        "megatron/renamed.py": ("target_gone", True),
        "megatron/deleted.py": ("target_gone", False),
        "megatron/conflict.py": ("conflict", False),
        "data/blob.bin": ("unchanged", True),
        "data/other.bin": ("conflict", False),
        "megatron/vendor_new.py": ("unchanged", True),
        "megatron/added_both.py": ("conflict", False),
    }
    assert [(h["class"], h["offset"]) for h in files["megatron/moved.py"]["hunks"]] == [
        ("moved", 3)
    ]
    assert files["megatron/renamed.py"]["new_path"] == "megatron/renamed2.py"
    [hunk] = files["megatron/conflict.py"]["hunks"]
    assert hunk["class"] == "conflict" and hunk["header"].startswith("@@ -12,7 +12,7 @@")
    assert any("line 15 changed in Megatron-LM" in u for u in hunk["upstream"])
    assert any(u.startswith("commit ") and "upstream moves on" in u for u in hunk["upstream"])
    deleted = files["megatron/deleted.py"]
    assert any("upstream moves on" in u for u in deleted["upstream"])
    assert "binary file changed on both sides" in files["data/other.bin"]["detail"]
    # the terminal report says the same in words
    assert "megatron/conflict.py: conflict, needs a hand" in result.stdout
    assert "hunk @@ -17,7 +17,7 @@" in result.stdout and "moved by +3 lines" in result.stdout
    devices = {d["device_type"]: d["status"] for d in report["devices"]}
    assert devices == {"Vendor_A1": "pending", "Vendor_B1": "pending"}


def test_the_checkout_records_conflicts_the_git_way(
    moved: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = moved
    root = copy_of(found, tmp_path)
    started(root, new, tmp_path)
    checkout = root / "build" / "refresh"

    unmerged = run_git(checkout, "ls-files", "-u")
    stages = {}
    for line in unmerged.splitlines():
        meta, path = line.split("\t")
        stages.setdefault(path, []).append(meta.split()[2])
    assert stages == {
        "data/other.bin": ["1", "2", "3"],
        "megatron/added_both.py": ["2", "3"],
        "megatron/conflict.py": ["1", "2", "3"],
        "megatron/deleted.py": ["1", "3"],
    }
    text = (checkout / "megatron/conflict.py").read_text()
    assert "<<<<<<< Megatron-LM " in text and "(new)\nupstream c\n" in text
    assert "||||||| Megatron-LM " in text and "(old)\nc line 15\n" in text
    assert "=======\nvendor c\n>>>>>>> Vendor_A1 Megatron-LM set\n" in text
    assert (checkout / "data/other.bin").read_bytes() == UPSTREAM_BIN  # ours, as git leaves it
    assert (checkout / "megatron/deleted.py").read_text() == VENDOR["megatron/deleted.py"]
    # everything carried cleanly is in the work tree and the index
    assert (checkout / "megatron/merged.py").read_text() == edit(
        edit(lines("g"), 12, "upstream g"), 10, "vendor g"
    )
    assert not (checkout / "megatron/renamed.py").exists()
    assert (checkout / "megatron/renamed2.py").read_text() == edit(
        edit(lines("r"), 25, "upstream r"), 8, "vendor r"
    )
    assert run_git(checkout, "diff", "HEAD", "--stat").strip()  # HEAD is the new tree


def settle(checkout: Path) -> None:
    """What a person does: edit, take a side, drop a file, then mark each settled."""
    write_files(checkout, {"megatron/conflict.py": edit(lines("c"), 15, "vendor c")})
    run_git(checkout, "checkout", "--theirs", "--", "data/other.bin")
    run_git(checkout, "add", "megatron/conflict.py", "data/other.bin")
    run_git(checkout, "rm", "-q", "megatron/deleted.py")
    write_files(checkout, {"megatron/added_both.py": "the vendor adds this too\n"})
    run_git(checkout, "add", "megatron/added_both.py")


def expected_layer() -> dict[str, str]:
    return {
        "layer_same.py": LAYER["layer_same.py"],
        "layer_merge.py": edit(edit(lines("lm"), 20, "upstream merge"), 3, "fs merge"),
        "layer_renamed2.py": edit(edit(lines("lr"), 25, "upstream lr"), 5, "fs renamed"),
        "layer_new.py": LAYER["layer_new.py"],
    }


def expected_vendor_tree() -> dict[str, bytes]:
    """The new pin with the layer and the vendor's changes, settled, made by hand."""
    v2 = {**V1, **V2_CHANGES}
    for old, new in RENAMES.items():
        v2[new] = V2_CHANGES[new]
        v2.pop(old)
    files = {p: c for p, c in v2.items() if c is not None}
    files.update(expected_layer())
    for path in ["layer_up.py", "still_there.py"]:
        files.pop(path, None)
    files.update(
        {
            "megatron/unchanged.py": VENDOR["megatron/unchanged.py"],
            "megatron/moved.py": insert(
                edit(lines("m"), 20, "vendor m"), 1, ["# one", "# two", "# three"]
            ),
            "megatron/merged.py": edit(edit(lines("g"), 12, "upstream g"), 10, "vendor g"),
            "megatron/renamed2.py": edit(edit(lines("r"), 25, "upstream r"), 8, "vendor r"),
            "megatron/conflict.py": edit(lines("c"), 15, "vendor c"),
            "data/blob.bin": VENDOR_BIN,
            "data/other.bin": VENDOR_BIN + b"other",
            "megatron/vendor_new.py": VENDOR["megatron/vendor_new.py"],
            "megatron/added_both.py": VENDOR["megatron/added_both.py"],
        }
    )
    files.pop("megatron/deleted.py", None)
    return {p: c.encode() if isinstance(c, str) else c for p, c in files.items()}


def test_settled_conflicts_give_the_set_plain_git_apply_agrees_with(
    moved: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = moved
    root = copy_of(found, tmp_path)
    started(root, new, tmp_path)
    checkout = root / "build" / "refresh"

    early = inv(root, "refresh", "--continue", "--no-smoke", check=False)
    assert early.returncode == 1
    assert "4 conflict(s) in" in early.stderr and "are not marked settled" in early.stderr

    write_files(checkout, {"megatron/conflict.py": edit(lines("c"), 15, "vendor c")})
    run_git(checkout, "add", "megatron/conflict.py")
    settle(checkout)
    done = inv(root, "refresh", "--continue", "--no-smoke")
    assert "refresh Megatron-LM" in done.stdout and ": done" in done.stdout
    assert not checkout.exists()

    # the pin and the carried base layer, committed
    assert run_git(root, "rev-parse", f"HEAD:third_party/{BACKEND}") == new
    layer = root / "backends" / BACKEND
    assert {
        p.relative_to(layer).as_posix(): p.read_text() for p in layer.rglob("*") if p.is_file()
    } == expected_layer()
    assert (root / "backends" / f"{BACKEND}.layer.yaml").read_text() == (
        "version: 1\ndeleted:\n- still_there.py\n"
    )
    # the refreshed patch, applied by plain git to new pin + carried layer, gives the settled tree
    work = tmp_path / "check"
    run_git(tmp_path, "clone", "-q", str(found.upstream), str(work))
    run_git(work, "checkout", "-q", new)
    write_files(work, expected_layer())
    for path in ["layer_up.py", "still_there.py", "layer_renamed2.py"]:
        (work / path).unlink(missing_ok=True)
    write_files(work, {"layer_renamed2.py": expected_layer()["layer_renamed2.py"]})
    (work / "layer_up.py").write_text(V2_CHANGES["layer_up.py"])  # the pin's own file
    (work / "still_there.py").unlink(missing_ok=True)
    commit_all(work, "new pin + carried layer")
    patch = root / "hardware" / "Vendor_A1" / BACKEND / f"{BACKEND}.patch"
    run_git(work, "apply", "--binary", str(patch))
    got = {
        p.relative_to(work).as_posix(): p.read_bytes()
        for p in work.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(work).parts
    }
    want = expected_vendor_tree()
    want["layer_up.py"] = V2_CHANGES["layer_up.py"].encode()
    assert got == want

    metadata = (root / "hardware" / "Vendor_A1" / BACKEND / "metadata.yaml").read_text()
    assert f'backend_pin: "{new}"' in metadata
    pin_commit = run_git(root, "log", "--format=%H", "--grep=pin and base layer", "-1")
    assert f'flagscale_base: "{pin_commit}"' in metadata
    # Vendor_B1 was carried too (its sets unchanged, byte for byte), and recorded
    b1 = root / "hardware" / "Vendor_B1"
    for backend in (BACKEND, "FlagScale"):
        before = run_git(
            root, "show", f"{found.head()}:hardware/Vendor_B1/{backend}/{backend}.patch"
        )
        assert (b1 / backend / f"{backend}.patch").read_text().rstrip("\n") == before
    matrix = inv(root, "matrix", "--strict")
    assert "2 clean" in matrix.stdout or "3 clean" in matrix.stdout
