"""Culprit bisection: ddmin on its own, and ``inv bisect`` end to end on a synthetic device.

The synthetic device (tests/trust_fixtures.py) has a real history with a good set and a bad one
changing 100 knobs; every try is a real build and a real smoke run under torchrun.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flagscale.trust.ddmin import FAIL, PASS, UNRESOLVED, NotFailing, ddmin
from flagscale.trust.tries import failure_signature
from tests.gitrepos import inv, run_git
from tests.trust_fixtures import DEVICE, KNOBS_FILE, make_synth_workspace

# --- ddmin --------------------------------------------------------------------------------------


def oracle(culprits: set[int], calls: list, unresolved=lambda subset: False):
    def test(subset: list[int]) -> str:
        calls.append(tuple(subset))
        if unresolved(subset):
            return UNRESOLVED
        return FAIL if culprits <= set(subset) else PASS

    return test


@pytest.mark.parametrize("culprit", range(100))
def test_one_culprit_among_100_takes_at_most_8_tests(culprit: int) -> None:
    calls: list = []
    assert ddmin(list(range(100)), oracle({culprit}, calls)) == [culprit]
    assert len(calls) <= 8  # 7 halvings and one check; with both endpoints: 10 runs
    assert len(set(calls)) == len(calls)  # no subset tested twice


@pytest.mark.parametrize("pair", [(0, 99), (3, 4), (10, 90), (49, 50), (63, 64)])
def test_two_changes_that_fail_only_together_are_found_as_the_pair(pair: tuple[int, int]) -> None:
    calls: list = []
    assert ddmin(list(range(100)), oracle(set(pair), calls)) == list(pair)
    assert len(set(calls)) == len(calls)


def test_three_together_and_unresolved_subsets() -> None:
    calls: list = []
    assert ddmin(list(range(30)), oracle({2, 15, 27}, calls)) == [2, 15, 27]
    # subsets that cannot be tested (here: 7 without 5, as if 7 needed 5 to apply) never narrow
    found = ddmin(list(range(20)), oracle({5}, [], lambda s: 7 in s and 5 not in s))
    assert found == [5]


def test_items_not_known_to_fail_are_tested_only_when_needed() -> None:
    calls: list = []
    assert ddmin(list(range(100)), oracle({41}, calls), known_to_fail=False) == [41]
    assert tuple(range(100)) not in calls and len(calls) <= 8
    calls = []
    assert ddmin(list(range(10)), oracle({2, 8}, calls), known_to_fail=False) == [2, 8]
    assert tuple(range(10)) in calls  # the halving found nothing smaller: checked once
    with pytest.raises(NotFailing):
        ddmin(list(range(10)), oracle({42}, []), known_to_fail=False)


def test_classic_ddmin_without_the_optimistic_halving_agrees() -> None:
    for culprits in ({17}, {3, 71}):
        assert ddmin(list(range(80)), oracle(culprits, []), optimistic=False) == sorted(culprits)


@pytest.mark.parametrize(
    ("message", "signature"),
    [
        ("G_1/c: loss diverges at step 3: expected 1, got 2", "diverged"),
        ("smoke job c on G_1: loss is nan at step 3", "non-finite loss"),
        ("smoke job c on G_1 timed out after 30 s (at step 2 of 10)", "timeout"),
        (
            "smoke job c on G_1 failed with exit status 1; rank 0 failed first, its last lines:\n"
            "  Traceback (most recent call last):\n  NameError: name 'x' is not defined",
            "crash:NameError",
        ),
        ("smoke job c on G_1 failed with exit status 1; last lines of log:\n  (no log)", "crash"),
        ("something else entirely", "error"),
    ],
)
def test_failures_are_summed_up_by_signature(message: str, signature: str) -> None:
    assert failure_signature(message) == signature


# --- inv bisect on a synthetic set of 100 hunks ---------------------------------------------------


@pytest.mark.slow
def test_bisect_finds_one_culprit_among_100_hunks_in_at_most_10_smoke_runs(tmp_path: Path) -> None:
    synth = make_synth_workspace(tmp_path, {37: "2"})
    user_build = synth.root / "build"
    before = run_git(synth.root, "status", "--porcelain", "--ignored")

    result = inv(synth.root, "bisect", "--device", DEVICE)

    out = result.stdout
    assert f"bad = history entry {synth.bad[:12]} (newest)" in out
    assert "change: 100 hunk(s) in 1 file(s), from 1 patch file(s)" in out
    report = json.loads((synth.root / "logs" / "bisect" / DEVICE / "bisect.json").read_text())
    assert report["good"] == synth.good and report["bad"] == synth.bad
    assert [c["piece"].split(" @@")[0] for c in report["culprit"]] == [
        f"third_party/Megatron-LM/{KNOBS_FILE}"
    ]
    patch = (synth.root / "logs" / "bisect" / DEVICE / "culprit.patch").read_text()
    assert "-K_037 = 1\n+K_037 = 2\n" in patch
    assert patch.count("@@ -") == 1
    assert report["smoke_runs"] <= 10, report["tries"]
    assert f"{report['smoke_runs']} smoke run(s)" in out
    assert not user_build.exists()  # the user's build/ was never made or touched
    after = run_git(synth.root, "status", "--porcelain", "--ignored").splitlines()
    assert [line for line in after if line != "?? logs/"] == before.splitlines()
