"""Importing source releases into git: reproducible commits, the cache, pip, and bad archives."""

from __future__ import annotations

import base64
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from flagscale.core.errors import FlagScaleError
from flagscale.upstream.archive import read_archive
from flagscale.upstream.release_import import (
    IMPORT_FORMAT,
    cache_path,
    fetch_artifact,
    import_release,
    install_release,
    release_ref,
)
from flagscale.upstream.workspace import ReleaseSource, load_workspace
from tests.gitrepos import TOOL_ROOT, declare_backends, inv, make_repo, run_git, snapshot
from tests.releases import (
    SAMPLE,
    Member,
    make_tar,
    make_zip,
    release_entry,
    sha256_file,
    source_for,
)

# A fixed 204-byte .tar.gz (golden-1.0/README, bin/run executable, link -> README). Its commit
# is part of the import format: if this test fails, every declared pin changes (bump
# IMPORT_FORMAT and recompute the pins in backends/backends.yaml).
GOLDEN = base64.b64decode(
    "H4sIAAAAAAAC/+3WvQqDMBiF4cxehaVz6xdNmrlQxy69g/6ISkVB6/03uJQ6uGmhvs+SEAIZDidJ3lSPrN7pvURqLuI5a4fR"
    "G4/DXBsbG+fEDOt+d6JCqxbQd69r649U65R/8r+kx9M5nSn/gzET+bvv/LWYRFQo5L9Q/oHC6vt/K+uo7esf3P9xMuq/Fkv/"
    "F7HdDLl3RZDdiyb0+XMXrLT/VVk/Z/v/Tb//Mu5/IlqF8Ww/EvoPAAAAAAAAAAAA4P+8AQsoD3QAKAAA"
)
GOLDEN_SHA256 = "2c8690e7c328f22d3a55392a8f8a747ac8dd71dbb96445cc175db00ddaf41142"
GOLDEN_COMMIT = "1abcf1fa47a28bb480612c339a854a4cdc2c2c4a"


def sample_source(
    tmp_path: Path, members: list[Member] = SAMPLE, name: str = "demo_pkg-1.0.tar.gz"
) -> ReleaseSource:
    maker = make_zip if name.endswith(".zip") else make_tar
    return source_for(maker(tmp_path / "dist" / name, members))


def tree_of(repo: Path, commit: str) -> str:
    return run_git(repo, "rev-parse", f"{commit}^{{tree}}")


# --- reproducible commits ---------------------------------------------------------------------


def test_same_artifact_gives_the_same_commit_in_two_repositories(tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    first = import_release(source, tmp_path / "one")
    second = import_release(source, tmp_path / "two")
    assert first == second
    assert run_git(tmp_path / "one", "rev-parse", release_ref(source)) == first
    assert release_ref(source) == "refs/flagscale/releases/1.0"


def test_fresh_import_checks_out_the_files_detached(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commit = import_release(sample_source(tmp_path), repo)
    assert run_git(repo, "rev-parse", "HEAD") == commit
    assert run_git(repo, "status", "--porcelain") == ""
    files = snapshot(repo)
    assert files["README.md"] == ("file", b"demo\n")
    assert files["tools/run.sh"] == ("exec", b"#!/bin/sh\necho run\n")
    assert files["docs/latest"] == ("link", b"../README.md")
    assert files["name with space ü.txt"] == ("file", b"unicode\r\n")
    assert files['"quoted".txt'] == ("file", b"quotes\n")
    assert files["data/blob.bin"] == ("file", bytes(range(256)) * 4)
    modes = run_git(repo, "ls-tree", "-r", "--format=%(objectmode) %(path)", "HEAD")
    assert "100755 tools/run.sh" in modes.splitlines()
    assert "120000 docs/latest" in modes.splitlines()


def test_head_is_detached_after_a_fresh_import(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    import_release(sample_source(tmp_path), repo)
    assert run_git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"


def test_commit_has_fixed_identity_date_and_a_message_naming_the_artifact(tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    repo = tmp_path / "repo"
    commit = import_release(source, repo)
    fields = run_git(repo, "log", "-1", "--format=%an <%ae>%n%at%n%cn%n%ct%n%P", commit)
    assert fields.splitlines() == [
        "FlagScale release import <release-import@flagscale.invalid>",
        "0",
        "FlagScale release import",
        "0",
    ]
    message = run_git(repo, "log", "-1", "--format=%B", commit)
    assert message.splitlines()[0] == "Import demo-pkg 1.0 from demo_pkg-1.0.tar.gz"
    assert f"Sha256: {source.sha256}" in message
    assert f"Import-format: {IMPORT_FORMAT} " in message
    assert "Strip-prefix: demo_pkg-1.0" in message


def test_golden_artifact_gives_the_recorded_commit(tmp_path: Path) -> None:
    archive = tmp_path / "golden-1.0.tar.gz"
    archive.write_bytes(GOLDEN)
    assert sha256_file(archive) == GOLDEN_SHA256
    source = source_for(archive, package="golden", version="1.0", strip_prefix="golden-1.0")
    assert import_release(source, tmp_path / "repo") == GOLDEN_COMMIT


def test_tar_mtimes_owners_permissions_and_order_do_not_change_the_tree(tmp_path: Path) -> None:
    original = sample_source(tmp_path)
    shuffled = [
        replace(m, mtime=m.mtime + 12345, owner="someone-else", mode=m.mode | 0o020)
        for m in reversed(SAMPLE)
    ]
    other = source_for(make_tar(tmp_path / "other" / "demo_pkg-1.0.tar.gz", shuffled))
    assert other.sha256 != original.sha256
    first = import_release(original, tmp_path / "one")
    second = import_release(other, tmp_path / "two")
    # Same tree; the commits differ only because the message records each artifact's sha256.
    assert tree_of(tmp_path / "one", first) == tree_of(tmp_path / "two", second)
    assert first != second


def test_zip_and_tar_of_the_same_files_give_the_same_tree(tmp_path: Path) -> None:
    from_tar = import_release(sample_source(tmp_path), tmp_path / "tar")
    from_zip = import_release(sample_source(tmp_path, name="demo_pkg-1.0.zip"), tmp_path / "zip")
    assert tree_of(tmp_path / "tar", from_tar) == tree_of(tmp_path / "zip", from_zip)


def test_archive_without_strip_prefix_keeps_the_top_folder(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "dist" / "demo_pkg-1.0.tar.gz", SAMPLE)
    repo = tmp_path / "repo"
    import_release(source_for(archive, strip_prefix=None), repo)
    assert (repo / "demo_pkg-1.0" / "README.md").read_bytes() == b"demo\n"


def test_leading_dot_slash_members_are_accepted(tmp_path: Path) -> None:
    members = [Member("./", kind="dir"), Member("./demo_pkg-1.0/a.txt", b"a\n")]
    repo = tmp_path / "repo"
    import_release(sample_source(tmp_path, members), repo)
    assert (repo / "a.txt").read_bytes() == b"a\n"


# --- importing into an existing repository (a pin bump) ---------------------------------------


def test_import_into_an_existing_repository_leaves_its_work_tree_alone(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    old = import_release(sample_source(tmp_path), repo)
    (repo / "README.md").write_text("local edit\n")
    bumped = [*SAMPLE, Member("demo_pkg-1.0/NEW.txt", b"new\n")]
    archive = make_tar(tmp_path / "v2" / "demo_pkg-1.0.tar.gz", bumped)
    new = import_release(source_for(archive, version="2.0"), repo)
    assert new != old
    assert run_git(repo, "rev-parse", "HEAD") == old
    assert (repo / "README.md").read_text() == "local edit\n"
    assert not (repo / "NEW.txt").exists()
    assert run_git(repo, "rev-parse", "refs/flagscale/releases/2.0") == new
    assert run_git(repo, "show", f"{new}:NEW.txt") == "new"


def test_reimporting_the_same_version_is_idempotent(tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    repo = tmp_path / "repo"
    assert import_release(source, repo) == import_release(source, repo)
    assert run_git(repo, "rev-list", "--count", release_ref(source)) == "1"


def test_import_into_a_folder_that_is_not_a_repository_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "occupied"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me\n")
    with pytest.raises(FlagScaleError, match=r"occupied exists but is not a git repository"):
        import_release(sample_source(tmp_path), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]


def test_install_release_refuses_a_commit_other_than_the_pin(tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    checkout = tmp_path / "third_party" / "demo"
    wrong = "1" * 40
    with pytest.raises(FlagScaleError) as failure:
        install_release(source, checkout, workspace_root=tmp_path, pin=wrong, label="demo")
    message = str(failure.value)
    assert f"backends/backends.yaml pins {wrong}" in message
    assert "gives commit " in message and "inv import-release --backend demo" in message
    assert not checkout.exists()
    assert list((tmp_path / "third_party").iterdir()) == []  # no half-built folder left


# --- getting the artifact: url, cache, pip ----------------------------------------------------


def test_second_import_comes_from_the_cache(tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    first = import_release(source, tmp_path / "one")
    assert cache_path(source).read_bytes() == Path(source.url[len("file://") :]).read_bytes()
    shutil.rmtree(tmp_path / "dist")  # the url no longer leads anywhere
    assert import_release(source, tmp_path / "two") == first


def test_cache_lives_under_flagscale_cache(tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    expected = Path(os.environ["FLAGSCALE_CACHE"]) / "releases" / source.sha256 / source.filename
    assert cache_path(source) == expected
    assert fetch_artifact(source) == expected
    assert not list(expected.parent.glob(".incoming-*"))


def test_a_corrupt_cache_entry_is_replaced(tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    cache_path(source).parent.mkdir(parents=True)
    cache_path(source).write_bytes(b"truncated download")
    assert sha256_file(fetch_artifact(source)) == source.sha256


def test_relative_url_is_read_from_the_workspace_root(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "vendor" / "demo_pkg-1.0.tar.gz", SAMPLE)
    source = source_for(archive, url="vendor/demo_pkg-1.0.tar.gz")
    assert fetch_artifact(source, workspace_root=tmp_path).read_bytes() == archive.read_bytes()


def test_sha256_mismatch_names_the_file_both_digests_and_what_to_do(tmp_path: Path) -> None:
    source = sample_source(tmp_path)
    declared = "0" * 64
    wrong = replace(source, sha256=declared)
    with pytest.raises(FlagScaleError) as failure:
        fetch_artifact(wrong)
    message = str(failure.value)
    assert f"demo_pkg-1.0.tar.gz from {source.url}: sha256 mismatch" in message
    assert f"expected {declared}, got {source.sha256}" in message
    assert "update sha256 and pin in backends/backends.yaml" in message
    assert not cache_path(wrong).exists()


def test_missing_file_url_is_reported(tmp_path: Path) -> None:
    source = source_for(make_tar(tmp_path / "x" / "demo_pkg-1.0.tar.gz", SAMPLE))
    gone = replace(source, url=(tmp_path / "nowhere.tar.gz").as_uri())
    with pytest.raises(FlagScaleError, match=r"cannot read release archive file://.*nowhere"):
        fetch_artifact(gone)


def test_unsupported_url_scheme_is_reported(tmp_path: Path) -> None:
    source = replace(sample_source(tmp_path), url="ftp://example.invalid/demo.tar.gz")
    with pytest.raises(FlagScaleError, match=r"unsupported scheme 'ftp'.*use https://, file://"):
        fetch_artifact(source)


def test_unreachable_https_url_is_reported(tmp_path: Path) -> None:
    source = replace(sample_source(tmp_path), url="https://127.0.0.1:9/demo_pkg-1.0.tar.gz")
    with pytest.raises(FlagScaleError, match=r"cannot download https://127.0.0.1:9/.*cache"):
        fetch_artifact(source)


def _offline_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pip "index" that is a local folder of sdists; pip is told not to use any other."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def _buildable_sdist(links: Path) -> Path:
    """demo_pkg-1.0.tar.gz with an in-tree build backend, so pip needs no download to read it."""
    backend = (
        "import os\n"
        "def prepare_metadata_for_build_wheel(directory, config_settings=None):\n"
        "    info = os.path.join(directory, 'demo_pkg-1.0.dist-info')\n"
        "    os.makedirs(info)\n"
        "    with open(os.path.join(info, 'METADATA'), 'w') as f:\n"
        "        f.write('Metadata-Version: 2.1\\nName: demo-pkg\\nVersion: 1.0\\n')\n"
        "    return 'demo_pkg-1.0.dist-info'\n"
    )
    pyproject = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    members = [
        Member("demo_pkg-1.0/PKG-INFO", b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n"),
        Member("demo_pkg-1.0/pyproject.toml", pyproject.encode()),
        Member("demo_pkg-1.0/backend.py", backend.encode()),
    ]
    return make_tar(links / "demo_pkg-1.0.tar.gz", members)


def test_without_url_pip_downloads_the_sdist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _buildable_sdist(_offline_index(tmp_path, monkeypatch))
    source = replace(source_for(archive), url=None)
    repo = tmp_path / "repo"
    import_release(source, repo)
    assert (repo / "backend.py").is_file()
    assert cache_path(source).read_bytes() == archive.read_bytes()


def test_pip_failure_names_the_requirement_and_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline_index(tmp_path, monkeypatch)
    source = replace(sample_source(tmp_path), url=None)
    with pytest.raises(FlagScaleError) as failure:
        fetch_artifact(source)
    message = str(failure.value)
    assert "pip download demo-pkg==1.0 failed: ERROR: No matching distribution" in message
    assert "set source.url" in message and str(cache_path(source).parent) in message


def test_pip_saving_another_file_name_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _buildable_sdist(_offline_index(tmp_path, monkeypatch))
    source = replace(source_for(archive), url=None, filename="demo_pkg-1.0.zip")
    with pytest.raises(FlagScaleError, match=r"saved demo_pkg-1.0.tar.gz, not demo_pkg-1.0.zip"):
        fetch_artifact(source)


# --- archives that are refused ----------------------------------------------------------------

BAD_MEMBERS = [
    (Member("/etc/passwd", b"x"), r"entry '/etc/passwd' is unsafe: absolute paths are not allowed"),
    (
        Member("demo_pkg-1.0/../evil", b"x"),
        r"entry 'demo_pkg-1.0/../evil' is unsafe: '\.\.' leads outside",
    ),
    (Member("../evil", b"x"), r"entry '../evil' is unsafe: '\.\.' leads outside"),
    (
        Member("demo_pkg-1.0/hard", kind="hardlink", link="demo_pkg-1.0/README.md"),
        r"entry 'demo_pkg-1.0/hard' is a hardlink to 'demo_pkg-1.0/README.md'",
    ),
    (Member("demo_pkg-1.0/tty", kind="chr"), r"entry 'demo_pkg-1.0/tty' is a character device"),
    (Member("demo_pkg-1.0/pipe", kind="fifo"), r"entry 'demo_pkg-1.0/pipe' is a FIFO"),
    (
        Member("demo_pkg-1.0/abs", kind="symlink", link="/etc/passwd"),
        r"entry 'abs' is a symlink to '/etc/passwd' that must be a relative path",
    ),
    (
        Member("demo_pkg-1.0/sub/up", kind="symlink", link="../../outside"),
        r"entry 'sub/up' is a symlink to '../../outside' that leads outside its tree",
    ),
    (Member("other-1.0/README", b"x"), r"entry 'other-1.0/README' is not under strip_prefix"),
    (
        Member("demo_pkg-1.0/.git/config", b"x"),
        r"entry 'demo_pkg-1.0/.git/config' is unsafe: '\.git' is not part of a tree",
    ),
    (Member("demo_pkg-1.0/README.md", b"again"), r"entry 'demo_pkg-1.0/README.md' appears twice"),
    (
        Member("demo_pkg-1.0/README.md/inner", b"x"),
        r"entry 'README.md/inner' needs folder 'README.md', which is a file or symlink",
    ),
]


@pytest.mark.parametrize(("bad", "expected"), BAD_MEMBERS, ids=lambda v: getattr(v, "name", ""))
def test_bad_tar_members_are_refused(tmp_path: Path, bad: Member, expected: str) -> None:
    source = sample_source(tmp_path, [*SAMPLE, bad])
    with pytest.raises(FlagScaleError, match=expected) as failure:
        import_release(source, tmp_path / "repo")
    assert str(failure.value).startswith("demo_pkg-1.0.tar.gz: ")
    assert not (tmp_path / "repo").exists()


def test_symlink_chain_leading_outside_is_refused(tmp_path: Path) -> None:
    members = [
        *SAMPLE,
        Member("demo_pkg-1.0/d/l", kind="symlink", link=".."),  # the top of the tree: fine
        Member("demo_pkg-1.0/e", kind="symlink", link="d/l/.."),  # through d/l: outside
    ]
    with pytest.raises(FlagScaleError, match=r"entry 'e' is a symlink to 'd/l/\.\.' that"):
        import_release(sample_source(tmp_path, members), tmp_path / "repo")


def test_symlinks_inside_the_tree_are_kept(tmp_path: Path) -> None:
    members = [
        *SAMPLE,
        Member("demo_pkg-1.0/d/l", kind="symlink", link=".."),
        Member("demo_pkg-1.0/e", kind="symlink", link="d/l/README.md"),
        Member("demo_pkg-1.0/dangling", kind="symlink", link="not-there"),
    ]
    entries = {
        e.path: e for e in read_archive(make_tar(tmp_path / "a.tar.gz", members), "demo_pkg-1.0")
    }
    assert entries["e"].mode == "120000" and entries["e"].data == b"d/l/README.md"
    assert entries["dangling"].data == b"not-there"


def test_bad_zip_members_are_refused(tmp_path: Path) -> None:
    escaping = [*SAMPLE, Member("demo_pkg-1.0/up", kind="symlink", link="../../x")]
    with pytest.raises(FlagScaleError, match=r"demo_pkg-1.0.zip: entry 'up' is a symlink"):
        import_release(sample_source(tmp_path, escaping, "demo_pkg-1.0.zip"), tmp_path / "r1")
    fifo = [*SAMPLE, Member("demo_pkg-1.0/pipe", kind="fifo")]
    with pytest.raises(FlagScaleError, match=r"entry 'demo_pkg-1.0/pipe' is a device, FIFO"):
        import_release(sample_source(tmp_path, fifo, "demo_pkg-1.0.zip"), tmp_path / "r2")


def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    for name in ("demo_pkg-1.0.tar.gz", "demo_pkg-1.0.zip"):
        garbage = tmp_path / "dist" / name
        garbage.parent.mkdir(exist_ok=True)
        garbage.write_bytes(b"<html>not found</html>")
        with pytest.raises(FlagScaleError, match=rf"{name}: not a readable"):
            import_release(source_for(garbage), tmp_path / "repo")


def test_an_archive_without_files_is_refused(tmp_path: Path) -> None:
    empty = [Member("demo_pkg-1.0/", kind="dir"), Member("demo_pkg-1.0/empty/", kind="dir")]
    with pytest.raises(FlagScaleError, match=r"demo_pkg-1.0.tar.gz: holds no files to import"):
        import_release(sample_source(tmp_path, empty), tmp_path / "repo")


def test_a_version_that_cannot_name_a_ref_is_refused(tmp_path: Path) -> None:
    source = replace(sample_source(tmp_path), version="1.0..2")
    with pytest.raises(FlagScaleError, match=r"release version '1.0..2' cannot name a git ref"):
        import_release(source, tmp_path / "repo")


# --- the import-release task ------------------------------------------------------------------


def _release_workspace(tmp_path: Path, pin: str) -> tuple[Path, ReleaseSource]:
    archive = make_tar(tmp_path / "dist" / "demo_pkg-1.0.tar.gz", SAMPLE)
    source = source_for(archive, url="dist/demo_pkg-1.0.tar.gz")
    root = tmp_path / "ws"
    root.mkdir()
    shutil.move(tmp_path / "dist", root / "dist")
    make_repo(root, {"README.md": "ws\n", "backends/.keep": ""})
    declare_backends(root, {"demo": release_entry(source, pin)})
    return root, source


def test_import_release_task_prints_the_pin_to_record(tmp_path: Path) -> None:
    root, _ = _release_workspace(tmp_path, "0" * 40)
    result = inv(root, "import-release", "--backend", "demo")
    commit = run_git(root / "third_party" / "demo", "rev-parse", "HEAD")
    assert f'pin: "{commit}"' in result.stdout
    assert f"backends/backends.yaml pins {'0' * 40} for demo: record the pin above" in result.stdout
    load_workspace(root)  # the declaration itself was not rewritten


def test_import_release_task_refuses_submodules_and_unknown_names(tmp_path: Path) -> None:
    root, _ = _release_workspace(tmp_path, "0" * 40)
    unknown = inv(root, "import-release", "--backend", "nope", check=False)
    assert unknown.returncode == 1
    assert "error: unknown backend 'nope': backends/backends.yaml declares demo" in unknown.stderr


def test_import_release_task_outside_a_workspace(tmp_path: Path) -> None:
    result = inv(tmp_path, "import-release", "--backend", "Megatron-LM", check=False)
    assert result.returncode == 1
    assert "error: not inside a FlagScale workspace" in result.stderr


# --- the real release -------------------------------------------------------------------------


@pytest.mark.slow
def test_real_megatron_core_sdist_gives_the_declared_pin(tmp_path: Path) -> None:
    """Downloads megatron-core 0.16.1's sdist with pip (needs the package index)."""
    workspace = load_workspace(TOOL_ROOT)
    backend = workspace.backend("Megatron-LM")
    assert isinstance(backend.source, ReleaseSource) and backend.source.url is None
    commit = import_release(backend.source, tmp_path / "megatron")
    assert commit == backend.declared_pin
    assert (tmp_path / "megatron" / "megatron" / "core" / "__init__.py").is_file()
