"""One try of a bisection: a real build in a scratch folder and a real smoke run, its verdict
remembered by the fingerprint of its inputs.

A try builds a device type from a history entry, or from candidate patch sets, with
``inv build``'s own machinery into the bisection's scratch ``build/`` (never the user's), then
runs the smoke cases on it (hooks, monitors, golden losses, as ``inv smoke``). Its *inputs* are
the build's fingerprint (every patch and base id), each case's settings and golden losses, the
device's environment file and requirements, and the tool, torch and Python versions; their
sha256 keys the verdict in ``.git/flagscale/bisect/<V_M>.json`` (schemas/bisect-verdicts), so a
subset tried before — in this bisection or an earlier one — is not run again.

A try that cannot be built is *unresolved*. A smoke job that fails is summed up by a signature
(``diverged``, ``non-finite loss``, ``timeout``, ``crash:<ExceptionType>``, ...): the same
signature as the failure being hunted is ``fail``; any other failure is unresolved, as ddmin
asks (a subset that crashes on a missing import says nothing about a wrong loss).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagscale import __version__
from flagscale.builds.builder import BuildRequest, build_devices
from flagscale.builds.fingerprint import canonical_json, fingerprint_of
from flagscale.builds.plan import plan_device
from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import SchemaError, parse_document, validate
from flagscale.trust.ddmin import FAIL, PASS, UNRESOLVED
from flagscale.upstream.workspace import Workspace
from flagscale.vendor.stored_sets import GIT_SETS, SetSource

__all__ = ["Outcome", "Trials", "failure_signature"]

CACHE_FORMAT = 1
PASSED, FAILED, UNBUILDABLE = "passed", "failed", "unbuildable"


@dataclass(frozen=True)
class Outcome:
    """What one try gave: its raw result, the failure's signature and one line about it."""

    result: str  # passed | failed | unbuildable
    signature: str | None
    detail: str
    key: str  # the fingerprint of the try's inputs
    cached: bool
    seconds: float = 0.0

    def verdict(self, target: str | None) -> str:
        """PASS, FAIL (the failure hunted for) or UNRESOLVED."""
        if self.result == PASSED:
            return PASS
        if self.result == FAILED and self.signature == target:
            return FAIL
        return UNRESOLVED


_EXCEPTION = re.compile(r"\b([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning))\b")


def failure_signature(message: str) -> str:
    """A smoke failure reduced to what two runs of the same fault share."""
    if "loss diverges at step" in message:
        return "diverged"
    if ": loss is " in message:
        return "non-finite loss"
    if " timed out after " in message:
        return "timeout"
    if " failed with exit status " in message:
        found = _EXCEPTION.findall(message.split("\n", 1)[-1])
        return f"crash:{found[-1].rsplit('.', 1)[-1]}" if found else "crash"
    if (
        " imported megatron.core from " in message
        or " imported " in message
        and "outside" in message
    ):
        return "provenance"
    if " reported " in message and " losses for " in message:
        return "missing losses"
    return "error"


class Trials:
    """Builds and smoke runs for one bisection, with the verdict cache."""

    def __init__(
        self,
        ws: Workspace,
        device_type: str,
        cases: Sequence[Path],
        scratch: Path,
        logs: Path,
        *,
        key_paths: Sequence[Path] = (),
        report: Callable[[str], None] = print,
    ) -> None:
        self.ws = ws
        self.device_type = device_type
        self.cases = list(cases)
        self.scratch = scratch
        self.logs = logs
        self.key_paths = tuple(key_paths)
        self.report = report
        self.runs = 0  # smoke runs actually made (cached verdicts not counted)
        self.cached = 0
        self.cache = _VerdictCache(ws.state_dir / "bisect" / f"{device_type}.json")
        self._shared = self._shared_inputs()

    # --- inputs ----------------------------------------------------------------------------

    def _shared_inputs(self) -> dict[str, Any]:
        """What every try of this bisection shares: cases, goldens, hooks, versions."""
        from flagscale.runner.config import load_config
        from flagscale.runner.golden import golden_path

        hardware = self.ws.root / "hardware"
        cases = []
        for path in self.cases:
            config = load_config(path)
            golden = golden_path(hardware, self.device_type, config.case)
            cases.append(
                {"case": config.case, "settings": config.fingerprint(), "golden": _digest(golden)}
            )
        device = hardware / self.device_type
        return {
            "device_type": self.device_type,
            "cases": cases,
            "hooks": {
                name: _digest(device / name)
                for name in ("environment_variables.sh", "requirements.txt")
            },
            "tool": __version__,
            "python": sys.version.split()[0],
            "torch": _torch_version(),
        }

    def key_of(self, commit: str, task: str, source: SetSource = GIT_SETS) -> str:
        """The fingerprint of a try's inputs (a few git calls; nothing is built)."""
        plan = plan_device(self.ws, self.device_type, task=task, commit=commit, source=source)
        inputs = {**self._shared, "build": fingerprint_of(plan.inputs())}
        return hashlib.sha256(canonical_json(inputs)).hexdigest()

    # --- running ---------------------------------------------------------------------------

    def run(
        self,
        name: str,
        commit: str,
        task: str,
        source: SetSource = GIT_SETS,
        *,
        measure: Callable[[Path, Path], Outcome] | None = None,
    ) -> Outcome:
        """Build and smoke-run one try (or take its verdict from the cache).

        ``measure(build, log_dir)``, when given, runs the cases itself (under coverage) and is
        never served from the cache.
        """
        key = self.key_of(commit, task, source)
        if measure is None:
            remembered = self.cache.get(key)
            if remembered is not None:
                self.cached += 1
                return Outcome(
                    remembered["result"], remembered["signature"], remembered["detail"], key, True
                )
        started = time.monotonic()
        try:
            build = self._build(commit, task, source)
        except FlagScaleError as exc:
            outcome = Outcome(UNBUILDABLE, None, _first_line(exc.message), key, False)
            self.cache.put(key, outcome)
            return outcome
        log_dir = self.logs / "tries" / name
        self.runs += 1
        outcome = measure(build, log_dir) if measure else self._smoke(build, log_dir, key)
        outcome = Outcome(
            outcome.result,
            outcome.signature,
            outcome.detail,
            key,
            False,
            time.monotonic() - started,
        )
        self.cache.put(key, outcome)
        return outcome

    def _build(self, commit: str, task: str, source: SetSource) -> Path:
        request = BuildRequest(
            devices=(self.device_type,),
            task=task,
            commit=commit,
            key_paths=self.key_paths,
            force=True,
            jobs=1,
            report=lambda _line: None,
            source=source,
            root=self.scratch / "build",
            progress=False,
        )
        return build_devices(self.ws, request)[self.device_type]

    def _smoke(self, build: Path, log_dir: Path, key: str) -> Outcome:
        from flagscale.runner.smoke import run_smoke

        for case in self.cases:
            try:
                run_smoke(
                    self.ws.root,
                    self.device_type,
                    case,
                    build_dir=build,
                    log_dir=log_dir / case.stem,
                    report=_quiet,
                )
            except FlagScaleError as exc:
                signature = failure_signature(str(exc))
                return Outcome(FAILED, signature, _first_line(exc.message), key, False)
        return Outcome(PASSED, None, "passed", key, False)


class _VerdictCache:
    """``<state>/bisect/<V_M>.json``: try fingerprint → its raw result (schema bisect-verdicts)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tries: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = validate(
                parse_document(text, str(self.path)), "bisect-verdicts", str(self.path)
            )
        except SchemaError:
            return {}  # a damaged cache costs runs, never a wrong verdict
        return dict(document["tries"])

    def get(self, key: str) -> dict[str, Any] | None:
        return self.tries.get(key)

    def put(self, key: str, outcome: Outcome) -> None:
        self.tries[key] = {
            "result": outcome.result,
            "signature": outcome.signature,
            "detail": outcome.detail,
        }
        document = {"version": CACHE_FORMAT, "tries": self.tries}
        text = json.dumps(document, indent=1, sort_keys=True) + "\n"
        write_atomically(self.path, text.encode("utf-8"))


def _quiet(_line: str) -> None:
    """The smoke runner's live lines: a bisection prints one line per try instead."""


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _torch_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def _first_line(message: str) -> str:
    return message.strip().split("\n", 1)[0]
