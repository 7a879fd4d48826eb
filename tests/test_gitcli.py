"""The git wrapper's questions (flagscale/core/gitcli.py), on a real repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from flagscale.core.gitcli import commit_id
from tests.gitrepos import make_repo, run_git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    return tmp_path / "repo"


def test_commit_id_resolves_names_and_short_ids_to_the_full_id(repo: Path) -> None:
    head = run_git(repo, "rev-parse", "HEAD")
    run_git(repo, "tag", "-a", "-m", "v1", "v1")
    for ref in (head, head[:10], "main", "HEAD", "v1"):
        assert commit_id(repo, ref) == head


@pytest.mark.parametrize("ref", ["", "-h", "--all", "nosuchref", "0" * 40, "HEAD:a.txt"])
def test_commit_id_is_none_for_what_names_no_commit(repo: Path, ref: str) -> None:
    assert commit_id(repo, ref) is None


def test_commit_id_of_a_tree_is_none(repo: Path) -> None:
    tree = run_git(repo, "rev-parse", "HEAD^{tree}")
    assert commit_id(repo, tree) is None
