"""Monitors: FlagScale's system monitor protocol, and vendor monitors started and stopped around
the job in a fixed order, failures included. Every monitor here is a real script and process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from flagscale.runner.monitor import SYSTEM_MONITOR, MonitorError, peak_memory
from flagscale.runner.smoke import SmokeError, run_smoke
from tests.smoke_fixtures import DEVICE, fake_workspace, record_fake_golden, write_case

VENDOR_MONITOR = textwrap.dedent(
    '''
    """A vendor monitor for the tests: FlagPerf's protocol, with a background sampler."""
    import argparse, fcntl, json, os, signal, subprocess, sys, time

    MODE = "{mode}"
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--operation", required=True)
    parser.add_argument("-l", "--log", default="./logs/")
    args = parser.parse_args()
    os.makedirs(args.log, exist_ok=True)
    log_dir = os.path.abspath(args.log)
    job_dir = os.path.dirname(os.path.dirname(log_dir))
    system_pid = os.path.join(job_dir, "monitors", "system", "sys_monitor.pid")
    pid_file = os.path.join(log_dir, "sampler.pid")

    def note(event):
        with open(os.path.join(log_dir, "events.jsonl"), "a") as stream:
            stream.write(json.dumps({{
                "event": event,
                "system_monitor_running": os.path.exists(system_pid),
                "job_started": os.path.exists(os.path.join(job_dir, "job.json")),
                "job_metrics": os.path.exists(os.path.join(job_dir, "metrics.jsonl")),
            }}) + "\\n")

    # The sampler holds an flock on sampler.lock for its whole life (taken here, inherited):
    # stop takes it after SIGTERM, so it returns once the sampler is gone, as a monitor should.
    lock_file = os.path.join(log_dir, "sampler.lock")
    if args.operation == "start":
        note("start")
        if MODE == "fail":
            print("generic_monitor: cannot open /dev/generic0", file=sys.stderr)
            sys.exit(2)
        held = os.open(lock_file, os.O_RDWR | os.O_CREAT)
        fcntl.flock(held, fcntl.LOCK_EX)
        sampler = subprocess.Popen(
            [sys.executable, "-c", "import time\\nwhile True: time.sleep(0.1)"],
            start_new_session=True,
            pass_fds=(held,),
        )
        open(pid_file, "w").write(str(sampler.pid))
    elif args.operation == "stop":
        note("stop")
        if MODE != "ignore-stop":
            os.kill(int(open(pid_file).read()), signal.SIGTERM)
            with open(lock_file) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
    elif args.operation == "status":
        sys.exit(0 if os.path.exists(pid_file) else 3)
    '''
)


def vendor_monitor(root: Path, mode: str = "ok") -> Path:
    path = root / "hardware" / DEVICE / "generic_monitor.py"
    path.write_text(VENDOR_MONITOR.format(mode=mode))
    return path


def events(root: Path) -> list[dict]:
    path = root / "logs" / "smoke" / DEVICE / "tiny" / "monitors" / "generic_monitor"
    return [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()]


def sampler_pid(root: Path) -> int:
    path = root / "logs" / "smoke" / DEVICE / "tiny" / "monitors" / "generic_monitor"
    return int((path / "sampler.pid").read_text())


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def monitor(operation: str, log_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SYSTEM_MONITOR), "-o", operation, "-l", str(log_dir), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def test_system_monitor_protocol(tmp_path: Path) -> None:
    log_dir = tmp_path / "sys"
    assert monitor("status", log_dir).returncode == 3
    started = monitor("start", log_dir, "--interval", "0.05")
    assert started.returncode == 0, started.stderr
    pid = int((log_dir / "sys_monitor.pid").read_text())
    again = monitor("start", log_dir)
    assert again.returncode == 1 and f"already running (pid {pid})" in again.stderr
    status = monitor("status", log_dir)
    assert status.returncode == 0 and f"running (pid {pid})" in status.stdout
    samples = (log_dir / "sys_monitor.jsonl").read_text().splitlines()
    assert samples, "start returns once the first sample is written"
    sample = json.loads(samples[0])
    assert set(sample) == {"time", "cpu_percent", "memory_used_mb", "memory_percent"}
    assert sample["memory_used_mb"] > 0 and 0 <= sample["cpu_percent"] <= 100
    assert peak_memory(log_dir / "sys_monitor.jsonl")["memory_used_mb"] > 0
    restarted = monitor("restart", log_dir, "--interval", "0.05")
    assert restarted.returncode == 0 and not alive(pid)
    new_pid = int((log_dir / "sys_monitor.pid").read_text())
    stopped = monitor("stop", log_dir)
    assert stopped.returncode == 0 and f"stopped (pid {new_pid})" in stopped.stdout
    assert not alive(new_pid) and not (log_dir / "sys_monitor.pid").exists()
    assert monitor("stop", log_dir).returncode == 0  # stopping a stopped monitor is fine
    assert monitor("status", log_dir).returncode == 3


def test_system_monitor_ignores_a_pid_file_naming_another_process(tmp_path: Path) -> None:
    log_dir = tmp_path / "sys"
    log_dir.mkdir()
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )  # lives until its stdin closes, however long the test takes
    try:
        (log_dir / "sys_monitor.pid").write_text(f"{bystander.pid}\n")
        assert monitor("status", log_dir).returncode == 3
        assert monitor("stop", log_dir).returncode == 0
        assert bystander.poll() is None
    finally:
        bystander.communicate()


def test_monitor_order_around_a_failing_job(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("crash",))
    vendor_monitor(root)
    case = write_case(root, entry="fake/crash.py")
    with pytest.raises(SmokeError, match="failed with exit status 1"):
        run_smoke(root, DEVICE, case, record_golden=True)
    start, stop = events(root)
    # system monitor first, then the vendor's, then the job; stopped in reverse order.
    assert start == {
        "event": "start",
        "system_monitor_running": True,
        "job_started": False,
        "job_metrics": False,
    }
    assert stop == {
        "event": "stop",
        "system_monitor_running": True,
        "job_started": True,
        "job_metrics": True,
    }
    assert not alive(sampler_pid(root))
    log_dir = root / "logs" / "smoke" / DEVICE / "tiny"
    assert not (log_dir / "monitors" / "system" / "sys_monitor.pid").exists()
    result = json.loads((log_dir / "result.json").read_text())
    assert result["hooks"]["monitors"] == {"system": "stopped", "generic_monitor": "stopped"}


def test_vendor_monitor_that_ignores_stop_is_ended_and_reported(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    vendor_monitor(root, "ignore-stop")
    case = write_case(root, entry="fake/ok.py")
    record_fake_golden(root, case)
    with pytest.raises(MonitorError) as failure:
        run_smoke(root, DEVICE, case)
    assert str(failure.value).startswith(
        f"monitor {root / 'hardware' / DEVICE / 'generic_monitor.py'} left processes ["
    )
    assert str(failure.value).endswith("running after stop; killed them")
    assert not alive(sampler_pid(root))


def test_vendor_monitor_failing_to_start_stops_the_rest_and_runs_no_job(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    script = vendor_monitor(root, "fail")
    case = write_case(root, entry="fake/ok.py")
    with pytest.raises(MonitorError) as failure:
        run_smoke(root, DEVICE, case, record_golden=True)
    log_dir = root / "logs" / "smoke" / DEVICE / "tiny"
    assert str(failure.value) == (
        f"monitor {script} failed to start (exit 2): generic_monitor: cannot open /dev/generic0"
        f" (log: {log_dir / 'monitors' / 'generic_monitor' / 'operations.log'})"
    )
    assert [e["event"] for e in events(root)] == ["start"]
    assert not (log_dir / "monitors" / "system" / "sys_monitor.pid").exists()
    assert not (log_dir / "job.log").exists()
    result = json.loads((log_dir / "result.json").read_text())
    assert result["status"] == "error"
    assert result["hooks"]["monitors"] == {"system": "stopped", "generic_monitor": "start failed"}


def test_required_vendor_monitor_missing(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    case = write_case(root, entry="fake/ok.py", monitors={"vendor": "required"})
    with pytest.raises(MonitorError) as failure:
        run_smoke(root, DEVICE, case, record_golden=True)
    assert str(failure.value) == (
        f"hardware/{DEVICE}/generic_monitor.py: vendor monitor is missing but ci/smoke/tiny.yaml"
        " sets monitors.vendor: required (add the monitor script or set monitors.vendor to auto)"
    )


def test_vendor_monitor_off_is_not_started(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    vendor_monitor(root, "fail")  # would fail if it were started
    case = write_case(root, entry="fake/ok.py", monitors={"vendor": "off", "system": False})
    outcome = run_smoke(root, DEVICE, case, record_golden=True)
    result = json.loads(outcome.result.read_text())
    assert result["hooks"]["monitors"] == {}
    assert result["peak_memory_mb"] == {"rank_max_rss": 12.5}
