"""A build never loses a user's edits and never writes where the user did not ask.

Saved edits are never overwritten and come with a restore command that works when pasted; hand
edits are found even when they keep a file's size and times; ``build/`` or ``build/<V_M>`` as
symlinks are refused; a read-only or full disk is one line and keeps the previous tree; what
killed builds left behind is removed even when there is nothing to build. Real git, real
processes, real files (and real read-only or full file systems, see tests/fs_conditions.py).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from flagscale.builds.builder import BuildRequest, build_devices
from flagscale.builds.lock import DeviceLock
from flagscale.upstream.workspace import find_workspace
from tests.build_fixtures import DEVICE, Origin, clone_user, make_origin, quiet, rewrite_set
from tests.build_fixtures import set_patch as stored_patch
from tests.fs_conditions import INV, mount_namespace, run_on_full_disk, run_read_only
from tests.gitrepos import inv, snapshot
from tests.vendor_workspace import BACKEND

TARGET = f"build/{DEVICE}"
MODEL = f"third_party/{BACKEND}/megatron/core/model.py"
SAVED = re.compile(
    r"^saved the changes made in (?P<target>\S+) to (?P<patch>\S+) \(to restore them on the"
    r" new build, from any folder: (?P<command>.+)\)$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def origin(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("safety"))


@pytest.fixture
def user(origin: Origin, tmp_path: Path) -> Path:
    """A user's clone, in a folder whose name has a space, with a first build in place."""
    root = clone_user(origin.root, tmp_path / "my clone")
    build(root)
    return root


def build(root: Path, **options) -> dict[str, Path]:
    request = BuildRequest(devices=(DEVICE,), report=quiet, **options)
    return build_devices(find_workspace(root), request)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    """Exit 1 with exactly one ``error:`` line holding ``parts``, and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def newer_sets(root: Path, label: str) -> None:
    """A newer history entry whose Megatron-LM set differs, so the next build has work to do."""
    patch = stored_patch(root, DEVICE, BACKEND).replace(b"metax'", f"metax {label}'".encode())
    rewrite_set(root, DEVICE, BACKEND, patch=patch)


def build_entries(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "build").iterdir())


# --- 4: saved edits are never overwritten; the restore command works when pasted ---------------


def test_second_force_build_keeps_the_edits_the_first_one_saved(user: Path, tmp_path: Path) -> None:
    model = user / TARGET / MODEL
    model.write_text("first hand edit\n")
    first = inv(user, "build", "--device", DEVICE, "--force")
    saved_first = SAVED.search(first.stdout)
    assert saved_first, first.stdout
    first_patch = user / saved_first["patch"]
    first_bytes = first_patch.read_bytes()
    assert b"+first hand edit" in first_bytes

    model.write_text("second hand edit\n")
    second = inv(user, "build", "--device", DEVICE, "--force")
    saved_second = SAVED.search(second.stdout)
    assert saved_second, second.stdout
    second_patch = user / saved_second["patch"]

    assert second_patch != first_patch
    assert first_patch.read_bytes() == first_bytes  # the first save is untouched
    assert b"+second hand edit" in second_patch.read_bytes()
    assert saved_first["patch"].startswith(f"{TARGET}.edits-")
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (first_patch, second_patch))
    assert model.read_text() == "class Model:\n    layers = 4  # vendor\n"

    elsewhere = tmp_path / "some other folder"
    elsewhere.mkdir()
    pasted = subprocess.run(
        saved_second["command"], shell=True, cwd=elsewhere, capture_output=True, text=True
    )
    assert pasted.returncode == 0, pasted.stderr
    assert model.read_text() == "second hand edit\n"


def test_saves_within_the_same_second_get_their_own_names(user: Path) -> None:
    names = []
    for round_ in range(3):
        (user / TARGET / "notes.txt").write_text(f"note {round_}\n")
        names.append(SAVED.search(inv(user, "build", "--device", DEVICE, "--force").stdout))
    patches = [user / found["patch"] for found in names if found]
    assert len(set(patches)) == 3
    assert [f"+note {n}" in p.read_text() for n, p in enumerate(patches)] == [True] * 3


# --- 5: hand edits that keep size and times are found -----------------------------------------


def edit_keeping_size_and_times(path: Path, old: bytes, new: bytes) -> None:
    info = os.lstat(path)
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert os.lstat(path).st_size == info.st_size
    assert os.lstat(path).st_mtime_ns == info.st_mtime_ns


def test_edit_keeping_size_and_mtime_is_not_lost(user: Path) -> None:
    model = user / TARGET / MODEL
    edit_keeping_size_and_times(model, b"layers = 4", b"layers = 8")

    refused = inv(user, "build", "--device", DEVICE, check=False)

    assert_one_line_error(refused, f"{TARGET} was changed since it was built", f"M {MODEL}")
    assert b"layers = 8" in model.read_bytes()
    forced = inv(user, "build", "--device", DEVICE, "--force")
    saved = SAVED.search(forced.stdout)
    assert saved and "+    layers = 8  # vendor" in (user / saved["patch"]).read_text()


def test_file_replaced_by_one_with_the_same_size_and_times_is_not_lost(user: Path) -> None:
    model = user / TARGET / MODEL
    info = os.lstat(model)
    replacement = model.with_name("model.py.new")
    replacement.write_bytes(model.read_bytes().replace(b"layers = 4", b"layers = 6"))
    os.utime(replacement, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.replace(replacement, model)  # as an editor that writes a new file and renames it

    refused = inv(user, "build", "--device", DEVICE, check=False)

    assert_one_line_error(refused, f"M {MODEL}")


def test_touched_and_chmodded_but_unchanged_files_are_up_to_date(user: Path) -> None:
    model = user / TARGET / MODEL
    os.utime(model)  # a new mtime, same content
    readme = user / TARGET / "README.md"
    readme.chmod(readme.stat().st_mode)  # a new ctime, same content and mode

    result = inv(user, "build", "--device", DEVICE)

    assert "up to date" in result.stdout


def test_racily_clean_file_is_decided_by_its_content(user: Path) -> None:
    """An edit within the clock tick in which the state was recorded leaves every stat field as
    recorded; the state file is then not newer than the file, so its content decides."""
    from flagscale.builds.fingerprint import (
        STATE_NAME,
        FileStat,
        FolderState,
        hand_changes,
        read_state,
        scan_folder,
    )

    target = user / TARGET
    model = target / MODEL
    recorded = read_state(target)
    assert recorded is not None and not hand_changes(target, recorded)
    edit_keeping_size_and_times(model, b"layers = 4", b"layers = 9")
    now = scan_folder(target).entries[MODEL]
    entry = recorded.entries[MODEL]
    # What the build would have recorded had the edit fallen into the same tick: today's stat
    # data with the content the build wrote, and a state file no newer than the file.
    forged = FileStat(now.kind, now.size, now.mtime_ns, now.ctime_ns, now.inode, entry.oid)
    entries = {**recorded.entries, MODEL: forged}
    (target / STATE_NAME).write_bytes(FolderState(entries).to_bytes())
    os.utime(target / STATE_NAME, ns=(now.ctime_ns, now.ctime_ns))

    assert hand_changes(target, read_state(target)) == [f"M {MODEL}"]
    assert_one_line_error(inv(user, "build", "--device", DEVICE, check=False), f"M {MODEL}")


def test_unchanged_rebuild_reads_no_file(user: Path) -> None:
    """The build waits for its clock to pass the files it wrote: none is racily clean."""
    from flagscale.builds.fingerprint import read_state

    target = user / TARGET
    recorded = read_state(target)
    assert recorded is not None and recorded.stamp is not None
    assert not [p for p, e in recorded.entries.items() if recorded.racy(e)]


# --- 9: build/ and build/<V_M> as symlinks ------------------------------------------------------


def test_build_folder_that_is_a_symlink_is_refused(user: Path, tmp_path: Path) -> None:
    other = tmp_path / "another clone"
    other.mkdir()
    (other / "keep.txt").write_text("theirs\n")
    (user / "build").rename(tmp_path / "old build")
    os.symlink(other, user / "build")

    for flags in ((), ("--force",)):
        result = inv(user, "build", "--device", DEVICE, *flags, check=False)
        assert_one_line_error(result, "build in", "is a symlink", str(other))
        assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    assert os.readlink(user / "build") == str(other)


def test_build_tree_that_is_a_symlink_is_refused(user: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "their tree"
    theirs.mkdir()
    (theirs / "work.py").write_text("precious\n")
    target = user / TARGET
    target.rename(tmp_path / "moved build")
    os.symlink(theirs, target)

    for flags in ((), ("--force",)):
        result = inv(user, "build", "--device", DEVICE, *flags, check=False)
        assert_one_line_error(result, f"{TARGET} is a symlink", f"rm {TARGET}")
        assert target.is_symlink() and os.readlink(target) == str(theirs)
        assert sorted(p.name for p in theirs.iterdir()) == ["work.py"]
    assert not list((user / "build").glob(f"{DEVICE}.edits-*"))


def test_lock_file_that_is_a_symlink_is_never_written_through(user: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("do not truncate me\n")
    lock = user / "build" / f".{DEVICE}.lock"
    lock.unlink()
    os.symlink(victim, lock)
    newer_sets(user, "locked")

    result = inv(user, "build", "--device", DEVICE, check=False)

    assert_one_line_error(result, f"build/.{DEVICE}.lock is a symlink")
    assert victim.read_text() == "do not truncate me\n"


# --- 14: a read-only build/ or a full disk ------------------------------------------------------


def test_read_only_build_folder_is_one_line_and_keeps_the_tree(user: Path) -> None:
    newer_sets(user, "read-only")
    before = snapshot(user / TARGET)
    build_folder = user / "build"
    if mount_namespace() is not None:
        result = run_read_only(build_folder, user, "build", "--device", DEVICE)
        cause = "Read-only file system"
    elif os.geteuid() != 0:
        build_folder.chmod(0o555)
        try:
            result = inv(user, "build", "--device", DEVICE, check=False)
        finally:
            build_folder.chmod(0o755)
        cause = "Permission denied"
    else:
        pytest.skip(
            "running as root, where chmod does not stop writes, and mount namespaces are not"
            " allowed here (unshare --mount failed), so no real read-only folder can be made"
        )

    line = assert_one_line_error(result, f"cannot build {TARGET}: build/", cause)
    assert f"{TARGET} was left as it was" in line
    assert snapshot(user / TARGET) == before


def test_full_disk_during_a_build_is_one_line_and_keeps_the_tree(
    user: Path, tmp_path: Path
) -> None:
    if mount_namespace() is None:
        pytest.skip("mount namespaces are not allowed here (unshare --mount failed)")
    newer_sets(user, "full disk")
    before = snapshot(user / TARGET)
    out = tmp_path / "out"
    out.mkdir()

    result = run_on_full_disk(user / "build", user, out, "build", "--device", DEVICE)

    line = assert_one_line_error(
        result, f"cannot build {TARGET}: build/", "No space left on device"
    )
    assert f"{TARGET} was left as it was" in line
    assert snapshot(out / "after" / DEVICE) == before
    assert sorted(p.name for p in (out / "after").iterdir()) == [f".{DEVICE}.lock", DEVICE]


# --- 16: what a killed build left behind goes, even when nothing is built ------------------------


def test_up_to_date_run_removes_a_dead_builds_staging_folder(user: Path, origin: Origin) -> None:
    newer_sets(user, "killed")
    killed = subprocess.run(
        [*INV, "build", "--device", DEVICE],
        cwd=user,
        env={**os.environ, "FLAGSCALE_CRASH_AT": "build:tree-written"},
        capture_output=True,
        check=False,
    )
    assert killed.returncode == -9
    assert any(name.startswith(f".{DEVICE}.tmp-") for name in build_entries(user))
    before = snapshot(user / TARGET)

    result = inv(user, "build", "--device", DEVICE, "--commit", origin.commit)

    assert "up to date" in result.stdout
    assert build_entries(user) == [f".{DEVICE}.lock", DEVICE]
    assert snapshot(user / TARGET) == before


def test_up_to_date_run_removes_what_a_dead_pid_left(user: Path) -> None:
    pid = 4_194_304 + 7  # above any pid_max: no live process has it (and no lock is held)
    staging = user / "build" / f".{DEVICE}.tmp-{pid}"
    (staging / "tree" / "half").mkdir(parents=True)
    (user / "build" / f".{DEVICE}.edits-20250101T000000Z.patch.tmp-{pid}").write_text("half")

    result = inv(user, "build", "--device", DEVICE)

    assert "up to date" in result.stdout
    assert build_entries(user) == [f".{DEVICE}.lock", DEVICE]


def test_up_to_date_run_leaves_a_live_builders_staging_folder(user: Path) -> None:
    live = user / "build" / f".{DEVICE}.tmp-{os.getpid()}"
    with DeviceLock(user / "build", DEVICE):  # this test process is the live builder
        (live / "tree").mkdir(parents=True)
        result = inv(user, "build", "--device", DEVICE)
        assert "up to date" in result.stdout
        assert (live / "tree").is_dir()
