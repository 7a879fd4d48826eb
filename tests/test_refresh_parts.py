"""The refresh's parts on their own: reading git patches, editing the declaration in place."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flagscale.core.errors import FlagScaleError
from flagscale.core.patch_names import unquote_path
from flagscale.refresh.declaration import with_release
from flagscale.refresh.merge3 import Labels, has_markers, merge_bytes
from flagscale.refresh.patchfile import parse_patch
from flagscale.trust.hunks import parse_patch as parse_hunks
from flagscale.upstream.workspace import ReleaseSource
from tests.gitrepos import Exec, Link, make_repo, run_git, write_files


def git_patch(tmp: Path, *args: str) -> bytes:
    """Every kind of change, as ``git diff --binary --full-index`` (plus ``args``) writes it."""
    repo = tmp / "repo"
    make_repo(
        repo,
        {
            "plain.py": "".join(f"line {i}\n" for i in range(1, 40)),
            "données du modèle.txt": "poids\n",
            "space name.txt": "a\n",
            "gone.txt": "bye\n",
            "blob.bin": bytes(range(256)),
            "tool.sh": "#!/bin/sh\n",
            "moved.txt": "".join(f"moved {i}\n" for i in range(30)),
        },
    )
    text = "".join(f"line {i}\n" for i in range(1, 40))
    write_files(
        repo,
        {
            "plain.py": text.replace("line 3\n", "three\n").replace("line 30\n", "thirty\n"),
            "données du modèle.txt": "poids 2\n",
            "space name.txt": "b\n",
            "blob.bin": bytes(range(255, -1, -1)),
            "tool.sh": Exec(b"#!/bin/sh\n"),
            "new dir/ü.txt": "new\n",
            "link": Link("plain.py"),
            "renamed.txt": "".join(f"moved {i}\n" for i in range(30)),
        },
    )
    (repo / "gone.txt").unlink()
    (repo / "moved.txt").unlink()
    run_git(repo, "add", "-A")
    command = ["git", "diff", "--cached", "--binary", "--full-index", *args]
    return subprocess.run(command, cwd=repo, capture_output=True, check=True).stdout


def test_a_patch_reads_into_sections_that_join_back_byte_for_byte(tmp_path: Path) -> None:
    patch = git_patch(tmp_path, "--no-renames")
    sections = parse_patch(patch)
    assert b"".join(s.text for s in sections) == patch
    found = {s.path: s for s in sections}
    assert sorted(found) == sorted(
        [
            "blob.bin",
            "données du modèle.txt",
            "gone.txt",
            "link",
            "moved.txt",
            "new dir/ü.txt",
            "plain.py",
            "renamed.txt",
            "space name.txt",
            "tool.sh",
        ]
    )
    assert found["blob.bin"].binary and not found["blob.bin"].hunks
    assert found["gone.txt"].new_path is None and found["new dir/ü.txt"].old_path is None
    assert found["tool.sh"].hunks == () and found["tool.sh"].paths == ("tool.sh",)
    plain = found["plain.py"]
    assert [(h.old_start, h.old_count) for h in plain.hunks] == [(1, 6), (27, 7)]
    assert plain.hunk_patch(1) == plain.header + plain.hunks[1].text
    assert plain.hunks[1].old_range == (27, 33)


def test_renames_in_a_foreign_patch_name_both_paths(tmp_path: Path) -> None:
    sections = parse_patch(git_patch(tmp_path, "-M"))
    renamed = next(s for s in sections if s.new_path == "renamed.txt")
    assert renamed.old_path == "moved.txt" and renamed.paths == ("moved.txt", "renamed.txt")
    # trust's hunk reader takes the names from the same place (flagscale.core.patch_names)
    files = parse_hunks(git_patch(tmp_path / "again", "-M"))
    assert [(f.old_path, f.new_path) for f in files] == [(s.old_path, s.new_path) for s in sections]


def test_quoted_names_and_bad_input() -> None:
    assert unquote_path('"a/donn\\303\\251es \\"x\\".txt"') == 'a/données "x".txt'
    assert unquote_path("plain/name.py") == "plain/name.py"
    assert parse_patch(b"") == []
    with pytest.raises(FlagScaleError, match="not a git patch"):
        parse_patch(b"hello\ndiff --git a/x b/x\n", "x.patch")
    with pytest.raises(FlagScaleError, match="malformed hunk header"):
        parse_patch(b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ nonsense\n", "x.patch")


DECLARATION = """# top comment
version: 1
backends:
  Megatron-LM:   # the core
    description: x
    source:
      kind: release
      package: megatron-core
      version: "0.16.1"   # quoted, as the guide says
      filename: megatron_core-0.16.1.tar.gz
      sha256: 86522feacfa5ef384a6ac627e7d88cf4866811aed3bc9b6c2a85cbf15cff91a3
      strip_prefix: megatron_core-0.16.1
    pin: "42ac4fb328465d336c9535a67512b667c760d1ac"

  vllm:
    optional: true
    source:
      kind: release
      package: vllm
      version: "0.33.0"
      filename: vllm-0.33.0.tar.gz
      sha256: f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112
      url: https://files.example/vllm-0.33.0.tar.gz
    pin: "9a3015987afaae8314a1c5d285ebb219ce40c830"
"""


def source(version: str, prefix: str | None = None) -> ReleaseSource:
    return ReleaseSource(
        package="megatron-core",
        version=version,
        filename=f"megatron_core-{version}.tar.gz",
        sha256="a" * 64,
        strip_prefix=prefix,
    )


def test_the_declaration_is_edited_in_place_and_back() -> None:
    moved = with_release(
        DECLARATION, "Megatron-LM", source("0.16.0", "megatron_core-0.16.0"), "1" * 40
    )
    assert moved.notes == ()
    changed = [
        (a, b)
        for a, b in zip(DECLARATION.splitlines(), moved.text.splitlines(), strict=True)
        if a != b
    ]
    assert changed == [
        (
            '      version: "0.16.1"   # quoted, as the guide says',
            '      version: "0.16.0"   # quoted, as the guide says',
        ),
        (
            "      filename: megatron_core-0.16.1.tar.gz",
            "      filename: megatron_core-0.16.0.tar.gz",
        ),
        (
            "      sha256: 86522feacfa5ef384a6ac627e7d88cf4866811aed3bc9b6c2a85cbf15cff91a3",
            "      sha256: " + "a" * 64,
        ),
        ("      strip_prefix: megatron_core-0.16.1", "      strip_prefix: megatron_core-0.16.0"),
        ('    pin: "42ac4fb328465d336c9535a67512b667c760d1ac"', f'    pin: "{"1" * 40}"'),
    ]
    back = ReleaseSource(
        package="megatron-core",
        version="0.16.1",
        filename="megatron_core-0.16.1.tar.gz",
        sha256="86522feacfa5ef384a6ac627e7d88cf4866811aed3bc9b6c2a85cbf15cff91a3",
        strip_prefix="megatron_core-0.16.1",
    )
    assert (
        with_release(
            moved.text, "Megatron-LM", back, "42ac4fb328465d336c9535a67512b667c760d1ac"
        ).text
        == DECLARATION
    )


def test_a_url_of_the_old_archive_goes_and_a_missing_key_is_added() -> None:
    vllm = ReleaseSource("vllm", "0.34.0", "vllm-0.34.0.tar.gz", "b" * 64, "vllm-0.34.0")
    moved = with_release(DECLARATION, "vllm", vllm, "2" * 40)
    assert "url:" not in moved.text
    assert moved.notes == (
        "removed the url of the old archive (https://files.example/vllm-0.33.0.tar.gz); pip finds"
        " the new one",
    )
    assert "      strip_prefix: vllm-0.34.0\n    pin:" in moved.text
    assert 'version: "0.34.0"' in moved.text and "0.10" not in moved.text
    ten = with_release(DECLARATION, "Megatron-LM", source("0.10"), "3" * 40).text
    assert 'version: "0.10"' in ten and "strip_prefix" not in ten.split("vllm")[0]
    with pytest.raises(FlagScaleError, match="no 'Nope'"):
        with_release(DECLARATION, "Nope", source("1.0"), "4" * 40)


def test_merges_mark_conflicts_with_the_labels_and_find_leftovers() -> None:
    labels = Labels(ours="new", base="old", theirs="vendor")
    clean = merge_bytes(b"a\nB\nc\nd\n", b"a\nb\nc\nd\n", b"a\nb\nc\nD\n", labels)
    assert clean.conflicts == 0 and clean.data == b"a\nB\nc\nD\n"
    clash = merge_bytes(b"a\nB\nc\n", b"a\nb\nc\n", b"a\nX\nc\n", labels)
    assert clash.conflicts == 1
    assert clash.data == b"a\n<<<<<<< new\nB\n||||||| old\nb\n=======\nX\n>>>>>>> vendor\nc\n"
    assert has_markers(clash.data, labels) == 2
    assert has_markers(b"a\n=======\nb\n", labels) == 0  # an rst underline is not a marker
    assert has_markers(b"x\r\n>>>>>>> vendor\r\n", labels) == 2
