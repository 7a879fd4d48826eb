"""Published releases of a package, through the package index pip is configured with.

Versions come from ``pip index versions`` and archives from ``pip download``, so the site's own
pip configuration (index, mirror, proxy, certificates) decides where they come from; no host is
written anywhere. A downloaded source archive is checked by its sha256 into the release cache
(``flagscale.upstream.release_import``), so importing it afterwards needs no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.version import InvalidVersion, Version

from flagscale.core.atomic import write_atomically
from flagscale.core.cachedir import cache_dir
from flagscale.core.errors import FlagScaleError
from flagscale.upstream.archive import read_archive
from flagscale.upstream.release_import import cache_path, sha256_of
from flagscale.upstream.workspace import ReleaseSource

__all__ = ["published_versions", "release_source", "version_key", "versions_between"]

_SUFFIXES = (".tar.gz", ".tgz", ".zip")


def version_key(text: str) -> Version:
    """A version as PEP 440 orders it; an error naming it when it is not one."""
    try:
        return Version(text)
    except InvalidVersion:
        raise FlagScaleError(
            f"{text!r} is not a version number", hint="give a published version, e.g. 0.16.0"
        ) from None


def published_versions(package: str) -> list[str]:
    """Every version of ``package`` the configured index lists, oldest first."""
    command = [sys.executable, "-m", "pip", "index", "versions", package]
    command += ["--disable-pip-version-check", "--pre"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    listed = [
        line.split(":", 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith("Available versions:")
    ]
    if result.returncode != 0 or not listed:
        reason = _last_line(result.stderr) or "no versions listed"
        raise FlagScaleError(
            f"pip index versions {package} failed: {reason}",
            hint="check the package index pip uses (`pip config list`)",
        )
    versions = [v.strip() for v in listed[0].split(",") if v.strip()]
    return sorted(versions, key=version_key)


def versions_between(package: str, good: str, bad: str, *, pre: bool = False) -> list[str]:
    """The published versions from ``good`` to ``bad`` (both included), in that direction.

    Pre-releases (``rc``, ``dev`` builds) count only with ``pre`` (as for ``pip install --pre``),
    or when ``good`` or ``bad`` is one.
    """
    versions = published_versions(package)
    for name, value in (("--good", good), ("--bad", bad)):
        if value not in versions:
            raise FlagScaleError(
                f"{name} {value}: {package} has no published version {value}",
                hint=f"published: {', '.join(versions[-8:])}",
            )
    low, high = sorted((version_key(good), version_key(bad)))
    chosen = [
        v
        for v in versions
        if low <= version_key(v) <= high
        and (pre or not version_key(v).is_prerelease or v in (good, bad))
    ]
    return chosen if version_key(good) <= version_key(bad) else chosen[::-1]


def release_source(package: str, version: str) -> ReleaseSource:
    """The source release of ``package`` ``version``, its archive checked into the cache.

    The first time, pip downloads it and the file name, sha256 and top folder are read from the
    archive itself; they are remembered beside the cache, so asking again needs no network.
    """
    remembered = _remembered(package, version)
    if remembered is not None:
        return remembered
    incoming = cache_dir() / "releases"
    incoming.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=incoming) as folder:
        archive = _pip_download(package, version, Path(folder))
        source = ReleaseSource(
            package=package,
            version=version,
            filename=archive.name,
            sha256=sha256_of(archive),
            strip_prefix=_top_folder(archive),
        )
        cached = cache_path(source)
        cached.parent.mkdir(parents=True, exist_ok=True)
        if not cached.is_file() or sha256_of(cached) != source.sha256:
            os.replace(archive, cached)
    _remember(source)
    return source


def _pip_download(package: str, version: str, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", package]
    command += ["--disable-pip-version-check", f"{package}=={version}", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    saved = [p for p in folder.iterdir() if p.name.endswith(_SUFFIXES)]
    if result.returncode != 0 or len(saved) != 1:
        reason = _last_line(result.stderr) or f"saved {len(saved)} source archives"
        raise FlagScaleError(
            f"pip download {package}=={version} (source archive) failed: {reason}",
            hint=f"check that {package} {version} exists and publishes a source archive"
            f" (`pip index versions {package}`)",
        )
    return saved[0]


def _memo(package: str, version: str) -> Path:
    return cache_dir() / "releases" / "versions" / package / f"{version}.json"


def _remembered(package: str, version: str) -> ReleaseSource | None:
    try:
        data = json.loads(_memo(package, version).read_text(encoding="utf-8"))
        source = ReleaseSource(
            package=package,
            version=version,
            filename=str(data["filename"]),
            sha256=str(data["sha256"]),
            strip_prefix=data.get("strip_prefix"),
        )
        cached = cache_path(source)
    except (OSError, ValueError, KeyError, TypeError, FlagScaleError):
        return None
    return source if cached.is_file() and sha256_of(cached) == source.sha256 else None


def _remember(source: ReleaseSource) -> None:
    data = {
        "filename": source.filename,
        "sha256": source.sha256,
        "strip_prefix": source.strip_prefix,
    }
    text = json.dumps(data, sort_keys=True) + "\n"
    write_atomically(_memo(source.package, source.version), text.encode("utf-8"))


def _top_folder(archive: Path) -> str | None:
    """The one folder every member of the archive sits in, if there is one."""
    entries = read_archive(archive, None)
    tops = {entry.path.split("/", 1)[0] for entry in entries}
    if len(tops) == 1 and all("/" in entry.path for entry in entries):
        return tops.pop()
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or [""])[-1]
