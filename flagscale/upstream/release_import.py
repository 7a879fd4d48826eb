"""Published source releases imported into git reproducibly (like Debian's ``gbp import-orig``).

The same artifact, checked by its sha256, always gives the same commit: its entries (read and
checked by :mod:`flagscale.upstream.archive`) are sorted by path and written by one
``git fast-import`` with a fixed identity, a fixed date and a message naming the package,
version and sha256.
Artifacts come from a cache keyed by sha256, else ``source.url`` when a user wrote one, else the
package sources pip is configured with (:mod:`flagscale.upstream.package_index`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from flagscale.core.cachedir import cache_dir
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, git_ok, git_text, is_repository
from flagscale.core.progress import Progress
from flagscale.core.transfer import CHUNK, Meter, content_length, copy_stream
from flagscale.upstream.archive import Entry, read_archive
from flagscale.upstream.package_index import fetch_from_index
from flagscale.upstream.workspace import DECLARATION, ReleaseSource, find_workspace

__all__ = [
    "IMPORT_DATE",
    "IMPORT_FORMAT",
    "IMPORT_IDENTITY",
    "RELEASE_REF_PREFIX",
    "cache_dir",
    "cache_path",
    "commit_message",
    "fetch_artifact",
    "import_declared",
    "import_release",
    "install_release",
    "release_ref",
    "sha256_of",
]

# Changing any of these, or flagscale.upstream.archive's rules, changes every pin:
# bump IMPORT_FORMAT.
IMPORT_IDENTITY = "FlagScale release import <release-import@flagscale.invalid>"
IMPORT_DATE = "0 +0000"  # the Unix epoch, UTC: a release's own dates would vary between mirrors
IMPORT_FORMAT = 1
RELEASE_REF_PREFIX = "refs/flagscale/releases/"

# --- the cache and getting the artifact -------------------------------------------------------


def cache_path(source: ReleaseSource) -> Path:
    """Where the artifact lives in the cache, keyed by its sha256."""
    _check_source(source)
    return cache_dir() / "releases" / source.sha256 / source.filename


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_artifact(
    source: ReleaseSource, *, workspace_root: Path | None = None, meter: Meter | None = None
) -> Path:
    """The verified artifact in the cache: from the cache, else ``source.url``, else pip's sources.

    A relative ``source.url`` is read from ``workspace_root`` (default: the current folder).
    The file enters the cache only after its sha256 matched, by a rename. ``meter`` is told
    how much of a download has arrived.
    """
    cached = cache_path(source)
    if cached.is_file() and sha256_of(cached) == source.sha256:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=cached.parent) as folder:
        incoming, origin, digest = _acquire(
            source, Path(folder), workspace_root or Path.cwd(), meter
        )
        _verify(digest, source, origin)
        os.replace(incoming, cached)
    return cached


def _check_source(source: ReleaseSource) -> None:
    if "/" in source.filename or source.filename in ("", ".", ".."):
        raise FlagScaleError(f"release filename {source.filename!r} must be a plain file name")
    if len(source.sha256) != 64 or any(c not in "0123456789abcdef" for c in source.sha256):
        raise FlagScaleError(f"release sha256 {source.sha256!r} must be 64 lower-case hex digits")


def _acquire(
    source: ReleaseSource, folder: Path, root: Path, meter: Meter | None
) -> tuple[Path, str, str]:
    """(the file, where it came from, its sha256 as it was copied)."""
    target = folder / source.filename
    if source.url:
        return target, source.url, _download_url(source.url, target, root, meter)
    path, origin = fetch_from_index(
        source.package,
        source.version,
        source.filename,
        source.sha256,
        folder,
        cache_path(source).parent,
        meter,
    )
    return path, origin, source.sha256  # fetch_from_index takes only a file with that sha256


def _download_url(url: str, target: Path, root: Path, meter: Meter | None) -> str:
    """Copy what ``url`` names to ``target``; return its sha256."""
    scheme = urlsplit(url).scheme
    if scheme == "https":
        return _copy_https(url, target, meter)
    if scheme == "file":
        return _copy_file(Path(urllib.request.url2pathname(urlsplit(url).path)), target, url, meter)
    if not scheme:
        return _copy_file(root / url, target, url, meter)
    raise FlagScaleError(
        f"release url {url!r}: unsupported scheme {scheme!r}",
        hint="use https://, file:// or a path relative to the workspace root",
    )


def _copy_https(url: str, target: Path, meter: Meter | None) -> str:
    try:
        with urllib.request.urlopen(url, timeout=120) as response, target.open("wb") as out:
            return copy_stream(response, out, total=content_length(response.headers), meter=meter)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FlagScaleError(
            f"cannot download {url}: {reason}",
            hint=f"check the address, or put {target.name} into the cache ({cache_dir()})",
        ) from exc


def _copy_file(path: Path, target: Path, url: str, meter: Meter | None) -> str:
    try:
        with path.open("rb") as source, target.open("wb") as out:
            return copy_stream(source, out, total=path.stat().st_size, meter=meter)
    except OSError as exc:
        raise FlagScaleError(
            f"cannot read release archive {url} ({path}): {exc.strerror or exc}",
            hint="fix source.url in " + DECLARATION,
        ) from exc


def _verify(actual: str, source: ReleaseSource, origin: str) -> None:
    if actual != source.sha256:
        raise FlagScaleError(
            f"{source.filename} from {origin}: sha256 mismatch: expected {source.sha256},"
            f" got {actual}",
            hint="the file is not the declared release: check source.url or your package mirror;"
            f" if the release was re-published on purpose, update sha256 and pin in {DECLARATION}"
            " (`inv import-release --backend <name>` prints the new pin)",
        )


# --- writing the commit -----------------------------------------------------------------------


def release_ref(source: ReleaseSource) -> str:
    """The ref an import writes: ``refs/flagscale/releases/<version>``."""
    return RELEASE_REF_PREFIX + source.version


def commit_message(source: ReleaseSource) -> str:
    """The import commit's message: package, version, artifact and its sha256."""
    lines = [
        f"Import {source.package} {source.version} from {source.filename}",
        "",
        f"Package: {source.package}",
        f"Version: {source.version}",
        f"Sha256: {source.sha256}",
    ]
    if source.strip_prefix:
        lines.append(f"Strip-prefix: {source.strip_prefix}")
    lines.append(f"Import-format: {IMPORT_FORMAT} (FlagScale release importer)")
    return "\n".join(lines) + "\n"


def _fast_import_stream(entries: list[Entry], ref: str, message: str) -> bytes:
    header = (
        f"reset {ref}\ncommit {ref}\n"
        f"author {IMPORT_IDENTITY} {IMPORT_DATE}\ncommitter {IMPORT_IDENTITY} {IMPORT_DATE}\n"
    )
    chunks = [header.encode(), _data(message.encode())]
    for entry in entries:
        chunks += [f"M {entry.mode} inline ".encode(), _quote(entry.path), b"\n", _data(entry.data)]
    chunks.append(b"\ndone\n")
    return b"".join(chunks)


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _quote(path: str) -> bytes:
    """A C-style quoted path for fast-import (safe for spaces, quotes and any byte)."""
    out = bytearray(b'"')
    for byte in path.encode("utf-8", "surrogateescape"):
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


def _prepare_repository(repo: Path) -> bool:
    """Make sure ``repo`` is a git repository; True when it was created (fresh) here."""
    if is_repository(repo):
        return False
    if repo.exists() and (not repo.is_dir() or any(repo.iterdir())):
        raise FlagScaleError(
            f"{repo} exists but is not a git repository",
            hint="move it elsewhere (nothing in it was changed) and rerun",
        )
    repo.mkdir(parents=True, exist_ok=True)
    git(["init", "--quiet", "--object-format=sha1", "."], repo)
    return True


def import_release(
    source: ReleaseSource,
    repo: Path,
    *,
    workspace_root: Path | None = None,
    archive: Path | None = None,
) -> str:
    """Import the release into ``repo`` (``git init`` if missing) and return its commit id.

    ``archive`` is the verified artifact when the caller fetched it already. Writes
    ``refs/flagscale/releases/<version>``. A fresh repository is checked out at the commit,
    detached; an existing one gains the commit and keeps its work tree as it is.
    """
    if not git_ok(["check-ref-format", release_ref(source)], Path(tempfile.gettempdir())):
        raise FlagScaleError(f"release version {source.version!r} cannot name a git ref")
    if archive is None:
        archive = fetch_artifact(source, workspace_root=workspace_root)
    entries = read_archive(archive, source.strip_prefix)
    fresh = _prepare_repository(repo)
    ref = release_ref(source)
    stream = _fast_import_stream(entries, ref, commit_message(source))
    git(["fast-import", "--quiet", "--force", "--done"], repo, stdin=stream)
    commit = git_text(["rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}"], repo)
    if fresh:
        git(["checkout", "--quiet", "--detach", commit], repo)
    return commit


def install_release(
    source: ReleaseSource, checkout: Path, *, workspace_root: Path, pin: str | None, label: str
) -> str:
    """Import into ``checkout``: an existing repository only gains the commit; a missing one is
    built in a sibling folder, checked out at the commit and renamed into place.

    With ``pin``, a different commit is an error and a fresh checkout is not kept.
    """
    progress = Progress(label, total=2)
    getting = f"getting {source.filename}"
    progress.step(getting)
    archive = fetch_artifact(
        source,
        workspace_root=workspace_root,
        meter=lambda done, total: progress.transfer(getting, done, total),
    )
    progress.step(f"importing {source.filename} into {checkout}")
    if is_repository(checkout):
        commit = import_release(source, checkout, archive=archive)
        _check_pin(commit, source, pin, label)
    else:
        commit = _import_beside(source, checkout, archive, pin, label)
    progress.finish(f"{source.package} {source.version} is commit {commit}")
    return commit


def _import_beside(
    source: ReleaseSource, checkout: Path, archive: Path, pin: str | None, label: str
) -> str:
    _prepare_parent(checkout)
    building = Path(tempfile.mkdtemp(prefix=f".{checkout.name}.import-", dir=checkout.parent))
    try:
        commit = import_release(source, building, archive=archive)
        _check_pin(commit, source, pin, label)
        _move_into_place(building, checkout)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return commit


def _move_into_place(building: Path, checkout: Path) -> None:
    try:
        if checkout.is_dir():
            checkout.rmdir()  # _prepare_parent let only an empty folder through
        os.rename(building, checkout)
    except OSError as exc:
        raise FlagScaleError(
            f"{checkout} was filled by something else during the import: {exc.strerror or exc}",
            hint="another command may be syncing it; wait for it and rerun",
        ) from exc


def _prepare_parent(checkout: Path) -> None:
    if checkout.exists() and (not checkout.is_dir() or any(checkout.iterdir())):
        raise FlagScaleError(
            f"{checkout} exists but is not a git repository",
            hint="move it elsewhere (nothing in it was changed) and rerun",
        )
    checkout.parent.mkdir(parents=True, exist_ok=True)


def _check_pin(commit: str, source: ReleaseSource, pin: str | None, label: str) -> None:
    if pin is not None and commit != pin:
        raise FlagScaleError(
            f"{label}: importing {source.filename} (sha256 {source.sha256}) gives commit"
            f" {commit}, but {DECLARATION} pins {pin}",
            hint="the pin was not updated after a change to version, sha256 or strip_prefix;"
            f" run `inv import-release --backend {label}` and record the commit it prints as pin",
        )


def import_declared(name: str, start: Path | None = None) -> str:
    """Import a declared release backend into its checkout; return lines telling the pin."""
    workspace = find_workspace(start)
    backend = workspace.backend(name)
    if not isinstance(backend.source, ReleaseSource):
        raise FlagScaleError(
            f"{name} is a submodule in {DECLARATION}, not a release",
            hint="its pin is the submodule's gitlink; move it with `git -C <path> checkout`",
        )
    checkout = workspace.path(backend.checkout)
    commit = install_release(
        backend.source, checkout, workspace_root=workspace.root, pin=None, label=name
    )
    lines = [f"{name}: {backend.source.filename} imported as {commit}", f'pin: "{commit}"']
    if backend.declared_pin != commit:
        lines.append(f"{DECLARATION} pins {backend.declared_pin} for {name}: record the pin above")
    return "\n".join(lines)
