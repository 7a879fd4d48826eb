"""Release archives found through the package sources pip is configured with: real PEP 503 and
PEP 691 indexes served from temporary folders (``file://`` and a loopback HTTP server), pip's
own configuration files and variables, and the sha256 recorded in the declaration."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.upstream.release_import import cache_path, fetch_artifact, import_release
from flagscale.upstream.workspace import ReleaseSource
from tests.gitrepos import TOOL_ROOT, declare_backends, inv, make_repo, run_git
from tests.releases import SAMPLE, make_tar, release_entry, source_for

PIP_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX")


@pytest.fixture(autouse=True)
def pip_configured_by_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pip configuration of this machine applies; each test sets what it means to test."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in PIP_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def archive_and_source(tmp_path: Path) -> tuple[Path, ReleaseSource]:
    """demo_pkg-1.0.tar.gz: plain files, no build backend (pip could not prepare its metadata)."""
    archive = make_tar(tmp_path / "dist" / "demo_pkg-1.0.tar.gz", SAMPLE)
    return archive, replace(source_for(archive), url=None)


def make_index(
    root: Path, archive: Path, *, project: str = "demo-pkg", listed_sha256: str | None = None
) -> Path:
    """A PEP 503 index in ``root``: ``simple/<project>/index.html`` (and a PEP 691
    ``index.json``) linking ``../../files/<archive>#sha256=...``."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, files / archive.name)
    digest = listed_sha256 or hashlib.sha256(archive.read_bytes()).hexdigest()
    page = root / "simple" / project
    page.mkdir(parents=True, exist_ok=True)
    href = f"../../files/{archive.name}#sha256={digest}"
    (page / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{href}">{archive.name}</a></body></html>\n'
    )
    document = {
        "meta": {"api-version": "1.0"},
        "name": project,
        "files": [
            {"filename": archive.name, "url": f"../../files/{archive.name}", "hashes": {}}
            | ({"hashes": {"sha256": digest}})
        ],
    }
    (page / "index.json").write_text(json.dumps(document))
    (root / "simple" / "index.html").write_text(f'<a href="{project}/">{project}</a>\n')
    return root / "simple"


@dataclass
class Server:
    """A loopback HTTP server over a folder; ``json_only`` serves PEP 691 pages only."""

    root: Path
    json_only: bool = False
    credentials: str | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def serve() -> Iterator:
    started: list[http.server.ThreadingHTTPServer] = []

    def start(server: Server) -> Server:
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(server.root), **kwargs)

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append({"path": self.path, **dict(self.headers)})
                if server.credentials is not None:
                    expected = "Basic " + base64.b64encode(server.credentials.encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        self.send_error(401)
                        return
                folder = Path(self.translate_path(self.path))
                if self.path.endswith("/") and folder.is_dir() and server.json_only:
                    wanted = self.headers.get("Accept", "")
                    if "application/vnd.pypi.simple.v1+json" not in wanted:
                        self.send_error(406)
                        return
                    body = (folder / "index.json").read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                super().do_GET()

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        return server

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


# --- where the archive comes from -------------------------------------------------------------


def test_an_sdist_pip_cannot_prepare_comes_from_the_index_url(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    make_index(tmp_path / "index", archive)
    server = serve(Server(tmp_path / "index"))
    monkeypatch.setenv("PIP_INDEX_URL", f"{server.url}/simple")
    commit = import_release(source, tmp_path / "repo")
    assert (tmp_path / "repo" / "src" / "demo" / "__init__.py").read_text() == "VALUE = 1\n"
    assert cache_path(source).read_bytes() == archive.read_bytes()
    assert [r["path"] for r in server.requests] == [
        "/simple/demo-pkg/",
        "/files/demo_pkg-1.0.tar.gz",
    ]
    assert "application/vnd.pypi.simple.v1+json" in server.requests[0]["Accept"]
    assert import_release(source, tmp_path / "again") == commit  # from the cache now
    assert len(server.requests) == 2


def test_a_pep_691_json_index_is_read(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    make_index(tmp_path / "index", archive, project="demo-pkg")
    server = serve(Server(tmp_path / "index", json_only=True))
    monkeypatch.setenv("PIP_INDEX_URL", f"{server.url}/simple/")
    assert fetch_artifact(source).read_bytes() == archive.read_bytes()


def test_the_project_name_is_normalized_as_pep_503_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    simple = make_index(tmp_path / "index", archive, project="demo-pkg")
    monkeypatch.setenv("PIP_INDEX_URL", simple.as_uri())
    fetched = fetch_artifact(replace(source, package="Demo_.Pkg"))
    assert fetched.read_bytes() == archive.read_bytes()


def test_an_extra_index_serves_what_the_main_index_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    (tmp_path / "empty" / "simple").mkdir(parents=True)
    extra = make_index(tmp_path / "index", archive)
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "empty" / "simple").as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", f"{(tmp_path / 'other').as_uri()} {extra.as_uri()}")
    assert fetch_artifact(source).read_bytes() == archive.read_bytes()


def test_a_pip_configuration_file_is_honoured(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    make_index(tmp_path / "index", archive)
    server = serve(Server(tmp_path / "index"))
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nindex-url = {server.url}/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    assert fetch_artifact(source).read_bytes() == archive.read_bytes()
    assert server.requests


def test_a_find_links_folder_with_no_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, source = archive_and_source(tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(archive.parent))
    assert fetch_artifact(source).read_bytes() == archive.read_bytes()


def test_index_credentials_are_sent_and_never_shown(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    make_index(tmp_path / "index", archive)
    server = serve(Server(tmp_path / "index", credentials="reader:s3cret"))
    address = server.url.replace("http://", "http://reader:s3cret@")
    monkeypatch.setenv("PIP_INDEX_URL", f"{address}/simple")
    assert fetch_artifact(source).read_bytes() == archive.read_bytes()
    wrong = replace(source, sha256="0" * 64)
    with pytest.raises(FlagScaleError) as failure:
        fetch_artifact(wrong)
    assert "s3cret" not in str(failure.value)
    assert f"{server.url}/simple" in str(failure.value)


# --- what is refused ---------------------------------------------------------------------------


def test_a_file_listed_with_another_sha256_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    simple = make_index(tmp_path / "index", archive, listed_sha256="1" * 64)
    monkeypatch.setenv("PIP_INDEX_URL", simple.as_uri())
    with pytest.raises(FlagScaleError) as failure:
        fetch_artifact(source)
    message = str(failure.value)
    assert (
        f"demo_pkg-1.0.tar.gz (demo-pkg 1.0) with sha256 {source.sha256} was not found" in message
    )
    assert f"is listed with sha256 {'1' * 64}" in message
    assert not cache_path(source).exists()


def test_a_served_file_with_another_sha256_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    other = make_tar(tmp_path / "other" / archive.name, SAMPLE[:2])
    simple = make_index(tmp_path / "index", other)
    monkeypatch.setenv("PIP_INDEX_URL", simple.as_uri())
    with pytest.raises(FlagScaleError) as failure:
        fetch_artifact(source)
    actual = hashlib.sha256(other.read_bytes()).hexdigest()
    assert f"is listed with sha256 {actual}" in str(failure.value)
    assert not cache_path(source).exists()


def test_nothing_found_names_every_source_and_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _archive, source = archive_and_source(tmp_path)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
    (tmp_path / "links").mkdir()
    with pytest.raises(FlagScaleError) as failure:
        fetch_artifact(source)
    message = str(failure.value)
    assert f"configured with ({tmp_path / 'links'}, http://127.0.0.1:9/simple)" in message
    assert "http://127.0.0.1:9/simple/demo-pkg/: " in message  # why that one could not be read
    assert "check `python -m pip config list`" in message
    assert str(cache_path(source).parent) in message


# --- the command and the committed declaration -------------------------------------------------


def test_import_release_task_finds_the_archive_in_the_index(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, source = archive_and_source(tmp_path)
    make_index(tmp_path / "index", archive)
    server = serve(Server(tmp_path / "index"))
    monkeypatch.setenv("PIP_INDEX_URL", f"{server.url}/simple")
    root = tmp_path / "ws"
    make_repo(root, {"README.md": "ws\n", "backends/.keep": ""})
    declare_backends(root, {"demo": release_entry(source, "0" * 40)})
    result = inv(root, "import-release", "--backend", "demo")
    commit = run_git(root / "third_party" / "demo", "rev-parse", "HEAD")
    assert f'pin: "{commit}"' in result.stdout
    size = archive.stat().st_size
    assert f"getting {archive.name}: 0 B of {size} B (0%)" in result.stderr
    assert f"getting {archive.name}: {size} B of {size} B (100%)" in result.stderr


def test_the_committed_declaration_names_no_host() -> None:
    text = (TOOL_ROOT / "backends" / "backends.yaml").read_text(encoding="utf-8")
    assert "://" not in text
    declared = yaml.safe_load(text)["backends"]
    assert [name for name, entry in declared.items() if "url" in entry["source"]] == []
