"""Finding and stopping exactly the processes one job started, and no other.

torchrun starts every worker in a session of its own, and a worker whose launcher died is
re-parented away, so neither the process group nor the parent chain finds them all. Every
process the runner starts therefore carries a marker in its environment (``NAME=<random
token>``), inherited by everything it starts; stopping a job signals the processes whose
environment holds that exact marker, plus the launcher's own process group.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass

import psutil

__all__ = ["Marker", "stop_group_and_marked"]


@dataclass(frozen=True)
class Marker:
    """An environment variable whose value is unique to one job or one monitor."""

    name: str
    token: str

    @classmethod
    def new(cls, name: str) -> Marker:
        return cls(name, secrets.token_hex(16))

    def env(self) -> dict[str, str]:
        return {self.name: self.token}

    def processes(self) -> list[psutil.Process]:
        """Live processes of this user whose environment carries this marker."""
        found = []
        own = os.getpid()
        for process in psutil.process_iter():
            if process.pid == own:
                continue
            try:
                if process.environ().get(self.name) == self.token:
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found


def stop_group_and_marked(group: int | None, marker: Marker, grace: float = 5.0) -> list[int]:
    """SIGTERM the process group ``group`` and every marked process; SIGKILL what outlives
    ``grace`` seconds. Returns the pids of the marked processes that were found running."""
    targets = marker.processes()
    found = [p.pid for p in targets]
    _signal_group(group, signal.SIGTERM)
    for process in targets:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        late = [p for p in marker.processes() if p not in targets]  # started while stopping
        for process in late:
            _signal(process, signal.SIGTERM)
        found += [p.pid for p in late]
        targets = [p for p in targets + late if _alive(p)]
        if not targets or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    _signal_group(group, signal.SIGKILL)
    for process in targets:
        _signal(process, signal.SIGKILL)
    psutil.wait_procs(targets, timeout=grace)
    return sorted(set(found))


def _signal(process: psutil.Process, signum: int) -> None:
    # psutil checks that the pid still names the same process before signalling it.
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        process.send_signal(signum)


def _signal_group(group: int | None, signum: int) -> None:
    if group is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
