"""Bringing each upstream checkout in third_party/ to a state that holds its pin.

Only what is missing is fetched; an existing work tree is never touched here (laying the pin
and the base layer over it is the overlay's job). A fresh checkout is left at the pin, detached.

- submodule backends: ``git submodule update --init`` for a fresh checkout; a missing pin is
  fetched by its id, or with every branch and tag when the server refuses fetching by id.
- release backends: the source archive is imported by
  :mod:`flagscale.upstream.release_import`; an existing checkout only gains the new commit
  (a pin bump).
"""

from __future__ import annotations

from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import GitError, git, git_ok, git_text, is_repository
from flagscale.upstream.workspace import (
    DECLARATION,
    Backend,
    ReleaseSource,
    SubmoduleSource,
    Workspace,
    backends_at,
)

__all__ = ["ensure_checkout", "ensure_pin", "has_commit"]

_ALL_REFS = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]


def has_commit(repo: Path, commit: str) -> bool:
    """True when ``repo`` holds ``commit`` as a commit object."""
    return git_ok(["cat-file", "-e", f"{commit}^{{commit}}"], repo)


def ensure_checkout(workspace: Workspace, backend: Backend) -> Path:
    """Make ``third_party/<backend>`` a git repository that contains the backend's pin.

    Returns the checkout folder. A fresh checkout is left at the pin; an existing one keeps its
    work tree and only gains the missing commit. Nothing is downloaded when the pin is there.
    """
    checkout = workspace.path(backend.checkout)
    pin = workspace.pin(backend)
    if (checkout / ".git").exists() and has_commit(checkout, pin):
        return checkout
    if isinstance(backend.source, ReleaseSource):
        from flagscale.upstream.release_import import (
            install_release,  # downloads, archives: only when needed
        )

        install_release(
            backend.source, checkout, workspace_root=workspace.root, pin=pin, label=backend.name
        )
    else:
        _sync_submodule(workspace, backend, backend.source, pin)
    return checkout


def ensure_pin(
    workspace: Workspace, backend: Backend, pin: str, *, declared_at: str | None = None
) -> Path:
    """Make ``third_party/<backend>`` hold ``pin``, which may be an older pin than today's.

    ``declared_at`` is the FlagScale commit that recorded the pin: an older release pin is
    imported from the archive declared there; a submodule pin is fetched by its id.
    """
    checkout = ensure_checkout(workspace, backend)
    if has_commit(checkout, pin):
        return checkout
    if isinstance(backend.source, ReleaseSource):
        from flagscale.upstream.release_import import install_release

        source = _release_declared_at(workspace, backend, declared_at)
        install_release(
            source, checkout, workspace_root=workspace.root, pin=pin, label=backend.name
        )
    else:
        _fetch_pin(workspace, backend, backend.source, pin)
    return checkout


def _release_declared_at(
    workspace: Workspace, backend: Backend, declared_at: str | None
) -> ReleaseSource:
    then = backends_at(workspace.root, declared_at) if declared_at else {}
    earlier = then.get(backend.name)
    if earlier is None or not isinstance(earlier.source, ReleaseSource):
        raise FlagScaleError(
            f"{backend.name}: no release declared at FlagScale commit {declared_at} gives the"
            " pin asked for",
            hint="put that release's archive into the cache or run `inv import-release`",
        )
    return earlier.source


def _sync_submodule(
    workspace: Workspace, backend: Backend, source: SubmoduleSource, pin: str
) -> None:
    checkout = workspace.path(backend.checkout)
    if is_repository(checkout):
        _fetch_pin(workspace, backend, source, pin)
    elif (checkout / ".git").exists() or (checkout.exists() and _occupied(checkout)):
        raise _not_a_repository(backend, source)
    else:
        _init_submodule(workspace, backend, source, pin)


def _occupied(folder: Path) -> bool:
    return not folder.is_dir() or any(folder.iterdir())


def _init_submodule(
    workspace: Workspace, backend: Backend, source: SubmoduleSource, pin: str
) -> None:
    try:
        git(["submodule", "update", "--init", "--", backend.checkout], workspace.root)
    except GitError as exc:
        if is_repository(workspace.path(backend.checkout)):
            raise _pin_missing(workspace, backend, source, pin) from exc
        raise _unreachable(workspace, backend, source, exc) from exc


def _fetch_pin(workspace: Workspace, backend: Backend, source: SubmoduleSource, pin: str) -> None:
    checkout = workspace.path(backend.checkout)
    remote = "origin" if git_ok(["remote", "get-url", "origin"], checkout) else source.url
    if not git_ok(["fetch", "--quiet", remote, pin], checkout):
        try:  # the server may refuse fetching by commit id (uploadpack.allow*SHA1InWant)
            git(["fetch", "--quiet", remote, *_ALL_REFS], checkout)
        except GitError as exc:
            raise _unreachable(workspace, backend, source, exc) from exc
    if not has_commit(checkout, pin):
        raise _pin_missing(workspace, backend, source, pin)


def _remote_url(workspace: Workspace, source: SubmoduleSource) -> str:
    """The URL git really uses: the one registered in .git/config, else .gitmodules'."""
    key = f"submodule.{source.name}.url"
    registered = git_text(["config", "--get", key], workspace.root, check=False)
    return registered or source.url


def _unreachable(
    workspace: Workspace, backend: Backend, source: SubmoduleSource, exc: GitError
) -> FlagScaleError:
    url = _remote_url(workspace, source)
    reason = next((line for line in exc.stderr.splitlines() if line.startswith("fatal:")), "")
    return FlagScaleError(
        f"{backend.name}: cannot fetch from {url}: {reason or exc}",
        hint="if this site uses a mirror, point git at it with"
        f" `git config --global url.<mirror-url>.insteadOf {url}`",
    )


def _pin_missing(
    workspace: Workspace, backend: Backend, source: SubmoduleSource, pin: str
) -> FlagScaleError:
    url = _remote_url(workspace, source)
    return FlagScaleError(
        f"{backend.name}: pin {pin} (the gitlink of {backend.checkout}) does not exist in {url}",
        hint="the commit was never pushed there, or the gitlink is wrong: set it with"
        f" `git -C {backend.checkout} checkout <commit> && git add {backend.checkout}`",
    )


def _not_a_repository(backend: Backend, source: SubmoduleSource) -> FlagScaleError:
    return FlagScaleError(
        f"{backend.checkout} exists but is not a git repository",
        hint=f"move it elsewhere (nothing in it was changed) and rerun to clone {source.url};"
        f" {DECLARATION} declares {backend.name} as a submodule",
    )
