"""FlagScale's system monitor: CPU and memory samples as JSON lines, FlagPerf's monitor protocol.

    python sys_monitor.py -o start|stop|restart|status [-l LOG_DIR] [--interval SECONDS]

``start`` runs a sampler in the background (its own session) and returns once it is up;
``stop`` ends it; ``status`` exits 0 while it runs and 3 when it does not. In LOG_DIR
(default ./logs/) the sampler keeps ``sys_monitor.pid``, ``sys_monitor.log`` and appends one
line per sample to ``sys_monitor.jsonl``:

    {"time": 1700000000.25, "cpu_percent": 87.5, "memory_used_mb": 3021.4,
     "memory_percent": 12.9, "job_rss_mb": 771.0, "job_processes": 3}

``job_*`` appear when the environment names a job to watch (FLAGSCALE_SMOKE_WATCH=<token>): the
summed resident memory of the processes whose environment holds FLAGSCALE_SMOKE_JOB=<token>.
The file is standalone (psutil and the standard library only) so a vendor may copy it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

NAME = "sys_monitor"
WATCH_VARIABLE = "FLAGSCALE_SMOKE_WATCH"
JOB_VARIABLE = "FLAGSCALE_SMOKE_JOB"
NOT_RUNNING = 3
START_WAIT = 300.0  # a safety net against a sampler that hangs: start waits for its word
STOP_WAIT = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FlagScale system monitor (CPU, memory).")
    parser.add_argument("-o", "--operation", choices=["start", "stop", "restart", "status", "run"])
    parser.add_argument("-l", "--log", default="./logs/", help="log folder (default ./logs/)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.operation is None:
        parser.error("the following arguments are required: -o/--operation")
    return args


def pid_file(log_dir: Path) -> Path:
    return log_dir / f"{NAME}.pid"


def running_pid(log_dir: Path) -> int | None:
    """The sampler's pid if its pid file names a live sampler of this folder."""
    try:
        pid = int(pid_file(log_dir).read_text().strip())
        process = psutil.Process(pid)
        command = process.cmdline()
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if process.status() == psutil.STATUS_ZOMBIE or not any(NAME in part for part in command):
        return None
    return pid


def start(log_dir: Path, interval: float) -> int:
    pid = running_pid(log_dir)
    if pid is not None:
        print(f"{NAME}: already running (pid {pid}) for {log_dir}", file=sys.stderr)
        return 1
    log_dir.mkdir(parents=True, exist_ok=True)
    pid_file(log_dir).unlink(missing_ok=True)
    ready, told = os.pipe()
    command = [sys.executable, os.path.abspath(__file__), "-o", "run", "-l", str(log_dir)]
    command += ["--interval", str(interval), "--ready-fd", str(told)]
    try:
        with open(log_dir / f"{NAME}.log", "ab") as log:
            sampler = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                pass_fds=(told,),
            )
    finally:
        os.close(told)
    with os.fdopen(ready, "rb") as word:
        # "ready" once the pid file and the first sample are written; end of file if it died
        up = select.select([word], [], [], START_WAIT)[0] and word.read() == b"ready\n"
    if up and running_pid(log_dir) == sampler.pid:
        print(f"{NAME}: started (pid {sampler.pid}), samples in {log_dir / (NAME + '.jsonl')}")
        return 0
    print(f"{NAME}: sampler did not start; see {log_dir / (NAME + '.log')}", file=sys.stderr)
    return 1


def stop(log_dir: Path) -> int:
    pid = running_pid(log_dir)
    if pid is None:
        print(f"{NAME}: not running for {log_dir}")
        pid_file(log_dir).unlink(missing_ok=True)
        return 0
    process = psutil.Process(pid)
    process.terminate()
    try:
        process.wait(STOP_WAIT)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(STOP_WAIT)
    pid_file(log_dir).unlink(missing_ok=True)
    print(f"{NAME}: stopped (pid {pid})")
    return 0


def status(log_dir: Path) -> int:
    pid = running_pid(log_dir)
    if pid is None:
        print(f"{NAME}: stopped")
        return NOT_RUNNING
    print(f"{NAME}: running (pid {pid})")
    return 0


class JobMemory:
    """Summed RSS of the processes carrying the watched job's marker."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.known: dict[tuple[int, float], bool] = {}

    def sample(self) -> dict[str, float | int]:
        if not self.token:
            return {}
        total, count = 0, 0
        for process in psutil.process_iter(["create_time"]):
            key = (process.pid, process.info["create_time"] or 0.0)
            try:
                if key not in self.known:
                    self.known[key] = process.environ().get(JOB_VARIABLE) == self.token
                if self.known[key]:
                    total += process.memory_info().rss
                    count += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return {"job_rss_mb": round(total / 2**20, 1), "job_processes": count}


def run(log_dir: Path, interval: float, ready_fd: int | None = None) -> int:
    """The sampler itself: write the pid file and a first sample, tell ``ready_fd`` (the
    starter waits for it), sample until SIGTERM."""
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    job = JobMemory(os.environ.get(WATCH_VARIABLE))
    psutil.cpu_percent(None)  # the first call only sets the baseline
    partial = pid_file(log_dir).with_suffix(".pid.partial")
    partial.write_text(f"{os.getpid()}\n")
    os.replace(partial, pid_file(log_dir))
    with open(log_dir / f"{NAME}.jsonl", "a", encoding="utf-8") as samples:
        while not stopping:
            memory = psutil.virtual_memory()
            record = {
                "time": round(time.time(), 3),
                "cpu_percent": psutil.cpu_percent(None),
                "memory_used_mb": round((memory.total - memory.available) / 2**20, 1),
                "memory_percent": memory.percent,
                **job.sample(),
            }
            samples.write(json.dumps(record) + "\n")
            samples.flush()
            if ready_fd is not None:
                os.write(ready_fd, b"ready\n")
                os.close(ready_fd)
                ready_fd = None
            deadline = time.monotonic() + interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(0.05, interval))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = Path(args.log).resolve()
    if args.operation == "start":
        return start(log_dir, args.interval)
    if args.operation == "stop":
        return stop(log_dir)
    if args.operation == "status":
        return status(log_dir)
    if args.operation == "restart":
        stop(log_dir)
        return start(log_dir, args.interval)
    return run(log_dir, args.interval, args.ready_fd)


if __name__ == "__main__":
    sys.exit(main())
