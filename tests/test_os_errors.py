"""A read-only or full disk, or a bad output path: one line naming the path and the cause, exit 1.

Tests run as root, where file modes do not stop a write, so the conditions are made for real:
a read-only bind mount and a small full tmpfs inside a private mount namespace (``unshare``, as
root or, for other users, inside a user namespace; gone when the command ends), and a character
device like ``/dev/full`` made with ``mknod`` in a temporary folder. Where the machine allows
none of that, the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gitrepos import (
    TOOL_ROOT,
    commit_all,
    declare_backends,
    inv,
    make_repo,
    make_workspace,
    run_git,
    write_files,
)
from tests.release_fixtures import standard_release
from tests.releases import SAMPLE, make_tar, release_entry, source_for
from tests.vendor_workspace import BACKEND, adapt_backend, adapt_flagscale, make_vendor_workspace

DEVICE = "Metax_C550"
INV = [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT)]


_PRIVATE_MOUNTS = (
    ["unshare", "--mount", "--propagation", "private"],  # as root
    # as any user where unprivileged user namespaces are allowed (CI runners)
    ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"],
)


def _private_mounts(probe: Path) -> tuple[list[str] | None, str]:
    """The unshare command that gives a private mount namespace with a tmpfs here, or why none."""
    if shutil.which("unshare") is None:
        return None, "unshare (util-linux) is not installed"
    probe.mkdir()
    reasons = []
    for prefix in _PRIVATE_MOUNTS:
        result = subprocess.run(
            [*prefix, "sh", "-c", 'mount -t tmpfs x "$1"', "sh", str(probe)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            return prefix, ""
        reasons.append(result.stderr.strip())
    return None, "mount namespaces are not permitted here: " + "; ".join(reasons)


@pytest.fixture
def namespace(tmp_path: Path) -> list[str]:
    prefix, reason = _private_mounts(tmp_path / "probe")
    if prefix is None:
        pytest.skip(f"{reason}; a read-only or full disk cannot be made for real without it")
    return prefix


def in_namespace(
    prefix: list[str], cwd: Path, setup: str, args: list[str], after: str = ""
) -> tuple[int, str]:
    """Run ``inv args`` in a private mount namespace prepared by the shell lines ``setup``."""
    script = f'set -e\n{setup}\nset +e\n"$@"\ncode=$?\n{after}\nexit $code\n'
    result = subprocess.run(
        [*prefix, "sh", "-c", script, "sh", *INV, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stderr


def one_error_line(code: int, stderr: str) -> str:
    """The one ``error:`` line (progress lines may come before it); exit status 1."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 1, stderr
    assert len(errors) == 1 and "internal error" not in errors[0], stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


def user_state(root: Path) -> list[str]:
    return [
        run_git(root, "rev-parse", "HEAD"),
        run_git(root, "ls-files", "--stage"),
        run_git(root, "status", "--porcelain", "--untracked-files=all"),
    ]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root, _ = make_workspace(tmp_path, {BACKEND: {"megatron/model.py": "upstream\n"}})
    write_files(root / f"backends/{BACKEND}", {"megatron/model.py": "flagscale\n"})
    commit_all(root, "base layer")
    return root


def test_read_only_third_party_names_the_file_and_the_cause(
    namespace: list[str], workspace: Path
) -> None:
    setup = "mount --bind third_party third_party\nmount -o remount,bind,ro third_party"
    line = one_error_line(*in_namespace(namespace, workspace, setup, ["unpatch"]))
    assert line.startswith(f"error: cannot write {workspace}/third_party/{BACKEND}/"), line
    assert ": Read-only file system (make that file system writable" in line


def test_full_disk_during_vendor_patch_changes_nothing(
    namespace: list[str], tmp_path: Path
) -> None:
    vendor = make_vendor_workspace(tmp_path)
    adapt_backend(vendor)
    adapt_flagscale(vendor)
    (vendor.root / "hardware").mkdir()
    disk, leftovers = tmp_path / "disk", tmp_path / "leftovers.txt"
    disk.mkdir()
    setup = (
        f"mount -t tmpfs -o size=64k tmpfs {disk}\nmkdir {disk}/hardware\n"
        f"cat /dev/zero > {disk}/filler 2>/dev/null || true\nmount --bind {disk}/hardware hardware"
    )
    before = user_state(vendor.root)
    args = ["patch", "--device-type", DEVICE, "--task", "train", "--backend", BACKEND]
    args += ["--commit", vendor.base, "--backend-version", "1", "--models", "m", "--message", "m"]
    code, stderr = in_namespace(
        namespace,
        vendor.root,
        setup,
        [*args, "--contact", ""],
        f"find hardware -mindepth 1 > {leftovers}",
    )
    line = one_error_line(code, stderr)
    assert line.startswith(f"error: cannot write {vendor.root}/hardware/{DEVICE}/{BACKEND}/"), line
    assert ": No space left on device (free some space on that disk" in line
    assert leftovers.read_text() == ""
    assert user_state(vendor.root) == before
    inv(vendor.root, *args, "--contact", "")  # with room, the same command succeeds
    assert run_git(vendor.root, "log", "-1", "--format=%s") == "m"


def test_full_disk_during_patch_names_the_file_and_the_next_run_succeeds(
    namespace: list[str], workspace: Path, tmp_path: Path
) -> None:
    inv(workspace, "unpatch")
    write_files(workspace / f"third_party/{BACKEND}", {"megatron/new.py": "new\n" * 4096})
    disk = tmp_path / "disk"
    disk.mkdir()
    layer = f"backends/{BACKEND}"
    setup = (
        f"mount -t tmpfs -o size=64k tmpfs {disk}\nmkdir {disk}/layer\n"
        f"cp -a {layer}/. {disk}/layer/\n"
        f"cat /dev/zero > {disk}/filler 2>/dev/null || true\nmount --bind {disk}/layer {layer}"
    )
    line = one_error_line(*in_namespace(namespace, workspace, setup, ["patch"]))
    assert line == (
        f"error: cannot write {workspace}/{layer}/megatron/new.py: No space left on device"
        " (free some space on that disk and run the command again)"
    )
    assert not (workspace / layer / "megatron/new.py").exists()
    assert "1 file(s) written" in inv(workspace, "patch").stdout
    assert (workspace / layer / "megatron/new.py").read_text() == "new\n" * 4096


@pytest.fixture
def released(tmp_path: Path) -> Path:
    rw, _ = standard_release(tmp_path)
    return rw.root


def test_matrix_json_through_a_file_is_one_line(released: Path) -> None:
    result = inv(released, "matrix", "--json", "README.md/matrix.json", check=False)
    line = one_error_line(result.returncode, result.stderr)
    assert line == (
        "error: cannot write README.md/matrix.json: Not a directory (a part of that path is a"
        " file, not a folder: give another path)"
    )


def test_matrix_html_to_a_folder_is_one_line(released: Path) -> None:
    result = inv(released, "matrix", "--html", "hardware", check=False)
    line = one_error_line(result.returncode, result.stderr)
    assert line == "error: cannot write hardware: it is a folder (give a file's path)"
    assert (released / "hardware").is_dir()


def test_matrix_json_to_a_full_device_is_one_line(released: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    try:
        os.mknod(full, 0o666 | 0o020000, os.makedev(1, 7))  # what /dev/full is
    except OSError as exc:
        pytest.skip(f"cannot make a device node here ({exc.strerror}): it needs root")
    result = inv(released, "matrix", "--json", str(full), check=False)
    line = one_error_line(result.returncode, result.stderr)
    assert line == (
        f"error: cannot write {full}: No space left on device (free some space on that disk and"
        " run the command again)"
    )
    assert full.is_char_device()  # written into, never replaced by a file


def test_matrix_json_to_a_fifo_is_written_into(released: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        inv(released, "matrix", "--json", str(fifo))
        assert fifo.is_fifo(), "the FIFO was replaced by a file"
    except BaseException:
        reader.kill()  # nothing will write into the FIFO: do not wait for the reader
        raise
    out, _ = reader.communicate()
    assert out.startswith(b"{") and b'"rows"' in out


def test_any_os_error_reaching_the_command_line_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The general translation in report_errors: an OSError no library code named (here the
    release cache, set through a regular file) is the path, the cause and exit 1."""
    archive = make_tar(tmp_path / "ws" / "dist" / "demo_pkg-1.0.tar.gz", SAMPLE)
    root = tmp_path / "ws"
    make_repo(root, {"README.md": "ws\n", "backends/.keep": ""})
    source = source_for(archive, url="dist/demo_pkg-1.0.tar.gz")
    declare_backends(root, {"demo": release_entry(source, "0" * 40)})
    monkeypatch.setenv("FLAGSCALE_CACHE", str(root / "README.md" / "cache"))
    result = inv(root, "import-release", "--backend", "demo", check=False)
    line = one_error_line(result.returncode, result.stderr)
    assert line.startswith(f"error: {root}/README.md/cache/releases/"), line
    assert line.endswith(
        ": Not a directory (a part of that path is a file, not a folder: give another path)"
    )
