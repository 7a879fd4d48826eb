"""Vendor patch sets (flow 2) on real repositories: contents, round trip, user state, errors."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.overlay import layered_trees
from flagscale.upstream.workspace import FLAGSCALE, load_workspace
from flagscale.vendor.make_sets import PatchRequest, create_patch_sets
from flagscale.vendor.patchset import load_patch_set, read_metadata
from tests.gitrepos import inv, run_git, snapshot, write_files
from tests.vendor_workspace import (
    BACKEND,
    VendorWorkspace,
    adapt_backend,
    adapt_flagscale,
    make_vendor_workspace,
    user_state,
)

DEVICE = "Metax_C550"


def request(vendor: VendorWorkspace, **changes) -> PatchRequest:
    fields = {
        "device_type": DEVICE,
        "tasks": ["train"],
        "backends": [BACKEND, FLAGSCALE],
        "commit": vendor.base,
        "backend_version": "0.16.1",
        "models": ["llama", "aquila"],
        "message": "Metax C550: train adaptation",
        "contact": "Vendor Dev <dev@metax.invalid>",
        "report": lambda line: None,
    }
    fields.update(changes)
    return PatchRequest(**fields)


def make_sets(vendor: VendorWorkspace, **changes) -> list[Path]:
    return create_patch_sets(load_workspace(vendor.root), request(vendor, **changes))


def stored(vendor: VendorWorkspace, backend: str) -> dict[str, bytes]:
    folder = vendor.root / "hardware" / DEVICE / backend
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def adapted(tmp_path: Path) -> VendorWorkspace:
    vendor = make_vendor_workspace(tmp_path)
    adapt_backend(vendor)
    adapt_flagscale(vendor)
    return vendor


def vendor_view(checkout: Path, layer: Path) -> dict[str, tuple[str, bytes]]:
    """The checkout as the vendor sees it: overlay links read as the files they point to."""
    view = {}
    for path, (kind, content) in snapshot(checkout).items():
        if path == ".git" or path.endswith(".log"):
            continue
        full = checkout / path
        if kind == "link" and Path(os.path.realpath(full)).is_relative_to(os.path.realpath(layer)):
            kind = "exec" if os.access(full, os.X_OK) else "file"
            content = full.read_bytes()
        view[path] = (kind, content)
    return view


def apply_to_export(ws, tree: str, patch: bytes, destination: Path) -> None:
    layered_trees.export_tree(ws, tree, destination)
    subprocess.run(
        ["git", "apply", "--whitespace=nowarn", "-"],
        cwd=destination,
        input=patch,
        check=True,
        capture_output=True,
    )


# --- what is written ---------------------------------------------------------------------------


def test_sets_are_written_with_metadata_and_committed_alone(adapted: VendorWorkspace) -> None:
    head = run_git(adapted.root, "rev-parse", "HEAD")
    folders = make_sets(adapted)
    assert folders == [
        adapted.root / f"hardware/{DEVICE}/{BACKEND}",
        adapted.root / f"hardware/{DEVICE}/{FLAGSCALE}",
    ]
    assert run_git(adapted.root, "rev-parse", "HEAD~1") == head
    assert run_git(adapted.root, "log", "-1", "--format=%s") == "Metax C550: train adaptation"
    committed = run_git(adapted.root, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert committed == [
        f"hardware/{DEVICE}/{FLAGSCALE}/{FLAGSCALE}.patch",
        f"hardware/{DEVICE}/{FLAGSCALE}/metadata.yaml",
        f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch",
        f"hardware/{DEVICE}/{BACKEND}/metadata.yaml",
    ]
    files = stored(adapted, BACKEND)
    metadata = yaml.safe_load(files["metadata.yaml"])
    pin = run_git(adapted.root, "ls-tree", adapted.base, f"third_party/{BACKEND}").split()[2]
    assert metadata.pop("results")  # checked against git in tests/test_set_results.py
    assert metadata == {
        "version": 1,
        "device_type": DEVICE,
        "backend": BACKEND,
        "flagscale_base": adapted.base,
        "backend_pin": pin,
        "backend_version": "0.16.1",
        "models": ["aquila", "llama"],
        "tasks": ["train"],
        "contact": "Vendor Dev <dev@metax.invalid>",
        "tool_version": "0.1.0",
        "patches": [
            {
                "file": f"{BACKEND}.patch",
                "sha256": hashlib.sha256(files[f"{BACKEND}.patch"]).hexdigest(),
                "encrypted": False,
            }
        ],
        "encryption": None,
    }
    text = files["metadata.yaml"].decode()
    assert f'flagscale_base: "{adapted.base}"' in text and f'backend_pin: "{pin}"' in text
    assert yaml.safe_load(stored(adapted, FLAGSCALE)["metadata.yaml"])["backend_pin"] is None


def test_user_branch_index_stash_and_work_tree_are_kept(adapted: VendorWorkspace) -> None:
    write_files(adapted.root, {"stashed.txt": "stash me\n"})
    run_git(adapted.root, "stash", "push", "-q", "--include-untracked", "--", "stashed.txt")
    before = user_state(adapted.root)
    backend_before = snapshot(adapted.checkout)
    make_sets(adapted)
    assert user_state(adapted.root) == before
    assert snapshot(adapted.checkout) == backend_before
    assert run_git(adapted.root, "status", "--porcelain", "--", "hardware") == ""
    assert run_git(adapted.root, "diff", "--cached", "--name-only") == "tools/x.txt"


def test_patch_bytes_are_deterministic(adapted: VendorWorkspace, tmp_path: Path) -> None:
    make_sets(adapted)
    first = {b: stored(adapted, b) for b in (BACKEND, FLAGSCALE)}
    head = run_git(adapted.root, "rev-parse", "HEAD")
    lines: list[str] = []
    make_sets(adapted, report=lines.append)
    assert {b: stored(adapted, b) for b in (BACKEND, FLAGSCALE)} == first
    assert run_git(adapted.root, "rev-parse", "HEAD") == head
    assert lines[-1] == "patch sets unchanged: nothing new to commit"


def test_patches_apply_to_the_layered_tree_and_give_the_vendor_tree(
    adapted: VendorWorkspace, tmp_path: Path
) -> None:
    make_sets(adapted)
    ws = load_workspace(adapted.root)
    backend_patch = load_patch_set(ws, DEVICE, BACKEND).patches[0]
    for kind in (b"new file mode 120000", b"old mode 100644", b"deleted file", b"GIT binary patch"):
        assert kind in backend_patch
    assert b"+line one\r\n" in backend_patch
    rebuilt = tmp_path / "rebuilt" / BACKEND
    apply_to_export(
        ws, layered_trees.layered_tree(ws, BACKEND, adapted.base), backend_patch, rebuilt
    )
    assert snapshot(rebuilt) == vendor_view(adapted.checkout, adapted.root / "backends" / BACKEND)

    flagscale_patch = load_patch_set(ws, DEVICE, FLAGSCALE).patches[0]
    rebuilt = tmp_path / "rebuilt" / FLAGSCALE
    base_tree = layered_trees.flagscale_tree(ws, adapted.base)
    apply_to_export(ws, base_tree, flagscale_patch, rebuilt)
    expected = {
        path: entry
        for path, entry in snapshot(adapted.root, skip=(".git", "third_party", "hardware")).items()
        if not path.startswith("backends/")
    }
    got = {
        path: entry for path, entry in snapshot(rebuilt).items() if not path.startswith("backends/")
    }
    assert got == expected


def test_changes_of_unselected_parts_are_reported_not_lost(adapted: VendorWorkspace) -> None:
    lines: list[str] = []
    make_sets(adapted, backends=[BACKEND], report=lines.append)
    warning = next(line for line in lines if line.startswith("warning:"))
    assert "4 changed file(s)" in warning and "flagscale/metax.py" in warning
    assert not (adapted.root / "hardware" / DEVICE / FLAGSCALE).exists()
    assert (adapted.root / "flagscale" / "train.py").read_text().endswith("'metax'\n")


def test_encrypted_sets(adapted: VendorWorkspace, tmp_path: Path) -> None:
    make_sets(adapted)
    plain = load_patch_set(load_workspace(adapted.root), DEVICE, BACKEND).patches[0]
    key_path = tmp_path / "keys" / "metax.key"
    lines: list[str] = []
    make_sets(adapted, key_path=key_path, report=lines.append)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key_text = key_path.read_text()
    assert any(str(key_path) in line and "0600" in line for line in lines)
    assert not any(key_text.splitlines()[-1] in line for line in lines)
    files = stored(adapted, BACKEND)
    assert sorted(files) == [f"{BACKEND}.patch.enc", "metadata.yaml"]
    metadata = read_metadata(load_workspace(adapted.root), DEVICE, BACKEND)
    assert metadata.encryption is not None and metadata.encryption["algorithm"] == "AES-256-GCM"
    assert metadata.encryption["key_id"].startswith("fsk1-")
    assert metadata.patches[0]["encrypted"] is True
    assert plain not in files[f"{BACKEND}.patch.enc"]
    ws = load_workspace(adapted.root)
    assert load_patch_set(ws, DEVICE, BACKEND, key_path=key_path).patches[0] == plain
    committed = run_git(adapted.root, "show", "--name-status", "--format=", "HEAD").splitlines()
    assert f"D\thardware/{DEVICE}/{BACKEND}/{BACKEND}.patch" in committed
    assert f"A\thardware/{DEVICE}/{BACKEND}/{BACKEND}.patch.enc" in committed
    with pytest.raises(
        FlagScaleError, match=r"is encrypted with key fsk1-[0-9a-f]{16} \(ask Vendor Dev"
    ):
        load_patch_set(ws, DEVICE, BACKEND)
    again = dict(files)
    make_sets(adapted, key_path=key_path)
    assert stored(adapted, BACKEND) == again  # same key, same bytes


def test_sets_read_from_a_commit_and_hash_checked(adapted: VendorWorkspace) -> None:
    make_sets(adapted)
    ws = load_workspace(adapted.root)
    commit = run_git(adapted.root, "rev-parse", "HEAD")
    from_commit = load_patch_set(ws, DEVICE, BACKEND, commit=commit)
    assert from_commit == load_patch_set(ws, DEVICE, BACKEND)
    patch = adapted.root / "hardware" / DEVICE / BACKEND / f"{BACKEND}.patch"
    patch.write_bytes(patch.read_bytes() + b"\n")
    with pytest.raises(FlagScaleError, match=f"{BACKEND}.patch: sha256 does not match"):
        load_patch_set(ws, DEVICE, BACKEND)
    assert load_patch_set(ws, DEVICE, BACKEND, commit=commit) == from_commit


def test_missing_pieces_are_asked_for_on_a_terminal(adapted: VendorWorkspace) -> None:
    answers = iter(["", "0.16.1", "llama, aquila", "Metax: adapt", ""])
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    make_sets(adapted, backend_version=None, models=None, message=None, contact=None, ask=ask)
    # one version per backend whose version the tool cannot tell (FlagScale's is its describe);
    # no contact without encryption
    assert [p.split(" (")[0].split(":")[0] for p in asked] == [
        f"{BACKEND} version",
        f"{BACKEND} version",
        "Models adapted",
        "Commit message",
    ]
    ws = load_workspace(adapted.root)
    metadata = read_metadata(ws, DEVICE, BACKEND)
    assert metadata.models == ("aquila", "llama") and metadata.contact == ""
    assert metadata.backend_version == "0.16.1"
    own = read_metadata(ws, DEVICE, FLAGSCALE)
    assert own.backend_version == run_git(adapted.root, "rev-parse", "--short=12", adapted.base)
    assert run_git(adapted.root, "log", "-1", "--format=%s") == "Metax: adapt"


def test_backend_versions_name_their_backend(adapted: VendorWorkspace) -> None:
    make_sets(adapted, backend_version=f"{BACKEND}=0.9.0")
    assert read_metadata(load_workspace(adapted.root), DEVICE, BACKEND).backend_version == "0.9.0"
    for given, error in [
        (
            "vllm=1.0",
            f"--backend-version 'vllm=1.0': expected NAME=VERSION with NAME one of {BACKEND}",
        ),
        (
            f"{FLAGSCALE}=2",
            "--backend-version FlagScale=2: FlagScale is .* at the base commit",
        ),
    ]:
        with pytest.raises(FlagScaleError, match=error):
            make_sets(adapted, backend_version=given)


def test_a_no_op_says_so_without_claiming_to_write(adapted: VendorWorkspace) -> None:
    make_sets(adapted)
    lines: list[str] = []
    make_sets(adapted, report=lines.append)
    assert lines[-1] == "patch sets unchanged: nothing new to commit"
    assert not [line for line in lines if line.startswith(("wrote ", "committed "))]


def test_input_ending_at_a_prompt_names_the_flag_to_pass(adapted: VendorWorkspace) -> None:
    answers = iter(["0.16.1", "llama"])

    def ask(prompt: str) -> str:
        for answer in answers:
            return answer
        raise EOFError

    with pytest.raises(FlagScaleError) as caught:
        make_sets(adapted, backend_version=None, models=None, message=None, contact=None, ask=ask)
    assert str(caught.value) == (
        "no answer for commit message: the input ended (pass --message ... on the command line)"
    )
    assert run_git(adapted.root, "status", "--porcelain", "--", "hardware") == ""


def test_interrupted_swap_is_finished_before_the_next_run(adapted: VendorWorkspace) -> None:
    make_sets(adapted)
    folder = adapted.root / "hardware" / DEVICE
    (folder / BACKEND).rename(folder / f".{BACKEND}.old-dead")  # killed between the renames
    (folder / f".{FLAGSCALE}.new-dead").mkdir()
    make_sets(adapted)
    assert sorted(p.name for p in folder.iterdir()) == sorted([BACKEND, FLAGSCALE])
    assert run_git(adapted.root, "status", "--porcelain", "--", "hardware") == ""


def test_commit_hooks_and_autocrlf_do_not_change_what_is_committed(
    adapted: VendorWorkspace,
) -> None:
    hook = adapted.root / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    run_git(adapted.root, "config", "core.autocrlf", "true")
    make_sets(adapted)
    path = f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch"
    blob = subprocess.run(
        ["git", "cat-file", "blob", f"HEAD:{path}"],
        cwd=adapted.root,
        capture_output=True,
        check=True,
    ).stdout
    assert blob == (adapted.root / path).read_bytes() and b"\r\n" in blob


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["metax_C550", "Metax-C550", "Metax_C550_X", "Metax", "Metax_"])
def test_bad_device_type(adapted: VendorWorkspace, device: str) -> None:
    with pytest.raises(FlagScaleError, match=f"device type '{device}' is not Vendor_Model"):
        make_sets(adapted, device_type=device)


def test_unknown_task_and_backend(adapted: VendorWorkspace) -> None:
    with pytest.raises(
        FlagScaleError, match="unknown task 'training'.*train, inference, post_train"
    ):
        make_sets(adapted, tasks=["training"])
    with pytest.raises(
        FlagScaleError, match=f"unknown backend 'vllm'.*declares {FLAGSCALE}, {BACKEND}"
    ):
        make_sets(adapted, backends=["vllm"])


def test_base_commit_must_exist(adapted: VendorWorkspace) -> None:
    with pytest.raises(FlagScaleError, match="--commit: commit '1234abcd' does not exist"):
        make_sets(adapted, commit="1234abcd")


def test_missing_identity_is_refused_before_anything_is_written(
    adapted: VendorWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    for name in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(
        FlagScaleError, match=r"git has no identity.*git config --global user.email"
    ):
        make_sets(adapted)
    assert not (adapted.root / "hardware" / DEVICE).exists()


def test_dirty_hardware_folder_is_refused(adapted: VendorWorkspace) -> None:
    write_files(adapted.root, {f"hardware/{DEVICE}/environment_variables.sh": "A=1\n"})
    index = (adapted.root / ".git" / "index").read_bytes()
    with pytest.raises(
        FlagScaleError,
        match=r"hardware/Metax_C550/ has uncommitted changes \(hardware/Metax_C550/environment_",
    ):
        make_sets(adapted)
    assert (adapted.root / ".git" / "index").read_bytes() == index
    assert not (adapted.root / "hardware" / DEVICE / BACKEND).exists()


def test_backend_without_changes_is_refused(tmp_path: Path) -> None:
    vendor = make_vendor_workspace(tmp_path)
    adapt_flagscale(vendor)
    with pytest.raises(
        FlagScaleError, match=f"{BACKEND}: no changes against FlagScale {vendor.base}"
    ):
        make_sets(vendor)


def test_nested_repository_in_a_backend_is_refused(adapted: VendorWorkspace) -> None:
    nested = adapted.checkout / "vendor_lib"
    nested.mkdir()
    run_git(nested, "init", "-q")
    write_files(nested, {"x": "x\n"})
    run_git(nested, "add", "x")
    run_git(nested, "commit", "-q", "-m", "x")
    with pytest.raises(FlagScaleError, match="vendor_lib is a nested git repository"):
        make_sets(adapted)


def test_filters_that_would_change_patch_bytes_are_refused(adapted: VendorWorkspace) -> None:
    write_files(adapted.root, {".gitattributes": "* text eol=lf\n"})
    run_git(adapted.root, "add", ".gitattributes")
    run_git(adapted.root, "commit", "-q", "-m", "normalise", "--", ".gitattributes")
    index = (adapted.root / ".git" / "index").read_bytes()
    with pytest.raises(
        FlagScaleError, match=r"git would change the bytes of .*Megatron-LM.patch.*-text -filter"
    ):
        make_sets(adapted)
    assert (adapted.root / ".git" / "index").read_bytes() == index
    assert not (adapted.root / "hardware").exists()


def test_failed_commit_puts_the_previous_sets_back(adapted: VendorWorkspace) -> None:
    make_sets(adapted, models=["llama"])
    before = {b: stored(adapted, b) for b in (BACKEND, FLAGSCALE)}
    head = run_git(adapted.root, "rev-parse", "HEAD")
    run_git(adapted.root, "config", "commit.gpgSign", "true")
    run_git(adapted.root, "config", "gpg.program", "false")
    with pytest.raises(FlagScaleError, match="could not commit the patch sets: .*gpg failed"):
        make_sets(adapted, models=["llama", "qwen"])
    assert {b: stored(adapted, b) for b in (BACKEND, FLAGSCALE)} == before
    assert run_git(adapted.root, "rev-parse", "HEAD") == head
    assert run_git(adapted.root, "status", "--porcelain", "--", "hardware") == ""
    assert sorted(p.name for p in (adapted.root / "hardware" / DEVICE).iterdir()) == sorted(
        [BACKEND, FLAGSCALE]
    )


# --- the command line --------------------------------------------------------------------------


def test_inv_patch_without_terminal_names_missing_flags(adapted: VendorWorkspace) -> None:
    result = inv(
        adapted.root,
        "patch",
        "--device-type",
        DEVICE,
        "--task",
        "train",
        "--backend",
        f"{BACKEND} {FLAGSCALE}",
        "--commit",
        adapted.base,
        "--backend-version",
        "0.16.1",
        check=False,
        input=b"",
    )
    assert result.returncode == 1
    assert "error: missing --models, --message: stdin is not a terminal" in result.stderr
    result = inv(
        adapted.root,
        "patch",
        "--device-type",
        DEVICE,
        "--task",
        "train",
        "--backend",
        BACKEND,
        "--commit",
        adapted.base,
        "--backend-version",
        "0.16.1",
        "--models",
        "llama",
        "--message",
        "m",
        "--key-path",
        str(adapted.root.parent / "k"),
        check=False,
        input=b"",
    )
    assert (
        "error: missing --contact" in result.stderr and "required when encrypting" in result.stderr
    )
    assert not (adapted.root.parent / "k").exists()


def test_inv_patch_with_device_type_writes_and_commits(adapted: VendorWorkspace) -> None:
    result = inv(
        adapted.root,
        "patch",
        "--device-type",
        DEVICE,
        "--task",
        "train",
        "--task",
        "inference",
        "--backend",
        f"{BACKEND},{FLAGSCALE}",
        "--commit",
        adapted.base[:10],
        "--backend-version",
        "0.16.1",
        "--models",
        "llama aquila",
        "--message",
        "adapt",
        "--contact",
        "",
        input=b"",
    )
    assert f"wrote hardware/{DEVICE}/{BACKEND}/" in result.stderr
    metadata = read_metadata(load_workspace(adapted.root), DEVICE, FLAGSCALE)
    assert metadata.tasks == ("inference", "train") and metadata.flagscale_base == adapted.base


def test_inv_patch_asks_on_a_terminal(adapted: VendorWorkspace) -> None:
    import pty
    import sys

    from tests.gitrepos import TOOL_ROOT

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "invoke",
            "--search-root",
            str(TOOL_ROOT),
            "patch",
            "--device-type",
            DEVICE,
            "--task",
            "train",
            "--backend",
            BACKEND,
            "--commit",
            adapted.base,
        ],
        cwd=adapted.root,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    answers = [b"0.16.1\n", b"llama\n", b"Metax: asked\n"]
    seen = b""
    while True:  # until the terminal closes (EIO): each read waits for output, not for a time
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if answers and seen.rstrip().endswith(b":"):
            os.write(controller, answers.pop(0))
            seen += b"\n"
    process.wait()
    os.close(controller)
    assert process.returncode == 0, seen.decode(errors="replace")
    for prompt in (f"{BACKEND} version".encode(), b"Models adapted", b"Commit message"):
        assert prompt in seen
    assert b"Contact" not in seen  # asked only when encrypting
    metadata = read_metadata(load_workspace(adapted.root), DEVICE, BACKEND)
    assert metadata.contact == "" and metadata.models == ("llama",)
    assert run_git(adapted.root, "log", "-1", "--format=%s") == "Metax: asked"


def test_versions_the_tool_can_tell_are_read_not_asked(adapted: VendorWorkspace) -> None:
    # This repository declares Megatron-LM as megatron-core's release 0.16.1; a submodule
    # backend's version cannot be told from its pin.
    from tests.gitrepos import TOOL_ROOT

    tool = load_workspace(TOOL_ROOT)
    head = run_git(TOOL_ROOT, "rev-parse", "HEAD")
    assert layered_trees.release_version_at(tool, "Megatron-LM", head) == "0.16.1"
    vendor = load_workspace(adapted.root)
    assert layered_trees.release_version_at(vendor, BACKEND, adapted.base) is None
