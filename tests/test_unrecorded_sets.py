"""A vendor's sets before the history records them: built from the work tree with
``inv build --work-tree``, and errors that say when the cause is an unrecorded or uncommitted
file (a fresh clone sees committed state only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from flagscale.upstream.workspace import find_workspace
from flagscale.vendor.history_record import record_history
from tests.build_fixtures import BACKENDS, DEVICE, make_origin, make_sets, quiet, record
from tests.gitrepos import commit_all, inv, snapshot
from tests.smoke_fixtures import write_case
from tests.vendor_workspace import adapt_backend, adapt_flagscale, make_vendor_workspace

RECORD = ".flagscale-build.json"


def vendor_branch(tmp: Path) -> Path:
    """A vendor's FlagScale after ``inv patch --device-type``: sets committed, not recorded."""
    vendor = make_vendor_workspace(tmp / "vendor")
    adapt_backend(vendor)
    adapt_flagscale(vendor)
    make_sets(vendor.root, DEVICE, vendor.base)
    return vendor.root


def build_record(root: Path) -> dict:
    return json.loads((root / "build" / DEVICE / RECORD).read_text())


def test_unrecorded_sets_are_built_from_the_work_tree_with_a_warning(tmp_path: Path) -> None:
    root = vendor_branch(tmp_path)
    plain = inv(root, "build", "--device", DEVICE, check=False)
    assert plain.returncode == 1
    assert plain.stderr.strip().splitlines() == [
        f"error: hardware/patch_history.yaml has no entry for {DEVICE} (hardware/{DEVICE}/"
        " holds patch sets the history does not record yet: build them with"
        f" `inv build --device {DEVICE} --work-tree`; the history records them after the merge)"
    ]

    built = inv(root, "build", "--device", DEVICE, "--work-tree")
    assert (
        f"warning: building {DEVICE} from the unrecorded patch sets in your work tree"
        f" (hardware/{DEVICE}/: FlagScale, Megatron-LM)"
    ) in built.stderr
    assert "unrecorded patch sets in the work tree" in built.stdout + built.stderr
    from_work_tree = build_record(root)
    assert from_work_tree["inputs"]["sets_from"] == "work-tree"
    files = snapshot(root / "build" / DEVICE)

    again = inv(root, "build", "--device", DEVICE, "--work-tree")
    assert f"build/{DEVICE}: up to date" in again.stdout

    # The same sets, once recorded, build the same tree; the fingerprint says where they came from.
    record(root, DEVICE)
    inv(root, "build", "--device", DEVICE)
    from_history = build_record(root)
    assert "sets_from" not in from_history["inputs"]
    assert from_history["tree"] == from_work_tree["tree"]
    assert from_history["fingerprint"] != from_work_tree["fingerprint"]
    files.pop(RECORD), files.pop(".flagscale-build.state")
    rebuilt = snapshot(root / "build" / DEVICE)
    rebuilt.pop(RECORD), rebuilt.pop(".flagscale-build.state")
    assert rebuilt == files


def test_work_tree_build_reads_uncommitted_edits_and_refuses_commit(tmp_path: Path) -> None:
    root = vendor_branch(tmp_path)
    inv(root, "build", "--device", DEVICE, "--work-tree")
    first = build_record(root)["fingerprint"]
    metadata = root / "hardware" / DEVICE / "FlagScale" / "metadata.yaml"
    data = yaml.safe_load(metadata.read_text())
    data["models"] = ["aquila", "llama"]
    metadata.write_text(yaml.safe_dump(data, sort_keys=True))
    inv(root, "build", "--device", DEVICE, "--work-tree")
    assert build_record(root)["fingerprint"] != first  # the uncommitted edit counts

    both = inv(root, "build", "--device", DEVICE, "--work-tree", "--commit", "HEAD", check=False)
    assert both.returncode == 1
    assert both.stderr.strip() == (
        "error: --commit does not apply with --work-tree: the sets in your work tree are built"
    )
    other = inv(root, "build", "--device", "Acme_X1", "--work-tree", check=False)
    assert other.returncode == 1
    assert other.stderr.strip() == (
        "error: hardware/Acme_X1/ holds no patch sets (metadata.yaml) in your work tree"
        " (make them with `inv patch --device-type Acme_X1 ...`)"
    )


def ci_ready(root: Path) -> None:
    """Give a vendor workspace what CI validates and runs: one smoke case, committed."""
    write_case(root)
    commit_all(root, "ci: smoke case")


def unpatch_and_test(root: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "flagscale.ci", "unpatch-and-test", "--device", DEVICE],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        # the workspace's own flagscale/ folder (FlagScale's files) must not shadow the tool
        env={**os.environ, "PYTHONSAFEPATH": "1", **(env or {})},
    )


def test_ci_names_an_uncommitted_history_as_the_cause(tmp_path: Path) -> None:
    root = vendor_branch(tmp_path)
    ci_ready(root)
    ws = find_workspace(root)
    record_history(ws, DEVICE, backends=BACKENDS, report=quiet)  # recorded, not committed
    result = unpatch_and_test(root)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: hardware/patch_history.yaml has no entry for {DEVICE} in the committed state"
        " (CI builds a fresh clone of HEAD; your uncommitted changes to"
        " hardware/patch_history.yaml are not in it: commit them)"
    )


def test_ci_hint_for_encrypted_sets_names_the_environment_variable(tmp_path: Path) -> None:
    origin = make_origin(tmp_path / "origin", encrypt=True)
    ci_ready(origin.root)
    result = unpatch_and_test(origin.root, {"FLAGSCALE_KEY_PATHS": ""})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "--key-path" not in last
    assert "no key file in FLAGSCALE_KEY_PATHS" in last
    assert (
        "then set FLAGSCALE_KEY_PATHS=<key file> (several: separated by ':'); in GitHub Actions"
        " the workflow fills it from the device type's secret: see docs/ci.md)"
    ) in last


def test_building_recorded_sets_warns_when_the_work_tree_holds_others(tmp_path: Path) -> None:
    root = vendor_branch(tmp_path)
    record(root, DEVICE)
    commit_all(root, "record the sets")
    quiet_build = inv(root, "build", "--device", DEVICE)
    assert "warning" not in quiet_build.stdout + quiet_build.stderr
    # The vendor changes a set (not yet recorded): the build says it builds the recorded ones.
    metadata = root / "hardware" / DEVICE / "FlagScale" / "metadata.yaml"
    data = yaml.safe_load(metadata.read_text())
    data["models"] = ["aquila", "llama"]
    metadata.write_text(yaml.safe_dump(data, sort_keys=True))
    (root / "hardware" / DEVICE / "Megatron-LM" / "notes.txt").write_text("new file\n")
    warned = inv(root, "build", "--device", DEVICE)
    assert (
        f"warning: hardware/{DEVICE}/FlagScale, hardware/{DEVICE}/Megatron-LM in your work tree"
        " differ from the patch sets of the history entry being built"
    ) in warned.stdout
    assert f"build yours with `inv build --device {DEVICE} --work-tree`" in warned.stdout
    checked = inv(root, "check-history")
    key = "+".join(sorted(BACKENDS))
    assert checked.stdout.splitlines()[0] == "hardware/patch_history.yaml: ok"
    assert checked.stdout.splitlines()[1].startswith(
        f"note: hardware/{DEVICE}/FlagScale, hardware/{DEVICE}/Megatron-LM in your work tree"
        f" differ from the newest entry of {DEVICE}.train.{key} ("
    )
    # An older entry asked for by --commit is built on purpose: no warning.
    entry = yaml.safe_load((root / "hardware" / "patch_history.yaml").read_text())
    recorded = entry[DEVICE]["train"]["+".join(sorted(BACKENDS))][-1]
    chosen = inv(root, "build", "--device", DEVICE, "--commit", recorded)
    assert "differ from the patch sets" not in chosen.stdout + chosen.stderr
