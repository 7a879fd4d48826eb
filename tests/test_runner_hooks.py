"""Device hooks: the environment file is read (never run), requirements, extension sources."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from flagscale.runner.hooks import (
    DeviceHooks,
    HookError,
    install_requirements,
    parse_env_file,
    requirements_satisfied,
)
from flagscale.runner.smoke import run_smoke
from tests.smoke_fixtures import DEVICE, FAKE_ENTRY, fake_losses, fake_workspace, write_case


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "environment_variables.sh"
    path.write_text(textwrap.dedent(text))
    return path


def test_env_file_plain_assignments(tmp_path: Path) -> None:
    path = env_file(
        tmp_path,
        """\
        #!/bin/bash
        # vendor settings
        export GENERIC_VISIBLE_DEVICES=0,1
        PLAIN=value   # a trailing comment
        export LD_LIBRARY_PATH=/opt/generic/lib:$LD_LIBRARY_PATH
        QUOTED="a b ${PLAIN}"
        LITERAL='$NOT_EXPANDED; `ok`'
        EMPTY=
        HASH=a#b
        UNSET_REF=x${NOT_SET}y

        """,
    )
    variables = parse_env_file(path, {"LD_LIBRARY_PATH": "/usr/lib"})
    assert variables == {
        "GENERIC_VISIBLE_DEVICES": "0,1",
        "PLAIN": "value",
        "LD_LIBRARY_PATH": "/opt/generic/lib:/usr/lib",
        "QUOTED": "a b value",
        "LITERAL": "$NOT_EXPANDED; `ok`",
        "EMPTY": "",
        "HASH": "a#b",
        "UNSET_REF": "xy",
    }
    assert list(variables) == [
        "GENERIC_VISIBLE_DEVICES",
        "PLAIN",
        "LD_LIBRARY_PATH",
        "QUOTED",
        "LITERAL",
        "EMPTY",
        "HASH",
        "UNSET_REF",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("export X=$(whoami)", "'$(whoami)' uses shell features the runner does not run"),
        ("X=`id`", "'`id`' uses shell features"),
        ('X="$(id)"', "uses shell features the runner does not run (only $NAME"),
        ("X=a; rm -rf /", "'a; rm -rf /' uses shell features"),
        ("X=a b", "'a b' uses shell features"),
        ("X=a && Y=b", "uses shell features"),
        ("source other.sh", "not a KEY=VALUE or export KEY=VALUE line: 'source other.sh'"),
        ("if true; then X=1; fi", "not a KEY=VALUE or export KEY=VALUE line"),
        ("export PYTHONPATH=/elsewhere", "PYTHONPATH is set by the smoke runner; remove the line"),
        ("X='open", "uses shell features"),
        ("X=~/lib", "'~/lib' uses shell features"),
        ("X=$1", "'$1' uses shell features"),
    ],
)
def test_env_file_refuses_what_only_a_shell_could_do(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = env_file(tmp_path, f"# vendor\nOK=1\n{line}\n")
    with pytest.raises(HookError) as failure:
        parse_env_file(path, {}, display="hardware/Generic_CPU/environment_variables.sh")
    message = str(failure.value)
    assert message.startswith("hardware/Generic_CPU/environment_variables.sh:3: ")
    assert expected in message


def test_requirements_satisfied_or_not(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# comment\n\nPyYAML>=5\njsonschema\nnot-installed-anywhere; python_version<'3'\n"
    )
    assert requirements_satisfied(path)
    path.write_text("PyYAML<1\n")
    assert not requirements_satisfied(path)
    path.write_text("surely-not-installed-flagscale-pkg\n")
    assert not requirements_satisfied(path)
    path.write_text("--index-url https://example.invalid/simple\nPyYAML\n")
    assert not requirements_satisfied(path)


def test_satisfied_requirements_do_not_run_pip(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("PyYAML>=5\n")
    log = tmp_path / "hooks.log"
    assert install_requirements(path, {}, log) is False
    assert "every requirement is already satisfied; pip not run" in log.read_text()


def test_failing_pip_install_names_the_file_and_shows_pips_words(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("--no-index\nsurely-not-installed-flagscale-pkg==1.0\n")
    log = tmp_path / "hooks.log"
    with pytest.raises(HookError) as failure:
        install_requirements(path, dict(os.environ), log)
    message = str(failure.value)
    assert message.startswith(f"installing {path} failed (exit 1; log {log}):")
    assert "surely-not-installed-flagscale-pkg" in message
    assert "[exit 1]" in log.read_text()


def test_hook_discovery(tmp_path: Path) -> None:
    assert DeviceHooks.find(tmp_path) == DeviceHooks(tmp_path, None, None, None)
    (tmp_path / "csrc").mkdir()
    (tmp_path / "csrc" / "setup.py").write_text("")
    (tmp_path / "requirements.txt").write_text("")
    found = DeviceHooks.find(tmp_path)
    assert found.csrc == tmp_path / "csrc" / "setup.py"
    assert found.requirements == tmp_path / "requirements.txt" and found.env_file is None


EXTENSION_C = """\
#include <Python.h>
static PyObject *shift(PyObject *self, PyObject *args) { return PyFloat_FromDouble(0.5); }
static PyMethodDef methods[] = {{"shift", shift, METH_NOARGS, "loss shift"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "generic_ops", NULL, -1, methods};
PyMODINIT_FUNC PyInit_generic_ops(void) { return PyModule_Create(&module); }
"""

SETUP_PY = """\
from setuptools import Extension, setup
setup(name="generic-ops", version="0.1", ext_modules=[Extension("generic_ops", ["ops.c"])])
"""


@pytest.mark.slow
def test_extension_sources_are_built_and_importable_by_the_job(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path, modes=("ok",))
    device = root / "hardware" / DEVICE
    (device / "csrc").mkdir()
    (device / "csrc" / "ops.c").write_text(EXTENSION_C)
    (device / "csrc" / "setup.py").write_text(SETUP_PY)
    (device / "requirements.txt").write_text("PyYAML>=5\n")
    entry = FAKE_ENTRY.format(mode="ok").replace(
        'extra = os.environ.get("FAKE_LOSS_SHIFT", "0")',
        "import generic_ops\nextra = generic_ops.shift()",
    )
    (root / "build" / DEVICE / "fake" / "ext.py").write_text(entry)
    case = write_case(root, entry="fake/ext.py")
    outcome = run_smoke(root, DEVICE, case, record_golden=True)
    assert outcome.losses == fake_losses(case, shift=0.5)
    result = json.loads(outcome.result.read_text())
    assert result["hooks"]["csrc"] == "built"
    assert result["hooks"]["requirements"] == "satisfied"
    assert list((outcome.log_dir / "csrc-site").glob("generic_ops*.so"))


def test_broken_extension_sources_stop_before_the_job(tmp_path: Path) -> None:
    root = fake_workspace(tmp_path)
    device = root / "hardware" / DEVICE
    (device / "csrc").mkdir()
    (device / "csrc" / "setup.py").write_text("raise SystemExit('generic ops need a compiler')\n")
    case = write_case(root, entry="fake/ok.py")
    with pytest.raises(HookError) as failure:
        run_smoke(root, DEVICE, case, record_golden=True)
    assert str(failure.value).startswith(f"building {device / 'csrc'} failed (exit 1; log ")
    log_dir = root / "logs" / "smoke" / DEVICE / "tiny"
    result = json.loads((log_dir / "result.json").read_text())
    assert result["status"] == "error" and result["reason"].startswith("building")
    assert not (log_dir / "job.log").exists()
