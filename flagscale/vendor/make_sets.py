"""Making vendor patch sets: turning a vendor's in-place adaptation into files under ``hardware/``.

``inv patch --device-type V_M --task ... --backend ... --commit <base>``: each backend's set is
the diff between FlagScale at ``<base>`` with its base layer applied and the work tree as the
vendor left it (``flagscale.overlay.layered_trees``); FlagScale's own files make the FlagScale
set. The sets are written and committed by ``flagscale.vendor.commit_sets``; the user's branch,
index, stash and work tree stay as they were, except that the new sets are written and committed.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flagscale import __version__
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, git_text
from flagscale.core.paths import check_links, check_relative
from flagscale.core.repository_lock import repository_lock
from flagscale.core.treelinks import tree_symlinks
from flagscale.overlay.layer_shown import refuse_layer_at_pin
from flagscale.overlay.layered_trees import (
    GITLINK,
    WORKTREE_EXCLUDES,
    changed_entries,
    diff_trees,
    filter_tree,
    flagscale_tree,
    flagscale_worktree_tree,
    layer_paths,
    layered_tree,
    pin_at,
    release_version_at,
    resolve_commit,
    scratch_git,
    scratch_repo,
    worktree_tree,
)
from flagscale.upstream.workspace import DECLARATION, FLAGSCALE, Workspace
from flagscale.vendor.commit_sets import check_filters, recover, write_and_commit
from flagscale.vendor.patchset import (
    ALGORITHM,
    HARDWARE,
    METADATA,
    TASKS,
    PatchMetadata,
    check_device_type,
    check_task,
    dump_metadata,
    encryption_name,
    parse_metadata,
    set_folder,
)
from flagscale.vendor.set_results import plain_results, seal_results

__all__ = ["PatchRequest", "check_identity", "create_patch_sets", "patch_command"]

_ABSENT = "000000"  # the mode diff-tree gives the missing side of an added or deleted file


@dataclass
class PatchRequest:
    """What ``inv patch --device-type`` asks for; missing pieces are prompted for on a terminal."""

    device_type: str
    tasks: list[str]
    backends: list[str]
    commit: str
    key_path: Path | None = None
    backend_version: str | None = None
    models: list[str] | None = None
    message: str | None = None
    contact: str | None = None
    ask: Callable[[str], str] | None = None  # default: input() when stdin is a terminal
    report: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))


def _check_tasks(tasks: Sequence[str]) -> list[str]:
    if not tasks:
        raise FlagScaleError("no --task given", hint=f"pass one or more of {', '.join(TASKS)}")
    return sorted(dict.fromkeys(check_task(name) for name in tasks))


def _check_backends(ws: Workspace, backends: Sequence[str]) -> list[str]:
    if not backends:
        raise FlagScaleError(
            "no --backend given", hint=f"name {FLAGSCALE} and/or declared upstream backends"
        )
    for name in backends:
        if name != FLAGSCALE and name not in ws.backends:
            known = ", ".join([FLAGSCALE, *sorted(ws.backends)])
            raise FlagScaleError(
                f"unknown backend {name!r}: {DECLARATION} declares {known}",
                hint="use one of those names",
            )
    return list(dict.fromkeys(backends))


def check_identity(ws: Workspace) -> None:
    """Refuse early when git could not commit for lack of a configured name and email."""
    for variable in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        result = git(["-c", "user.useConfigOnly=true", "var", variable], ws.root, check=False)
        if not result.strip():
            raise FlagScaleError(
                f"git has no identity to commit with in {ws.root}",
                hint='run `git config --global user.name "Your Name"` and '
                "`git config --global user.email you@example.com`",
            )


def _check_device_folder_clean(ws: Workspace, device: str) -> None:
    """Refuse when ``hardware/<device>/`` has uncommitted edits (they could be overwritten)."""
    folder = f"{HARDWARE}/{device}"
    status = git(["status", "--porcelain", "-z", "--untracked-files=all", "--", folder], ws.root)
    dirty = [record[3:].decode("utf-8", "replace") for record in status.split(b"\0") if record]
    if dirty:
        shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
        raise FlagScaleError(
            f"{folder}/ has uncommitted changes ({shown}): inv patch writes and commits there",
            hint="commit or stash them first",
        )


@dataclass(frozen=True)
class _Pieces:
    backend_versions: dict[str, str]  # backend → version of it the set was made for
    models: tuple[str, ...]
    message: str
    contact: str


def _ask_function(request: PatchRequest) -> Callable[[str], str] | None:
    if request.ask is not None:
        return request.ask
    try:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed stdin
        interactive = False
    return input if interactive else None


def _gather_pieces(request: PatchRequest, known: dict[str, str | None]) -> _Pieces:
    """The four pieces of seed 000: backend version(s), models, message, contact.

    ``known`` maps each backend of the request to the version the tool can tell itself (a
    release backend's declared version, FlagScale's ``git describe``), or None: those are
    taken from ``--backend-version`` or asked, one prompt per backend. A contact is asked only
    when encrypting: users of an encrypted set need someone to ask for the key.
    """
    encrypting = request.key_path is not None
    ask = _ask_function(request)
    versions = _given_versions(request.backend_version, known)
    unknown = [b for b, v in known.items() if v is None and b not in versions]
    missing = [
        flag
        for flag, value in (
            ("--backend-version", not unknown),
            ("--models", request.models),
            ("--message", request.message),
            ("--contact", request.contact if encrypting else "not needed"),
        )
        if not value
    ]
    if missing and ask is None:
        raise FlagScaleError(
            f"missing {', '.join(missing)}: stdin is not a terminal, so nothing can be asked",
            hint=f"pass {' '.join(_flag_example(flag, unknown) for flag in missing)}"
            + (" (a contact is required when encrypting)" if "--contact" in missing else ""),
        )
    for backend in unknown:
        versions[backend] = _prompt(ask, f"{backend} version (e.g. 0.16.1)", "--backend-version")
    models = (
        request.models or _prompt(ask, "Models adapted (e.g. aquila llama)", "--models").split()
    )
    message = request.message or _prompt(ask, "Commit message", "--message")
    contact = request.contact
    if contact is None and encrypting:
        contact = _prompt(ask, "Contact for the key (name <mail>)", "--contact")
    models_list = [m for value in models for m in value.replace(",", " ").split()]
    return _Pieces(
        backend_versions={
            b: (v if v is not None else versions[b]).strip() for b, v in known.items()
        },
        models=tuple(sorted(dict.fromkeys(models_list))),
        message=message.strip(),
        contact=(contact or "").strip(),
    )


def _given_versions(text: str | None, known: dict[str, str | None]) -> dict[str, str]:
    """``--backend-version``: ``NAME=VERSION`` items (comma or space separated), or one bare
    version for the one upstream backend whose version the tool cannot tell.

    A version the tool can tell (a release's, FlagScale's) may be given only as it is.
    """
    unknown = [b for b, v in known.items() if v is None]
    items = (text or "").replace(",", " ").split()
    if len(items) == 1 and "=" not in items[0]:
        upstreams = [b for b in known if b != FLAGSCALE]
        named = unknown or (upstreams if len(upstreams) == 1 else [])
        if len(named) != 1:
            raise FlagScaleError(
                f"--backend-version {items[0]}: name the backend it is for",
                hint="pass " + ",".join(f"{b}=<version>" for b in unknown or upstreams),
            )
        items = [f"{named[0]}={items[0]}"]
    versions = {}
    for item in items:
        name, _, version = item.partition("=")
        if not version or name not in known:
            raise FlagScaleError(
                f"--backend-version {item!r}: expected NAME=VERSION with NAME one of"
                f" {', '.join(unknown) or '(none: every version is known)'}",
                hint="release backends and FlagScale need no version: the tool reads it",
            )
        if known[name] not in (None, version):
            raise FlagScaleError(
                f"--backend-version {item}: {name} is {known[name]} at the base commit",
                hint=f"leave {name} out of --backend-version: its version is read, not asked",
            )
        versions[name] = version
    return versions


def _flag_example(flag: str, unknown: list[str]) -> str:
    if flag != "--backend-version" or len(unknown) == 1:
        return f"{flag} ..."
    return flag + " " + ",".join(f"{b}=..." for b in unknown)


def _known_versions(ws: Workspace, backends: list[str], base: str) -> dict[str, str | None]:
    """The version of each backend the tool can tell: FlagScale's ``git describe`` of the base,
    a release backend's declared version; None for a submodule backend (asked)."""
    known: dict[str, str | None] = {}
    for name in backends:
        if name == FLAGSCALE:
            describe = ["describe", "--tags", "--always", "--abbrev=12", base]
            known[name] = git_text(describe, ws.root)
        else:
            known[name] = release_version_at(ws, name, base)
    return known


def _prompt(
    ask: Callable[[str], str] | None, label: str, flag: str, *, required: bool = True
) -> str:
    assert ask is not None
    for _attempt in range(3):
        try:
            answer = ask(f"{label}: ").strip()
        except EOFError:
            raise FlagScaleError(
                f"no answer for {label.split(' (')[0].lower()}: the input ended",
                hint=f"pass {flag} ... on the command line",
            ) from None
        if answer or not required:
            return answer
    raise FlagScaleError(f"no answer for {label.split(' (')[0].lower()}", hint="give a value")


@dataclass(frozen=True)
class _Patch:
    backend: str
    pin: str | None
    data: bytes
    results: dict[str, str | None]  # what the set produces (flagscale.vendor.set_results)


def _flagscale_excludes(ws: Workspace) -> tuple[str, ...]:
    """What the FlagScale set leaves out: other trees, and the base layer (in its backends)."""
    layers = [path for b in ws.backends.values() for path in (b.layer, b.deletions)]
    return (*WORKTREE_EXCLUDES, DECLARATION, *layers)


@dataclass(frozen=True)
class _FlagScaleTrees:
    """FlagScale's files at the base and in the work tree (third_party/, build/, hardware/ out)."""

    base: str
    work: str


def _flagscale_patch(ws: Workspace, trees: _FlagScaleTrees) -> tuple[bytes, dict]:
    excludes = _flagscale_excludes(ws)
    old = filter_tree(ws, trees.base, excludes)
    new = filter_tree(ws, trees.work, excludes)
    return _checked_diff(ws, FLAGSCALE, old, new)


def _backend_patch(ws: Workspace, name: str, base: str) -> tuple[bytes, dict[str, str | None]]:
    work = worktree_tree(ws, name)
    refuse_layer_at_pin(
        ws.backend(name),
        layer_paths(ws, name, base, work),
        f"a patch set made now would revert them in {FLAGSCALE} at {base[:12]}",
    )
    return _checked_diff(ws, name, layered_tree(ws, name, base), work)


def _checked_diff(
    ws: Workspace, backend: str, old: str, new: str
) -> tuple[bytes, dict[str, str | None]]:
    """The patch from ``old`` to ``new`` and what it produces (path → blob id, None: deleted)."""
    _check_links(ws, backend, new)
    repo = scratch_repo(ws)
    produced: list[tuple[str, str | None]] = []
    for before, after in changed_entries(repo, old, new):
        where = f"{backend} patch"
        check_relative(after.path, where)
        if GITLINK in (before.mode, after.mode):
            raise FlagScaleError(
                f"{where}: {after.path} is a nested git repository (submodule)",
                hint="a patch set holds files only: remove it or add its files",
            )
        produced.append((after.path, None if after.mode == _ABSENT else after.oid))
    return diff_trees(repo, old, new), plain_results(produced)


def _check_links(ws: Workspace, backend: str, tree: str) -> None:
    """The tree a set would build holds no symlink leading out of it (core.paths.check_links)."""
    links = tree_symlinks(lambda args, stdin: scratch_git(ws, args, stdin=stdin), tree)
    prefix = "" if backend == FLAGSCALE else f"third_party/{backend}/"
    check_links(links, lambda path: f"{prefix}{path} (for the {backend} patch set)")


def _warn_left_out(
    ws: Workspace, base: str, trees: _FlagScaleTrees, backends: list[str], report: Callable
) -> None:
    """Say which FlagScale-side changes no selected set carries (they stay in the work tree)."""
    left_out = [
        after.path
        for _before, after in changed_entries(scratch_repo(ws), trees.base, trees.work)
        if _carrier(ws, after.path) not in backends
    ]
    if left_out:
        shown = ", ".join(left_out[:3]) + (" ..." if len(left_out) > 3 else "")
        report(
            f"warning: {len(left_out)} changed file(s) since {base[:12]} are in no patch set"
            f" made now (kept in your work tree): {shown}"
        )


def _carrier(ws: Workspace, path: str) -> str | None:
    """The set that carries a changed FlagScale-side file: its backend's, FlagScale's, or none.

    Base layer files reach a backend's set through third_party/<backend> (overlay links);
    the declaration (pins, sources) is no vendor's to change.
    """
    if path == DECLARATION:
        return None
    for backend in ws.backends.values():
        if path == backend.deletions or path.startswith(f"{backend.layer}/"):
            return backend.name
    return FLAGSCALE


def _set_files(
    ws: Workspace,
    patch: _Patch,
    pieces: _Pieces,
    request: PatchRequest,
    base: str,
    key: bytes | None,
    previous_ci: dict | None,
) -> dict[str, bytes]:
    from flagscale.vendor import crypto

    device, name = request.device_type, patch.backend
    file = f"{name}.patch"
    data = patch.data
    encryption = None
    results: dict[str, str | None] | None = patch.results
    sealed = None
    if key is not None:
        data = crypto.encrypt_file_bytes(data, key, name=encryption_name(device, name, file))
        file += crypto.ENCRYPTED_SUFFIX
        encryption = {"algorithm": ALGORITHM, "key_id": crypto.key_id(key)}
        results, sealed = None, seal_results(patch.results, key)
    metadata = PatchMetadata(
        device_type=device,
        backend=name,
        flagscale_base=base,
        backend_pin=patch.pin,
        backend_version=pieces.backend_versions[name],
        models=pieces.models,
        tasks=tuple(_check_tasks(request.tasks)),
        contact=pieces.contact,
        tool_version=__version__,
        patches=(
            {
                "file": file,
                "sha256": hashlib.sha256(data).hexdigest(),
                "encrypted": key is not None,
            },
        ),
        encryption=encryption,
        ci=previous_ci,
        results=results,
        results_sealed=sealed,
    )
    document = dump_metadata(metadata)
    parse_metadata(document, f"{set_folder(device, name)}/{METADATA}")  # never write a bad one
    return {file: data, METADATA: document}


def _previous_ci(ws: Workspace, device: str, backend: str) -> dict | None:
    path = ws.path(f"{set_folder(device, backend)}/{METADATA}")
    if not path.is_file():
        return None
    try:
        return parse_metadata(path.read_bytes(), str(path)).ci
    except FlagScaleError:
        return None


def create_patch_sets(ws: Workspace, request: PatchRequest) -> list[Path]:
    """Write and commit the vendor patch sets of ``request``; return the folders written.

    Holds the repository lock (``flagscale.core.repository_lock``) from start to end: the sets
    are made from the work tree and committed onto the branch with nothing else writing there.
    """
    device = check_device_type(request.device_type)
    with repository_lock(ws.root, f"inv patch --device-type {device}"):
        return _create_patch_sets(ws, request, device)


def _create_patch_sets(ws: Workspace, request: PatchRequest, device: str) -> list[Path]:
    _check_tasks(request.tasks)
    backends = _check_backends(ws, request.backends)
    base = resolve_commit(ws, request.commit)
    check_identity(ws)
    recover(ws)
    _check_device_folder_clean(ws, device)
    pieces = _gather_pieces(request, _known_versions(ws, backends, base))

    own = _FlagScaleTrees(
        flagscale_tree(ws, base, exclude=WORKTREE_EXCLUDES), flagscale_worktree_tree(ws)
    )
    patches = []
    for name in backends:
        pin = None if name == FLAGSCALE else pin_at(ws, name, base)
        made = _flagscale_patch(ws, own) if name == FLAGSCALE else _backend_patch(ws, name, base)
        data, results = made
        if not data:
            raise FlagScaleError(
                f"{name}: no changes against FlagScale {base} (with its base layer)",
                hint=f"leave {name} out of --backend",
            )
        patches.append(_Patch(name, pin, data, results))
    _warn_left_out(ws, base, own, backends, request.report)

    key = _load_key(request)
    sets = {
        set_folder(device, patch.backend): _set_files(
            ws, patch, pieces, request, base, key, _previous_ci(ws, device, patch.backend)
        )
        for patch in patches
    }
    check_filters(
        ws,
        {
            f"{folder}/{name}": data
            for folder, files in sets.items()
            for name, data in files.items()
        },
    )
    committed = write_and_commit(ws, sets, pieces.message)
    if not committed:
        request.report("patch sets unchanged: nothing new to commit")
        return [ws.path(folder) for folder in sets]
    for folder in sets:
        request.report(f"wrote {folder}/")
    request.report(f"committed {git_text(['rev-parse', 'HEAD'], ws.root)}")
    return [ws.path(folder) for folder in sets]


def _load_key(request: PatchRequest) -> bytes | None:
    if request.key_path is None:
        return None
    from flagscale.vendor import crypto

    key, created = crypto.load_or_create_key(Path(request.key_path))
    if created:
        request.report(
            f"created a new encryption key at {request.key_path} (mode 0600): keep it secret,"
            " and give it only to users who may decrypt these patches"
        )
    return key


def patch_command(
    device_type: str | None,
    *,
    tasks: list[str],
    backends: list[str],
    commit: str | None,
    key_path: str | None = None,
    backend_version: str | None = None,
    models: list[str] | None = None,
    message: str | None = None,
    contact: str | None = None,
) -> list[Path]:
    """``inv patch --device-type ...``: make the sets in the current workspace and commit them."""
    from flagscale.upstream.workspace import find_workspace

    if device_type is None:
        raise FlagScaleError(
            "--task, --commit, --key-path, --backend-version, --models, --message and --contact"
            " belong to vendor patch sets",
            hint="add --device-type Vendor_Model",
        )
    if not commit:
        raise FlagScaleError(
            "missing --commit: the FlagScale commit your adaptation is based on",
            hint="pass --commit <sha>",
        )
    request = PatchRequest(
        device_type=device_type,
        tasks=tasks,
        backends=backends,
        commit=commit,
        key_path=Path(key_path).expanduser() if key_path else None,
        backend_version=backend_version,
        models=models or None,
        message=message,
        contact=contact,
    )
    return create_patch_sets(find_workspace(), request)
