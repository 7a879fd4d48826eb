"""The guides as tests: the ```bash blocks of README.md and docs/*.md, run in a fresh clone.

A guide is a shell session a reader types: its blocks run one after another in one ``bash``
(``set -e -o pipefail``), so variables and ``cd`` carry over, starting at the root of a fresh
clone of this repository (with the checkout's uncommitted changes committed on top, so a guide
edited but not yet committed is tested as it reads). A block fails the guide when any command
fails under ``set -e`` or its last command exits non-zero.

Marks, as an HTML comment (invisible on the rendered page), are rare and say why:

* ``<!-- guide: skip (<reason>) -->`` on the line before a block: the block is not run (it needs a
  GPU, shows a shape rather than a command, or is the test suite itself). The reason is required.
* ``<!-- guide: setup (<reason>)``, commands on the lines below, then ``-->`` on a line of its
  own: run at that point but not shown, for a guide whose reader is assumed to have done another
  guide's steps first (the reason says which).

The test machine differs from a reader's in two ways, both to keep the suite fast and offline:
``nox`` makes no virtualenv (``--no-venv --no-install``: its sessions run in the test environment,
which already holds what they would install), and ``python`` is a throw-away virtualenv layered
on the test environment, so ``python -m pip install -e .`` installs the clone without touching
the test environment (``inv``, ``nox`` and every program the test environment installs run in
the test environment itself).
Release archives come from one download cache shared by every guide of the session.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tests.gitrepos import TOOL_ROOT, run_git

__all__ = [
    "GUIDE_ENV",
    "Block",
    "GuideFailure",
    "blocks",
    "guide_paths",
    "prepare_clone",
    "run_guide",
]

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
SKIP = re.compile(r"^\s*<!--\s*guide:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
SETUP_START = re.compile(r"^\s*<!--\s*guide:\s*setup\s*\((?P<reason>[^)]+)\)\s*$")
MARK = re.compile(r"<!--\s*guide:")
# nox without virtualenvs, its sessions run by the test environment's Python (first on PATH).
NOX_SHIM = '#!/bin/sh\nPATH="{bin}:$PATH" exec "{python}" -m nox --no-venv --no-install "$@"\n'
MARKER = "::guide-block"
GUIDE_ENV = "FLAGSCALE_GUIDE"  # set to the guide's path while its blocks run


@dataclass(frozen=True)
class Block:
    """One runnable piece of a guide: a ```bash block, or a hidden setup comment."""

    line: int  # 1-based line of the opening fence (or comment) in the guide
    code: str
    skip: str | None = None  # the reason, when marked skip
    setup: str | None = None  # the reason, for a hidden setup comment

    @property
    def hidden(self) -> bool:
        return self.setup is not None

    def describe(self) -> str:
        kind = "setup comment" if self.hidden else "bash block"
        return f"{kind} at line {self.line}"


class GuideFailure(AssertionError):
    """A guide's block failed: which guide, which block, and the output's end."""


def guide_paths(root: Path = TOOL_ROOT) -> list[Path]:
    """README.md and every docs/*.md, sorted: new guides are picked up by themselves."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(text: str, source: str = "guide") -> list[Block]:
    """The guide's bash blocks and setup comments, in order; a bad mark is an error."""
    lines = text.splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        setup = SETUP_START.match(line)
        if setup:
            end = next((i for i in range(index + 1, len(lines)) if "-->" in lines[i]), None)
            if end is None or lines[end].strip() != "-->":
                raise ValueError(f"{source}:{index + 1}: a guide: setup comment must end with -->")
            body = "\n".join(lines[index + 1 : end]).strip()
            found.append(Block(index + 1, body + "\n", setup=setup.group("reason")))
            index = end + 1
            continue
        fence = FENCE.match(line)
        if not fence:
            if MARK.search(line) and not SKIP.match(line):
                raise ValueError(f"{source}:{index + 1}: unknown guide mark: {line.strip()}")
            index += 1
            continue
        closing = _closing(lines, index, fence)
        language = fence.group("info").strip().split(" ")[0]
        if language == "bash":
            skip = SKIP.match(lines[index - 1]) if index else None
            body = [
                _dedent(text_line, fence.group("indent"))
                for text_line in lines[index + 1 : closing]
            ]
            found.append(
                Block(index + 1, "\n".join(body) + "\n", skip.group("reason") if skip else None)
            )
        elif index and SKIP.match(lines[index - 1]):
            raise ValueError(
                f"{source}:{index + 1}: a guide skip mark before a block that is not bash"
            )
        index = closing + 1
    return found


def _closing(lines: list[str], start: int, fence: re.Match[str]) -> int:
    mark = fence.group("fence")
    for index in range(start + 1, len(lines)):
        other = FENCE.match(lines[index])
        if (
            other
            and other.group("fence")[0] == mark[0]
            and len(other.group("fence")) >= len(mark)
            and not other.group("info").strip()
        ):
            return index
    return len(lines)


def _dedent(line: str, indent: str) -> str:
    return line[len(indent) :] if line.startswith(indent) else line.lstrip(" \t")


def script(guide_blocks: list[Block]) -> str:
    """The bash script of a guide: each block announced on the output, then run."""
    parts = ["set -e -o pipefail", f"__guide_block() {{ printf '{MARKER} %s\\n' \"$1\"; }}"]
    for block in guide_blocks:
        if block.skip is not None:
            continue
        parts += [
            f"__guide_block {block.line}",
            block.code.rstrip("\n"),
            "__guide_status=$?",
            'if [ "$__guide_status" -ne 0 ]; then exit "$__guide_status"; fi',
        ]
    parts.append("__guide_block done")
    return "\n".join(parts) + "\n"


# --- the machine a guide runs on ---------------------------------------------------------------


def prepare_clone(destination: Path, source: Path = TOOL_ROOT) -> Path:
    """A fresh clone of ``source``, with its uncommitted changes (and untracked files that git
    does not ignore) committed on top, so the guides are tested as they read now."""
    run_git(destination.parent, "clone", "--quiet", "--shared", str(source), str(destination))
    diff = subprocess.run(
        ["git", "diff", "--binary", "HEAD"], cwd=source, capture_output=True, check=True
    ).stdout
    untracked = run_git(source, "ls-files", "-z", "--others", "--exclude-standard")
    if not diff and not untracked:
        return destination
    if diff:
        run_git(destination, "apply", "--binary", "--whitespace=nowarn", stdin=diff)
    for name in filter(None, untracked.split("\0")):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / name).read_bytes())
    run_git(destination, "add", "-A")
    run_git(destination, "commit", "-q", "-m", "the checkout's uncommitted changes")
    return destination


def tools(folder: Path) -> dict[str, str]:
    """A throw-away virtualenv over the test environment, and the ``nox`` shim; returns env."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    purelib.mkdir(parents=True, exist_ok=True)
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "guide-test-environment.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    shims = folder / "shims"
    shims.mkdir()
    test_bin = Path(sys.executable).parent
    (shims / "nox").write_text(NOX_SHIM.format(bin=test_bin, python=sys.executable))
    (shims / "nox").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(shims), env.get("PATH", "")])
    env["NO_COLOR"] = "1"
    return env


def run_guide(
    guide: Path, folder: Path, cache: Path, *, source: Path = TOOL_ROOT, timeout: int = 900
) -> str:
    """Run every block of ``guide`` (a file of ``source``) in a fresh clone of ``source`` under
    ``folder``; returns the output. Raises GuideFailure naming the block that failed."""
    text = guide.read_text(encoding="utf-8")
    relative = guide.relative_to(source).as_posix()
    guide_blocks = blocks(text, relative)
    folder.mkdir(parents=True, exist_ok=True)
    clone = prepare_clone(folder / "FlagScale", source)
    env = tools(folder)
    env["FLAGSCALE_CACHE"] = str(cache)
    env[GUIDE_ENV] = relative
    try:
        result = subprocess.run(
            ["bash", "-c", script(guide_blocks)],
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        output, status = result.stdout.decode("utf-8", "replace"), result.returncode
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode("utf-8", "replace")
        status = f"timed out after {timeout} s"
    (folder / "guide.log").write_text(output, encoding="utf-8")
    if status != 0 or not output.rstrip().endswith(f"{MARKER} done"):
        raise GuideFailure(_failure(relative, guide_blocks, output, status, folder / "guide.log"))
    return output


def _failure(
    relative: str, guide_blocks: list[Block], output: str, status: object, log: Path
) -> str:
    started = re.findall(rf"^{MARKER} (\d+)$", output, flags=re.MULTILINE)
    line = int(started[-1]) if started else None
    block = next((b for b in guide_blocks if b.line == line), None)
    where = f"{relative}: the {block.describe()}" if block else relative
    tail = output.split(f"{MARKER} {line}\n")[-1] if line else output
    shown = "\n".join(tail.rstrip().splitlines()[-40:])
    code = block.code.rstrip() if block else ""
    return f"{where} failed (exit {status}; full log {log}):\n{code}\n--- output ---\n{shown}"
