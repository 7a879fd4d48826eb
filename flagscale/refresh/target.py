"""Where the pin moves to: a published version (release backends) or a commit (submodules).

Moving the pin only adds to ``third_party/<backend>``: a release is imported as a new commit
beside the old one (``flagscale.upstream.release_import``), a submodule commit is fetched. The
checkout's work tree, index and ``HEAD`` stay as they are; a ref the move had to create is
named so that ``inv refresh --abort`` can remove it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git, git_ok
from flagscale.upstream.release_import import install_release, release_ref
from flagscale.upstream.sync import ensure_checkout
from flagscale.upstream.workspace import Backend, ReleaseSource, Workspace

__all__ = [
    "PinMove",
    "commit_of",
    "describe_pin",
    "move_pin",
    "source_from_json",
    "source_to_json",
]

_FETCHED = "refs/flagscale/refresh-fetch"


@dataclass(frozen=True)
class PinMove:
    """A backend's pin before and after, in ids and in words."""

    backend: str
    kind: str  # release | submodule
    old_pin: str
    new_pin: str
    old_label: str
    new_label: str
    source: ReleaseSource | None = None  # the new release (release backends)
    created_ref: str | None = None  # made in third_party/<backend> by this move

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "kind": self.kind,
            "old_pin": self.old_pin,
            "new_pin": self.new_pin,
            "old_label": self.old_label,
            "new_label": self.new_label,
            "source": source_to_json(self.source) if self.source else None,
            "created_ref": self.created_ref,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PinMove:
        source = source_from_json(data["source"]) if data.get("source") else None
        return cls(
            backend=data["backend"],
            kind=data["kind"],
            old_pin=data["old_pin"],
            new_pin=data["new_pin"],
            old_label=data["old_label"],
            new_label=data["new_label"],
            source=source,
            created_ref=data.get("created_ref"),
        )

    @property
    def step(self) -> str:
        """The move in words: ``megatron-core 0.16.1 -> 0.16.0``."""
        name = self.source.package if self.source else self.backend
        return f"{name} {self.old_label} -> {self.new_label}"


def source_to_json(source: ReleaseSource) -> dict[str, Any]:
    return {
        "package": source.package,
        "version": source.version,
        "filename": source.filename,
        "sha256": source.sha256,
        "strip_prefix": source.strip_prefix,
        "url": source.url,
    }


def source_from_json(data: dict[str, Any]) -> ReleaseSource:
    return ReleaseSource(
        package=data["package"],
        version=data["version"],
        filename=data["filename"],
        sha256=data["sha256"],
        strip_prefix=data.get("strip_prefix"),
        url=data.get("url"),
    )


def move_pin(ws: Workspace, backend: Backend, to: str) -> PinMove:
    """Bring the new pin into ``third_party/<backend>`` (work tree untouched); describe the move."""
    if not to or to.startswith("-"):
        raise FlagScaleError(f"--to {to!r}: give a version or a commit", hint="e.g. --to 0.16.0")
    checkout = ensure_checkout(ws, backend)
    old_pin = ws.pin(backend)
    if isinstance(backend.source, ReleaseSource):
        return _move_release(ws, backend, backend.source, old_pin, to)
    new_pin = commit_of(ws, backend, to)
    return PinMove(
        backend=backend.name,
        kind="submodule",
        old_pin=old_pin,
        new_pin=new_pin,
        old_label=describe_pin(checkout, old_pin),
        new_label=describe_pin(checkout, new_pin),
    )


def describe_pin(checkout: Any, pin: str) -> str:
    """A commit in words: its short id (and ``git describe``'s tag name when there is one)."""
    described = (
        git(["describe", "--tags", "--exact-match", pin], checkout, check=False)
        .decode("utf-8", "replace")
        .strip()
    )
    return f"{pin[:12]} ({described})" if described else pin[:12]


def _move_release(
    ws: Workspace, backend: Backend, current: ReleaseSource, old_pin: str, to: str
) -> PinMove:
    from flagscale.refresh.registry import release_source

    checkout = ws.path(backend.checkout)
    source = current if to == current.version else release_source(current.package, to)
    ref = release_ref(source)
    existed = git_ok(["show-ref", "--verify", "--quiet", ref], checkout)
    new_pin = install_release(
        source, checkout, workspace_root=ws.root, pin=None, label=backend.name
    )
    return PinMove(
        backend=backend.name,
        kind="release",
        old_pin=old_pin,
        new_pin=new_pin,
        old_label=current.version,
        new_label=source.version,
        source=source,
        created_ref=None if existed else ref,
    )


def commit_of(ws: Workspace, backend: Backend, to: str) -> str:
    """The commit ``to`` names in the checkout, fetched from its remote when it is not there.

    ``to`` may be a commit id (short ones too), a branch or a tag of the remote. Fetches go
    into a private namespace that is removed afterwards: the checkout's own refs do not change.
    """
    checkout = ws.path(backend.checkout)
    found = commit_id(checkout, to)
    if found is not None:
        return found
    remote = "origin" if git_ok(["remote", "get-url", "origin"], checkout) else None
    if remote is not None:
        fetch = ["fetch", "--quiet", "--no-write-fetch-head", remote]
        try:
            if git_ok([*fetch, f"+{to}:{_FETCHED}/named"], checkout):
                found = commit_id(checkout, f"{_FETCHED}/named")
            if found is None and git_ok(
                [*fetch, f"+refs/heads/*:{_FETCHED}/heads/*", f"+refs/tags/*:{_FETCHED}/tags/*"],
                checkout,
            ):
                found = next(
                    filter(
                        None,
                        (
                            commit_id(checkout, name)
                            for name in (to, f"{_FETCHED}/heads/{to}", f"{_FETCHED}/tags/{to}")
                        ),
                    ),
                    None,
                )
        finally:
            _drop_fetched(checkout)
    if found is None:
        raise FlagScaleError(
            f"--to {to}: no commit or ref {to!r} in {backend.checkout} or its remote",
            hint=f"check the name, or fetch it: `git -C {backend.checkout} fetch origin {to}`",
        )
    return found


def _drop_fetched(checkout: Path) -> None:
    listed = git(["for-each-ref", "--format=%(refname)", f"{_FETCHED}/"], checkout, check=False)
    for ref in listed.decode().split():
        git(["update-ref", "-d", ref], checkout, check=False)
