"""One smoke job end to end: hooks, monitors, torchrun over a build tree, losses vs golden.

Order (fixed, docs/smoke-training.md): (1) the device's environment file is read, (2) its
requirements installed, (3) its extension sources built, (4) monitors started, (5) the job run,
(6) monitors stopped — always, failures included. Then the losses are checked (finite, from the
build tree's megatron), compared with (or recorded as) the golden values, and ``result.json``
and ``loss.png`` written to the log folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.owned_folder import fresh_folder
from flagscale.runner import hooks
from flagscale.runner.config import DEFAULT_ENTRY, SmokeConfig, load_config
from flagscale.runner.golden import Golden, compare, golden_path, load_golden, write_golden
from flagscale.runner.launch import (
    JOB_MARKER,
    free_port,
    job_environment,
    rank_error_tail,
    run_job,
    torchrun_command,
)
from flagscale.runner.monitor import (
    SYSTEM_MONITOR,
    Monitor,
    MonitorError,
    peak_memory,
    start_monitors,
    stop_monitors,
    vendor_monitor_path,
)
from flagscale.runner.processes import Marker
from flagscale.runner.results import (
    PLOT_NAME,
    json_losses,
    plot_losses,
    plot_verdict,
    write_result,
)
from flagscale.vendor.patchset import check_device_type

__all__ = ["BUILD_RECORD", "SmokeError", "SmokeOutcome", "describe", "run_smoke", "smoke_command"]

BUILD_RECORD = ".flagscale-build.json"
LOG_MARK = ".flagscale-smoke"
RUNNER_ENTRY = Path(__file__).resolve().parent / "train_gpt.py"
TAIL_LINES = 15


class SmokeError(FlagScaleError):
    """The smoke job could not run, failed, or its losses do not match the golden values."""


@dataclass(frozen=True)
class SmokeOutcome:
    """A smoke job that passed (or whose losses were recorded)."""

    status: str  # passed | recorded
    log_dir: Path
    result: Path
    losses: tuple[float, ...]
    duration: float
    peak_memory_mb: dict[str, float]
    golden: Path


@dataclass
class _Run:
    """What one run learns as it goes; becomes result.json whatever happens."""

    device_type: str
    config: SmokeConfig
    config_display: str
    build: Path
    log_dir: Path
    golden_file: Path
    entry: Path | None = None
    losses: list[float] = field(default_factory=list)
    golden: Golden | None = None
    divergence: dict[str, Any] | None = None
    duration: float = 0.0
    exit_status: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    hooks: dict[str, Any] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    plot: Path | None = None
    report: Callable[[str], None] = field(default=lambda line: None, repr=False)
    started_at: str = field(default_factory=lambda: utc_now())
    root: Path | None = None  # the workspace, for showing paths relative to it
    # what a caller adds to the job alone (e.g. measuring it): variables, import folders first
    job_env: dict[str, str] = field(default_factory=dict)
    job_python_path: tuple[Path, ...] = ()

    def shown(self, path: Path) -> str:
        """``path`` relative to the workspace when it is inside it, for messages."""
        return _display(path, self.root) if self.root else str(path)


def run_smoke(
    root: Path,
    device_type: str,
    config_path: Path,
    *,
    build_dir: Path | None = None,
    record_golden: bool = False,
    timeout: float | None = None,
    log_dir: Path | None = None,
    base_env: Mapping[str, str] | None = None,
    report: Callable[[str], None] | None = None,
    job_env: Mapping[str, str] | None = None,
    job_python_path: Sequence[Path] = (),
) -> SmokeOutcome:
    """Run the smoke case ``config_path`` on the build tree of ``device_type``.

    ``root`` is the workspace (``hardware/``, default ``build/<device>`` and ``logs/``). Raises
    SmokeError (or another FlagScaleError) with one line saying what failed; result.json is
    written to the log folder in every case once the folder exists. ``report`` gets a line for
    each hook, monitor and training step as it happens (default: standard error).

    ``job_env`` and ``job_python_path`` reach the training job only (not hooks or monitors):
    variables set last, and folders put first on its ``PYTHONPATH`` (modules imported from
    them pass the provenance check). ``flagscale.trust`` measures the job this way.
    """
    check_device_type(device_type)
    root = root.resolve()
    config_path = config_path if config_path.is_absolute() else Path.cwd() / config_path
    config = load_config(config_path, display=_display(config_path, root))
    build = (build_dir or root / "build" / device_type).resolve()
    megatron = _check_build(build, config, device_type)
    golden_file = golden_path(root / "hardware", device_type, config.case)
    golden = None if record_golden else _golden_for(golden_file, root, device_type, config)
    run = _Run(
        device_type=device_type,
        config=config,
        config_display=_display(config_path, root),
        build=build,
        log_dir=_fresh_log_dir(log_dir or root / "logs" / "smoke" / device_type / config.case),
        golden_file=golden_file,
        golden=golden,
        report=report or _reporter(device_type, config.case),
        root=root,
        job_env=dict(job_env or {}),
        job_python_path=tuple(Path(p).resolve() for p in job_python_path),
    )
    try:
        _execute(run, root, megatron, timeout or config.timeout, base_env or os.environ)
        status = _judge(run, record_golden)
    except FlagScaleError as exc:
        try:
            _finish(run, "error" if run.divergence is None else "failed", str(exc))
        except FlagScaleError as secondary:  # the job's failure is the one to report
            exc.add_note(f"writing the result failed too: {secondary}")
        raise
    result = _finish(run, status, None)
    return SmokeOutcome(
        status=status,
        log_dir=run.log_dir,
        result=result,
        losses=tuple(run.losses),
        duration=run.duration,
        peak_memory_mb=dict(run.peak),
        golden=golden_file,
    )


def _execute(
    run: _Run, root: Path, megatron: Path, timeout: float, base_env: Mapping[str, str]
) -> None:
    """Steps 1–6: hooks, monitors, the job; monitors are stopped whatever happens."""
    device_dir = root / "hardware" / run.device_type
    device_hooks = hooks.DeviceHooks.find(device_dir)
    hook_log = run.log_dir / "hooks.log"
    variables: dict[str, str] = {}
    if device_hooks.env_file is not None:
        variables = hooks.parse_env_file(
            device_hooks.env_file, base_env, display=_display(device_hooks.env_file, root)
        )
    run.hooks["environment_variables"] = sorted(variables)
    hook_env = {**base_env, **variables}
    run.hooks["requirements"] = "absent"
    if device_hooks.requirements is not None:
        installed = hooks.install_requirements(device_hooks.requirements, hook_env, hook_log)
        run.hooks["requirements"] = "installed" if installed else "satisfied"
    python_path = [megatron, run.build]
    run.hooks["csrc"] = "absent"
    if device_hooks.csrc is not None:
        site = hooks.build_extensions(
            device_hooks.csrc, run.log_dir / "csrc-site", hook_env, hook_log
        )
        python_path.append(site)
        run.hooks["csrc"] = "built"
    run.report(_hooks_line(run.hooks, device_hooks, root))

    marker = Marker.new(JOB_MARKER)
    monitors = _monitors(run, device_dir, root)
    monitor_env = {k: v for k, v in hook_env.items() if k != JOB_MARKER}
    problems: list[str] = []
    try:
        start_monitors(monitors, monitor_env, watch=marker.token)
        run.report(f"monitors started: {', '.join(m.name for m in monitors) or 'none'}")
        _launch(run, python_path, variables, marker, timeout, base_env)
    finally:
        problems = stop_monitors(monitors, monitor_env)
        run.hooks["monitors"] = {m.name: m.outcome for m in monitors}
        run.peak.update(_peak_memory(run))
        _append(hook_log, "".join(f"# {p}\n" for p in problems))
        run.report(_monitors_line(monitors, run.peak))
    if problems:
        raise MonitorError(problems[0])


def _monitors(run: _Run, device_dir: Path, root: Path) -> list[Monitor]:
    """The system monitor (unless switched off), then the vendor's (per ``monitors.vendor``)."""
    settings = run.config.monitors
    monitors = []
    if settings.system:
        interval = ("--interval", f"{settings.interval:g}")
        monitors.append(
            Monitor("system", SYSTEM_MONITOR, run.log_dir / "monitors" / "system", interval)
        )
    vendor_script = vendor_monitor_path(device_dir, run.device_type)
    if settings.vendor == "required" and not vendor_script.is_file():
        raise MonitorError(
            f"{_display(vendor_script, root)}: vendor monitor is missing but {run.config_display}"
            " sets monitors.vendor: required",
            hint="add the monitor script or set monitors.vendor to auto",
        )
    if settings.vendor != "off" and vendor_script.is_file():
        name = vendor_script.stem
        monitors.append(Monitor(name, vendor_script, run.log_dir / "monitors" / name))
    return monitors


def _launch(
    run: _Run,
    python_path: list[Path],
    variables: Mapping[str, str],
    marker: Marker,
    timeout: float,
    base_env: Mapping[str, str],
) -> None:
    config = run.config
    run.entry = _entry(run)
    job_file = run.log_dir / "job.json"
    job_file.write_text(json.dumps(config.job_spec(), indent=2, sort_keys=True) + "\n", "utf-8")
    metrics = run.log_dir / "metrics.jsonl"
    arguments = ["--job", str(job_file), "--metrics", str(metrics)]
    rank_logs = run.log_dir / "ranks"
    command = torchrun_command(config.nproc, free_port(), run.entry, arguments, rank_logs)
    search = [*run.job_python_path, *python_path]
    env = job_environment(base_env, search, {**variables, **run.job_env}, marker)
    job_log = run.log_dir / "job.log"
    job_log.write_text("$ " + " ".join(command) + "\n", "utf-8")
    shown = run.shown
    run.report(f"torchrun: {config.nproc} processes over {shown(run.build)} (log {shown(job_log)})")
    follower = _StepFollower(metrics, run)
    outcome = run_job(
        command,
        env=env,
        cwd=run.log_dir,
        log_path=job_log,
        timeout=timeout,
        marker=marker,
        watch=follower.poll,
    )
    run.duration, run.exit_status = outcome.duration, outcome.returncode
    if outcome.killed:
        _append(job_log, f"# the runner stopped the job's processes {list(outcome.killed)}\n")
    _read_metrics(run, metrics)
    if outcome.timed_out:
        raise SmokeError(
            f"smoke job {config.case} on {run.device_type} timed out after {timeout:g} s"
            f" (at step {len(run.losses)} of {config.train['steps']}); its processes were stopped",
            hint=f"log: {job_log}",
        )
    _check_losses_finite(run)
    if outcome.returncode != 0:
        failed = f"smoke job {config.case} on {run.device_type} failed with exit status"
        root_cause = rank_error_tail(job_log, rank_logs, TAIL_LINES)
        if root_cause is None:
            raise SmokeError(
                f"{failed} {outcome.returncode}; last lines of {job_log}:\n{_tail(job_log)}"
            )
        rank, lines = root_cause
        raise SmokeError(
            f"{failed} {outcome.returncode}; rank {rank} failed first, its last lines"
            f" (full log {job_log}):\n" + "\n".join(f"  {line}" for line in lines)
        )
    _check_provenance(run, python_path[0])
    if len(run.losses) != config.train["steps"]:
        raise SmokeError(
            f"smoke job {config.case} reported {len(run.losses)} losses for"
            f" {config.train['steps']} steps (metrics {metrics})"
        )


class _StepFollower:
    """Reads the metrics file while the job runs and reports each step as it comes."""

    def __init__(self, metrics: Path, run: _Run) -> None:
        self.metrics = metrics
        self.run = run
        self.offset = 0
        self.pending = b""
        self.reported = 0

    def poll(self) -> None:
        try:
            with open(self.metrics, "rb") as stream:
                stream.seek(self.offset)
                data = stream.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        event = record.get("event") if isinstance(record, dict) else None
        if event == "step":
            self.reported += 1
            self.run.report(_step_line(self.run, self.reported, record.get("loss")))
        elif event == "provenance":
            where = record.get("megatron_core")
            self.run.report(
                f"job started: torch {record.get('torch')}, megatron.core"
                f" {record.get('megatron_core_version')} from"
                f" {self.run.shown(Path(where)) if isinstance(where, str) else where}"
            )


def _step_line(run: _Run, step: int, loss: Any) -> str:
    """``step 3/10: loss 10.51 | golden 10.51 ok`` (or how far off, or recording)."""
    steps = run.config.train["steps"]
    if not isinstance(loss, (int, float)):
        return f"step {step}/{steps}: loss {loss!r}"
    head = f"step {step}/{steps}: loss {loss:.6f}"
    golden = run.golden
    if golden is None:
        return f"{head} (recording)"
    if step > len(golden.losses):
        return f"{head} (no golden value for this step)"
    expected = golden.losses[step - 1]
    if golden.tolerance.allows(expected, float(loss)):
        return f"{head} | golden {expected:.6f} ok"
    return (
        f"{head} | golden {expected:.6f} OUTSIDE tolerance"
        f" (|difference| {abs(float(loss) - expected):.3g}; {golden.tolerance})"
    )


def _hooks_line(done: Mapping[str, Any], found: hooks.DeviceHooks, root: Path) -> str:
    variables = done.get("environment_variables", [])
    env = (
        f"{_display(found.env_file, root)} ({len(variables)} variables)"
        if found.env_file is not None
        else "no environment file"
    )
    return f"hooks: {env}, requirements {done['requirements']}, extensions {done['csrc']}"


def _monitors_line(monitors: list[Monitor], peak: Mapping[str, float]) -> str:
    outcomes = ", ".join(f"{m.name} {m.outcome}" for m in monitors) or "none"
    memory = f"; peak job memory {peak['job_rss']:.0f} MB" if peak.get("job_rss") else ""
    return f"monitors stopped: {outcomes}{memory}"


def _reporter(device_type: str, case: str) -> Callable[[str], None]:
    prefix = f"smoke {device_type}/{case}: "

    def report(line: str) -> None:
        print(prefix + line, file=sys.stderr, flush=True)

    return report


def _entry(run: _Run) -> Path:
    """The training script: the build tree's, or the runner's own copied into the log folder."""
    candidate = run.build / run.config.entry
    if candidate.is_file():
        return candidate
    if run.config.entry != DEFAULT_ENTRY:
        raise SmokeError(
            f"{run.config_display}: at entry: {run.config.entry!r} is not a file in {run.build}"
        )
    copy = run.log_dir / "entry" / RUNNER_ENTRY.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RUNNER_ENTRY, copy)
    return copy


def _read_metrics(run: _Run, metrics: Path) -> None:
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a killed job may be cut short
        event = record.get("event") if isinstance(record, dict) else None
        if event == "step":
            if record.get("step") != len(run.losses) + 1:
                raise SmokeError(f"{metrics}:{number}: step {record.get('step')!r} out of order")
            run.losses.append(float(record["loss"]))
        elif event == "provenance":
            run.provenance = record
        elif event == "summary":
            run.summary = record


def _check_losses_finite(run: _Run) -> None:
    for step, loss in enumerate(run.losses, start=1):
        if not math.isfinite(loss):
            raise SmokeError(
                f"smoke job {run.config.case} on {run.device_type}: loss is {loss} at step {step}",
                hint=f"log: {run.log_dir / 'job.log'}",
            )


def _check_provenance(run: _Run, megatron: Path) -> None:
    """The job's megatron must be the build tree's; nothing may come from the source checkout."""
    reported = run.provenance.get("megatron_core")
    if not reported:
        raise SmokeError(
            f"smoke job {run.config.case} did not report where megatron.core came from"
            f" (no provenance line in {run.log_dir / 'metrics.jsonl'})"
        )
    if not _inside(Path(reported), megatron):
        raise SmokeError(
            f"smoke job imported megatron.core from {reported}, not from the build tree {megatron}",
            hint="remove the other megatron from the job's Python or rebuild the tree",
        )
    allowed = (run.build, run.log_dir, *run.job_python_path)
    for module, path in sorted(run.summary.get("modules", {}).items()):
        if not any(_inside(Path(path), place) for place in allowed):
            raise SmokeError(
                f"smoke job imported {module} from {path}, outside the build tree {run.build}",
                hint="the job must import only the build tree and installed packages",
            )


def _judge(run: _Run, record_golden: bool) -> str:
    """Record the losses, or compare them with the golden values."""
    config = run.config
    if record_golden:
        run.golden = Golden(
            device_type=run.device_type,
            case=config.case,
            config_sha256=config.fingerprint(),
            losses=tuple(run.losses),
            tolerance=config.tolerance,
            recorded_with={
                "torch": run.provenance.get("torch"),
                "megatron_core": run.provenance.get("megatron_core_version"),
            },
        )
        write_golden(run.golden_file, run.golden)
        return "recorded"
    assert run.golden is not None
    divergence = compare(run.golden, run.losses)
    if divergence is None:
        return "passed"
    run.divergence = {
        "step": divergence.step,
        "expected": divergence.expected,
        "got": divergence.got,
    }
    note = ""
    recorded_torch = run.golden.recorded_with.get("torch")
    if recorded_torch and recorded_torch != run.provenance.get("torch"):
        note = (
            f"; golden recorded with torch {recorded_torch}, this run {run.provenance.get('torch')}"
        )
    raise SmokeError(
        f"{run.device_type}/{config.case}: {divergence}{note}",
        hint=f"golden {run.golden_file}; result {run.log_dir / 'result.json'}",
    )


def _finish(run: _Run, status: str, reason: str | None) -> Path:
    """Write the loss plot and result.json; returns result.json's path."""
    if run.losses:
        title = f"{run.device_type} / {run.config.case}"
        verdict = plot_verdict(status, run.divergence)
        run.plot = plot_losses(run.log_dir / PLOT_NAME, run.losses, run.golden, title, verdict)
    golden = None
    if run.golden is not None:
        golden = {
            "path": str(run.golden_file),
            "losses": list(run.golden.losses),
            "tolerance": run.golden.tolerance.as_dict(),
            "first_divergence": run.divergence,
        }
        if run.divergence is not None and not math.isfinite(run.divergence["got"]):
            golden["first_divergence"] = {**run.divergence, "got": None}
    if "rank_max_rss" not in run.peak and "peak_rss_mb" in run.summary:
        run.peak["rank_max_rss"] = float(run.summary["peak_rss_mb"])
    document = {
        "version": 1,
        "device_type": run.device_type,
        "case": run.config.case,
        "status": status,
        "reason": reason,
        "started_at": run.started_at,
        "finished_at": utc_now(),
        "losses": json_losses(run.losses),
        "golden": golden,
        "duration_s": round(run.duration, 3),
        "peak_memory_mb": dict(run.peak),
        "job": {
            "build": str(run.build),
            "build_fingerprint": _build_fingerprint(run.build),
            "entry": str(run.entry) if run.entry else "",
            "config": run.config_display,
            "config_sha256": run.config.fingerprint(),
            "nproc": run.config.nproc,
            "parallel": dict(run.config.parallel),
            "exit_status": run.exit_status,
            "megatron_core": run.provenance.get("megatron_core"),
            "torch": run.provenance.get("torch"),
        },
        "hooks": run.hooks,
        "plot": PLOT_NAME if run.plot else None,
    }
    return write_result(run.log_dir, document)


def utc_now() -> str:
    """The time now, UTC, to the second: ``2026-12-02T08:01:02Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _peak_memory(run: _Run) -> dict[str, float]:
    peaks = peak_memory(run.log_dir / "monitors" / "system" / "sys_monitor.jsonl")
    named = {"job_rss": peaks.get("job_rss_mb"), "system_used": peaks.get("memory_used_mb")}
    return {k: v for k, v in named.items() if v}


def _check_build(build: Path, config: SmokeConfig, device_type: str) -> Path:
    """The build tree's megatron folder, or an error saying how to make the build."""
    make = f"run `inv build --device {device_type}` first"
    if not build.is_dir():
        raise SmokeError(f"build tree {build} does not exist", hint=make)
    if not (build / BUILD_RECORD).is_file():
        raise SmokeError(f"{build} is not a complete build tree (no {BUILD_RECORD})", hint=make)
    megatron = build / "third_party" / config.backend
    if not (megatron / "megatron" / "core").is_dir():
        raise SmokeError(
            f"{megatron} holds no megatron/core package; {config.backend} is not in the build",
            hint=make,
        )
    return megatron


def _golden_for(path: Path, root: Path, device_type: str, config: SmokeConfig) -> Golden:
    """The golden values of the case, checked to belong to its current settings."""
    display = _display(path, root)
    record = (
        f"inv smoke --device {device_type} --config {_display(config.source, root)} --record-golden"
    )
    if not path.is_file():
        raise SmokeError(
            f"{display}: no golden losses for case {config.case} on {device_type}",
            hint=f"record them with `{record}`",
        )
    golden = load_golden(path, display=display)
    if golden.config_sha256 != config.fingerprint():
        raise SmokeError(
            f"{display}: recorded for other settings of case {config.case}"
            f" (config_sha256 {golden.config_sha256[:12]}…, the config now gives"
            f" {config.fingerprint()[:12]}…)",
            hint=f"re-record them with `{record}`",
        )
    return golden


def _fresh_log_dir(path: Path) -> Path:
    """An empty log folder; an old one is cleared only if the runner made it."""
    try:
        return fresh_folder(
            path,
            mark=LOG_MARK,
            maker="the smoke runner",
            hint="choose another --log-dir or remove the folder",
        )
    except FlagScaleError as exc:
        raise SmokeError(exc.message, hint=exc.hint) from None


def _build_fingerprint(build: Path) -> str | None:
    try:
        record = json.loads((build / BUILD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = record.get("fingerprint") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def _inside(path: Path, folder: Path) -> bool:
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real == base or base in real.parents


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in lines[-TAIL_LINES:])


def _append(path: Path, text: str) -> None:
    if text:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(text)


def smoke_command(
    device_type: str | None,
    config: str,
    *,
    build_dir: str | None = None,
    record_golden: bool = False,
    timeout: float | None = None,
    log_dir: str | None = None,
    start: Path | None = None,
) -> SmokeOutcome:
    """``inv smoke``: paths relative to the current folder, else to the workspace root."""
    from flagscale.upstream.workspace import find_workspace

    if not device_type:
        raise SmokeError("no --device given", hint="name a device type, e.g. --device Generic_CPU")
    root = find_workspace(start).root
    here = start or Path.cwd()

    def located(name: str) -> Path:
        path = Path(name).expanduser()
        if path.is_absolute() or (here / path).exists():
            return (here / path).resolve()
        return root / path

    case = located(config)
    if not case.is_file():
        raise SmokeError(
            f"smoke case {config} not found in "
            + (f"{root}" if here.resolve() == root.resolve() else f"{here} nor in {root}"),
            hint="pass --config with a case file, e.g. ci/smoke/gpt_tiny_tp2.yaml",
        )
    outcome = run_smoke(
        root,
        device_type,
        case,
        build_dir=located(build_dir) if build_dir else None,
        record_golden=record_golden,
        timeout=timeout,
        log_dir=located(log_dir) if log_dir else None,
    )
    print(describe(device_type, outcome))
    return outcome


def describe(device_type: str, outcome: SmokeOutcome) -> str:
    """One line about a finished job: status, steps, time, peak memory, where the result is."""
    peak = outcome.peak_memory_mb.get("job_rss")
    memory = f", peak job memory {peak:.0f} MB" if peak else ""
    what = "recorded golden losses" if outcome.status == "recorded" else outcome.status
    return (
        f"smoke {device_type}/{outcome.log_dir.name}: {what}, {len(outcome.losses)} steps in"
        f" {outcome.duration:.1f} s{memory} ({outcome.result})"
    )
