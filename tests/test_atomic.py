"""Writing files all or nothing (flagscale/core/atomic.py), on real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flagscale.core.atomic import temporary_sibling, write_atomically
from flagscale.core.errors import FlagScaleError


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_new_file_and_its_folders_with_exactly_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    previous = os.umask(0o077)
    try:
        assert write_atomically(target, b"{}\n") == target
        write_atomically(tmp_path / "secret", b"s", mode=0o600)
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"{}\n"
    assert mode_of(target) == 0o644
    assert mode_of(tmp_path / "secret") == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_replaces_a_file_or_a_symlink_without_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(outside)
    write_atomically(link, b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert outside.read_bytes() == b"keep"
    write_atomically(outside, b"newer")
    assert outside.read_bytes() == b"newer"


def test_failure_leaves_the_target_as_it_was_and_no_sibling(tmp_path: Path) -> None:
    target = tmp_path / "folder"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(FlagScaleError, match=r"cannot write .*folder: it is a folder"):
        write_atomically(target, b"data")
    assert (target / "inside").is_dir()
    assert not temporary_sibling(target).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"safe")
    target = tmp_path / "file"
    temporary_sibling(target).symlink_to(victim)
    with pytest.raises(FlagScaleError, match=r"cannot write .*/file: Too many levels"):
        write_atomically(target, b"data")
    assert victim.read_bytes() == b"safe"
    assert not target.exists()


def test_temporary_sibling_is_hidden_and_names_this_process(tmp_path: Path) -> None:
    assert temporary_sibling(tmp_path / "x.json") == tmp_path / f".x.json.tmp-{os.getpid()}"
