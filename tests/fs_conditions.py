"""Real read-only folders and real full disks for the tests, without touching the machine.

A command runs in a private mount namespace (``unshare --mount``; as a normal user also
``--map-root-user``) where a folder is bind-mounted read-only over itself, or a small tmpfs is
mounted on it: the kernel then refuses writes with EROFS or ENOSPC exactly as a read-only or full
disk does, and the mounts vanish with the command. Where namespaces are not allowed,
``mount_namespace`` returns None and the tests fall back (``chmod``, for a normal user) or skip.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.gitrepos import TOOL_ROOT

INV = [sys.executable, "-m", "invoke", "--search-root", str(TOOL_ROOT)]

# Mount <folder> read-only over itself, then run the rest of the arguments.
READ_ONLY_SCRIPT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'

# Mount a tmpfs of <size> on <folder>, copy <saved>/ into it, fill it up to <reserve> bytes, run
# the rest of the arguments (stdout, stderr and status into <out>/), then copy the folder as the
# command left it (without the filler) to <out>/after/.
FULL_DISK_SCRIPT = """
folder="$1"; size="$2"; saved="$3"; reserve="$4"; out="$5"; shift 5
mount -t tmpfs -o size="$size" tmpfs "$folder" || exit 97
cp -a "$saved"/. "$folder"/ || exit 98
"$PYTHON" -c '
import os, sys
folder, reserve = sys.argv[1], int(sys.argv[2])
info = os.statvfs(folder)
with open(os.path.join(folder, "filler"), "wb") as handle:
    handle.write(bytes(max(0, info.f_bavail * info.f_frsize - reserve)))
' "$folder" "$reserve" || exit 99
"$@" >"$out/stdout" 2>"$out/stderr"
echo $? >"$out/rc"
rm -f "$folder/filler"
mkdir "$out/after" && cp -a "$folder"/. "$out/after"/
"""


@functools.cache
def mount_namespace() -> tuple[str, ...] | None:
    """The command prefix for a private mount namespace we may mount in, or None."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return None
    user = () if os.geteuid() == 0 else ("--map-root-user",)
    prefix = ("unshare", *user, "--mount", "--propagation", "private")
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(
            [*prefix, "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$1"', "sh", folder],
            capture_output=True,
            check=False,
        )
    return prefix if probe.returncode == 0 else None


def run_read_only(folder: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``inv <args>`` in ``cwd`` with ``folder`` read-only for it (a real read-only mount)."""
    prefix = mount_namespace()
    assert prefix is not None
    command = [*prefix, "sh", "-c", READ_ONLY_SCRIPT, "sh", str(folder), *INV, *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def run_on_full_disk(
    folder: Path, cwd: Path, out: Path, *args: str, size: str = "4m", reserve: int = 16384
) -> subprocess.CompletedProcess[str]:
    """``inv <args>`` in ``cwd`` with ``folder`` on a tmpfs of ``size`` holding a copy of its
    contents and only ``reserve`` bytes free; the run's output and the folder as it left it go
    to ``out`` (``stdout``, ``stderr``, ``rc``, ``after/``)."""
    prefix = mount_namespace()
    assert prefix is not None
    saved = out / "saved"
    shutil.copytree(folder, saved, symlinks=True)
    command = [
        *prefix,
        "sh",
        "-c",
        FULL_DISK_SCRIPT,
        "sh",
        str(folder),
        size,
        str(saved),
        str(reserve),
        str(out),
        *INV,
        *args,
    ]
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, f"the full-disk set-up failed ({done.returncode}): {done.stderr}"
    return subprocess.CompletedProcess(
        command,
        int((out / "rc").read_text()),
        (out / "stdout").read_text(),
        (out / "stderr").read_text(),
    )
