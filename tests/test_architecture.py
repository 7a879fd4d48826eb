"""The package layout holds: flow folders import one way, and no module imports itself back.

The contracts live in pyproject.toml ([tool.importlinter]) and docs/architecture.md explains them.
Each check runs the real ``lint-imports`` on this tree, and on a copy with one bad import added,
so that a contract that stopped catching anything would fail here too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gitrepos import TOOL_ROOT

CONTRACTS = ("flows point one way", "no import cycles")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the tree at ``root`` (its own pyproject.toml and flagscale/)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command as c; c()",
            "--no-cache",
        ],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def copy_of_the_package(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(
        TOOL_ROOT / "flagscale", root / "flagscale", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(TOOL_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_this_tree_keeps_every_contract() -> None:
    result = lint_imports(TOOL_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS:
        assert f"{name} KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "broken"),
    [
        # the core reaching up into a flow
        ("flagscale/core/errors.py", "import flagscale.release.matrix", "flows point one way"),
        # two siblings that import each other
        ("flagscale/vendor/patchset.py", "import flagscale.vendor.make_sets", "no import cycles"),
        # an import inside a function counts too (the tool imports lazily)
        (
            "flagscale/overlay/unpatch.py",
            "def _late():\n    import flagscale.builds.builder",
            "flows point one way",
        ),
    ],
)
def test_a_bad_import_breaks_its_contract(
    tmp_path: Path, module: str, bad_import: str, broken: str
) -> None:
    root = copy_of_the_package(tmp_path)
    with (root / module).open("a", encoding="utf-8") as file:
        file.write(f"\n\n{bad_import}  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert f"{broken} BROKEN" in result.stdout
