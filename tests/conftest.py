"""Test-wide isolation: a private HOME and git config; file-protocol submodules only in tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guides import GUIDE_ENV
from tests.isolation import isolated_git


def pytest_configure(config: pytest.Config) -> None:
    """The suite run from inside a guide's block would run that guide again, and again: stop."""
    guide = os.environ.get(GUIDE_ENV)
    if guide:
        pytest.exit(
            f"the test suite was started by a block of {guide}, which the suite runs itself:"
            " mark that block <!-- guide: skip (the test suite itself) -->",
            returncode=4,
        )


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Give every test its own HOME, git identity and caches; nothing touches the real home."""
    with isolated_git(tmp_path_factory.mktemp("home")) as home:
        yield home


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same isolation for module-wide fixtures (repositories made once per test module)."""
    with isolated_git(tmp_path_factory.mktemp("module-home")) as home:
        yield home
