"""Nox sessions (thin: the logic lives in flagscale); see docs/ci.md."""

# nox -s tests lint validate
# nox -s "unpatch_and_test(device='Generic_CPU')"   one device type, as CI runs it
# nox -s "unpatch_and_test(device='Generic_CPU')" -- --coverage   ... and its patch coverage
# nox -r ... reuses the virtualenvs (fast rerun); nox -R ... also skips the installs.
# Environments are made with uv where it is installed (the tool depends on it), else virtualenv:
# nox --force-venv-backend virtualenv ... forces pip. uv installs from the sources pip is set up
# with (pip.conf, PIP_* variables): flagscale/ci/uvsources.py.
# unpatch_and_test is parametrized by the device types with a `train` entry in
# hardware/patch_history.yaml (`python -m flagscale.ci matrix` prints the same list).

from __future__ import annotations

import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # nox may run from a Python where the tool is not installed
    sys.path.insert(0, str(ROOT))

from flagscale.ci.devices import device_types  # noqa: E402
from flagscale.ci.uvsources import uv_install_environment  # noqa: E402
from flagscale.core.errors import FlagScaleError  # noqa: E402

nox.options.sessions = ["tests", "lint", "validate"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"

DEVICES = device_types(ROOT)


def install(session: nox.Session, *requirements: str) -> None:
    """pip or uv install; uv gets pip's sources (torch==2.13.0 comes from where pip finds it)."""
    try:
        env = uv_install_environment() if session.venv_backend == "uv" else {}
    except FlagScaleError as exc:
        session.error(str(exc))
    session.install(*requirements, env=env)


def install_tool(session: nox.Session, extras: str = "") -> None:
    """The tool, with ``extras`` (torch comes pinned as torch==2.13.0 through ``smoke``)."""
    install(session, "-e", f".[{extras}]" if extras else ".")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest, 2 workers; pass pytest arguments after --)."""
    install_tool(session, "test")  # the test extra includes the smoke runtime
    session.run("python", "-m", "pytest", "-n", "2", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and format-check with ruff; import layers; audit the CI workflows with zizmor."""
    install(session, "ruff>=0.6", "import-linter>=2.1", "zizmor>=1.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")
    session.run("zizmor", "--offline", *sorted(str(p) for p in ROOT.glob("ci/workflows/*.yml")))


@nox.session
def validate(session: nox.Session) -> None:
    """Check backends.yaml, the history, patch-set metadata, smoke cases and goldens."""
    install_tool(session)
    session.run("python", "-m", "flagscale.ci", "validate")


@nox.session
@nox.parametrize("device", DEVICES)
def unpatch_and_test(session: nox.Session, device: str) -> None:
    """Fresh build of one device type, schema checks, vendor hooks, smoke job vs golden."""
    # `-- --coverage` (or FLAGSCALE_COVERAGE=1): the smoke jobs under coverage.py, the patch
    # coverage report in logs/coverage/<V_M>/ (docs/coverage-and-bisect.md)
    install_tool(session, "smoke")
    command = ["python", "-m", "flagscale.ci", "unpatch-and-test", "--device", device]
    session.run(*command, *session.posargs)
