"""The noxfile: its sessions as ``nox -l`` shows them, parametrized by the history."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from tests.gitrepos import TOOL_ROOT
from tests.test_ci import ci_workspace

DOCSTRING = "Fresh build of one device type, schema checks, vendor hooks, smoke job vs golden."


def nox_list(noxfile: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "-f", str(noxfile)],
        cwd=noxfile.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line[:2] in ("* ", "- ")]


def test_sessions_of_a_workspace_with_history(tmp_path: Path) -> None:
    root = ci_workspace(tmp_path)
    shutil.copy(TOOL_ROOT / "noxfile.py", root / "noxfile.py")
    assert nox_list(root / "noxfile.py") == [
        "* tests -> Run the test suite (pytest, 2 workers; pass pytest arguments after --).",
        "* lint -> Lint and format-check with ruff; import layers; audit the CI workflows with"
        " zizmor.",
        "* validate -> Check backends.yaml, the history, patch-set metadata, smoke cases and"
        " goldens.",
        f"- unpatch_and_test(device='Generic_CPU') -> {DOCSTRING}",
        f"- unpatch_and_test(device='Metax_C550') -> {DOCSTRING}",
    ]


def test_this_repositorys_sessions_match_the_ci_matrix() -> None:
    from flagscale.ci.devices import matrix
    from flagscale.upstream.workspace import load_workspace

    lines = nox_list(TOOL_ROOT / "noxfile.py")
    sessions = [line[2:].split(" -> ")[0] for line in lines]
    expected = [entry["session"] for entry in matrix(load_workspace(TOOL_ROOT))["include"]]
    assert sessions[:3] == ["tests", "lint", "validate"]
    assert [s for s in sessions if s.startswith("unpatch_and_test(")] == expected or (
        not expected and sessions[3:] == ["unpatch_and_test"]
    )


def test_every_session_has_a_one_line_docstring() -> None:
    tree = ast.parse((TOOL_ROOT / "noxfile.py").read_text())
    sessions = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert [s.name for s in sessions] == ["tests", "lint", "validate", "unpatch_and_test"]
    for session in sessions:
        docstring = ast.get_docstring(session)
        assert docstring and "\n" not in docstring, session.name
