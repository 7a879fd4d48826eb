"""A device type's hooks from ``hardware/<Vendor_Model>/``, FlagPerf's vendor rules.

Run in this fixed order around every smoke job (docs/smoke-training.md):

1. ``environment_variables.sh`` — read, never executed: ``KEY=VALUE`` / ``export KEY=VALUE``
   lines, comments and blank lines; values bare, 'single-quoted' (literal) or "double-quoted",
   with ``$NAME`` / ``${NAME}`` taken from the variables so far. Anything else (command
   substitution, ``;``, ``&&``, pipes, ``source``, functions) is an error naming the line.
2. ``requirements.txt`` — skipped when every line is a plain requirement already satisfied in
   this Python; otherwise ``python -m pip install -r requirements.txt`` into it.
3. ``csrc/setup.py`` — ``pip install --no-build-isolation --no-deps --target <log dir>/csrc-site``;
   that folder goes on the job's PYTHONPATH.
4. monitors start, 5. the job runs, 6. monitors stop (always) — see ``monitor.py``/``smoke.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from flagscale.core.errors import FlagScaleError

__all__ = [
    "ENV_FILE",
    "REQUIREMENTS",
    "RESERVED_VARIABLES",
    "DeviceHooks",
    "HookError",
    "build_extensions",
    "install_requirements",
    "parse_env_file",
    "requirements_satisfied",
]

ENV_FILE = "environment_variables.sh"
REQUIREMENTS = "requirements.txt"
CSRC = "csrc"
TAIL_LINES = 8
# The runner owns these: letting an env file set them would break the job's import isolation.
RESERVED_VARIABLES = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONNOUSERSITE",
        "PYTHONSAFEPATH",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "FLAGSCALE_SMOKE_JOB",
        "FLAGSCALE_SMOKE_MONITOR",
        "FLAGSCALE_SMOKE_WATCH",
    }
)

_ASSIGNMENT = re.compile(r"^(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
# What may remain of a value once its $NAME / ${NAME} references are taken out.
_UNSAFE_BARE = re.compile(r"[`;&|<>(){}!*?\[\]~'\"\\\s$]")
_UNSAFE_DOUBLE = re.compile(r"[`\\\"$]")


class HookError(FlagScaleError):
    """A device hook file is malformed or its step failed."""


@dataclass(frozen=True)
class DeviceHooks:
    """The hook files a device type ships (None where it ships none)."""

    folder: Path
    env_file: Path | None
    requirements: Path | None
    csrc: Path | None

    @classmethod
    def find(cls, folder: Path) -> DeviceHooks:
        def present(name: str) -> Path | None:
            return folder / name if (folder / name).is_file() else None

        csrc = folder / CSRC / "setup.py"
        return cls(
            folder, present(ENV_FILE), present(REQUIREMENTS), csrc if csrc.is_file() else None
        )


def parse_env_file(
    path: Path, inherited: Mapping[str, str], display: str | None = None
) -> dict[str, str]:
    """The variables an environment file sets, in order; ``$NAME`` expands from ``inherited``
    and the lines above. Raises HookError naming file and line for anything not plain."""
    source = display or str(path)
    known = dict(inherited)
    assigned: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            raise HookError(
                f"{source}:{number}: not a KEY=VALUE or export KEY=VALUE line: {raw.strip()!r}",
                hint="environment files are read, not run by a shell",
            )
        name, value_text = match.groups()
        if name in RESERVED_VARIABLES:
            raise HookError(
                f"{source}:{number}: {name} is set by the smoke runner; remove the line"
            )
        value = _parse_value(value_text, known, f"{source}:{number}")
        known[name] = assigned[name] = value
    return assigned


def _parse_value(text: str, known: Mapping[str, str], where: str) -> str:
    text = _strip_comment(text)
    if len(text) >= 2 and text[0] == text[-1] == "'":
        inner = text[1:-1]
        if "'" in inner:
            raise HookError(f"{where}: unbalanced single quotes in {text!r}")
        return inner
    if len(text) >= 2 and text[0] == text[-1] == '"':
        inner = text[1:-1]
        if _UNSAFE_DOUBLE.search(_REFERENCE.sub("", inner)):
            raise HookError(
                f"{where}: {text!r} uses shell features the runner does not run"
                " (only $NAME and ${NAME} are expanded)"
            )
        return _expand(inner, known)
    if _UNSAFE_BARE.search(_REFERENCE.sub("", text)):
        raise HookError(
            f"{where}: {text!r} uses shell features the runner does not run"
            " (quote the value; only $NAME and ${NAME} are expanded)"
        )
    return _expand(text, known)


def _strip_comment(text: str) -> str:
    """Drop a trailing `` # comment`` outside quotes, as a shell would."""
    quote = None
    for index, char in enumerate(text):
        if char in "'\"" and quote in (None, char):
            quote = None if quote == char else char
        elif char == "#" and quote is None and (index == 0 or text[index - 1] in " \t"):
            return text[:index].rstrip()
    return text.strip()


def _expand(text: str, known: Mapping[str, str]) -> str:
    return _REFERENCE.sub(lambda m: known.get(m.group(1) or m.group(2), ""), text)


def requirements_satisfied(path: Path) -> bool:
    """True when every line is a plain requirement already installed at a matching version.

    A line with pip options, a URL, a path or an environment marker that applies makes this
    False unless satisfied, so pip decides; comments and blank lines are ignored.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            return False  # -r, -e, --index-url, paths: let pip handle them
        if requirement.url:
            return False
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


def install_requirements(path: Path, env: Mapping[str, str], log: Path) -> bool:
    """pip-install ``path`` into this Python unless already satisfied; True when pip ran."""
    if requirements_satisfied(path):
        _append(log, f"# {path}: every requirement is already satisfied; pip not run\n")
        return False
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-r",
        str(path),
    ]
    _run_step(command, env, path.parent, log, f"installing {path} failed")
    return True


def build_extensions(setup_py: Path, target: Path, env: Mapping[str, str], log: Path) -> Path:
    """Build and install the device's extension sources into ``target``; returns ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-build-isolation",
        "--no-deps",
        "--no-cache-dir",
        "--upgrade",
        "--target",
        str(target),
        str(setup_py.parent),
    ]
    _run_step(command, env, setup_py.parent, log, f"building {setup_py.parent} failed")
    return target


def _run_step(command: list[str], env: Mapping[str, str], cwd: Path, log: Path, what: str) -> None:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    _append(
        log, f"$ {' '.join(command)}\n{result.stdout}{result.stderr}[exit {result.returncode}]\n"
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-TAIL_LINES:]
        raise HookError(
            f"{what} (exit {result.returncode}; log {log}):\n  "
            + "\n  ".join(tail or ["no output"])
        )


def _append(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as stream:
        stream.write(text)
