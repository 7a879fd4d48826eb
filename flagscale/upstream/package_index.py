"""Finding a release archive through the package sources pip is configured with.

A release backend names its archive (``filename``) and its sha256 in backends/backends.yaml,
never where it lies. The archive is looked up the way pip finds files, with pip's own settings
(``python -m pip config list``: /etc/pip.conf, /etc/xdg/pip, the user's and the site's
pip.conf, ``PIP_CONFIG_FILE`` and every ``PIP_*`` variable): first the ``find-links``
locations, then ``index-url`` (pip's default, PyPI, when unset) and each ``extra-index-url``
through the simple repository API (PEP 503 HTML pages, or PEP 691 JSON when the index offers
it); ``no-index`` leaves the indexes out. ``cert``, ``client-cert``, ``trusted-host``,
``proxy`` and ``timeout`` apply as in pip; credentials come from the URL or ``~/.netrc``.

Nothing is built or run: the archive is downloaded as a file, unlike ``pip download``, which
prepares an sdist's metadata (and so installs its build dependencies, torch for vllm). Only a
file with the declared sha256 is accepted, so a mirror or an air-gapped site works by pip
configuration alone, and no address needs to be trusted.
"""

from __future__ import annotations

import base64
import json
import netrc
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit, urlunsplit

from flagscale.core.errors import FlagScaleError
from flagscale.core.pip_config import TRUE, pip_settings
from flagscale.core.transfer import Meter, content_length, copy_stream

__all__ = ["PYPI", "Link", "PipSources", "download", "fetch_from_index", "links", "pip_sources"]

PYPI = "https://pypi.org/simple"  # pip's own default index-url
_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2,"
    " text/html;q=0.01"
)
_JSON = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class PipSources:
    """Where pip looks for files, and how it talks to those places."""

    find_links: tuple[str, ...] = ()
    index_urls: tuple[str, ...] = (PYPI,)
    cert: str | None = None
    client_cert: str | None = None
    trusted_hosts: tuple[str, ...] = ()
    proxy: str | None = None
    timeout: float = 15.0

    def credentials(self, url: str) -> tuple[str, str] | None:
        """User and password for ``url``: from the URL, else from a configured index or
        find-links URL on the same host (as pip reuses them), else from ``~/.netrc``."""
        target = urlsplit(url)
        for candidate in (url, *self.index_urls, *self.find_links):
            parts = urlsplit(candidate)
            if (
                parts.username is not None
                and parts.netloc.rpartition("@")[2] == (target.netloc.rpartition("@")[2])
            ):
                return unquote(parts.username), unquote(parts.password or "")
        if target.hostname:
            try:
                found = netrc.netrc().authenticators(target.hostname)
            except (OSError, netrc.NetrcParseError):
                found = None
            if found:
                return found[0] or "", found[2] or ""
        return None

    def described(self) -> str:
        places = [*self.find_links, *self.index_urls]
        return (
            ", ".join(_without_credentials(p) for p in places) or "none (no-index, no find-links)"
        )


@dataclass(frozen=True)
class Link:
    """A file an index or find-links page offers: its address and the sha256 it advertises."""

    url: str
    sha256: str | None
    origin: str  # the page or folder it was found in


def sources_from(settings: dict[str, str]) -> PipSources:
    """The places and transport settings pip's ``settings`` describe."""
    no_index = settings.get("no-index", "").strip().lower() in TRUE
    index = settings.get("index-url", "").strip() or PYPI
    extra = settings.get("extra-index-url", "").split()
    try:
        timeout = float(settings.get("timeout", "") or 15.0)
    except ValueError:
        timeout = 15.0
    return PipSources(
        find_links=tuple(settings.get("find-links", "").split()),
        index_urls=() if no_index else tuple(dict.fromkeys([index, *extra])),
        cert=settings.get("cert") or None,
        client_cert=settings.get("client-cert") or None,
        trusted_hosts=tuple(settings.get("trusted-host", "").split()),
        proxy=settings.get("proxy") or None,
        timeout=timeout,
    )


def pip_sources(python: str = sys.executable) -> PipSources:
    """Where ``pip download`` run by ``python`` looks for files, and how it reaches them."""
    return sources_from(pip_settings("download", python))


def normalized(name: str) -> str:
    """A project's name as the simple API spells it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- reading pages and files ---------------------------------------------------------------------


class _Unreachable(Exception):
    """A source could not be read; the reason ends up in the error if nothing is found."""


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _request(url: str, accept: str | None, sources: PipSources) -> urllib.request.Request:
    headers = {"User-Agent": "flagscale-build (release import)"}
    if accept:
        headers["Accept"] = accept
    found = sources.credentials(url)
    if found is not None:
        token = f"{found[0]}:{found[1]}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
    return urllib.request.Request(_without_credentials(url), headers=headers)


def _opener(sources: PipSources, url: str) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=sources.cert) if sources.cert else None
    host = urlsplit(url).hostname or ""
    if host in sources.trusted_hosts:
        context = ssl.create_default_context()  # pip's trusted-host: no certificate check
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if context is None:
        context = ssl.create_default_context()
    if sources.client_cert:
        context.load_cert_chain(sources.client_cert)
    handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
    if sources.proxy:
        handlers.append(
            urllib.request.ProxyHandler({"http": sources.proxy, "https": sources.proxy})
        )
    return urllib.request.build_opener(*handlers)


def _local_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if not parts.scheme or (len(parts.scheme) == 1 and os.name == "nt"):
        return Path(url).expanduser()
    return None


def _read_page(url: str, sources: PipSources) -> tuple[bytes, str, str] | None:
    """(body, content type, final URL) of a page; None when it does not exist (404, no file)."""
    local = _local_path(url)
    if local is not None:
        page = local / "index.html" if local.is_dir() else local
        try:
            return page.read_bytes(), "text/html", page.as_uri()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Unreachable(f"{page}: {exc.strerror or exc}") from exc
    try:
        with _opener(sources, url).open(
            _request(url, _ACCEPT, sources), timeout=sources.timeout
        ) as reply:
            kind = reply.headers.get_content_type()
            return reply.read(), kind, reply.geturl()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return None
        raise _Unreachable(f"{_without_credentials(url)}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Unreachable(f"{_without_credentials(url)}: {reason}") from exc


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"] or "")
        elif tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]


def _page_links(body: bytes, kind: str, page_url: str, origin: str) -> Iterator[Link]:
    """Every file a simple-API page (PEP 691 JSON or PEP 503 HTML) offers."""
    if kind == _JSON:
        try:
            files = json.loads(body.decode("utf-8")).get("files", [])
        except (ValueError, AttributeError):
            return
        for entry in files:
            if isinstance(entry, dict) and isinstance(entry.get("url"), str):
                hashes = entry.get("hashes") or {}
                digest = hashes.get("sha256") if isinstance(hashes, dict) else None
                yield Link(urljoin(page_url, entry["url"]), digest, origin)
        return
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    base = urljoin(page_url, parser.base) if parser.base else page_url
    for href in parser.hrefs:
        url, fragment = urldefrag(urljoin(base, href))
        name, _, value = fragment.partition("=")
        yield Link(url, value.lower() if name == "sha256" and value else None, origin)


def _file_name(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def links(sources: PipSources, package: str, filename: str, problems: list[str]) -> Iterator[Link]:
    """Links to ``filename`` in every source, in pip's order; unreadable sources go to
    ``problems``. Lazy: a later source is read only when an earlier one did not serve."""
    for location in sources.find_links:
        local = _local_path(location)
        if local is not None and local.is_dir():
            if (local / filename).is_file():
                yield Link((local / filename).resolve().as_uri(), None, location)
            continue
        yield from _links_on_page(location, location, sources, filename, problems)
    project = normalized(package)
    for index in sources.index_urls:
        page = index.rstrip("/") + f"/{project}/"
        yield from _links_on_page(page, index, sources, filename, problems)


def _links_on_page(
    url: str, origin: str, sources: PipSources, filename: str, problems: list[str]
) -> Iterator[Link]:
    try:
        page = _read_page(url, sources)
    except _Unreachable as exc:
        problems.append(str(exc))
        return
    if page is None:
        return
    body, kind, final = page
    for link in _page_links(body, kind, final, _without_credentials(origin)):
        if _file_name(link.url) == filename:
            yield link


def download(link: Link, target: Path, sources: PipSources, meter: Meter | None = None) -> str:
    """Copy the file ``link`` names to ``target``; return its sha256."""
    local = _local_path(link.url)
    try:
        if local is not None:
            with local.open("rb") as source, target.open("wb") as out:
                return copy_stream(source, out, total=local.stat().st_size, meter=meter)
        request = _request(link.url, None, sources)
        opener = _opener(sources, link.url)
        with opener.open(request, timeout=sources.timeout) as reply, target.open("wb") as out:
            return copy_stream(reply, out, total=content_length(reply.headers), meter=meter)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise _Unreachable(f"{_without_credentials(link.url)}: {reason}") from exc


def fetch_from_index(
    package: str,
    version: str,
    filename: str,
    expected: str,
    folder: Path,
    cache: Path,
    meter: Meter | None = None,
) -> tuple[Path, str]:
    """Download ``filename`` with sha256 ``expected`` from pip's sources into ``folder``.

    Returns (path, the address it came from). A file with another sha256 is not taken; the
    next source is tried. ``cache`` is where the user may put the file by hand instead.
    """
    sources = pip_sources()
    problems: list[str] = []
    target = folder / filename
    for link in links(sources, package, filename, problems):
        shown = _without_credentials(link.url)
        if link.sha256 and link.sha256 != expected:
            problems.append(f"{shown} is listed with sha256 {link.sha256}")
            continue
        try:
            actual = download(link, target, sources, meter)
        except _Unreachable as exc:
            problems.append(str(exc))
            continue
        if actual == expected:
            return target, shown
        problems.append(f"{shown} has sha256 {actual}")
        target.unlink(missing_ok=True)
    found = f"; {'; '.join(problems)}" if problems else ""
    raise FlagScaleError(
        f"{filename} ({package} {version}) with sha256 {expected} was not found in the package"
        f" sources pip is configured with ({sources.described()}){found}",
        hint="check `python -m pip config list` (index-url, extra-index-url, find-links), or put"
        f" {filename} into {cache}",
    )
