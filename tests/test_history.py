"""The patch history on real repositories: record by content, check, repair after squash/rebase."""

from __future__ import annotations

from pathlib import Path

import pytest

from flagscale.core.errors import FlagScaleError
from flagscale.upstream.workspace import FLAGSCALE, load_workspace
from flagscale.vendor.history import HISTORY, HistoryEntry, dump_history, load_history, resolve
from flagscale.vendor.history_check import check_history
from flagscale.vendor.history_record import record_history
from flagscale.vendor.make_sets import PatchRequest, create_patch_sets
from tests.gitrepos import commit_all, inv, run_git, write_files
from tests.vendor_workspace import BACKEND, VendorWorkspace, adapt_backend, make_vendor_workspace

DEVICE = "Metax_C550"
KEY = f"{FLAGSCALE}+{BACKEND}"
BACKENDS = [BACKEND, FLAGSCALE]


def make_sets(vendor: VendorWorkspace, models: list[str], tasks: list[str] | None = None) -> str:
    """Vendor sets for both backends committed; returns the commit."""
    request = PatchRequest(
        device_type=DEVICE,
        tasks=tasks or ["train"],
        backends=BACKENDS,
        commit=vendor.base,
        backend_version="0.16.1",
        models=models,
        message=f"Metax: sets for {' '.join(models)}",
        contact="",
        report=lambda line: None,
    )
    create_patch_sets(load_workspace(vendor.root), request)
    return run_git(vendor.root, "rev-parse", "HEAD")


def record(vendor: VendorWorkspace, **kwargs) -> list[HistoryEntry]:
    kwargs.setdefault("tasks", ["train"])
    kwargs.setdefault("backends", BACKENDS)
    return record_history(load_workspace(vendor.root), DEVICE, report=lambda line: None, **kwargs)


def write_history(vendor: VendorWorkspace, text: str) -> None:
    (vendor.root / HISTORY).write_text(text, encoding="utf-8")


def history_text(commits: list[str], key: str = KEY, task: str = "train") -> str:
    lines = "".join(f"      - {c}\n" for c in commits)
    return f"{DEVICE}:\n  {task}:\n    {key}:\n{lines}"


def check(vendor: VendorWorkspace, repair: bool = False):
    return check_history(load_workspace(vendor.root), repair=repair)


@pytest.fixture
def vendor(tmp_path: Path) -> VendorWorkspace:
    vendor = make_vendor_workspace(tmp_path)
    adapt_backend(vendor)
    write_files(vendor.root, {"flagscale/metax.py": "DEVICE = 'metax'\n"})
    run_git(vendor.root, "add", "flagscale/metax.py")
    run_git(vendor.root, "commit", "-q", "-m", "vendor: metax device")
    return vendor


def commit_history(vendor: VendorWorkspace, message: str = "record history") -> str:
    run_git(vendor.root, "add", HISTORY)
    run_git(vendor.root, "commit", "-q", "-m", message, "--", HISTORY)
    return run_git(vendor.root, "rev-parse", "HEAD")


# --- recording ---------------------------------------------------------------------------------


def test_record_finds_the_commit_holding_the_sets(vendor: VendorWorkspace) -> None:
    first = make_sets(vendor, ["llama"])
    write_files(vendor.root, {"unrelated.txt": "later work\n"})
    commit_all(vendor.root, "later unrelated commit")
    (entry,) = record(vendor)
    assert entry == HistoryEntry(DEVICE, "train", KEY, (FLAGSCALE, BACKEND), first)
    assert (vendor.root / HISTORY).read_text() == (
        f'{DEVICE}:\n  train:\n    {KEY}:\n      - "{first}"\n'
    )
    second = make_sets(vendor, ["llama", "qwen"])
    record(vendor)
    assert load_history(load_workspace(vendor.root)) == {DEVICE: {"train": {KEY: [first, second]}}}
    lines: list[str] = []
    record_history(load_workspace(vendor.root), DEVICE, ["train"], BACKENDS, report=lines.append)
    assert lines == [f"{DEVICE} train {KEY}: already recorded ({second} holds these sets)"]
    assert check(vendor).ok


def test_record_defaults_tasks_from_metadata_and_keeps_header(vendor: VendorWorkspace) -> None:
    commit = make_sets(vendor, ["llama"], tasks=["train", "post_train"])
    write_history(vendor, "# Vendor patch history. Newest last.\n\n")
    entries = record(vendor, tasks=None)
    assert [e.task for e in entries] == ["post_train", "train"]
    text = (vendor.root / HISTORY).read_text()
    assert text.startswith("# Vendor patch history. Newest last.\n\nMetax_C550:\n  post_train:\n")
    assert text.count(f'"{commit}"') == 2


def test_record_refusals(vendor: VendorWorkspace) -> None:
    with pytest.raises(
        FlagScaleError, match="no commit on the current branch holds hardware/Metax_C550/"
    ):
        record(vendor)
    commit = make_sets(vendor, ["llama"])
    with pytest.raises(
        FlagScaleError, match=r"sets of Metax_C550 at .* are for train, not inference"
    ):
        record(vendor, tasks=["inference"])
    with pytest.raises(
        FlagScaleError, match=f"commit {vendor.base} does not hold hardware/Metax_C550/"
    ):
        record(vendor, commit=vendor.base)
    run_git(vendor.root, "checkout", "-q", "-b", "side", f"{commit}~1")
    run_git(vendor.root, "commit", "-q", "--allow-empty", "-m", "side")
    with pytest.raises(FlagScaleError, match=f"commit {commit} is not on the current branch"):
        record(vendor, commit=commit)
    with pytest.raises(FlagScaleError, match="unknown backend 'vllm'"):
        record(vendor, backends=["vllm"])
    with pytest.raises(FlagScaleError, match="device type 'metax' is not Vendor_Model"):
        record_history(load_workspace(vendor.root), "metax", ["train"], BACKENDS)


# --- checking ----------------------------------------------------------------------------------


def test_check_reports_every_kind_of_problem(vendor: VendorWorkspace) -> None:
    first = make_sets(vendor, ["llama"])
    second = make_sets(vendor, ["llama", "qwen"])
    write_history(
        vendor,
        f"{DEVICE}:\n"
        f"  train:\n"
        f'    {KEY}:\n      - "{second}"\n      - "{first}"\n      - "{first}"\n'
        f'    {BACKEND}+{FLAGSCALE}:\n      - "{second}"\n'
        f'  inference:\n    {KEY}:\n      - "{second}"\n'
        f'Nvidia_A100:\n  train:\n    {FLAGSCALE}:\n      - "{second}"\n'
        f"Iluvatar_BI150:\n  train:\n    {FLAGSCALE}:\n      - 1234567\n",
    )
    (vendor.root / "hardware" / "Iluvatar_BI150").mkdir()
    problems = "\n".join(check(vendor).problems)
    assert "Nvidia_A100: no folder hardware/Nvidia_A100/ for this device type" in problems
    assert f"{DEVICE}.train.{KEY}: lists a commit more than once" in problems
    assert f"{DEVICE}.train.{KEY}: {first} is listed after its descendant {second}" in problems
    assert f"{DEVICE}.train.{BACKEND}+{FLAGSCALE}: backend key is not sorted" in problems
    assert (
        f"{DEVICE}.inference.{KEY}[0]: the sets at {second} are for train, not inference"
        in problems
    )
    unquoted = "Iluvatar_BI150.train.FlagScale[0]: 1234567 is not a string: an unquoted commit id"
    assert unquoted in problems
    assert "Iluvatar_BI150.train.FlagScale[0]: commit '1234567' does not exist here" in problems


def test_check_refuses_commits_without_the_sets_and_unknown_ones(vendor: VendorWorkspace) -> None:
    make_sets(vendor, ["llama"])
    write_history(vendor, history_text([f'"{vendor.base}"', '"' + "ab" * 20 + '"']))
    report = check(vendor, repair=True)
    assert not report.written and not (vendor.root / HISTORY).read_text().count("repaired")
    problems = "\n".join(report.problems)
    assert (
        f"[0]: {vendor.base} does not contain the patch set hardware/{DEVICE}/{FLAGSCALE}/,"
        f" hardware/{DEVICE}/{BACKEND}/" in problems
    )
    assert f"[1]: commit '{'ab' * 20}' does not exist here" in report.repaired[0]
    assert len(report.problems) == 1  # the one left blocks writing the repaired file


def test_check_and_load_on_a_good_file(vendor: VendorWorkspace) -> None:
    commit = make_sets(vendor, ["llama"])
    record(vendor)
    report = check(vendor)
    assert report.ok and not report.repaired and not report.written
    assert resolve(load_workspace(vendor.root), DEVICE).commit == commit


def test_unquoted_ids_are_refused_on_load_and_quoted_by_repair(vendor: VendorWorkspace) -> None:
    make_sets(vendor, ["llama"])
    for attempt in range(600):  # give the commit an all-digit prefix, as YAML reads it as an int
        short = run_git(vendor.root, "rev-parse", "--short=7", "HEAD")
        if short.isdigit() and short[0] != "0":
            break
        run_git(vendor.root, "commit", "-q", "--amend", "-m", f"Metax sets, take {attempt}")
    else:
        pytest.fail("no all-digit commit prefix in 600 tries")
    commit = run_git(vendor.root, "rev-parse", "HEAD")
    write_history(vendor, history_text([short]))
    with pytest.raises(
        FlagScaleError,
        match=rf"\[0\] is {int(short)}, not a string: YAML read an unquoted commit id as a number",
    ):
        load_history(load_workspace(vendor.root))
    report = check(vendor, repair=True)
    assert report.ok and report.written
    assert f"quoted as '{short}'" in report.repaired[0]
    assert load_history(load_workspace(vendor.root)) == {DEVICE: {"train": {KEY: [commit]}}}


def test_repair_fixes_short_ids_duplicates_order_and_keys(vendor: VendorWorkspace) -> None:
    first = make_sets(vendor, ["llama"])
    second = make_sets(vendor, ["llama", "qwen"])
    write_history(
        vendor,
        "# kept comment\n"
        + history_text(
            [f'"{second[:10]}"', f'"{first}"', f'"{second}"'], key=f"{BACKEND}+{FLAGSCALE}"
        ),
    )
    report = check(vendor, repair=True)
    assert report.ok and report.written, report.problems
    assert len(report.repaired) == 4
    assert (vendor.root / HISTORY).read_text() == (
        f'# kept comment\n{DEVICE}:\n  train:\n    {KEY}:\n      - "{first}"\n      - "{second}"\n'
    )
    assert check(vendor).ok


# --- squash merges and rebases -----------------------------------------------------------------


def vendor_branch(vendor: VendorWorkspace) -> tuple[str, str]:
    """On branch `metax`: sets committed (X) and recorded in the history (Y). Back on main."""
    run_git(vendor.root, "checkout", "-q", "-b", "metax")
    x = make_sets(vendor, ["llama"])
    record(vendor)
    y = commit_history(vendor, "record Metax history")
    run_git(vendor.root, "checkout", "-q", "main")
    write_files(vendor.root, {"main.txt": "main moved on\n"})
    commit_all(vendor.root, "meanwhile on main")
    return x, y


def test_squash_merge_is_repaired_to_the_squash_commit(vendor: VendorWorkspace) -> None:
    x, _y = vendor_branch(vendor)
    run_git(vendor.root, "merge", "-q", "--squash", "metax")
    run_git(vendor.root, "commit", "-q", "-m", "Metax C550 adaptation (#12)")
    squash = run_git(vendor.root, "rev-parse", "HEAD")
    assert load_history(load_workspace(vendor.root))[DEVICE]["train"][KEY] == [x]
    problems = check(vendor).problems
    assert problems == [
        f"{HISTORY}: {DEVICE}.train.{KEY}[0]: {x} is not on the current branch"
        " (rewritten by a squash merge or rebase?)"
    ]
    report = check(vendor, repair=True)
    assert report.ok and report.written
    assert report.repaired == [
        f"{HISTORY}: {DEVICE}.train.{KEY}[0]: {x} is not on the current branch (rewritten by a"
        f" squash merge or rebase?): remapped to {squash}, which holds identical patch sets"
    ]
    assert load_history(load_workspace(vendor.root))[DEVICE]["train"][KEY] == [squash]
    assert check(vendor).ok
    (entry,) = record(vendor)  # recording on main after the merge finds the same commit
    assert entry.commit == squash


def test_squash_commit_found_when_the_vendor_commit_is_gone(vendor: VendorWorkspace) -> None:
    x, _y = vendor_branch(vendor)
    run_git(vendor.root, "merge", "-q", "--squash", "metax")
    run_git(vendor.root, "commit", "-q", "-m", "Metax (#12)")
    squash = run_git(vendor.root, "rev-parse", "HEAD")
    gone = "0123456789abcdef" * 2 + "01234567"
    text = (vendor.root / HISTORY).read_text().replace(x, gone)
    write_history(vendor, text)
    report = check(vendor, repair=True)
    assert report.ok and report.written
    assert (
        "the only commit between its neighbours that changed the patch sets" in report.repaired[0]
    )
    assert load_history(load_workspace(vendor.root))[DEVICE]["train"][KEY] == [squash]


def test_record_after_squash_merge_without_history_on_the_branch(vendor: VendorWorkspace) -> None:
    run_git(vendor.root, "checkout", "-q", "-b", "metax")
    make_sets(vendor, ["llama"])
    run_git(vendor.root, "checkout", "-q", "main")
    run_git(vendor.root, "merge", "-q", "--squash", "metax")
    run_git(vendor.root, "commit", "-q", "-m", "Metax (#12)")
    squash = run_git(vendor.root, "rev-parse", "HEAD")
    write_files(vendor.root, {"after.txt": "more work on main\n"})
    commit_all(vendor.root, "after the merge")
    (entry,) = record(vendor)
    assert entry.commit == squash


def test_rebased_vendor_commit_is_remapped_by_content(vendor: VendorWorkspace) -> None:
    x, _y = vendor_branch(vendor)
    run_git(vendor.root, "checkout", "-q", "metax")
    run_git(vendor.root, "rebase", "-q", "main")
    run_git(vendor.root, "checkout", "-q", "main")
    run_git(vendor.root, "merge", "-q", "--ff-only", "metax")
    rebased = run_git(vendor.root, "rev-parse", "HEAD~1")
    assert rebased != x
    report = check(vendor, repair=True)
    assert report.ok and f"remapped to {rebased}" in report.repaired[0]


def test_merge_commit_keeps_the_vendor_commit_valid(vendor: VendorWorkspace) -> None:
    x, _y = vendor_branch(vendor)
    run_git(vendor.root, "merge", "-q", "--no-ff", "-m", "Merge metax", "metax")
    assert check(vendor).ok
    lines: list[str] = []
    record_history(load_workspace(vendor.root), DEVICE, ["train"], BACKENDS, report=lines.append)
    assert lines == [f"{DEVICE} train {KEY}: already recorded ({x} holds these sets)"]


def test_record_and_resolve_take_a_ref_as_commit(vendor: VendorWorkspace) -> None:
    commit = make_sets(vendor, ["llama"])
    run_git(vendor.root, "tag", "acme-sets")
    run_git(vendor.root, "commit", "-q", "--allow-empty", "-m", "later")
    (entry,) = record(vendor, commit="HEAD~1")
    assert entry.commit == commit
    ws = load_workspace(vendor.root)
    assert resolve(ws, DEVICE, commit="acme-sets").commit == commit
    assert resolve(ws, DEVICE, commit="HEAD~1").commit == commit
    with pytest.raises(FlagScaleError, match="--commit 'no-such-ref' is not a commit in"):
        record(vendor, commit="no-such-ref")


# --- resolving for builds ----------------------------------------------------------------------


def test_resolve_newest_by_commit_and_by_task(vendor: VendorWorkspace) -> None:
    first = make_sets(vendor, ["llama"], tasks=["train", "inference"])
    record(vendor, tasks=["train", "inference"])
    second = make_sets(vendor, ["llama", "qwen"], tasks=["train"])
    record(vendor)
    ws = load_workspace(vendor.root)
    assert resolve(ws, DEVICE).commit == second
    assert resolve(ws, DEVICE, task="inference").commit == first
    assert (
        resolve(ws, DEVICE, commit=first[:12])
        == HistoryEntry(DEVICE, "inference", KEY, (FLAGSCALE, BACKEND), first)
        or resolve(ws, DEVICE, commit=first[:12]).commit == first
    )
    assert resolve(ws, DEVICE, task="train", commit=first).commit == first
    with pytest.raises(FlagScaleError, match=f"{HISTORY} has no entry for Nvidia_A100"):
        resolve(ws, "Nvidia_A100")
    with pytest.raises(FlagScaleError, match="no entry for Metax_C550 with task post_train"):
        resolve(ws, DEVICE, task="post_train")
    with pytest.raises(FlagScaleError, match=r"^unknown task 'training' \(known tasks: train,"):
        resolve(ws, DEVICE, task="training")
    with pytest.raises(
        FlagScaleError, match=rf"^{HISTORY} has no entry for Metax_C550 with backends {BACKEND} \("
    ):
        resolve(ws, DEVICE, backends=[BACKEND])


def test_resolve_refuses_an_ambiguous_choice(vendor: VendorWorkspace) -> None:
    run_git(vendor.root, "checkout", "-q", "-b", "side")
    side = make_sets(vendor, ["llama"], tasks=["inference"])
    run_git(vendor.root, "checkout", "-q", "main")
    main = make_sets(vendor, ["qwen"], tasks=["train"])
    history = {DEVICE: {"train": {KEY: [main]}, "inference": {KEY: [side]}}}
    (vendor.root / HISTORY).write_bytes(dump_history(history))
    ws = load_workspace(vendor.root)
    with pytest.raises(FlagScaleError, match="several history entries.*pass --task"):
        resolve(ws, DEVICE)
    assert resolve(ws, DEVICE, task="inference").commit == side


# --- the command line --------------------------------------------------------------------------


def test_inv_record_and_check_history(vendor: VendorWorkspace) -> None:
    commit = make_sets(vendor, ["llama"])
    result = inv(
        vendor.root,
        "record-history",
        "--device-type",
        DEVICE,
        "--task",
        "train",
        "--backend",
        f"{FLAGSCALE} {BACKEND}",
    )
    assert f"recorded {commit}" in result.stdout
    assert "ok" in inv(vendor.root, "check-history").stdout
    write_history(vendor, history_text([f'"{commit}"', f'"{commit}"']))
    result = inv(vendor.root, "check-history", check=False)
    assert result.returncode == 1
    assert "lists a commit more than once" in result.stderr and "--repair" in result.stderr
    result = inv(vendor.root, "check-history", "--repair")
    assert "repaired:" in result.stdout and "duplicates removed" in result.stdout


def test_explicit_commit_is_recorded_even_with_identical_sets(vendor: VendorWorkspace) -> None:
    first = make_sets(vendor, ["llama"])
    record(vendor)
    write_files(vendor.root, {"shared.txt": "a commit shared with another device type\n"})
    shared = commit_all(vendor.root, "shared")
    lines: list[str] = []
    record_history(
        load_workspace(vendor.root), DEVICE, ["train"], BACKENDS, shared, report=lines.append
    )
    assert lines == [f"{DEVICE} train {KEY}: recorded {shared}"]
    assert load_history(load_workspace(vendor.root))[DEVICE]["train"][KEY] == [first, shared]


def test_an_entry_no_commit_of_the_branch_holds_can_be_dropped(vendor: VendorWorkspace) -> None:
    # The vendor's pull request was closed: main records a commit of a branch never merged, and
    # a commit that is gone; neither has a replacement. The error says how to drop them, and the
    # command it prints does.
    merged = make_sets(vendor, ["llama"])  # an earlier adaptation, merged and recorded
    run_git(vendor.root, "checkout", "-q", "-b", "metax")
    x = make_sets(vendor, ["llama", "aquila"])
    run_git(vendor.root, "checkout", "-q", "main")
    gone = "0123456789abcdef" * 2 + "01234567"
    write_history(vendor, history_text([f'"{merged}"', f'"{x}"', f'"{gone}"']))
    commit_history(vendor, "history listing a closed pull request")
    checked = inv(vendor.root, "check-history", "--repair", check=False)
    assert checked.returncode == 1
    drop = "`inv check-history --repair --drop-stale`"
    assert f"{x} is not on the current branch" in checked.stderr
    assert f"(record the right one with `inv record-history`, or drop: {drop})" in checked.stderr
    assert f"commit '{gone}' does not exist here" in checked.stderr
    assert f"or drop the entry: {drop}" in checked.stderr
    assert not run_git(vendor.root, "status", "--porcelain", "--", "hardware")  # not written
    dropped = inv(vendor.root, "check-history", "--repair", "--drop-stale")
    assert dropped.stdout.count("entry removed (--drop-stale)") == 2
    assert load_history(load_workspace(vendor.root))[DEVICE]["train"][KEY] == [merged]
    refused = inv(vendor.root, "check-history", "--drop-stale", check=False)
    assert refused.returncode == 1 and "--drop-stale goes with --repair" in refused.stderr
