"""``inv smoke`` in a real Python environment without the smoke extra: one line naming every
missing module and a command that installs the extra when pasted, never a traceback."""

from __future__ import annotations

import os
import re
import shlex
import site
import subprocess
import sys
from pathlib import Path

import pytest

from flagscale.runner.extra import SMOKE_MODULES
from tests.gitrepos import TOOL_ROOT

EXTRA_TOPS = {"psutil", "packaging", "numpy", "matplotlib", "mpl_toolkits", "torch"}
EXTRA_TOPS |= {"torchgen", "functorch"}


def _belongs_to_the_extra(name: str) -> bool:
    top = name.split("-", 1)[0].split(".", 1)[0].lower()
    return top in EXTRA_TOPS


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv (with pip) that sees this tool and every installed package but the extra's."""
    root = tmp_path_factory.mktemp("bare")
    view = root / "site-view"
    view.mkdir()
    for folder in site.getsitepackages():
        for entry in Path(folder).iterdir():
            if entry.name.endswith(".pth") or entry.name.startswith("__editable__"):
                continue
            if not _belongs_to_the_extra(entry.name) and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "flagscale-under-test.pth").write_text(f"{TOOL_ROOT}\n{view}\n")
    return python


def test_smoke_without_the_extra_names_the_modules_and_a_pasteable_install(
    bare_python: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [bare_python, "-m", "invoke", "--search-root", str(TOOL_ROOT), "smoke"]
        + ["--device", "Generic_CPU"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "No module named" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    missing = ", ".join(SMOKE_MODULES)
    prefix = (
        f"error: inv smoke needs the smoke extra, and {missing} are not installed for"
        f" {bare_python} (install it: "
    )
    assert lines[0].startswith(prefix) and lines[0].endswith(")"), lines[0]
    command = lines[0][len(prefix) : -1]
    # what a POSIX shell makes of it when pasted anywhere: this interpreter, this checkout
    assert shlex.split(command) == [
        str(bare_python),
        "-m",
        "pip",
        "install",
        "-e",
        f"{TOOL_ROOT}[smoke]",
    ]
    assert f"'{TOOL_ROOT}[smoke]'" in command  # quoted: zsh would glob an unquoted [smoke]
    pip = subprocess.run([bare_python, "-m", "pip", "--version"], capture_output=True, check=False)
    assert pip.returncode == 0, pip.stderr


def test_the_extra_provides_every_module_the_check_names() -> None:
    """pyproject.toml's smoke extra installs a distribution for each module checked."""
    text = (TOOL_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = re.search(r"^smoke = \[(.*)\]$", text, re.MULTILINE)
    assert line, "pyproject.toml declares no smoke extra on one line"
    extra = re.findall(r'"([^"]+)"', line.group(1))
    names = {re.split(r"[<>=!~\[ ;]", requirement)[0].lower() for requirement in extra}
    assert set(SMOKE_MODULES.values()) <= names


def test_smoke_in_the_checkout_prints_dot(bare_python: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [bare_python, "-m", "invoke", "smoke", "--device", "Generic_CPU"],
        cwd=TOOL_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().endswith(
        f"(install it: {shlex.quote(str(bare_python))} -m pip install -e '.[smoke]')"
    ), result.stderr


def test_ci_unpatch_and_test_without_the_extra_is_one_line(bare_python: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [bare_python, "-m", "flagscale.ci", "unpatch-and-test", "--device", "Generic_CPU"],
        cwd=TOOL_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        "error: python -m flagscale.ci unpatch-and-test needs the smoke extra, and "
    ), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
