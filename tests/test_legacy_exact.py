"""FlagScale's own vendor data, applied exactly as FlagScale's tool applies it, in every command.

The checkout (tests/flagscale_checkout.py) holds every kind of legacy set; each history line's
expected tree comes from plain ``git apply`` of the stored patches in a scratch clone, the way
``tools/patch/unpatch.py`` runs it (strict ``--whitespace warn``, ``--whitespace fix`` only for a
file that fails). The workspace is a clone of that checkout that declares its submodules, so
FlagScale's history (the sets' base commits) is there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from flagscale.builds.builder import BuildRequest, build_devices
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
    FlagScaleCheckout,
    built_parts,
    declare_in_clone,
    differing,
    expected_parts,
    make_flagscale_checkout,
)
from tests.gitrepos import commit_all, inv, make_workspace, run_git, write_files

LINES = [
    (BIG, "train"),
    (SHARED, "train"),
    (SHARED, "inference"),
    (SECRET, "train"),
    (FALLBACK, "train"),
    (LOST_KEY, "inference"),
    (OLDEST, "train"),
]


@pytest.fixture(scope="module")
def checkout(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> FlagScaleCheckout:
    return make_flagscale_checkout(tmp_path_factory.mktemp("flagscale"))


@pytest.fixture(scope="module")
def workspace(checkout: FlagScaleCheckout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return declare_in_clone(checkout, tmp_path_factory.mktemp("declared") / "FlagScale")


@pytest.fixture
def own_clone(checkout: FlagScaleCheckout, tmp_path: Path) -> Path:
    return declare_in_clone(checkout, tmp_path / "FlagScale")


def key_paths(checkout: FlagScaleCheckout) -> tuple[Path, ...]:
    return (checkout.keys["Cambricon"], checkout.keys["Mthreads"] / "private_key.pem")


def key_args(checkout: FlagScaleCheckout) -> list[str]:
    return [arg for path in key_paths(checkout) for arg in ("--key-path", str(path))]


def build_line(root: Path, checkout: FlagScaleCheckout, device: str, task: str) -> Path:
    request = BuildRequest(
        devices=(device,), task=task, key_paths=key_paths(checkout), report=quiet, force=True
    )
    return build_devices(find_workspace(root), request)[device]


# --- 1. byte-identical trees ---------------------------------------------------------------------


@pytest.mark.parametrize(("device", "task"), LINES)
def test_build_gives_the_tree_flagscales_tool_gives(
    checkout: FlagScaleCheckout, workspace: Path, device: str, task: str
) -> None:
    expected = checkout.expected(device, task)
    built = build_line(workspace, checkout, device, task)
    assert differing(built_parts(built, expected.backend_names), expected_parts(expected)) == []


def test_added_trailing_whitespace_blank_lines_and_crlf_survive(
    checkout: FlagScaleCheckout, workspace: Path
) -> None:
    built = build_line(workspace, checkout, BIG, "train") / "third_party" / MEGATRON
    assert (built / "megatron/core/layer_73.py").read_bytes().endswith(b"fast = True   \n")
    assert (built / "megatron/core/layer_74.py").read_bytes().endswith(b"\tdone = 1\t\n")
    assert (built / "megatron/core/layer_75.py").read_bytes().endswith(b"value_0\n\n\n")
    assert (built / "megatron/blank_tail.py").read_bytes() == b"y = 1\n\n\n"
    assert (built / "megatron/crlf.txt").read_bytes() == b"one\r\ndeux\r\nthree\r\nfour  \r\n"
    assert (built / "données/modèle.py").read_bytes() == b"poids = 2   \n"


def test_the_whitespace_fallback_is_per_file_and_reported(
    checkout: FlagScaleCheckout, own_clone: Path
) -> None:
    result = inv(own_clone, "build", "--device", FALLBACK, "--task", "train")

    expected = checkout.expected(FALLBACK)
    built = built_parts(own_clone / "build" / FALLBACK, expected.backend_names)
    assert differing(built, expected_parts(expected)) == []
    layer = own_clone / "build" / FALLBACK / "third_party" / MEGATRON / "megatron/core/layer_30.py"
    assert layer.read_bytes().endswith(b"kunlun = True    \n")  # applied strictly: kept
    patch = f"hardware/{FALLBACK}/{MEGATRON}/megatron/core/fallback.py.patch"
    assert expected.fixed == [patch]
    output = result.stdout + result.stderr
    assert f"{patch}: strict git apply failed; applied with --whitespace=fix" in output
    assert "layer_30.py.patch" not in output


def test_unpatch_device_type_gives_the_same_tree(
    checkout: FlagScaleCheckout, own_clone: Path
) -> None:
    inv(
        own_clone,
        "unpatch",
        "--device-type",
        BIG,
        "--task",
        "train",
        "--backend",
        f"{FLAGSCALE} {MEGATRON}",
    )
    expected = checkout.expected(BIG)
    built = built_parts(own_clone / "build" / BIG, expected.backend_names)
    assert differing(built, expected_parts(expected)) == []


# --- 2. the history tools, the matrix and bundles read the same sets ---------------------------


def test_record_history_records_a_legacy_set(checkout: FlagScaleCheckout, own_clone: Path) -> None:
    meta = own_clone / "hardware" / BIG / MEGATRON / "diff.yaml"
    data = yaml.safe_load(meta.read_text(encoding="utf-8"))
    data["models"].append("qwen")
    meta.write_text(yaml.dump(data, sort_keys=True), encoding="utf-8")
    changed = commit_all(own_clone, "Iluvatar: one more model")

    result = inv(
        own_clone, "record-history", "--device-type", BIG, "--backend", f"{FLAGSCALE} {MEGATRON}"
    )

    assert f"{BIG} train {FLAGSCALE}+{MEGATRON}: recorded {changed}" in result.stdout
    history = yaml.safe_load((own_clone / "hardware/patch_history.yaml").read_text())
    assert history[BIG]["train"][f"{FLAGSCALE}+{MEGATRON}"][-1] == changed
    commit_all(own_clone, "history")
    expected = checkout.expected(BIG)
    built = build_line(own_clone, checkout, BIG, "train")
    assert differing(built_parts(built, expected.backend_names), expected_parts(expected)) == []


def test_record_history_takes_the_tasks_from_diff_yaml(
    checkout: FlagScaleCheckout, own_clone: Path
) -> None:
    history = own_clone / "hardware" / "patch_history.yaml"
    data = yaml.safe_load(history.read_text(encoding="utf-8"))
    del data[SHARED]
    history.write_text(yaml.safe_dump(data), encoding="utf-8")
    commit_all(own_clone, "history without Metax")

    result = inv(
        own_clone,
        "record-history",
        "--device-type",
        SHARED,
        "--backend",
        f"{FLAGSCALE} {MEGATRON}",
        "--commit",
        checkout.set_commits[SHARED],
    )

    commit = checkout.set_commits[SHARED]
    assert f"{SHARED} inference {FLAGSCALE}+{MEGATRON}: recorded {commit}" in result.stdout
    assert f"{SHARED} train {FLAGSCALE}+{MEGATRON}: recorded {commit}" in result.stdout


def test_check_history_accepts_legacy_entries(own_clone: Path) -> None:
    result = inv(own_clone, "check-history")
    assert "hardware/patch_history.yaml: ok" in result.stdout


def test_check_history_repairs_a_squash_merged_legacy_set(own_clone: Path) -> None:
    run_git(own_clone, "checkout", "-q", "-b", "vendor")
    meta = own_clone / "hardware" / FALLBACK / MEGATRON / "diff.yaml"
    meta.write_text(meta.read_text(encoding="utf-8") + "# regenerated\n", encoding="utf-8")
    vendor = commit_all(own_clone, "Kunlun: regenerated")
    history = own_clone / "hardware" / "patch_history.yaml"
    data = yaml.safe_load(history.read_text(encoding="utf-8"))
    data[FALLBACK]["train"][MEGATRON].append(vendor)
    history.write_text(yaml.safe_dump(data), encoding="utf-8")
    commit_all(own_clone, "history: Kunlun")
    run_git(own_clone, "checkout", "-q", "main")
    run_git(own_clone, "merge", "-q", "--squash", "vendor")
    run_git(own_clone, "commit", "-q", "-m", "Kunlun (squashed)")
    squash = run_git(own_clone, "rev-parse", "HEAD")

    result = inv(own_clone, "check-history", "--repair")

    assert f"remapped to {squash}, which holds identical patch sets" in result.stdout
    repaired = yaml.safe_load(history.read_text(encoding="utf-8"))
    assert repaired[FALLBACK]["train"][MEGATRON][-1] == squash


def test_matrix_checks_legacy_sets_as_they_apply(
    checkout: FlagScaleCheckout, own_clone: Path
) -> None:
    run_git(own_clone, "submodule", "update", "--init", "-q")  # the matrix fetches no pins
    out = own_clone.parent / "matrix.json"
    inv(own_clone, "matrix", "--json", str(out), *key_args(checkout))

    rows = {(r["device_type"], r["backend"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {
        (device, backend)
        for (device, _task), expected in checkout.devices.items()
        for backend in expected.backend_names
    }
    assert {key: row["verdict"] for key, row in rows.items()} == dict.fromkeys(rows, "clean")
    fallback = rows[(FALLBACK, MEGATRON)]
    assert fallback["on_base"]["reason"] == "whitespace fixed"
    assert "megatron/core/fallback.py.patch" in fallback["on_base"]["detail"]
    assert fallback["backend_pin"] == checkout.older_pin


def test_bundle_of_legacy_sets_verifies_and_builds(
    checkout: FlagScaleCheckout, own_clone: Path, tmp_path: Path
) -> None:
    key = tmp_path / "release.key"
    inv(own_clone, "keygen", "--out", str(key))
    out = tmp_path / "bundles"
    inv(own_clone, "bundle", "--all", "--version", "1.0", "--sign-key", str(key), "--out", str(out))
    bundle = out / "flagscale-patches-1.0.tar.gz"
    verified = inv(own_clone, "verify-bundle", str(bundle), "--trust", f"{key}.pub")
    assert "verified bundle 1.0" in verified.stdout

    user = declare_in_clone(checkout, tmp_path / "user")
    for device, task in [(BIG, "train"), (FALLBACK, "train"), (SECRET, "train")]:
        inv(
            user,
            "build",
            "--device",
            device,
            "--task",
            task,
            "--bundle",
            str(bundle),
            "--trust",
            f"{key}.pub",
            "--force",
            *key_args(checkout),
        )
        expected = checkout.expected(device, task)
        built = built_parts(user / "build" / device, expected.backend_names)
        assert differing(built, expected_parts(expected)) == [], device


# --- 3. outside FlagScale's history -------------------------------------------------------------


def test_a_base_commit_missing_from_the_workspace_names_the_import(
    checkout: FlagScaleCheckout, tmp_path: Path
) -> None:
    """A workspace that never held FlagScale's history: fetching cannot help, importing does."""
    root, _ = make_workspace(
        tmp_path / "elsewhere",
        {MEGATRON: {"README.md": "x\n"}},
    )
    shutil.copytree(checkout.root / "hardware" / OLDEST, root / "hardware" / OLDEST)
    history = {OLDEST: {"train": {MEGATRON: ["0" * 40]}}}
    write_files(root, {"hardware/patch_history.yaml": yaml.safe_dump(history)})
    commit = commit_all(root, "FlagScale's Hygon set, copied")
    history[OLDEST]["train"][MEGATRON] = [commit]
    write_files(root, {"hardware/patch_history.yaml": yaml.safe_dump(history)})
    commit_all(root, "history")

    result = inv(root, "build", "--device", OLDEST, check=False)

    assert result.returncode == 1
    assert "unshallow" not in result.stderr
    assert "inv import-flagscale" in result.stderr


def test_validate_checks_every_diff_yaml(checkout: FlagScaleCheckout, own_clone: Path) -> None:
    from flagscale.ci.validate import validate_workspace
    from flagscale.core.errors import FlagScaleError

    checked = validate_workspace(own_clone)
    assert f"hardware/{BIG}/{MEGATRON}/diff.yaml" in checked
    short = checkout.bases[0][:7]
    assert f"hardware/{OLDEST}/{MEGATRON}/{short}.yaml" in checked

    meta = own_clone / "hardware" / SHARED / FLAGSCALE / "diff.yaml"
    meta.write_text(meta.read_text(encoding="utf-8").replace("- train", "- training"))
    with pytest.raises(FlagScaleError, match=f"hardware/{SHARED}/{FLAGSCALE}/diff.yaml: at task"):
        validate_workspace(own_clone)
