"""Patch coverage: patches as hunks, what a line of Python is, and ``inv coverage`` end to end.

Hunks are checked against plain ``git apply`` and ``git diff``; line statuses against what
coverage.py itself records for a real run; ``inv coverage`` on a synthetic device whose one set
makes every kind of change (tests/trust_fixtures.py), under real torchrun ranks.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from flagscale.trust.hunk_coverage import line_through
from flagscale.trust.hunks import parse_patch, pieces_of, render
from flagscale.trust.python_lines import DEFINED, EXECUTED, MISSED, PythonLines
from tests.gitrepos import TOOL_ROOT, Exec, inv, make_repo, run_git, write_files
from tests.trust_fixtures import (
    BACKEND,
    DEVICE,
    KNOBS_FILE,
    knobs_source,
    make_base,
    make_coverage_workspace,
    make_set,
)

GENERIC_PATCH = TOOL_ROOT / "hardware" / "Generic_CPU" / "Megatron-LM" / "Megatron-LM.patch"

# --- patches as hunks ---------------------------------------------------------------------------


def every_kind_of_change(tmp: Path) -> tuple[Path, bytes]:
    """A repository and ``git diff`` of a change of every kind (names quoted, binary, modes)."""
    before = {
        "a.py": "".join(f"line {n}\n" for n in range(60)),
        "données/é t.txt": "un\ndeux\n",
        "gone.py": "x = 1\n",
        "bin.dat": bytes(range(200)),
        "tool.sh": "#!/bin/sh\n",
    }
    repo = tmp / "repo"
    make_repo(repo, before)
    after = "".join(f"line {n}\n" if n % 20 else f"changed {n}\n" for n in range(60))
    write_files(
        repo,
        {
            "a.py": after,
            "données/é t.txt": "un\ndeux\ntrois\n",
            "new.py": "NEW = 1\n",
            "bin.dat": bytes(reversed(range(200))),
            "tool.sh": Exec(b"#!/bin/sh\n"),
        },
    )
    (repo / "gone.py").unlink()
    run_git(repo, "add", "-A")
    patch = subprocess.run(
        ["git", "diff", "--cached", "--binary", "--full-index", "--no-renames"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    run_git(repo, "reset", "-q", "--hard")
    return repo, patch


def test_all_pieces_render_the_patch_byte_for_byte(tmp_path: Path) -> None:
    for text in (GENERIC_PATCH.read_bytes(), every_kind_of_change(tmp_path)[1]):
        files = parse_patch(text)
        assert render(pieces_of(files)) == text
    files = parse_patch(GENERIC_PATCH.read_bytes())
    assert len(files) == 10 and len(pieces_of(files)) == 47


def test_a_prefixed_patch_applies_under_the_prefix(tmp_path: Path) -> None:
    repo, patch = every_kind_of_change(tmp_path)
    moved = tmp_path / "moved"
    make_repo(moved, {f"third_party/B/{k}": v for k, v in snapshot_files(repo).items()})
    prefixed = render(pieces_of(parse_patch(patch), prefix="third_party/B"))
    subprocess.run(["git", "apply", "-"], cwd=repo, input=patch, check=True)
    subprocess.run(["git", "apply", "-"], cwd=moved, input=prefixed, check=True)
    assert snapshot_files(moved / "third_party" / "B") == snapshot_files(repo)
    assert (moved / "third_party/B/tool.sh").stat().st_mode & 0o100


def snapshot_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def test_any_subset_of_hunks_applies_and_changes_exactly_those(tmp_path: Path) -> None:
    original = "".join(f"row {n}\n" for n in range(400))
    changed = "".join(
        f"row {n}\n" if n % 25 else f"new {n}\nextra {n}\n" if n % 50 else "" for n in range(400)
    )
    repo = tmp_path / "r"
    make_repo(repo, {"f.txt": original})
    (repo / "f.txt").write_text(changed)
    patch = subprocess.run(["git", "diff"], cwd=repo, capture_output=True, check=True).stdout
    run_git(repo, "checkout", "-q", "--", ".")
    pieces = pieces_of(parse_patch(patch))
    assert len(pieces) == 16
    chooser = random.Random(7)
    for _ in range(6):
        chosen = [p for p in pieces if chooser.random() < 0.5]
        subprocess.run(["git", "apply", "-"], cwd=repo, input=render(chosen), check=True)
        diff = subprocess.run(["git", "diff", "-U0"], cwd=repo, capture_output=True).stdout.decode()
        got = sorted(
            line for line in diff.splitlines() if line[:1] in "+-" and line[1:2] != line[:1]
        )
        want = sorted(
            line.decode() for p in chosen for line in p.hunk.lines if line[:1] in (b"+", b"-")
        )
        assert got == want
        run_git(repo, "checkout", "-q", "--", ".")


def test_line_through_a_later_patch_agrees_with_git(tmp_path: Path) -> None:
    lines = [f"line {n}\n" for n in range(1, 101)]
    repo = tmp_path / "r"
    make_repo(repo, {"f.py": "".join(lines)})
    later = lines[:]
    later[9:12] = ["replaced\n"]  # lines 10-12
    later.insert(40, "inserted\n")
    del later[70]  # line 72 of the original
    (repo / "f.py").write_text("".join(later))
    patch = subprocess.run(["git", "diff"], cwd=repo, capture_output=True, check=True).stdout
    section = parse_patch(patch)[0]
    result = (repo / "f.py").read_text().splitlines(keepends=True)
    for number, text in enumerate(lines, start=1):
        moved = line_through(section, number)
        if moved is None:
            assert text not in result, number
        else:
            assert result[moved - 1] == text, number
    assert [n for n in range(1, 101) if line_through(section, n) is None] == [10, 11, 12, 72]


# --- what a line of Python is -------------------------------------------------------------------

SAMPLE = textwrap.dedent(
    '''\
    """Module docstring."""
    import os  # 2


    def decorate(function):  # 5
        return function


    @decorate  # 9
    def called(a,
               b=1):  # 11
        """Docstring."""
        total = (a +
                 b)  # 14
        if total > 100:
            total = 0  # 16
        else:
            # a comment in the branch that runs
            total += 1  # 19
        return total


    def never(x):  # 23
        return x * 2  # 24


    class Holder:  # 27
        LIMIT = 3  # 28

        def method(self):  # 30
            return self.LIMIT  # 31


    called(1)
    '''
)


def coverage_lines(tmp: Path, source: str) -> set[int]:
    """The lines coverage.py itself records for running ``source`` (independent of ours)."""
    script = tmp / "sample.py"
    script.write_text(source)
    data = tmp / ".coverage"
    subprocess.run(
        [sys.executable, "-m", "coverage", "run", f"--data-file={data}", str(script)],
        cwd=tmp,
        check=True,
    )
    from coverage import CoverageData

    measured = CoverageData(str(data))
    measured.read()
    return set(measured.lines(str(script.resolve())) or ())


def test_line_statuses_follow_what_coverage_saw(tmp_path: Path) -> None:
    ran = coverage_lines(tmp_path, SAMPLE)
    lines = PythonLines(SAMPLE)
    expected = {
        2: EXECUTED,  # an import that ran
        9: EXECUTED,  # the decorator of a function that was called
        10: EXECUTED,  # its signature, over two lines
        11: EXECUTED,
        12: EXECUTED,  # its docstring: judged by the code after it, which ran
        14: EXECUTED,  # the second line of a statement
        16: MISSED,  # a branch that did not run
        18: EXECUTED,  # a comment in the branch that did
        23: DEFINED,  # a function defined at import, never called
        24: MISSED,
        28: EXECUTED,  # class-level code runs at import
        30: DEFINED,
        31: MISSED,
    }
    assert {line: lines.status(line, ran) for line in expected} == expected


# --- inv coverage end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(module_env: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root, commit = make_coverage_workspace(tmp_path_factory.mktemp("coverage"))
    inv(root, "build", "--device", DEVICE)
    before = run_git(root, "status", "--porcelain")
    checkout_before = run_git(root / "third_party" / BACKEND, "status", "--porcelain")
    result = inv(root, "coverage", "--device", DEVICE)
    out = root / "logs" / "coverage" / DEVICE
    return {
        "root": root,
        "commit": commit,
        "result": result,
        "out": out,
        "document": json.loads((out / "coverage.json").read_text()),
        "status": (before, run_git(root, "status", "--porcelain")),
        "checkout": (
            checkout_before,
            run_git(root / "third_party" / BACKEND, "status", "--porcelain"),
        ),
    }


def hunk_statuses(document: dict) -> dict[tuple[str, str], str]:
    return {
        (file["path"], hunk["header"]): hunk["status"]
        for backend in document["backends"]
        for patch in backend["patches"]
        for file in patch["files"]
        for hunk in file["hunks"]
    }


def test_every_kind_of_change_gets_its_status(measured: dict) -> None:
    statuses = hunk_statuses(measured["document"])
    by_file: dict[str, list[str]] = {}
    for (path, _header), status in statuses.items():
        by_file.setdefault(path, []).append(status)
    assert by_file == {
        KNOBS_FILE: ["executed"],  # module-level code of an imported module
        "megatron/core/helpers.py": ["executed", "imported_only"],  # used(), unused()
        "megatron/core/never.py": ["not_reached"],
        "README.md": ["not_measurable"],
        "weights.bin": ["not_measurable"],
    }
    hunks = [
        h
        for b in measured["document"]["backends"]
        for p in b["patches"]
        for f in p["files"]
        for h in f["hunks"]
    ]
    assert {h["reason"] for h in hunks if h["status"] == "not_measurable"} == {
        "not Python",
        "binary file",
    }
    executed = [h for h in hunks if h["status"] == "executed"]
    assert all(h["ranks"] == ["knobs/rank-0", "knobs/rank-1"] for h in executed)


def test_the_report_follows_its_schema_and_names_the_build(measured: dict) -> None:
    schema = json.loads((TOOL_ROOT / "schemas" / "patch-coverage.schema.json").read_text())
    Draft202012Validator(schema).validate(measured["document"])
    document = measured["document"]
    assert document["build"]["history_commit"] == measured["commit"]
    assert document["totals"] == {
        "hunks": 6,
        "executed": 2,
        "imported_only": 1,
        "not_reached": 1,
        "not_measurable": 2,
    }
    out = measured["result"].stdout
    assert (
        f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch: 6 hunks: 2 executed, 1 imported only" in out
    )
    assert "megatron/core/helpers.py" in out and "imported only" in out
    assert (measured["out"] / "coverage.html").read_text().startswith("<!DOCTYPE html>")


def test_each_rank_writes_its_own_data_file_and_only_the_build_is_measured(measured: dict) -> None:
    data = measured["out"] / "data"
    ranks = sorted(
        p.name.split(".")[0] for p in data.iterdir() if not p.name.startswith("rank-launcher")
    )
    assert ranks == ["rank-0", "rank-1"]
    from coverage import CoverageData

    combined = CoverageData(str(measured["out"] / ".coverage"))
    combined.read()
    build = (measured["root"] / "build" / DEVICE).resolve()
    files = combined.measured_files()
    assert files and all(Path(f).is_relative_to(build) for f in files)
    before, after = measured["status"]  # the user's work tree as it was (logs/ aside)
    assert [line for line in after.splitlines() if line != "?? logs/"] == before.splitlines()
    assert measured["checkout"][0] == measured["checkout"][1]


def test_a_job_that_fails_under_coverage_still_gets_its_report(tmp_path: Path) -> None:
    root, base = make_base(tmp_path)
    write_files(root / "third_party" / BACKEND, {KNOBS_FILE: knobs_source({3: "7"})})
    make_set(root, base, "a wrong knob")
    inv(root, "build", "--device", DEVICE)
    result = inv(root, "coverage", "--device", DEVICE, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {DEVICE}/knobs: loss diverges at step 1")
    assert "wrote " in result.stdout and "coverage.html" in result.stdout
    document = json.loads((root / "logs" / "coverage" / DEVICE / "coverage.json").read_text())
    assert document["cases"][0]["status"] == "failed"
    assert hunk_statuses(document) == {(KNOBS_FILE, "@@ -35,7 +35,7 @@"): "executed"}


def test_an_encrypted_set_is_measured_with_its_key(tmp_path: Path) -> None:
    root, base = make_base(tmp_path)
    key = tmp_path / "keys" / "synth.key"
    write_files(root / "third_party" / BACKEND, {KNOBS_FILE: knobs_source({8: "2 - 1"})})
    make_set(root, base, "an encrypted knob", key=key)
    inv(root, "build", "--device", DEVICE, "--key-path", str(key))
    missing = inv(root, "coverage", "--device", DEVICE, check=False)
    assert missing.returncode == 1
    assert f"hardware/{DEVICE}/{BACKEND}/{BACKEND}.patch.enc is encrypted with key fsk1-" in (
        missing.stderr
    )
    inv(root, "coverage", "--device", DEVICE, "--key-path", str(key))
    document = json.loads((root / "logs" / "coverage" / DEVICE / "coverage.json").read_text())
    assert hunk_statuses(document) == {(KNOBS_FILE, "@@ -80,7 +80,7 @@"): "executed"}
    assert document["backends"][0]["patches"][0]["source"].endswith(".patch.enc")


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture
def built(tmp_path: Path) -> Path:
    root, base = make_base(tmp_path)
    write_files(root / "third_party" / BACKEND, {KNOBS_FILE: knobs_source({1: "2 - 1"})})
    make_set(root, base, "a harmless knob")
    inv(root, "build", "--device", DEVICE)
    return root


def test_errors_are_one_line_with_what_to_do(built: Path) -> None:
    def error(*args: str) -> str:
        result = inv(built, "coverage", *args, check=False)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("error: ")
        return result.stderr

    assert "no --device given" in error()
    assert "device type 'synth' is not Vendor_Model" in error("--device", "synth")
    assert "build tree" in error("--device", "Other_X1") and "inv build --device Other_X1" in error(
        "--device", "Other_X1"
    )
    assert "smoke case 'nope' not found" in error("--device", DEVICE, "--case", "nope")
    (built / "elsewhere").mkdir()
    (built / "elsewhere" / "mine.txt").write_text("keep me\n")
    assert "was not made by inv coverage; not clearing it" in error(
        "--device", DEVICE, "--out", "elsewhere"
    )
    assert (built / "elsewhere" / "mine.txt").read_text() == "keep me\n"
    knobs = built / "build" / DEVICE / "third_party" / BACKEND / KNOBS_FILE
    knobs.write_text(knobs.read_text() + "# hand edit\n")
    message = error("--device", DEVICE)
    assert "was changed since it was built" in message and KNOBS_FILE in message
    assert f"inv build --device {DEVICE} --force" in message


# --- the CI option --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "variable", "wanted"),
    [
        (False, None, False),
        (True, None, True),
        (False, "1", True),
        (False, "true", True),
        (False, "YES", True),
        (False, "0", False),
        (False, "", False),
    ],
)
def test_ci_coverage_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, flag: bool, variable: str | None, wanted: bool
) -> None:
    from flagscale.ci.unpatch_and_test import COVERAGE_ENV, coverage_wanted

    if variable is None:
        monkeypatch.delenv(COVERAGE_ENV, raising=False)
    else:
        monkeypatch.setenv(COVERAGE_ENV, variable)
    assert coverage_wanted(flag) is wanted


def test_nox_passes_its_arguments_to_unpatch_and_test() -> None:
    import ast

    tree = ast.parse((TOOL_ROOT / "noxfile.py").read_text())
    session = next(
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "unpatch_and_test"
    )
    assert "*session.posargs" in ast.unparse(session)
    help_text = subprocess.run(
        [sys.executable, "-m", "flagscale.ci", "unpatch-and-test", "--help"],
        capture_output=True,
        text=True,
        cwd=TOOL_ROOT,
        check=True,
    ).stdout
    assert "--coverage" in help_text and "FLAGSCALE_COVERAGE=1" in help_text
