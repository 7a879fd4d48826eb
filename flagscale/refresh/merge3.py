"""Three-way merges of one file's bytes with ``git merge-file``: base, ours (the new upstream
side), theirs (FlagScale's layer file or the vendor's file).

Conflicts are written in diff3 style, so the person resolving sees what the old pin had too::

    <<<<<<< 0.16.0 (new pin)
    what the new pin has
    ||||||| 0.16.1 (old pin)
    what the old pin had
    =======
    what the layer or the vendor set has
    >>>>>>> Generic_CPU Megatron-LM set
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import clean_env

__all__ = ["Labels", "Merged", "has_markers", "merge_bytes"]


@dataclass(frozen=True)
class Labels:
    """The names on the conflict markers."""

    ours: str
    base: str
    theirs: str

    def marker_lines(self) -> tuple[bytes, bytes]:
        """The opening and closing marker lines (how a leftover conflict is recognised)."""
        return (f"<<<<<<< {self.ours}".encode(), f">>>>>>> {self.theirs}".encode())


@dataclass(frozen=True)
class Merged:
    """The merged bytes and how many conflicts they hold (0: a clean merge)."""

    data: bytes
    conflicts: int


def merge_bytes(ours: bytes, base: bytes, theirs: bytes, labels: Labels) -> Merged:
    """``git merge-file -p --diff3`` of three texts (the caller keeps binary files out)."""
    with tempfile.TemporaryDirectory(prefix="flagscale-merge-") as folder:
        paths = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(folder) / name
            path.write_bytes(data)
            paths.append(str(path))
        args = ["git", "merge-file", "-p", "--diff3"]
        for label in (labels.ours, labels.base, labels.theirs):
            args += ["-L", label]
        result = subprocess.run(
            [*args, *paths],
            cwd=folder,
            capture_output=True,
            env=clean_env({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}),
            check=False,
        )
    # merge-file exits with the number of conflicts (at most 127), or 255 on an error
    if result.returncode > 127:
        reason = result.stderr.decode("utf-8", "replace").strip()
        raise FlagScaleError(f"git merge-file failed: {reason}")
    return Merged(result.stdout, result.returncode)


def has_markers(data: bytes, labels: Labels) -> int:
    """The 1-based line of the first conflict marker left in ``data``, or 0."""
    opening, closing = labels.marker_lines()
    for number, line in enumerate(data.split(b"\n"), start=1):
        stripped = line.rstrip(b"\r")
        if stripped in (opening, closing):
            return number
    return 0
