"""Finding the workspace and loading backends/backends.yaml: the embedded default and bad input."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.upstream.workspace import (
    ReleaseSource,
    SubmoduleSource,
    find_workspace,
    load_workspace,
)
from tests.gitrepos import (
    TOOL_ROOT,
    commit_all,
    declare_backends,
    make_repo,
    make_workspace,
    run_git,
)

RELEASE = {
    "kind": "release",
    "package": "demo-pkg",
    "version": "1.0",
    "filename": "demo_pkg-1.0.tar.gz",
    "sha256": "a" * 64,
}
PIN = "b" * 40


def workspace_with(tmp_path: Path, text: str | bytes) -> Path:
    root = tmp_path / "ws"
    make_repo(root, {"README.md": "ws\n"})
    path = root / "backends" / "backends.yaml"
    path.parent.mkdir(exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return root


def declaring(tmp_path: Path, backends: object, version: object = 1) -> Path:
    return workspace_with(tmp_path, yaml.safe_dump({"version": version, "backends": backends}))


# --- the embedded default ---------------------------------------------------------------------


def test_embedded_declaration_pins_megatron_core_and_keeps_the_rest_optional() -> None:
    workspace = load_workspace(TOOL_ROOT)
    megatron = workspace.backend("Megatron-LM")
    assert megatron.source == ReleaseSource(
        package="megatron-core",
        version="0.16.1",
        filename="megatron_core-0.16.1.tar.gz",
        sha256="86522feacfa5ef384a6ac627e7d88cf4866811aed3bc9b6c2a85cbf15cff91a3",
        strip_prefix="megatron_core-0.16.1",
    )
    assert workspace.pin(megatron) == "42ac4fb328465d336c9535a67512b667c760d1ac"
    assert [b.name for b in workspace.select(None)] == ["Megatron-LM"]
    for name in ("Megatron-Energon", "vllm"):
        backend = workspace.backend(name)
        assert backend.optional and isinstance(backend.source, ReleaseSource)
        assert re.fullmatch(r"[0-9a-f]{40}", workspace.pin(backend))
    assert [b.name for b in workspace.select(["vllm", "Megatron-LM"])] == ["vllm", "Megatron-LM"]


def test_workspace_is_found_from_a_subfolder(tmp_path: Path) -> None:
    root = declaring(tmp_path, {"demo": {"source": RELEASE, "pin": PIN}})
    (root / "deep" / "er").mkdir(parents=True)
    assert find_workspace(root / "deep" / "er").root == root


def test_outside_a_workspace_the_error_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FlagScaleError) as failure:
        find_workspace(tmp_path)
    assert str(failure.value) == (
        f"not inside a FlagScale workspace: no backends/backends.yaml in {tmp_path.resolve()}"
        " or its parents (cd into your FlagScale checkout)"
    )


def test_unknown_backend_lists_the_declared_ones(tmp_path: Path) -> None:
    root = declaring(
        tmp_path, {"b": {"source": RELEASE, "pin": PIN}, "a": {"source": RELEASE, "pin": PIN}}
    )
    with pytest.raises(
        FlagScaleError, match=r"unknown backend 'c': backends/backends.yaml declares a, b$"
    ):
        load_workspace(root).backend("c")


# --- declarations that are refused ------------------------------------------------------------

INVALID = [
    (
        "bad kind",
        {"X": {"source": {"kind": "tarball"}}},
        "at backends.X.source.kind: 'tarball' is not one of ['submodule', 'release']",
    ),
    (
        "missing kind",
        {"X": {"source": {"package": "p"}}},
        "at backends.X.source: 'kind' is a required property",
    ),
    (
        "release without pin",
        {"X": {"source": RELEASE}},
        "at backends.X: 'pin' is a required property",
    ),
    (
        "bad sha256",
        {"X": {"source": {**RELEASE, "sha256": "xyz"}, "pin": PIN}},
        "at backends.X.source.sha256: 'xyz' does not match ^[0-9a-f]{64}$",
    ),
    (
        "unknown backend key",
        {"X": {"source": RELEASE, "pin": PIN, "colour": "red"}},
        "at backends.X: unknown key 'colour' (allowed: description, optional, pin, source)",
    ),
    (
        "unknown source key",
        {"X": {"source": {**RELEASE, "mirror": "m"}, "pin": PIN}},
        "at backends.X.source: unknown key 'mirror' (allowed: ",
    ),
    (
        "url on a submodule",
        {"X": {"source": {"kind": "submodule", "url": "u"}}},
        "at backends.X.source: unknown key 'url' (allowed: kind)",
    ),
    (
        "short pin",
        {"X": {"source": RELEASE, "pin": "abc123"}},
        "at backends.X.pin: 'abc123' does not match ^[0-9a-f]{40}$",
    ),
    (
        "unquoted version",
        {"X": {"source": {**RELEASE, "version": 0.16}, "pin": PIN}},
        "at backends.X.source.version: 0.16 should be of type string",
    ),
    (
        "filename with a folder",
        {"X": {"source": {**RELEASE, "filename": "../x.tar.gz"}, "pin": PIN}},
        "at backends.X.source.filename: '../x.tar.gz' does not match",
    ),
    (
        "FlagScale is not a backend",
        {"FlagScale": {"source": RELEASE, "pin": PIN}},
        "at backends: 'FlagScale' does not match",
    ),
    ("no backends", {}, "at backends: {} should be non-empty"),
]


@pytest.mark.parametrize(
    ("backends", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_declarations_name_the_file_and_the_path_inside_it(
    tmp_path: Path, backends: dict, expected: str
) -> None:
    root = declaring(tmp_path, backends)
    with pytest.raises(FlagScaleError) as failure:
        find_workspace(root)
    message = str(failure.value)
    assert message.startswith("backends/backends.yaml: at ")
    assert expected in message
    assert message.endswith("(schema workspace)")


def test_missing_pin_for_a_release_is_named(tmp_path: Path) -> None:
    root = declaring(tmp_path, {"X": {"source": RELEASE}})
    with pytest.raises(FlagScaleError, match=r"'pin' is a required property"):
        load_workspace(root)


def test_wrong_format_version_is_refused(tmp_path: Path) -> None:
    root = declaring(tmp_path, {"X": {"source": RELEASE, "pin": PIN}}, version=2)
    with pytest.raises(
        FlagScaleError, match=r"^backends/backends.yaml: at version: 2 1 was expected"
    ):
        load_workspace(root)


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    root = workspace_with(tmp_path, "version: 1\nbackends:\n  X: [\n    source\n")
    with pytest.raises(FlagScaleError, match=r"^backends/backends.yaml:5: not valid YAML: "):
        load_workspace(root)


def test_a_declaration_that_is_not_text_is_refused(tmp_path: Path) -> None:
    root = workspace_with(tmp_path, b"\xff\xfe\x00")
    with pytest.raises(FlagScaleError, match=r"^backends/backends.yaml: not UTF-8 text$"):
        load_workspace(root)


def test_submodule_declared_but_absent_from_gitmodules(tmp_path: Path) -> None:
    root, _ = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    declare_backends(
        root, {"Up": {"source": {"kind": "submodule"}}, "Other": {"source": {"kind": "submodule"}}}
    )
    with pytest.raises(FlagScaleError) as failure:
        load_workspace(root)
    assert str(failure.value) == (
        "backends/backends.yaml: backend 'Other' is a submodule but .gitmodules has no entry with"
        " path third_party/Other (run `git submodule add -f <url> third_party/Other`)"
    )


def test_submodule_without_a_gitlink_has_no_pin(tmp_path: Path) -> None:
    root, upstreams = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    workspace = load_workspace(root)
    assert isinstance(workspace.backend("Up").source, SubmoduleSource)
    assert workspace.pin(workspace.backend("Up")) == run_git(upstreams["Up"], "rev-parse", "HEAD")
    run_git(root, "rm", "-q", "--cached", "third_party/Up")
    with pytest.raises(
        FlagScaleError, match=r"third_party/Up is not a submodule in .*: no gitlink"
    ):
        workspace.pin(workspace.backend("Up"))


# --- hints that add a submodule work when pasted, with FlagScale's own .gitignore ---------------


def _with_the_project_gitignore(root: Path) -> None:
    shutil.copyfile(TOOL_ROOT / ".gitignore", root / ".gitignore")
    commit_all(root, "FlagScale's .gitignore")


def _pasted(root: Path, hint: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command between backticks in ``hint`` in a shell at ``root``."""
    command = hint.split("`")[1]
    if url is not None:
        command = command.replace("<url>", url)
    return subprocess.run(
        ["sh", "-c", command], cwd=root, capture_output=True, text=True, check=False
    )


def test_the_missing_gitmodules_entry_hint_adds_the_submodule_when_pasted(tmp_path: Path) -> None:
    root, _ = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    _with_the_project_gitignore(root)
    other = tmp_path / "upstreams" / "Other"
    make_repo(other, {"o.txt": "o\n"})
    declare_backends(
        root, {"Up": {"source": {"kind": "submodule"}}, "Other": {"source": {"kind": "submodule"}}}
    )
    with pytest.raises(FlagScaleError) as failure:
        load_workspace(root)
    result = _pasted(root, str(failure.value), other.as_uri())
    assert result.returncode == 0, result.stderr
    workspace = load_workspace(root)
    assert workspace.pin(workspace.backend("Other")) == run_git(other, "rev-parse", "HEAD")


def test_the_missing_gitlink_hint_names_the_url_and_works_when_pasted(tmp_path: Path) -> None:
    root, upstreams = make_workspace(tmp_path, {"Up": {"a.txt": "a\n"}})
    _with_the_project_gitignore(root)
    run_git(root, "rm", "-q", "--cached", "third_party/Up")
    workspace = load_workspace(root)
    with pytest.raises(FlagScaleError) as failure:
        workspace.pin(workspace.backend("Up"))
    hint = str(failure.value)
    assert f"`git submodule add -f {upstreams['Up'].as_uri()} third_party/Up`" in hint
    result = _pasted(root, hint)
    assert result.returncode == 0, result.stderr
    assert workspace.pin(workspace.backend("Up")) == run_git(upstreams["Up"], "rev-parse", "HEAD")


def test_every_submodule_add_in_the_docs_passes_f() -> None:
    printed = [
        (path.name, line)
        for path in sorted((TOOL_ROOT / "docs").glob("*.md")) + [TOOL_ROOT / "README.md"]
        for line in path.read_text(encoding="utf-8").splitlines()
        if "git submodule add " in line
    ]
    assert printed
    assert [p for p in printed if "git submodule add -f " not in p[1]] == []
