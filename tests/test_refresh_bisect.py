"""``inv bisect-upstream`` on a submodule: the commits between two pins, halved like git bisect;
a commit where the base layer cannot be carried is skipped and said so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flagscale.refresh.bisect import BAD, GOOD, SKIP, Probe, _search
from tests.gitrepos import inv, run_git
from tests.refresh_fixtures import (
    BACKEND,
    Refreshable,
    edit,
    lines,
    make_refreshable,
    move_upstream,
)

V1 = {
    "megatron/core.py": lines("core"),
    "megatron/util.py": lines("util"),
    "megatron/l.py": lines("l"),
}
LAYER = {"megatron/l.py": edit(lines("l"), 3, "FlagScale's l")}


@pytest.fixture(scope="module")
def history(
    module_env: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Refreshable, list[str]]:
    found = make_refreshable(
        tmp_path_factory.mktemp("bisect"),
        upstream=V1,
        layer=LAYER,
        devices={"Vendor_V1": {BACKEND: {"megatron/core.py": edit(lines("core"), 10, "vendor")}}},
    )
    commits = [
        move_upstream(found, {"megatron/util.py": edit(lines("util"), 1, "c1")}),
        move_upstream(found, {"megatron/l.py": edit(lines("l"), 3, "c2 meets the layer")}),
        move_upstream(found, {"megatron/l.py": lines("l")}),
        move_upstream(found, {"megatron/core.py": edit(lines("core"), 10, "c4 meets the set")}),
        move_upstream(found, {"megatron/util.py": edit(lines("util"), 2, "c5")}),
    ]
    return found, commits


def test_bisect_names_the_first_commit_that_breaks_the_set_and_skips_unbuildable_ones(
    history: tuple[Refreshable, list[str]], tmp_path: Path
) -> None:
    found, commits = history
    root = tmp_path / "FlagScale"
    shutil.copytree(found.root, root, symlinks=True)
    result = inv(
        root,
        "bisect-upstream",
        "--device",
        "Vendor_V1",
        "--good",
        found.pin[:8],
        "--bad",
        commits[-1],
        "--json",
        str(tmp_path / "b.json"),
    )
    document = json.loads((tmp_path / "b.json").read_text())
    assert document["steps"] == [found.pin, *commits]
    assert document["first_bad"] == commits[3] and document["last_good"] == commits[2]
    verdicts = {p["step"]: p["verdict"] for p in document["probes"]}
    assert verdicts[commits[1]] == "skip"
    skipped = next(p for p in document["probes"] if p["step"] == commits[1])
    assert skipped["reason"] == "cannot be built: the base layer needs a hand there (megatron/l.py)"
    assert f"first bad step: {commits[3][:12]} (last good: {commits[2][:12]})" in result.stdout
    assert (
        "skip" in result.stdout
        and "the set stops applying: patch failed: megatron/core.py:7" in (result.stdout)
    )
    assert run_git(root, "status", "--porcelain") == ""
    assert run_git(root, "rev-parse", "HEAD") == found.head()


def test_bisect_refuses_a_good_pin_that_is_not_good_and_unrelated_pins(
    history: tuple[Refreshable, list[str]], tmp_path: Path
) -> None:
    found, commits = history
    root = tmp_path / "FlagScale"
    shutil.copytree(found.root, root, symlinks=True)
    bad_good = inv(
        root,
        "bisect-upstream",
        "--device",
        "Vendor_V1",
        "--good",
        commits[3],
        "--bad",
        commits[4],
        check=False,
    )
    assert bad_good.returncode == 1 and f"--good {commits[3]} is not good" in bad_good.stderr
    unknown = inv(
        root,
        "bisect-upstream",
        "--device",
        "Nobody_X1",
        "--good",
        found.pin,
        "--bad",
        commits[4],
        check=False,
    )
    assert unknown.returncode == 1 and "has no entry for Nobody_X1" in unknown.stderr


class Steps:
    """A stand-in for the probing side of a bisection: verdicts given up front."""

    def __init__(self, verdicts: list[str]) -> None:
        self.verdicts = verdicts
        self.asked: list[int] = []

    def probe(self, label: str, order: int) -> Probe:
        self.asked.append(order)
        return Probe(label, verdict=self.verdicts[order], order=order)


@pytest.mark.parametrize(
    ("verdicts", "first_bad", "candidates"),
    [
        ([GOOD, GOOD, GOOD, BAD, BAD], "s3", ["s3"]),
        ([GOOD, SKIP, GOOD, SKIP, BAD], None, ["s3", "s4"]),
        ([GOOD, SKIP, SKIP, BAD], None, ["s1", "s2", "s3"]),
        ([GOOD, BAD], "s1", ["s1"]),
        ([GOOD, GOOD, GOOD], None, []),
    ],
)
def test_halving_with_skipped_steps_works_like_git_bisect(
    verdicts: list[str], first_bad: str | None, candidates: list[str]
) -> None:
    steps = [f"s{i}" for i in range(len(verdicts))]
    outcome = _search(Steps(verdicts), steps)  # type: ignore[arg-type]
    assert outcome["first_bad"] == first_bad
    assert outcome["candidates"] == candidates
