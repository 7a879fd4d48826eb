"""The one place that runs the git command line.

Writes always go through here. Inherited ``GIT_*`` variables that point git at another
repository (``GIT_DIR``, ``GIT_INDEX_FILE``, ...) are dropped so nested repositories and hooks
behave; a short allow-list of identity, config and transport variables is kept.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.errors import FlagScaleError

__all__ = [
    "GitError",
    "GitResult",
    "clean_env",
    "commit_id",
    "git",
    "git_ok",
    "git_result",
    "git_text",
    "is_repository",
]

_KEPT_PREFIXES = (
    "GIT_AUTHOR_",
    "GIT_COMMITTER_",
    "GIT_CONFIG_",
    "GIT_SSH",
    "GIT_HTTP_",
    "GIT_SSL_",
    "GIT_PROXY",
    "GIT_TRACE",
)
_KEPT_NAMES = {"GIT_ASKPASS", "GIT_ALLOW_PROTOCOL", "GIT_EXEC_PATH", "GIT_CONFIG_NOSYSTEM"}
_FULL_ID = re.compile(r"[0-9a-f]{40}")


class GitError(FlagScaleError):
    """A git command failed; carries its stderr for callers that interpret it."""

    def __init__(self, message: str, *, stderr: str = "", returncode: int = 1) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a git call: inherited repository pointers removed, prompts off."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") or key in _KEPT_NAMES or key.startswith(_KEPT_PREFIXES)
    }
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    return env


def git(
    args: Sequence[str],
    cwd: Path,
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> bytes:
    """Run ``git <args>`` in ``cwd`` and return its raw stdout; raise GitError on failure."""
    command = ["git", *args]
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            env=clean_env(env),
            check=False,
        )
    except FileNotFoundError as exc:
        raise FlagScaleError("git is not installed or not on PATH", hint="install git") from exc
    if check and result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace").strip()
        first = _first_meaningful_line(stderr) or f"exit status {result.returncode}"
        raise GitError(
            f"git {_describe(args)} failed in {cwd}: {first}",
            stderr=stderr,
            returncode=result.returncode,
        )
    return result.stdout


@dataclass(frozen=True)
class GitResult:
    """A finished git command whose failure the caller interprets itself."""

    returncode: int
    stdout: bytes
    stderr: str


def git_result(
    args: Sequence[str],
    cwd: Path,
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> GitResult:
    """Run ``git <args>`` and return its exit status, stdout and stderr, whatever the status."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, input=stdin, capture_output=True, env=clean_env(env)
        )
    except FileNotFoundError as exc:
        raise FlagScaleError("git is not installed or not on PATH", hint="install git") from exc
    return GitResult(result.returncode, result.stdout, result.stderr.decode("utf-8", "replace"))


def git_text(args: Sequence[str], cwd: Path, **kwargs: object) -> str:
    """Run git and return stdout decoded as UTF-8 with the trailing newline removed."""
    return git(args, cwd, **kwargs).decode("utf-8", "surrogateescape").rstrip("\n")  # type: ignore[arg-type]


def git_ok(args: Sequence[str], cwd: Path, *, env: Mapping[str, str] | None = None) -> bool:
    """True when the git command exits 0 (for questions such as "does this commit exist?")."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, env=clean_env(env), check=False
    )
    return result.returncode == 0


def commit_id(repo: Path, ref: str) -> str | None:
    """The full id of the commit ``ref`` names in ``repo``; None when it names none there."""
    if not ref or ref.startswith("-"):
        return None
    found = git(["rev-parse", "--verify", "-q", f"{ref}^{{commit}}"], repo, check=False)
    oid = found.decode().strip()
    return oid if _FULL_ID.fullmatch(oid) else None


def is_repository(path: Path) -> bool:
    """True when ``path`` is the top of its own git work tree (not a folder inside another)."""
    if not (path / ".git").exists():
        return False
    top = git(["rev-parse", "--show-toplevel"], path, check=False).decode("utf-8", "replace")
    return bool(top.strip()) and Path(top.strip()).resolve() == path.resolve()


def _describe(args: Sequence[str]) -> str:
    shown = [a for a in args if not a.startswith("-c") and "=" not in a][:3]
    return " ".join(shown)


def _first_meaningful_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[0] if lines else ""
