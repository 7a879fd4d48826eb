"""The smoke runner on real torchrun processes, with stand-in training entries (no torch in the
job): golden record/compare, timeout, crash, NaN, provenance, log folders, results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flagscale.core.schema import validate
from flagscale.runner.golden import load_golden
from flagscale.runner.smoke import SmokeError, run_smoke, smoke_command
from tests.gitrepos import declare_backends, run_git
from tests.smoke_fixtures import (
    DEVICE,
    fake_losses,
    fake_workspace,
    record_fake_golden,
    write_case,
)


def run(root: Path, case: Path, **options: object):
    return run_smoke(root, DEVICE, case, **options)


def build_megatron(root: Path) -> str:
    core = root / "build" / DEVICE / "third_party" / "Megatron-LM" / "megatron" / "core"
    return os.path.realpath(core / "__init__.py")


def result_of(root: Path, case: str = "tiny") -> dict:
    path = root / "logs" / "smoke" / DEVICE / case / "result.json"
    document = json.loads(path.read_text())
    validate(document, "smoke-result", str(path))
    return document


def test_record_then_pass_writes_golden_result_and_plot(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    case = write_case(root, entry="fake/ok.py")
    recorded = run(root, case, record_golden=True)
    golden_file = root / "hardware" / DEVICE / "smoke" / "tiny.golden.json"
    assert recorded.status == "recorded"
    assert recorded.golden == golden_file
    first_bytes = golden_file.read_bytes()
    golden = load_golden(golden_file)
    assert golden.losses == recorded.losses and len(golden.losses) == 5
    assert golden.tolerance.relative == 1.0e-6

    passed = run(root, case)
    assert passed.status == "passed"
    assert passed.losses == recorded.losses  # deterministic
    document = result_of(root)
    assert document["status"] == "passed" and document["reason"] is None
    assert document["golden"]["first_divergence"] is None
    assert document["job"]["megatron_core"].startswith(str(root / "build" / DEVICE))
    assert document["hooks"]["monitors"] == {"system": "stopped"}
    assert document["peak_memory_mb"]["job_rss"] > 0
    assert document["peak_memory_mb"]["rank_max_rss"] == 12.5
    assert (passed.log_dir / "loss.png").read_bytes().startswith(b"\x89PNG")

    assert recorded.losses == fake_losses(case)
    assert record_fake_golden(root, case).read_bytes() == first_bytes  # same losses, same bytes
    assert not list(golden_file.parent.glob(".*tmp"))


def test_mismatch_names_first_diverging_step(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("ok", "diverge"))
    case = write_case(root, entry="fake/ok.py")
    record_fake_golden(root, case)
    # Same settings (so the same golden applies), another entry behaviour: losses drift at step 4.
    build = root / "build" / DEVICE
    (build / "fake" / "ok.py").write_text((build / "fake" / "diverge.py").read_text())
    with pytest.raises(SmokeError) as failure:
        run(root, case)
    message = str(failure.value)
    expected = fake_losses(case)[3]
    assert f"{DEVICE}/tiny: loss diverges at step 4: expected {expected:.8g}, got" in message
    assert f"{expected + 0.5:.8g}" in message
    assert "tolerance relative 1e-06, absolute 1e-09" in message
    document = result_of(root)
    assert document["status"] == "failed"
    assert document["golden"]["first_divergence"]["step"] == 4
    assert (root / "logs" / "smoke" / DEVICE / "tiny" / "loss.png").is_file()


def test_each_step_is_reported_while_the_job_runs(tmp_path: Path) -> None:
    # The handshake entry writes a step, then waits until the runner has reported it (the report
    # callback creates go.<step>): a runner that reported only after the job would hang it.
    root = fake_workspace(tmp_path, modes=("handshake",))
    case = write_case(root, entry="fake/handshake.py")
    record_fake_golden(root, case)
    lines: list[str] = []
    log_dir = root / "logs" / "live"

    def report(line: str) -> None:
        lines.append(line)
        if line.startswith("step "):
            (log_dir / f"go.{line.split()[1].split('/')[0]}").touch()

    outcome = run(root, case, report=report, log_dir=log_dir)
    assert outcome.status == "passed"
    steps = [line for line in lines if line.startswith("step ")]
    assert steps == [
        f"step {n}/5: loss {loss:.6f} | golden {loss:.6f} ok"
        for n, loss in enumerate(fake_losses(case), start=1)
    ]
    assert lines[0] == "hooks: no environment file, requirements absent, extensions absent"
    assert lines[1] == "monitors started: system"
    assert lines[2].startswith("torchrun: 2 processes over ")
    megatron = Path(build_megatron(root)).relative_to(root.resolve())
    assert lines[2] == f"torchrun: 2 processes over build/{DEVICE} (log logs/live/job.log)"
    assert lines[3] == f"job started: torch None, megatron.core fake from {megatron}"
    assert lines[4:9] == steps
    assert lines[9].startswith("monitors stopped: system stopped; peak job memory ")


def test_a_step_outside_the_tolerance_is_shown_beside_its_golden_value(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("ok", "diverge"))
    case = write_case(root, entry="fake/ok.py")
    record_fake_golden(root, case)
    build = root / "build" / DEVICE
    (build / "fake" / "ok.py").write_text((build / "fake" / "diverge.py").read_text())
    lines: list[str] = []
    with pytest.raises(SmokeError):
        run(root, case, report=lines.append)
    golden = fake_losses(case)
    assert f"step 3/5: loss {golden[2]:.6f} | golden {golden[2]:.6f} ok" in lines
    assert (
        f"step 4/5: loss {golden[3] + 0.5:.6f} | golden {golden[3]:.6f} OUTSIDE tolerance"
        " (|difference| 0.5; relative 1e-06, absolute 1e-09)"
    ) in lines


def png_title(path: Path) -> str:
    """The Title text chunk of a PNG file (where the plot writes its verdict)."""
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    position = 8
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"tEXt" and body.startswith(b"Title\0"):
            return body[6:].decode("latin-1")
        position += 12 + length
    raise AssertionError(f"{path} has no Title")


def test_the_loss_plot_says_passed_failed_or_recorded(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("ok", "diverge"))
    case = write_case(root, entry="fake/ok.py")
    plot = root / "logs" / "smoke" / DEVICE / "tiny" / "loss.png"
    run(root, case, record_golden=True)
    assert png_title(plot).endswith(
        ": RECORDED: these losses are now the golden values (not compared)"
    )
    run(root, case)
    assert png_title(plot) == f"{DEVICE} / tiny: PASSED: every step within the golden tolerance"
    build = root / "build" / DEVICE
    (build / "fake" / "ok.py").write_text((build / "fake" / "diverge.py").read_text())
    with pytest.raises(SmokeError):
        run(root, case)
    assert png_title(plot) == f"{DEVICE} / tiny: FAILED: step 4 leaves the golden tolerance"


def test_env_file_reaches_the_job_and_changes_losses(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    case = write_case(root, entry="fake/ok.py")
    record_fake_golden(root, case)
    env_file = root / "hardware" / DEVICE / "environment_variables.sh"
    env_file.write_text("# shifts the stand-in losses\nexport FAKE_LOSS_SHIFT=0.25\n")
    with pytest.raises(SmokeError, match="loss diverges at step 1: expected"):
        run(root, case)
    document = result_of(root)
    assert document["hooks"]["environment_variables"] == ["FAKE_LOSS_SHIFT"]
    assert tuple(document["losses"]) == fake_losses(case, shift=0.25)


def test_missing_golden_says_the_record_command(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    case = write_case(root, entry="fake/ok.py")
    with pytest.raises(SmokeError) as failure:
        run(root, case)
    assert str(failure.value) == (
        f"hardware/{DEVICE}/smoke/tiny.golden.json: no golden losses for case tiny on {DEVICE}"
        f" (record them with `inv smoke --device {DEVICE} --config ci/smoke/tiny.yaml"
        " --record-golden`)"
    )


def test_golden_of_other_settings_is_refused(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    case = write_case(root, entry="fake/ok.py")
    record_fake_golden(root, case)
    write_case(root, entry="fake/ok.py", train={"steps": 5, "seed": 8, "lr": 0.01})
    refused = r"recorded for other settings of case tiny \(config_sha256 .*re-record"
    with pytest.raises(SmokeError, match=refused):
        run(root, case)


def test_timeout_stops_only_the_jobs_processes(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("escape",))
    case = write_case(root, entry="fake/escape.py")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        started = time.monotonic()
        with pytest.raises(SmokeError) as failure:
            run(root, case, record_golden=True, timeout=10)
        assert time.monotonic() - started < 60
        message = str(failure.value)
        assert message.startswith(
            f"smoke job tiny on {DEVICE} timed out after 10 s (at step 2 of 5); its processes"
            " were stopped"
        )
        log_dir = root / "logs" / "smoke" / DEVICE / "tiny"
        escaped = int((log_dir / "escaped.pid").read_text())
        assert not _alive(escaped), "a process the job started in its own session survived"
        assert bystander.poll() is None, "an unrelated process was killed"
        assert not _marked_processes("FLAGSCALE_SMOKE_JOB", tmp_path)
        document = result_of(root)
        assert document["status"] == "error" and "timed out" in document["reason"]
        assert document["hooks"]["monitors"] == {"system": "stopped"}
        assert not (log_dir / "monitors" / "system" / "sys_monitor.pid").exists()
        assert not (root / "hardware" / DEVICE / "smoke" / "tiny.golden.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_crash_reports_exit_status_and_log_tail(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("crash",))
    case = write_case(root, entry="fake/crash.py")
    with pytest.raises(SmokeError) as failure:
        run(root, case, record_golden=True)
    message = str(failure.value)
    first_line = message.splitlines()[0]
    assert first_line.startswith(f"smoke job tiny on {DEVICE} failed with exit status 1;")
    assert "rank 0 failed first, its last lines (full log" in first_line
    assert "RuntimeError: fake kernel failure on rank" in message
    assert result_of(root)["job"]["exit_status"] == 1


def test_nan_loss_names_the_step(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("nan",))
    case = write_case(root, entry="fake/nan.py")
    with pytest.raises(SmokeError) as failure:
        run(root, case, record_golden=True)
    assert str(failure.value).startswith(f"smoke job tiny on {DEVICE}: loss is nan at step 3 (log:")
    document = result_of(root)
    assert document["losses"][2] is None and len(document["losses"]) == 3
    assert not (root / "hardware" / DEVICE / "smoke").exists()


def test_module_from_outside_the_build_is_refused(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("leak",))
    case = write_case(root, entry="fake/leak.py")
    with pytest.raises(SmokeError) as failure:
        run(root, case, record_golden=True)
    assert str(failure.value).startswith(
        "smoke job imported leaky from /somewhere/else/leaky.py, outside the build tree"
    )


def test_megatron_from_elsewhere_is_refused(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    case = write_case(root, entry="fake/ok.py")
    elsewhere = tmp_path / "site" / "megatron" / "core"
    elsewhere.mkdir(parents=True)
    (elsewhere.parent / "__init__.py").write_text("")
    (elsewhere / "__init__.py").write_text("")
    # The build's megatron is a symlink to another tree: the job must notice where it really is.
    megatron = root / "build" / DEVICE / "third_party" / "Megatron-LM" / "megatron"
    shutil.rmtree(megatron / "core")
    (megatron / "core").symlink_to(elsewhere)
    with pytest.raises(SmokeError, match=r"imported megatron.core from .*/site/megatron/core/"):
        run(root, case, record_golden=True)


def test_build_checks(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    case = write_case(root, entry="fake/ok.py")
    with pytest.raises(SmokeError, match=r"build tree .*/Metax_C550 does not exist \(run `inv"):
        run_smoke(root, "Metax_C550", case)
    (root / "build" / DEVICE / ".flagscale-build.json").unlink()
    with pytest.raises(SmokeError, match=r"is not a complete build tree"):
        run(root, case)
    with pytest.raises(Exception, match="not Vendor_Model"):
        run_smoke(root, "generic", case)


def test_smoke_command_names_a_missing_case_file_and_where_it_looked(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    run_git(root, "init", "-q")
    release = {"kind": "release", "package": "megatron-core", "version": "0.1"}
    release.update(filename="megatron_core-0.1.tar.gz", sha256="0" * 64)
    declare_backends(root, {"Megatron-LM": {"source": release, "pin": "1" * 40}})
    with pytest.raises(SmokeError) as caught:
        smoke_command(DEVICE, "ci/smoke/nope.yaml", start=root / "hardware")
    assert str(caught.value) == (
        f"smoke case ci/smoke/nope.yaml not found in {root / 'hardware'} nor in {root}"
        " (pass --config with a case file, e.g. ci/smoke/gpt_tiny_tp2.yaml)"
    )
    with pytest.raises(SmokeError, match=rf"^smoke case nope.yaml not found in {root} \("):
        smoke_command(DEVICE, "nope.yaml", start=root)


def test_log_folder_not_made_by_the_runner_is_kept(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    case = write_case(root, entry="fake/ok.py")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SmokeError, match="was not made by the smoke runner; not clearing it"):
        run(root, case, record_golden=True, log_dir=mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _marked_processes(name: str, folder: Path) -> list[int]:
    """Processes carrying the runner's marker ``name`` that work inside ``folder`` (tests run
    in parallel: another test's job is not this test's leftover)."""
    found = []
    for process in psutil.process_iter():
        try:
            if name in process.environ() and Path(process.cwd()).is_relative_to(folder):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    leftovers = _marked_processes("FLAGSCALE_SMOKE_JOB", tmp_path) + _marked_processes(
        "FLAGSCALE_SMOKE_MONITOR", tmp_path
    )
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running: {leftovers}"
