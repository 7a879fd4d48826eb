"""``inv refresh`` end to end on a submodule backend: several device types and tasks, ordinary
commits, history entries as ``inv record-history`` writes them, the user's other work left
alone, refusals, and ``--abort`` giving back the exact state from before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.gitrepos import inv, run_git, write_files
from tests.refresh_fixtures import (
    BACKEND,
    Refreshable,
    edit,
    insert,
    lines,
    make_refreshable,
    move_upstream,
    user_state,
)

V1 = {
    "megatron/a.py": lines("a"),
    "megatron/b.py": lines("b"),
    "megatron/c.py": lines("c"),
    "megatron/layered.py": lines("l"),
    "README.md": "Megatron-LM\n",
}
LAYER = {"megatron/layered.py": edit(lines("l"), 2, "FlagScale's line")}
DEVICES = {
    "Metax_C550": {
        BACKEND: {"megatron/a.py": edit(lines("a"), 20, "metax a")},
        "FlagScale": {"README.md": "FlagScale on Metax\n"},
    },
    "Ascend_910B": {BACKEND: {"megatron/b.py": edit(lines("b"), 5, "ascend b")}},
    "Cambricon_MLU": {BACKEND: {"megatron/c.py": edit(lines("c"), 25, "cambricon c")}},
}
TASKS = {"Ascend_910B": ("inference", "train")}
MOVE = {
    "megatron/a.py": insert(lines("a"), 1, ["# new header"]),  # Metax's hunk moves by one
    "megatron/layered.py": edit(lines("l"), 28, "upstream l"),  # the layer merges
    "megatron/new_module.py": "NEW = True\n",
}


@pytest.fixture(scope="module")
def workspace(
    module_env: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Refreshable, str]:
    found = make_refreshable(
        tmp_path_factory.mktemp("flow"),
        upstream=V1,
        layer=LAYER,
        devices=DEVICES,
        tasks=TASKS,
    )
    return found, move_upstream(found, MOVE)


def copy_of(found: Refreshable, tmp: Path) -> Path:
    root = tmp / "FlagScale"
    shutil.copytree(found.root, root, symlinks=True)
    return root


def refresh(root: Path, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return inv(root, "refresh", *args, check=check)


def test_a_clean_refresh_is_ordinary_commits_and_every_set_is_clean_on_the_new_pin(
    workspace: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = workspace
    root = copy_of(found, tmp_path)
    before = run_git(root, "rev-parse", "HEAD")
    unchanged = {
        device: run_git(root, "show", f"HEAD:hardware/{device}/{BACKEND}/{BACKEND}.patch")
        for device in ("Ascend_910B", "Cambricon_MLU")
    }
    result = refresh(
        root, "--backend", BACKEND, "--to", new[:10], "--json", str(tmp_path / "r.json")
    )

    assert ": done" in result.stdout
    log = run_git(root, "log", "--format=%s", f"{before}..HEAD").splitlines()
    assert log == [
        f"refresh: history of Ascend_910B, Cambricon_MLU, Metax_C550 on {BACKEND} {new[:12]}",
        f"refresh: Metax_C550 sets on {BACKEND} {new[:12]}",
        f"refresh: Cambricon_MLU sets on {BACKEND} {new[:12]}",
        f"refresh: Ascend_910B sets on {BACKEND} {new[:12]}",
        f"refresh: {BACKEND} {found.pin[:12]} -> {new[:12]}: pin and base layer",
    ]
    # only the submodule's checkout lags (at the old pin) until `inv unpatch` moves it
    assert run_git(root, "status", "--porcelain") == f"M third_party/{BACKEND}"
    assert run_git(root, "rev-parse", f"HEAD:third_party/{BACKEND}") == new
    author = run_git(root, "log", "-1", "--format=%an <%ae>")
    assert author == "FlagScale Test <test@flagscale.invalid>"  # the user's own identity
    layered = (root / "backends" / BACKEND / "megatron/layered.py").read_text()
    assert layered == edit(edit(lines("l"), 28, "upstream l"), 2, "FlagScale's line")

    report = json.loads((tmp_path / "r.json").read_text())
    sets = {(d["device_type"], s["backend"]): s for d in report["devices"] for s in d["sets"]}
    assert sets[("Metax_C550", BACKEND)]["status"] == "carried"
    assert sets[("Metax_C550", BACKEND)]["summary"]["moved"] == 1
    assert sets[("Metax_C550", "FlagScale")]["status"] == "unchanged"
    for device, patch in unchanged.items():  # unchanged sets keep their bytes
        assert sets[(device, BACKEND)]["status"] == "unchanged"
        assert run_git(root, "show", f"HEAD:hardware/{device}/{BACKEND}/{BACKEND}.patch") == patch
    pin_commit = run_git(root, "rev-parse", "HEAD~4")
    for device in DEVICES:
        metadata = (root / "hardware" / device / BACKEND / "metadata.yaml").read_text()
        assert f'backend_pin: "{new}"' in metadata
        assert f'flagscale_base: "{pin_commit}"' in metadata

    matrix = inv(root, "matrix", "--strict", "--json", str(tmp_path / "m.json"))
    assert "4 patch sets at" in matrix.stdout and "4 clean" in matrix.stdout
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert {r["refresh"]["status"] for r in rows} == {"carried", "unchanged"}
    assert f"refresh {BACKEND} {found.pin[:12]} -> {new[:12]}: done" in matrix.stdout


def test_history_entries_are_what_record_history_writes(
    workspace: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = workspace
    root = copy_of(found, tmp_path)
    before = run_git(root, "rev-parse", "HEAD")
    refresh(root, "--backend", BACKEND, "--to", new)
    written = (root / "hardware" / "patch_history.yaml").read_bytes()

    # independently: the old history, then inv record-history --commit per device type
    old = run_git(root, "show", f"{before}:hardware/patch_history.yaml") + "\n"
    (root / "hardware" / "patch_history.yaml").write_text(old)
    for device, sets in DEVICES.items():
        commit = run_git(root, "log", "-1", "--format=%H", f"--grep=refresh: {device} sets")
        inv(
            root,
            "record-history",
            "--device-type",
            device,
            "--backend",
            *sorted(sets),
            "--commit",
            commit,
        )
    assert (root / "hardware" / "patch_history.yaml").read_bytes() == written
    history = written.decode()
    assert history.count("Ascend_910B") == 1 and "inference:" in history  # both tasks recorded


def test_the_users_other_work_stays_as_it_was(
    workspace: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = workspace
    root = copy_of(found, tmp_path)
    write_files(root, {"notes/draft.md": "stashed draft\n"})
    run_git(root, "stash", "push", "-q", "--include-untracked", "-m", "my draft")
    write_files(root, {"flagscale/train.py": "staged\n", "flagscale/other.py": "unstaged\n"})
    run_git(root, "add", "flagscale/train.py")
    write_files(root, {"flagscale/train.py": "staged, then edited\n", "untracked.txt": "mine\n"})
    run_git(root, "checkout", "-q", "-b", "vendor-work")
    staged = run_git(root, "diff", "--cached")
    unstaged = run_git(root, "diff")

    refresh(root, "--backend", BACKEND, "--to", new)

    assert run_git(root, "diff", "--cached") == staged
    assert run_git(root, "diff", "--", "flagscale") == unstaged
    assert run_git(root, "stash", "list") == "stash@{0}: On main: my draft"
    assert run_git(root, "symbolic-ref", "HEAD") == "refs/heads/vendor-work"
    assert (root / "untracked.txt").read_text() == "mine\n"
    # the submodule's checkout is the user's: it stays at the old pin until `inv unpatch`
    assert run_git(root / "third_party" / BACKEND, "rev-parse", "HEAD") == found.pin


def test_refuses_uncommitted_changes_where_it_writes_and_a_second_refresh(
    workspace: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, new = workspace
    root = copy_of(found, tmp_path)
    write_files(root, {"hardware/Ascend_910B/notes.txt": "wip\n"})
    refused = refresh(root, "--backend", BACKEND, "--to", new, check=False)
    assert refused.returncode == 1
    assert "uncommitted changes where the refresh writes: hardware/Ascend_910B/notes.txt" in (
        refused.stderr
    )
    assert run_git(root, "rev-parse", "HEAD") == found.head()
    (root / "hardware/Ascend_910B/notes.txt").unlink()

    missing = refresh(root, "--backend", BACKEND, check=False)
    assert missing.returncode == 1 and "missing --to" in missing.stderr
    unknown = refresh(root, "--backend", BACKEND, "--to", "no-such-ref", check=False)
    assert unknown.returncode == 1
    assert "no commit or ref 'no-such-ref'" in unknown.stderr
    nothing = refresh(root, "--continue", check=False)
    assert nothing.returncode == 1 and "no refresh is in progress" in nothing.stderr
    assert run_git(root, "status", "--porcelain", "--ignore-submodules=all") == ""


def test_abort_after_a_stop_gives_back_the_exact_state(
    workspace: tuple[Refreshable, str], tmp_path: Path
) -> None:
    found, _new = workspace
    root = copy_of(found, tmp_path)
    conflicting = move_upstream_copy(found, tmp_path, {"megatron/c.py": edit(lines("c"), 25, "x")})
    write_files(root, {"flagscale/wip.py": "staged\n"})
    run_git(root, "add", "flagscale/wip.py")
    run_git(root, "stash", "list")
    before = user_state(root)

    stopped = refresh(root, "--backend", BACKEND, "--to", conflicting, "--no-smoke", check=False)
    assert stopped.returncode == 1 and "Cambricon_MLU's Megatron-LM set" in stopped.stderr
    assert (root / "build" / "refresh").is_dir()
    again = refresh(root, "--backend", BACKEND, "--to", conflicting, check=False)
    assert "a refresh of Megatron-LM to" in again.stderr and "is in progress" in again.stderr

    aborted = refresh(root, "--abort")
    assert "aborted: everything is as it was" in aborted.stdout
    assert user_state(root) == before


def move_upstream_copy(found: Refreshable, tmp: Path, changes: dict) -> str:
    """An upstream commit on a branch of its own (other tests' upstream stays as it was)."""
    upstream = found.upstream
    run_git(upstream, "checkout", "-q", "-B", f"side-{tmp.name}", found.pin)
    write_files(upstream, changes)
    run_git(upstream, "commit", "-q", "-am", "a conflicting change")
    commit = run_git(upstream, "rev-parse", "HEAD")
    run_git(upstream, "checkout", "-q", "main")
    return commit
