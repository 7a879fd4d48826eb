"""``inv import-flagscale``: FlagScale's base patches, vendor sets and history brought into a
workspace of this tool, each converted set proved against FlagScale's own result.

The FlagScale checkout is tests/flagscale_checkout.py's; its expected trees come from plain
``git apply`` in scratch clones, never from the code under test. The import runs as a real
``inv`` process; the crash tests kill it with a real SIGKILL at named steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from flagscale.builds.builder import BuildRequest, build_devices
from flagscale.core.schema import schema_for
from flagscale.upstream.workspace import find_workspace
from tests.build_fixtures import quiet
from tests.flagscale_checkout import (
    BIG,
    FALLBACK,
    FLAGSCALE,
    LOST_KEY,
    MEGATRON,
    OLDEST,
    SECRET,
    SHARED,
    VLLM,
    FlagScaleCheckout,
    built_parts,
    make_flagscale_checkout,
    scratch_clone,
)
from tests.gitrepos import (
    TOOL_ROOT,
    commit_all,
    inv,
    make_workspace,
    run_git,
    snapshot,
    write_files,
)
from tests.releases import Member, make_tar

CONVERTED = [
    (BIG, "train"),
    (SHARED, "train"),
    (SHARED, "inference"),
    (SECRET, "train"),
    (FALLBACK, "train"),
    (OLDEST, "train"),
]
DATA_FOLDERS = ("hardware", "backends", "flagscale/backends")


@pytest.fixture(scope="module")
def checkout(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> FlagScaleCheckout:
    return make_flagscale_checkout(tmp_path_factory.mktemp("flagscale"))


@pytest.fixture(scope="module")
def pristine(checkout: FlagScaleCheckout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace of this tool that never saw FlagScale (another backend, its own files)."""
    root, _ = make_workspace(
        tmp_path_factory.mktemp("pristine"),
        {"Other": {"other.py": "OTHER = 1\n"}},
        extra={"tools/own.py": "OWN = 1\n"},
    )
    return root


def fresh_workspace(pristine: Path, destination: Path) -> Path:
    """A clone of the pristine workspace: same commits, so imports into it can be compared."""
    run_git(destination.parent, "clone", "-q", str(pristine), str(destination))
    return destination


def import_args(checkout: FlagScaleCheckout, new_keys: Path, *extra: str) -> list[str]:
    keys = ["--key-path", str(checkout.keys["Cambricon"]), "--new-keys", str(new_keys)]
    return ["import-flagscale", str(checkout.root), *keys, *extra]


@pytest.fixture(scope="module")
def imported(
    checkout: FlagScaleCheckout, pristine: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    tmp = tmp_path_factory.mktemp("imported")
    before = checkout_state(checkout.root)
    root = fresh_workspace(pristine, tmp / "workspace")
    result = inv(root, *import_args(checkout, tmp / "keys", "--json", str(tmp / "report.json")))
    report = json.loads((tmp / "report.json").read_text())
    return {
        "root": root,
        "keys": tmp / "keys",
        "report": report,
        "output": result.stdout + result.stderr,
        "before": before,
    }


def checkout_state(root: Path) -> dict:
    """Everything a change to the checkout could show: files (.git included), status, refs."""
    return {
        "files": snapshot(root, skip=()),
        "status": run_git(root, "status", "--porcelain", "--ignore-submodules=none"),
        "refs": run_git(root, "for-each-ref"),
        "head": run_git(root, "rev-parse", "HEAD"),
    }


def rows(report: dict) -> dict[tuple[str, str], dict]:
    return {(r["device_type"], r["backend"]): r for r in report["sets"] if r["status"] != "skipped"}


def in_scope(files: dict) -> dict:
    return {
        path: value
        for path, value in files.items()
        if not any(path == d or path.startswith(f"{d}/") for d in DATA_FOLDERS)
    }


# --- what the import brings in ---------------------------------------------------------------


def test_the_report_says_what_became_of_each_set(
    checkout: FlagScaleCheckout, imported: dict
) -> None:
    report = imported["report"]
    Draft202012Validator(schema_for("import-report")).validate(report)
    assert report["source"] == {"path": str(checkout.root.resolve()), "commit": checkout.head}
    found = rows(report)
    statuses = {key: row["status"] for key, row in found.items()}
    assert statuses == {
        **{(d, b): "identical" for (d, t), e in checkout.devices.items() for b in e.backend_names},
        (LOST_KEY, VLLM): "carried",
    }
    assert report["summary"] == {"identical": 9, "differs": 0, "carried": 1, "skipped": 0}
    for (device, _task), expected in checkout.devices.items():
        for backend, tree in expected.backends.items():
            if device != LOST_KEY:
                row = found[(device, backend)]
                assert row["tree"] == row["built_tree"] == tree.tree, (device, backend)
    assert found[(FALLBACK, MEGATRON)]["whitespace_fixed"] == checkout.expected(FALLBACK).fixed
    assert found[(BIG, MEGATRON)]["layout"] == "per-file"
    assert found[(SHARED, FLAGSCALE)]["tasks"] == ["inference", "train"]
    assert found[(OLDEST, MEGATRON)]["layout"] == "oldest"
    assert found[(LOST_KEY, VLLM)]["reason"].startswith("encrypted, and no --key-path given")
    layers = {row["backend"]: row for row in report["base_layer"]}
    assert {name: row["status"] for name, row in layers.items()} == {
        MEGATRON: "identical",
        VLLM: "identical",
    }
    assert layers[MEGATRON]["tree"] == checkout.unpatched[MEGATRON].tree
    assert report["size"]["before"] > 0 and report["size"]["after"] > 0
    output = imported["output"]
    assert "Kunlun_P800/Megatron-LM" in output and "--whitespace=fix fallback" in output
    assert "10 vendor sets from" in output and "data: " in output


@pytest.mark.parametrize(("device", "task"), CONVERTED)
def test_converted_devices_build_the_trees_flagscales_tool_gives(
    checkout: FlagScaleCheckout, imported: dict, device: str, task: str
) -> None:
    root = imported["root"]
    keys = tuple(sorted(imported["keys"].glob("*.key")))
    request = BuildRequest(devices=(device,), task=task, key_paths=keys, report=quiet, force=True)
    built = build_devices(find_workspace(root), request)[device]

    expected = checkout.expected(device, task)
    parts = built_parts(built, expected.backend_names)
    for backend, tree in expected.backends.items():
        assert parts[backend] == tree.files, backend
    if FLAGSCALE in expected.backend_names:
        assert in_scope(parts[""]) == in_scope(expected.flagscale.files)
    else:  # FlagScale's own files come from this workspace
        assert parts[""]["tools/own.py"] == ("file", b"OWN = 1\n")


def test_the_base_layer_lays_flagscales_unpatched_tree(
    checkout: FlagScaleCheckout, imported: dict, tmp_path: Path
) -> None:
    user = tmp_path / "user"
    run_git(tmp_path, "clone", "-q", str(imported["root"]), str(user))
    inv(user, "unpatch", "--backend", f"{MEGATRON} {VLLM}", "--mode", "copy")
    for backend in (MEGATRON, VLLM):
        laid = snapshot(user / "third_party" / backend, skip=(".git",))
        laid.pop(".git")  # the submodule's pointer to its git folder
        assert laid == checkout.unpatched[backend].files, backend
    declared = yaml.safe_load((user / "backends/backends.yaml").read_text())
    assert declared["backends"][MEGATRON] == {"source": {"kind": "submodule"}}
    assert run_git(user, "rev-parse", f"HEAD:third_party/{MEGATRON}") == checkout.pins[MEGATRON]


def test_the_history_records_every_line_at_the_commit_holding_its_sets(
    checkout: FlagScaleCheckout, imported: dict
) -> None:
    root = imported["root"]
    history = yaml.safe_load((root / "hardware/patch_history.yaml").read_text())
    lines = {(d, t, k) for d, tasks in history.items() for t, keys in tasks.items() for k in keys}
    assert lines == {(d, t, e.key) for (d, t), e in checkout.devices.items()}
    for tasks in history.values():
        for keys in tasks.values():
            for commits in keys.values():
                assert len(commits) == 1
                holder = commits[0]
                message = run_git(root, "log", "-1", "--format=%B", holder)
                assert f"Import-FlagScale: {checkout.head} sets " in message
    assert inv(root, "check-history").stdout.strip().endswith("ok")


def test_kept_encrypted_without_its_key_then_converted_by_a_rerun_with_it(
    checkout: FlagScaleCheckout, imported: dict, tmp_path: Path
) -> None:
    user = tmp_path / "user"
    run_git(tmp_path, "clone", "-q", str(imported["root"]), str(user))
    folder = f"hardware/{LOST_KEY}/{VLLM}"
    assert snapshot(user / folder) == snapshot(checkout.root / folder)

    result = inv(
        user,
        "import-flagscale",
        str(checkout.root),
        "--key-path",
        str(checkout.keys["Mthreads"]),
        "--new-keys",
        str(tmp_path / "keys"),
    )

    assert "10 identical, 0 differs, 0 carried" in result.stdout
    history = yaml.safe_load((user / "hardware/patch_history.yaml").read_text())
    assert len(history[LOST_KEY]["inference"][VLLM]) == 2  # the kept set, then the converted one
    key = tmp_path / "keys" / "Mthreads.key"
    assert key.stat().st_mode & 0o777 == 0o600
    inv(user, "build", "--device", LOST_KEY, "--key-path", str(key))
    expected = checkout.expected(LOST_KEY, "inference")
    built = built_parts(user / "build" / LOST_KEY, expected.backend_names)
    assert built[VLLM] == expected.backends[VLLM].files
    assert (user / folder / "vllm.patch.enc").is_file()
    assert b"musa" not in (user / folder / "vllm.patch.enc").read_bytes()


def test_the_checkout_is_never_touched(checkout: FlagScaleCheckout, imported: dict) -> None:
    assert checkout_state(checkout.root) == imported["before"]


# --- deterministic and resumable -----------------------------------------------------------


def import_commits(root: Path) -> list[str]:
    return run_git(root, "log", "--format=%H %T", "--grep=Import-FlagScale").splitlines()


def test_two_imports_make_the_same_commits(
    checkout: FlagScaleCheckout, pristine: Path, imported: dict, tmp_path: Path
) -> None:
    again = fresh_workspace(pristine, tmp_path / "again")
    inv(again, *import_args(checkout, imported["keys"]))  # the same vendor keys
    assert import_commits(again) == import_commits(imported["root"])
    for device in (BIG, SECRET):
        for backend in (FLAGSCALE, MEGATRON):
            folder = f"hardware/{device}/{backend}"
            assert snapshot(again / folder) == snapshot(imported["root"] / folder)


def run_until_killed(root: Path, args: list[str], point: str) -> int:
    env = dict(os.environ, FLAGSCALE_CRASH_AT=point)
    command = [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT), *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True).returncode


@pytest.mark.parametrize(
    "point",
    [
        "import:base-layer:committed",
        "import:move:before-read-tree",
        "import:move:before-ref",
        "import:sets:moved",
        "import:history:committed",
    ],
)
def test_a_run_killed_at_any_step_resumes_to_the_same_commits(
    checkout: FlagScaleCheckout, pristine: Path, imported: dict, tmp_path: Path, point: str
) -> None:
    root = fresh_workspace(pristine, tmp_path / "workspace")
    args = import_args(checkout, imported["keys"])

    assert run_until_killed(root, args, point) == -signal.SIGKILL

    inv(root, *args)
    assert import_commits(root) == import_commits(imported["root"])
    assert run_git(root, "status", "--porcelain") == ""
    assert not (root / ".git/flagscale/import/move.json").exists()


def test_files_a_killed_move_had_written_are_taken_back(
    checkout: FlagScaleCheckout, pristine: Path, imported: dict, tmp_path: Path
) -> None:
    """A kill inside ``read-tree`` leaves some files with the new commit's bytes."""
    root = fresh_workspace(pristine, tmp_path / "workspace")
    args = import_args(checkout, imported["keys"])
    assert run_until_killed(root, args, "import:move:before-read-tree") == -signal.SIGKILL
    move = json.loads((root / ".git/flagscale/import/move.json").read_text())
    for path in ("backends/backends.yaml", f"backends/{MEGATRON}/patched_by_base.py"):
        shown = subprocess.run(
            ["git", "show", f"{move['to']}:{path}"], cwd=root, capture_output=True
        )
        write_files(root, {path: shown.stdout})

    inv(root, *args)
    assert import_commits(root) == import_commits(imported["root"])
    assert run_git(root, "status", "--porcelain") == ""


def test_a_users_edit_made_meanwhile_is_never_overwritten(
    checkout: FlagScaleCheckout, pristine: Path, imported: dict, tmp_path: Path
) -> None:
    root = fresh_workspace(pristine, tmp_path / "workspace")
    args = import_args(checkout, imported["keys"])
    assert run_until_killed(root, args, "import:move:before-read-tree") == -signal.SIGKILL
    write_files(root, {"backends/backends.yaml": "# my own edit\n"})

    result = inv(root, *args, check=False)

    assert result.returncode == 1
    assert "backends/backends.yaml" in result.stderr and "commit or stash" in result.stderr
    assert (root / "backends/backends.yaml").read_text() == "# my own edit\n"


# --- a set that differs ----------------------------------------------------------------------


def test_a_set_flagscale_builds_two_ways_is_recorded_only_where_it_matches(
    checkout: FlagScaleCheckout, pristine: Path, tmp_path: Path
) -> None:
    """FlagScale's tool starts a backend from the gitlink at the newest base *of the line*: a
    Megatron-LM set used alone (base0, the pin) and with a FlagScale set made on a commit that
    pins Megatron-LM elsewhere gives two trees. One conversion cannot give both."""
    source = tmp_path / "FlagScale"
    run_git(tmp_path, "clone", "-q", str(checkout.root), str(source))
    run_git(
        source, "update-index", "--cacheinfo", f"160000,{checkout.older_pin},third_party/{MEGATRON}"
    )
    moved = commit_all(source, "Megatron-LM back to the older commit")
    shutil.copytree(source / "hardware" / OLDEST / MEGATRON, source / "hardware/Test_T1" / MEGATRON)
    for meta in (source / "hardware/Test_T1" / MEGATRON).glob("*.yaml"):
        meta.write_text(
            meta.read_text().replace(OLDEST, "Test_T1").replace("- train", "- train\n- post_train")
        )
    fs_patch = (
        "diff --git a/flagscale/t1.py b/flagscale/t1.py\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/flagscale/t1.py\n@@ -0,0 +1 @@\n+T1 = 1\n"
    )
    meta = {"commit": moved, "device_type": "Test_T1", "task": ["train"], "backends_commit": {}}
    write_files(
        source,
        {
            "hardware/Test_T1/FlagScale/diff.patch": fs_patch,
            "hardware/Test_T1/FlagScale/diff.yaml": yaml.safe_dump(meta),
        },
    )
    sets = commit_all(source, "hardware: Test_T1")
    history = {
        "Test_T1": {
            "post_train": {MEGATRON: [sets]},
            "train": {f"{FLAGSCALE}+{MEGATRON}": [sets]},
        }
    }
    write_files(source, {"hardware/patch_history.yaml": yaml.safe_dump(history)})
    commit_all(source, "history: only Test_T1")
    root = fresh_workspace(pristine, tmp_path / "workspace")

    result = inv(root, "import-flagscale", str(source), check=False)

    assert result.returncode == 1
    assert (
        "differ from FlagScale's tree and were not recorded: Test_T1/Megatron-LM" in result.stderr
    )
    report = json.loads((root / "build/import-flagscale.json").read_text())
    found = rows(report) | {
        (r["device_type"], r["backend"]): r for r in report["sets"] if r["status"] == "skipped"
    }
    megatron = found[("Test_T1", MEGATRON)]
    assert megatron["status"] == "differs"
    assert "Megatron-LM: NEWS.md" in megatron["differing"]
    assert (
        megatron["reason"]
        == "not recorded for train FlagScale+Megatron-LM; recorded for post_train Megatron-LM"
    )
    assert found[("Test_T1", FLAGSCALE)]["status"] == "skipped"
    recorded = yaml.safe_load((root / "hardware/patch_history.yaml").read_text())
    assert recorded == {
        "Test_T1": {"post_train": {MEGATRON: [recorded["Test_T1"]["post_train"][MEGATRON][0]]}}
    }
    assert not (root / "hardware/Test_T1/FlagScale").exists()


# --- release backends ------------------------------------------------------------------------


def test_backends_declared_as_releases(
    checkout: FlagScaleCheckout, pristine: Path, tmp_path: Path
) -> None:
    pin = scratch_clone(checkout.upstreams[VLLM], checkout.pins[VLLM], tmp_path / "vllm")
    members = [
        Member(f"vllm-0.6.3/{path}", data)
        for path, (_kind, data) in sorted(snapshot(pin, skip=(".git",)).items())
    ]
    archive = make_tar(tmp_path / "vllm-0.6.3.tar.gz", members)
    root = fresh_workspace(pristine, tmp_path / "workspace")

    inv(root, "import-flagscale", str(checkout.root), "--release", f"{VLLM}={archive}")

    declared = yaml.safe_load((root / "backends/backends.yaml").read_text())["backends"][VLLM]
    assert declared["source"]["kind"] == "release"
    assert declared["source"]["filename"] == "vllm-0.6.3.tar.gz"
    assert declared["source"]["strip_prefix"] == "vllm-0.6.3"
    assert "://" not in (root / "backends/backends.yaml").read_text()  # no host, no local path
    assert "third_party/vllm" not in (root / ".gitmodules").read_text()
    report = json.loads((root / "build/import-flagscale.json").read_text())
    layers = {row["backend"]: row for row in report["base_layer"]}
    assert layers[VLLM]["source"] == "release" and layers[VLLM]["status"] == "identical"
    assert layers[VLLM]["pin"] == declared["pin"] != checkout.pins[VLLM]
    assert rows(report)[(SHARED, VLLM)]["status"] == "identical"
    inv(root, "build", "--device", SHARED, "--task", "inference")
    built = snapshot(root / "build" / SHARED / "third_party" / VLLM)
    assert built == checkout.expected(SHARED, "inference").backends[VLLM].files


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import-flagscale", "/nonexistent/FlagScale"], "is not a git checkout of FlagScale"),
        (["import-flagscale", "{checkout}", "--key-path", "{key}"], "add --new-keys"),
        (["import-flagscale", "{checkout}", "--release", "vllm"], "is not BACKEND=ARCHIVE"),
        (["import-flagscale", "{checkout}", "--release", "Nope=x.tar.gz"], "--release names Nope"),
        (
            ["import-flagscale", "{checkout}", "--release", "vllm=/no/vllm-1.0.tar.gz"],
            "no such file",
        ),
        (["import-flagscale", "{root}"], "is this workspace's own repository"),
    ],
)
def test_bad_input_is_one_line(
    checkout: FlagScaleCheckout, pristine: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    root = fresh_workspace(pristine, tmp_path / "workspace")
    values = {
        "checkout": str(checkout.root),
        "key": str(checkout.keys["Cambricon"]),
        "root": str(root),
    }
    result = inv(root, *[a.format(**values) for a in args], check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert run_git(root, "log", "--format=%H", "--grep=Import-FlagScale") == ""


def test_uncommitted_changes_where_the_import_writes_are_refused(
    checkout: FlagScaleCheckout, pristine: Path, tmp_path: Path
) -> None:
    root = fresh_workspace(pristine, tmp_path / "workspace")
    write_files(root, {"hardware/notes.md": "mine\n"})
    result = inv(root, "import-flagscale", str(checkout.root), check=False)
    assert result.returncode == 1
    assert "hardware/notes.md has uncommitted changes" in result.stderr
    assert (root / "hardware/notes.md").read_text() == "mine\n"
