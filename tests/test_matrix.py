"""The compatibility matrix over real patch sets: clean, drifting (pin bump and base-layer
change), conflicting and encrypted device types, with smoke results and all three outputs."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import schema_for
from flagscale.release.matrix import build_matrix, render_table, run_matrix, write_outputs
from flagscale.release.matrix_html import render_html
from flagscale.upstream.workspace import load_workspace
from tests.gitrepos import commit_all, inv, run_git, write_files
from tests.isolation import isolated_git
from tests.release_fixtures import (
    BACKEND,
    ReleaseWorkspace,
    build_scenario,
    edit_line,
    make_patch,
    make_release_workspace,
    record_history,
    write_patch_set,
)
from tests.toolcopy import copy_tool

A, B, C = (f"megatron/core/{name}.py" for name in "abc")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("matrix")
    with isolated_git(tmp_path_factory.mktemp("matrix-home")):
        return build_scenario(tmp)


def rows_by_key(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["device_type"], row["backend"]): row for row in document["rows"]}


def test_matrix_tells_clean_drifting_conflicting_and_encrypted_apart(
    scenario: dict[str, Any],
) -> None:
    rw: ReleaseWorkspace = scenario["rw"]
    document = build_matrix(load_workspace(rw.root), results_dir=scenario["results"])
    rows = rows_by_key(document)
    assert list(rows) == [
        ("Clean_A1", "FlagScale"),
        ("Clean_A1", BACKEND),
        ("Conflict_D1", BACKEND),
        ("Drift_B1", BACKEND),
        ("Drift_C1", BACKEND),
        ("Secret_E1", BACKEND),
    ]
    verdicts = {key: row["verdict"] for key, row in rows.items()}
    assert verdicts == {
        ("Clean_A1", "FlagScale"): "clean",
        ("Clean_A1", BACKEND): "clean",
        ("Conflict_D1", BACKEND): "conflicting",
        ("Drift_B1", BACKEND): "drifting",
        ("Drift_C1", BACKEND): "drifting",
        ("Secret_E1", BACKEND): "unknown",
    }
    drift_b = rows[("Drift_B1", BACKEND)]
    assert drift_b["on_base"]["status"] == "applies"
    assert drift_b["on_current"]["status"] == "conflicts"
    assert f"patch failed: {B}:" in drift_b["on_current"]["detail"]
    assert drift_b["backend_pin"] != drift_b["current_pin"] == rw.pin
    drift_c = rows[("Drift_C1", BACKEND)]
    # The pin bump did not touch c.py: its drift comes from the base layer alone.
    assert f"patch failed: {C}:" in drift_c["on_current"]["detail"]
    assert drift_c["tasks"] == ["inference", "train"]
    conflict = rows[("Conflict_D1", BACKEND)]
    assert conflict["on_base"]["status"] == conflict["on_current"]["status"] == "conflicts"
    assert f"patch failed: {A}:" in conflict["on_base"]["detail"]
    secret = rows[("Secret_E1", BACKEND)]
    assert secret["encrypted"] is True
    assert secret["on_base"] == secret["on_current"]
    assert secret["on_base"]["status"] == "unknown"
    assert secret["on_base"]["reason"] == "encrypted"
    assert "pass --key-path for key fsk1-" in secret["on_base"]["detail"]
    assert {key: row["flagscale_base"] for key, row in rows.items()} == dict.fromkeys(
        rows, scenario["base"]
    )
    assert document["flagscale_commit"] == scenario["head"]
    assert document["pins"] == {BACKEND: rw.pin}
    assert document["summary"] == {"clean": 2, "drifting": 2, "conflicting": 1, "unknown": 1}


def test_smoke_results_newest_per_device_and_none_when_absent(scenario: dict[str, Any]) -> None:
    document = build_matrix(load_workspace(scenario["rw"].root), results_dir=scenario["results"])
    smoke = {key: row["smoke"] for key, row in rows_by_key(document).items()}
    assert smoke[("Clean_A1", BACKEND)] == {
        "status": "passed",
        "case": "tiny_gpt",
        "reason": None,
        "finished_at": "2025-02-01T00:00:00Z",
        "result": "Clean_A1/tiny_gpt/result.json",
    }
    assert smoke[("Drift_B1", BACKEND)]["status"] == "failed"
    assert smoke[("Drift_B1", BACKEND)]["reason"] == "step 3"
    assert smoke[("Conflict_D1", BACKEND)] == {"status": "none"}
    without = build_matrix(load_workspace(scenario["rw"].root))
    assert {row["smoke"]["status"] for row in without["rows"]} == {"none"}
    assert without["results_dir"] is None


def test_missing_results_folder_is_an_error(scenario: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FlagScaleError, match="smoke results folder .*nowhere does not exist"):
        build_matrix(load_workspace(scenario["rw"].root), results_dir=tmp_path / "nowhere")


def test_key_path_opens_encrypted_sets(scenario: dict[str, Any], tmp_path: Path) -> None:
    document = build_matrix(load_workspace(scenario["rw"].root), key_paths=[scenario["key"]])
    secret = rows_by_key(document)[("Secret_E1", BACKEND)]
    assert secret["verdict"] == "clean"

    from flagscale.vendor import crypto

    other, _ = crypto.load_or_create_key(tmp_path / "other.key")
    document = build_matrix(load_workspace(scenario["rw"].root), key_paths=[tmp_path / "other.key"])
    assert rows_by_key(document)[("Secret_E1", BACKEND)]["verdict"] == "unknown"


def test_matrix_never_touches_the_work_tree_index_or_branch(scenario: dict[str, Any]) -> None:
    root = scenario["rw"].root
    state = [
        run_git(root, "status", "--porcelain", "--ignore-submodules=none"),
        run_git(root, "rev-parse", "HEAD"),
        (root / ".git" / "index").read_bytes(),
        run_git(root / "third_party" / BACKEND, "status", "--porcelain"),
        run_git(root, "stash", "list"),
    ]
    build_matrix(load_workspace(root), key_paths=[scenario["key"]])
    assert state == [
        run_git(root, "status", "--porcelain", "--ignore-submodules=none"),
        run_git(root, "rev-parse", "HEAD"),
        (root / ".git" / "index").read_bytes(),
        run_git(root / "third_party" / BACKEND, "status", "--porcelain"),
        run_git(root, "stash", "list"),
    ]
    leftovers = list((root / ".git" / "flagscale" / "scratch.git").glob("matrix-*"))
    assert leftovers == []


def test_outputs_json_schema_html_and_table(scenario: dict[str, Any], tmp_path: Path) -> None:
    ws = load_workspace(scenario["rw"].root)
    document = build_matrix(ws, results_dir=scenario["results"])
    write_outputs(document, json_path=tmp_path / "m.json", html_path=tmp_path / "m.html")
    loaded = json.loads((tmp_path / "m.json").read_text())
    assert loaded == document
    assert not list(Draft202012Validator(schema_for("matrix")).iter_errors(loaded))

    html = (tmp_path / "m.html").read_text()
    assert html.count("<tr data-device=") == 6
    assert '<tr data-device="Drift_B1" data-backend="Megatron-LM">' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "<style>" in html and "<link" not in html
    # the page leaves the time it was made out (a smoke result's time may well be the same)
    assert render_html({**document, "generated_at": "1999-12-31T23:59:59Z"}) == html

    again = build_matrix(ws, results_dir=scenario["results"])
    assert render_html(again) == html  # deterministic given the inputs
    assert {**again, "generated_at": ""} == {**document, "generated_at": ""}

    table = render_table(document)
    lines = table.splitlines()
    assert lines[0].split() == [
        "DEVICE",
        "TYPE",
        "BACKEND",
        "BASE",
        "ON",
        "BASE",
        "ON",
        "CURRENT",
        "PINS",
        "VERDICT",
        "SMOKE",
    ]
    assert "\x1b[" not in table
    column = lines[0].index("VERDICT")
    assert [line[column:].split()[0] for line in lines[1:7]] == [
        "clean",
        "clean",
        "conflicting",
        "drifting",
        "drifting",
        "unknown",
    ]
    assert "unknown (encrypted)" in table
    assert lines[7] == (
        f"6 patch sets at {scenario['head']}: 2 clean, 2 drifting, 1 conflicting, 1 unknown"
    )
    # what the cells cannot say follows, with what to do: the fix is in the terminal too
    notes = lines[8:]
    assert (
        "  Drift_B1/Megatron-LM: to do: regenerate them with `inv patch --device-type` on the"
        " current pins" in notes
    )
    assert (
        "  Conflict_D1/Megatron-LM: to do: they do not apply even on their base; ask the"
        " vendor for new sets" in notes
    )
    secret = [n for n in notes if n.startswith("  Secret_E1/Megatron-LM: ")]
    assert len(secret) == 1 and "pass --key-path for key fsk1-" in secret[0]
    assert not [n for n in notes if n.startswith("  Clean_A1/")]
    assert [n for n in notes if n.startswith("  Drift_B1/") and "patch failed" in n]

    # the page explains its verdicts and does not colour a zero count as a problem
    assert '<dt class="status drifting">drifting</dt>' in html
    assert '<li class="conflicting">conflicting: 1</li>' in html
    coloured = render_table(document, color=True)
    assert "\x1b[32mclean" in coloured and "\x1b[31mconflicting" in coloured
    assert "\x1b[33mdrifting" in coloured


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal (run_matrix colours only then)."""

    def isatty(self) -> bool:
        return True


def test_run_matrix_colours_only_on_a_terminal_and_strict_fails(
    scenario: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = load_workspace(scenario["rw"].root)
    monkeypatch.delenv("NO_COLOR", raising=False)
    plain, tty = io.StringIO(), FakeTerminal()
    run_matrix(ws, stream=plain)
    run_matrix(ws, stream=tty)
    assert "\x1b[" not in plain.getvalue() and "\x1b[32m" in tty.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    no_colour = FakeTerminal()
    run_matrix(ws, stream=no_colour)
    assert "\x1b[" not in no_colour.getvalue()
    with pytest.raises(FlagScaleError) as caught:
        run_matrix(ws, stream=io.StringIO(), strict=True)
    assert "4 patch set(s) are not clean: Conflict_D1/Megatron-LM (conflicting)" in str(
        caught.value
    )
    hint = caught.value.hint or ""
    assert "drifting: regenerate them with `inv patch --device-type` on the current pins" in hint
    assert "conflicting: they do not apply even on their base" in hint
    assert "unknown: see the reason in the table (encrypted: pass --key-path)" in hint


def test_inv_matrix_writes_files_and_prints_the_table(
    scenario: dict[str, Any], tmp_path: Path
) -> None:
    root = scenario["rw"].root
    result = inv(
        root,
        "matrix",
        "--json",
        str(tmp_path / "m.json"),
        "--html",
        str(tmp_path / "m.html"),
        "--results",
        str(scenario["results"]),
        "--key-path",
        str(scenario["key"]),
    )
    assert "Secret_E1" in result.stdout and "\x1b[" not in result.stdout
    steps = [line for line in result.stderr.splitlines() if line.startswith("matrix: [")]
    assert len(steps) == 6 and steps[-1].startswith("matrix: [6/6] ")  # one line per step
    assert any(" Secret_E1 Megatron-LM (+" in line for line in steps)
    document = json.loads((tmp_path / "m.json").read_text())
    assert document["summary"] == {"clean": 3, "drifting": 2, "conflicting": 1, "unknown": 0}
    assert (tmp_path / "m.html").read_text().startswith("<!DOCTYPE html>")
    default_results = root / "logs" / "smoke"
    shutil.copytree(scenario["results"], default_results, copy_function=shutil.copy2)
    try:
        plain = inv(root, "matrix", "--json", str(tmp_path / "default.json"))
    finally:
        shutil.rmtree(root / "logs")
    assert "passed" in plain.stdout
    assert json.loads((tmp_path / "default.json").read_text())["results_dir"] == str(
        default_results
    )
    strict = inv(root, "matrix", "--strict", check=False)
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines()[-1].startswith("error: 4 patch set(s) are not clean")


def test_unavailable_base_commit_is_reported_per_row(tmp_path: Path) -> None:
    rw = make_release_workspace(tmp_path)
    base = rw.head()
    write_patch_set(
        rw, "Gone_G1", BACKEND, make_patch(rw.upstream, rw.pin, edit_line(A, 3, "g")), base=base
    )
    metadata = rw.root / "hardware" / "Gone_G1" / BACKEND / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace(base, "f" * 40))
    sets = commit_all(rw.root, "set with an unknown base")
    record_history(rw, {"Gone_G1": {"train": {BACKEND: [sets]}}})
    row = build_matrix(load_workspace(rw.root))["rows"][0]
    assert row["on_base"]["status"] == "error"
    assert f"commit '{'f' * 40}' does not exist" in row["on_base"]["detail"]
    assert row["on_current"]["status"] == "applies"
    assert row["verdict"] == "unknown"


def test_a_stale_history_entry_is_its_rows_error_with_the_fix(tmp_path: Path) -> None:
    # A squash-merged or closed pull request left an entry naming a commit main does not hold:
    # the other sets are still checked, and the row says how to repair or drop the entry.
    rw = make_release_workspace(tmp_path)
    base = rw.head()
    write_patch_set(
        rw, "Good_G1", BACKEND, make_patch(rw.upstream, rw.pin, edit_line(A, 3, "g")), base=base
    )
    sets = commit_all(rw.root, "a good set")
    lost = "2" * 40
    record_history(
        rw, {"Good_G1": {"train": {BACKEND: [sets]}}, "Lost_L1": {"train": {BACKEND: [lost]}}}
    )
    document = build_matrix(load_workspace(rw.root))
    rows = rows_by_key(document)
    assert rows[("Good_G1", BACKEND)]["verdict"] == "clean"
    row = rows[("Lost_L1", BACKEND)]
    assert (row["verdict"], row["flagscale_base"], row["tasks"]) == ("unknown", None, ["train"])
    detail = row["on_base"]["detail"]
    assert f"commit {lost} recorded for Lost_L1 Megatron-LM is not in" in detail
    assert "`inv check-history --repair --drop-stale`" in detail and "unshallow" not in detail
    table = render_table(document)
    assert f"Lost_L1/{BACKEND}: on its base and on current pins: {detail}" in table
    line = next(line for line in table.splitlines() if line.startswith("Lost_L1"))
    assert line.split()[:3] == ["Lost_L1", BACKEND, "-"]
    Draft202012Validator(schema_for("matrix")).validate(document)

    # In a shallow clone the same kind of error means missing history: fetch it.
    shallow = tmp_path / "shallow"
    run_git(tmp_path, "clone", "-q", "--depth", "1", rw.root.as_uri(), str(shallow))
    rows = rows_by_key(build_matrix(load_workspace(shallow)))
    detail = rows[("Good_G1", BACKEND)]["on_base"]["detail"]
    assert f"commit {sets} recorded for Good_G1" in detail
    assert "this clone is shallow: fetch the full history (git fetch --unshallow)" in detail


def test_a_clone_without_its_pins_gets_them_and_is_checked(tmp_path: Path) -> None:
    # As `inv build` does: a pin missing from third_party/ is fetched (or imported), once.
    rw = make_release_workspace(tmp_path)
    base = rw.head()
    write_patch_set(
        rw, "Fresh_F1", BACKEND, make_patch(rw.upstream, rw.pin, edit_line(A, 3, "f")), base=base
    )
    sets = commit_all(rw.root, "a set")
    record_history(rw, {"Fresh_F1": {"train": {BACKEND: [sets]}}})
    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", rw.root.as_uri(), str(clone))
    assert not (clone / "third_party" / BACKEND / ".git").exists()
    row = build_matrix(load_workspace(clone))["rows"][0]
    assert (row["on_base"]["status"], row["on_current"]["status"]) == ("applies", "applies")
    assert run_git(clone / "third_party" / BACKEND, "cat-file", "-t", rw.pin) == "commit"


def test_no_history_says_so(tmp_path: Path) -> None:
    rw = make_release_workspace(tmp_path)
    result = inv(rw.root, "matrix", check=False)
    assert result.returncode == 1
    assert "hardware/patch_history.yaml at" in result.stderr and "does not exist" in result.stderr


def test_newest_history_commit_wins_across_tasks(tmp_path: Path) -> None:
    rw = make_release_workspace(tmp_path)
    base = rw.head()
    write_patch_set(
        rw, "Two_T1", BACKEND, make_patch(rw.upstream, rw.pin, edit_line(A, 3, "1")), base=base
    )
    first = commit_all(rw.root, "first set")
    write_patch_set(
        rw, "Two_T1", BACKEND, make_patch(rw.upstream, rw.pin, edit_line(A, 3, "2")), base=base
    )
    second = commit_all(rw.root, "second set")
    record_history(rw, {"Two_T1": {"train": {BACKEND: [first]}, "inference": {BACKEND: [second]}}})
    ws = load_workspace(rw.root)
    from flagscale.vendor.committed import CommittedState

    state = CommittedState(ws.root)
    assert state.patch_set("Two_T1", BACKEND).commit == second
    record_history(rw, {"Two_T1": {"train": {BACKEND: [second]}, "inference": {BACKEND: [first]}}})
    assert CommittedState(ws.root).patch_set("Two_T1", BACKEND).commit == second
    assert os.environ.get("GIT_INDEX_FILE") is None


def test_undeclared_backend_is_an_error_row_not_a_failure(tmp_path: Path) -> None:
    rw = make_release_workspace(tmp_path)
    base = rw.head()
    write_patch_set(
        rw, "Odd_O1", "FlagScale", make_patch(rw.root, base, {"README.md": "x\n"}), base=base
    )
    metadata = rw.root / "hardware" / "Odd_O1" / "FlagScale" / "metadata.yaml"
    folder = rw.root / "hardware" / "Odd_O1" / "vllm"
    folder.mkdir(parents=True)
    text = metadata.read_text().replace("backend: FlagScale", "backend: vllm")
    text = text.replace("backend_pin: null", f'backend_pin: "{rw.pin}"')
    (folder / "metadata.yaml").write_text(text.replace("file: FlagScale.patch", "file: vllm.patch"))
    (folder / "vllm.patch").write_bytes((metadata.parent / "FlagScale.patch").read_bytes())
    sets = commit_all(rw.root, "a set for a backend nobody declared")
    record_history(rw, {"Odd_O1": {"train": {"FlagScale+vllm": [sets]}}})
    rows = rows_by_key(build_matrix(load_workspace(rw.root)))
    assert rows[("Odd_O1", "FlagScale")]["verdict"] == "clean"
    odd = rows[("Odd_O1", "vllm")]
    assert odd["on_base"]["status"] == "error" and odd["current_pin"] is None
    assert "unknown backend 'vllm'" in odd["on_base"]["detail"]


def test_a_zero_count_is_not_a_red_badge() -> None:
    document = {
        "flagscale_commit": "0" * 40,
        "pins": {},
        "results_dir": None,
        "summary": {"clean": 1, "drifting": 0, "conflicting": 0, "unknown": 0},
        "rows": [],
    }
    html = render_html(document)
    assert '<li class="clean">clean: 1</li>' in html
    assert '<li class="zero">conflicting: 0</li>' in html
    assert '<li class="conflicting">' not in html


def test_last_smoke_is_the_run_that_ended_last_at_its_own_time(tmp_path: Path) -> None:
    # The file written last (mtime) is an older run copied in; the run's own finished_at decides,
    # and is the time shown. A result without finished_at (older runner) falls back to its mtime.
    from flagscale.runner.latest_results import latest_smoke_results

    def result(path: str, finished: str | None) -> None:
        document = {"device_type": "Metax_C550", "case": "tiny", "status": "passed"}
        if finished:
            document["finished_at"] = finished
        write_files(tmp_path, {path: json.dumps(document)})

    result("a/result.json", "2026-03-01T10:00:00Z")
    result("b/result.json", "2026-01-01T10:00:00Z")  # written after a/, but ran earlier
    os.utime(tmp_path / "a/result.json", (1735689600, 1735689600))  # 2025-01-01
    latest = latest_smoke_results(tmp_path)["Metax_C550"]
    assert (latest.path, latest.finished_at) == ("a/result.json", "2026-03-01T10:00:00Z")
    result("c/result.json", None)
    os.utime(tmp_path / "c/result.json", (1780000000, 1780000000))  # 2026-05-28, no finished_at
    latest = latest_smoke_results(tmp_path)["Metax_C550"]
    assert (latest.path, latest.finished_at) == ("c/result.json", "2026-05-28T20:26:40Z")


def test_matrix_pages_written_at_the_workspace_root_are_ignored_by_git(tmp_path: Path) -> None:
    # docs/matrix.md writes them there: `inv matrix --json matrix.json --html matrix.html`.
    root = copy_tool(tmp_path / "FlagScale")
    for name in ("matrix.json", "matrix.html", "docs/matrix.json"):
        (root / name).write_text("{}\n")
    assert run_git(root, "status", "--porcelain", "--untracked-files=all") == "?? docs/matrix.json"
