"""Starting and stopping monitors around a job, by FlagPerf's monitor protocol.

A monitor is one Python script run as ``python <script> -o start|stop|restart|status -l <dir>``;
``start`` returns once it samples in the background, ``stop`` ends it. FlagScale's system monitor
(``sys_monitor.py`` beside this file) always follows the protocol; a device type may ship
``hardware/<Vendor_Model>/<vendor>_monitor.py`` (``vendor`` = the lower-cased vendor part).

Monitors start in list order and stop in reverse order. Each monitor's processes carry a marker,
so one that ignores ``stop`` is still ended, and nothing else is touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.runner.processes import Marker, stop_group_and_marked

__all__ = [
    "MONITOR_MARKER",
    "SYSTEM_MONITOR",
    "Monitor",
    "MonitorError",
    "Operation",
    "peak_memory",
    "run_operation",
    "start_monitors",
    "stop_monitors",
    "vendor_monitor_path",
]

SYSTEM_MONITOR = Path(__file__).resolve().parent / "sys_monitor.py"
MONITOR_MARKER = "FLAGSCALE_SMOKE_MONITOR"
WATCH_VARIABLE = "FLAGSCALE_SMOKE_WATCH"
OPERATION_TIMEOUT = 60.0
TAIL_LINES = 5


class MonitorError(FlagScaleError):
    """A monitor is missing, or failed to start or stop."""


@dataclass
class Monitor:
    """One monitor script and the folder it logs to."""

    name: str
    script: Path
    log_dir: Path
    extra_args: tuple[str, ...] = ()
    marker: Marker = field(default_factory=lambda: Marker.new(MONITOR_MARKER))
    started: bool = False
    outcome: str = "not started"  # not started | running | stopped | killed | stop failed


def vendor_monitor_path(hardware_dir: Path, device_type: str) -> Path:
    """``hardware/<Vendor_Model>/<vendor>_monitor.py`` for a device type."""
    vendor = device_type.split("_", 1)[0].lower()
    return hardware_dir / f"{vendor}_monitor.py"


@dataclass(frozen=True)
class Operation:
    """How one ``-o <operation>`` call ended, and what it printed."""

    returncode: int
    output: str

    def tail(self) -> str:
        lines = self.output.strip().splitlines()
        return " | ".join(lines[-TAIL_LINES:]) or "no output"


def run_operation(
    monitor: Monitor, operation: str, env: Mapping[str, str], watch: str | None = None
) -> Operation:
    """``python <script> -o <operation> -l <log_dir>``, its output appended to the monitor's log.

    Output goes to a file, not a pipe: a monitor whose background sampler keeps the inherited
    descriptors open must not make this wait for it.
    """
    monitor.log_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(monitor.script), "-o", operation, "-l", str(monitor.log_dir)]
    if operation in ("start", "restart"):
        command += list(monitor.extra_args)
    full_env = {**env, **monitor.marker.env()}
    if watch:
        full_env[WATCH_VARIABLE] = watch
    log_path = _operations_log(monitor)
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        offset = log.tell()
        try:
            result = subprocess.run(
                command,
                env=full_env,
                cwd=monitor.log_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=OPERATION_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise MonitorError(
                f"monitor {monitor.script}: `-o {operation}` did not return within"
                f" {OPERATION_TIMEOUT:g} s (log: {log_path})"
            ) from exc
    with open(log_path, "rb") as log:
        log.seek(offset)
        output = log.read().decode("utf-8", errors="replace")
    with open(log_path, "ab") as log:
        log.write(f"[exit {result.returncode}]\n".encode())
    return Operation(result.returncode, output)


def start_monitors(monitors: list[Monitor], env: Mapping[str, str], watch: str) -> None:
    """Start each monitor in order; the first that fails raises (those started stay started,
    so the caller's ``finally`` stops them)."""
    for monitor in monitors:
        if not monitor.script.is_file():
            raise MonitorError(f"monitor script {monitor.script} is missing")
        result = run_operation(monitor, "start", env, watch)
        monitor.started = True  # it may have left a sampler behind even when it failed
        if result.returncode != 0:
            monitor.outcome = "start failed"
            raise MonitorError(
                f"monitor {monitor.script} failed to start (exit {result.returncode}):"
                f" {result.tail()} (log: {_operations_log(monitor)})"
            )
        monitor.outcome = "running"


def stop_monitors(monitors: list[Monitor], env: Mapping[str, str]) -> list[str]:
    """Stop started monitors in reverse order; never raises. Returns one line per problem."""
    problems = []
    for monitor in reversed(monitors):
        if not monitor.started:
            continue
        if monitor.outcome == "start failed":  # no `-o stop` for it; end what it left behind
            stop_group_and_marked(None, monitor.marker)
            monitor.started = False
            continue
        try:
            result = run_operation(monitor, "stop", env)
            failed = result.returncode != 0
            detail = f"exit {result.returncode}: {result.tail()}"
        except MonitorError as exc:
            failed, detail = True, str(exc)
        killed = stop_group_and_marked(None, monitor.marker)
        if failed:
            monitor.outcome = "stop failed"
            problems.append(f"monitor {monitor.script} failed to stop ({detail})")
        elif killed:
            monitor.outcome = "killed"
            problems.append(
                f"monitor {monitor.script} left processes {killed} running after stop; killed them"
            )
        elif monitor.outcome == "running":
            monitor.outcome = "stopped"
        monitor.started = False
    return problems


def peak_memory(samples_path: Path) -> dict[str, float]:
    """The largest ``job_rss_mb`` and ``memory_used_mb`` in a system monitor's samples."""
    peaks: dict[str, float] = {}
    try:
        lines = samples_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return peaks
    for line in lines:
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the sampler's stop
        for key in ("job_rss_mb", "memory_used_mb"):
            if isinstance(sample.get(key), (int, float)):
                peaks[key] = max(peaks.get(key, 0.0), float(sample[key]))
    return peaks


def _operations_log(monitor: Monitor) -> Path:
    return monitor.log_dir / "operations.log"
