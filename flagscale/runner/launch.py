"""Starting the training job with torchrun over a build tree, and stopping it.

The job sees only the build tree: PYTHONPATH is the build's ``third_party/<backend>`` and the
build root (plus the folder vendor extensions were built into), the user's site folder is off
(PYTHONNOUSERSITE) and neither the current folder nor the script's folder is put on sys.path
(PYTHONSAFEPATH). The job runs in a session of its own; every process it starts carries a
marker, so a timeout or an interrupt stops exactly those processes.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flagscale.runner.processes import Marker, stop_group_and_marked

__all__ = [
    "JOB_MARKER",
    "PYTHON_VARIABLES",
    "JobRun",
    "free_port",
    "job_environment",
    "rank_error_tail",
    "run_job",
    "torchrun_command",
]

JOB_MARKER = "FLAGSCALE_SMOKE_JOB"
WATCH_INTERVAL = 0.2  # seconds between looks at a running job's progress
_ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):.*?local_rank: (\d+)\)", re.S)
# Variables that would let the caller's environment change what the job imports.
PYTHON_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONNOUSERSITE",
    "PYTHONSAFEPATH",
    "PYTHONINSPECT",
    "PYTHONEXECUTABLE",
)


@dataclass(frozen=True)
class JobRun:
    """How a job ended: its exit status (None when it was stopped), duration, stopped pids."""

    returncode: int | None
    duration: float
    timed_out: bool
    killed: tuple[int, ...] = ()


def _wait(
    process: subprocess.Popen, deadline: float, watch: Callable[[], None] | None
) -> tuple[int | None, bool]:
    """The job's exit status, or (None, True) once ``deadline`` passes; ``watch`` in between."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            returncode = process.wait(timeout=max(0.0, min(remaining, WATCH_INTERVAL)))
        except subprocess.TimeoutExpired:
            if remaining <= WATCH_INTERVAL:
                return None, True
            if watch is not None:
                watch()
            continue
        if watch is not None:
            watch()
        return returncode, False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def torchrun_command(
    nproc: int, port: int, entry: Path, arguments: Sequence[str], rank_logs: Path
) -> list[str]:
    """``python -m torch.distributed.run`` on one node with ``nproc`` local processes; each
    rank's output also goes to ``rank_logs/<run>/attempt_0/<rank>/{stdout,stderr}.log``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        "--max-restarts",
        "0",
        "--log-dir",
        str(rank_logs),
        "--tee",
        "3",
        str(entry),
        *arguments,
    ]


def rank_error_tail(job_log: Path, rank_logs: Path, lines: int) -> tuple[int, list[str]] | None:
    """The root-cause rank torchrun names in ``job_log`` and the last lines of its stderr."""
    try:
        text = job_log.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    found = _ROOT_CAUSE.search(text)
    if found is None:
        return None
    rank = int(found.group(1))
    for stderr in sorted(rank_logs.glob(f"*/attempt_*/{rank}/stderr.log")):
        tail = stderr.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        if tail:
            return rank, tail
    return None


def job_environment(
    base: Mapping[str, str],
    python_path: Sequence[Path],
    extra: Mapping[str, str],
    marker: Marker,
) -> dict[str, str]:
    """The job's environment: ``base`` without Python's path variables, then ``extra`` (the
    vendor's environment file), then the import isolation and the marker."""
    env = {k: v for k, v in base.items() if k not in PYTHON_VARIABLES}
    env.update(extra)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(str(p) for p in python_path),
            "PYTHONNOUSERSITE": "1",
            "PYTHONSAFEPATH": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **marker.env(),
        }
    )
    return env


def run_job(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    timeout: float,
    marker: Marker,
    watch: Callable[[], None] | None = None,
) -> JobRun:
    """Run ``command`` in a new session with stdout and stderr in ``log_path``.

    After ``timeout`` seconds, on Ctrl-C, or on any error here, the job's process group and
    every process carrying ``marker`` get SIGTERM, then SIGKILL after a grace period. Processes
    the job left behind after a normal exit are stopped the same way. ``watch`` is called about
    every WATCH_INTERVAL seconds while the job runs and once after it ends (live progress).
    """
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finished = False
    try:
        returncode, timed_out = _wait(process, started + timeout, watch)
        # Once reaped, the leader's pid may name someone else's group: signal it only if unreaped.
        killed = stop_group_and_marked(process.pid if timed_out else None, marker)
        process.wait()
        finished = True
        return JobRun(returncode, time.monotonic() - started, timed_out, tuple(killed))
    finally:
        if not finished:  # interrupted or failed while waiting: leave nothing running
            stop_group_and_marked(process.pid, marker)
            process.wait()
