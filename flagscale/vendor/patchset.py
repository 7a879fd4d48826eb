"""Vendor patch sets: turning a vendor's in-place adaptation into files under ``hardware/``.

A patch set is one device type's changes to one backend, against FlagScale at a base commit
with its base layer applied. It lives in ``hardware/<Vendor_Model>/<backend>/``: the patch
(``<backend>.patch``, or ``<backend>.patch.enc`` when encrypted) and ``metadata.yaml``.

Making sets reads trees through git plumbing (``flagscale.overlay.layered_trees``): the user's
branch, index, stash and work tree stay as they were, except that the new sets are written and
committed.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flagscale import __version__
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import GitError, git, git_ok, git_text
from flagscale.core.paths import check_relative
from flagscale.core.schema import parse_document, validate
from flagscale.overlay.layered_trees import (
    GITLINK,
    WORKTREE_EXCLUDES,
    changed_entries,
    diff_trees,
    filter_tree,
    flagscale_tree,
    flagscale_worktree_tree,
    layered_tree,
    pin_at,
    resolve_commit,
    scratch_repo,
    worktree_tree,
)
from flagscale.upstream.workspace import DECLARATION, FLAGSCALE, Workspace

__all__ = [
    "DEVICE_TYPE",
    "HARDWARE",
    "TASKS",
    "LoadedPatchSet",
    "PatchMetadata",
    "PatchRequest",
    "check_device_type",
    "check_identity",
    "check_task",
    "create_patch_sets",
    "dump_metadata",
    "encryption_name",
    "load_patch_set",
    "parse_metadata",
    "patch_command",
    "read_metadata",
    "set_folder",
]

HARDWARE = "hardware"
TASKS = ("train", "inference", "post_train")
DEVICE_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]*_[A-Za-z0-9]+$")
METADATA = "metadata.yaml"
ALGORITHM = "AES-256-GCM"
_NEW, _OLD = ".new-", ".old-"
_QUOTED_KEYS = (
    "flagscale_base",
    "backend_pin",
    "backend_version",
    "sha256",
    "key_id",
    "tool_version",
)


# --- the request and the metadata -------------------------------------------------------------


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


@dataclass(frozen=True)
class PatchMetadata:
    """The contents of one set's ``metadata.yaml`` (see schemas/patch-metadata.schema.json)."""

    device_type: str
    backend: str
    flagscale_base: str
    backend_pin: str | None
    backend_version: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    contact: str
    tool_version: str
    patches: tuple[dict[str, Any], ...]
    encryption: dict[str, str] | None
    ci: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The document as written (``ci`` only when present)."""
        data: dict[str, Any] = {
            "version": 1,
            "device_type": self.device_type,
            "backend": self.backend,
            "flagscale_base": self.flagscale_base,
            "backend_pin": self.backend_pin,
            "backend_version": self.backend_version,
            "models": list(self.models),
            "tasks": list(self.tasks),
            "contact": self.contact,
            "tool_version": self.tool_version,
            "patches": [dict(p) for p in self.patches],
            "encryption": dict(self.encryption) if self.encryption else None,
        }
        if self.ci is not None:
            data["ci"] = self.ci
        return data


class _Quoted(str):
    """A string YAML must write in double quotes (commit ids, hashes, versions)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, '"')
)


def _quote_ids(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _quote_ids(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_quote_ids(v, key) for v in value]
    if isinstance(value, str) and key in _QUOTED_KEYS:
        return _Quoted(value)
    return value


def dump_metadata(metadata: PatchMetadata) -> bytes:
    """``metadata.yaml`` bytes: keys sorted, ids quoted, no dates — same metadata, same bytes."""
    text = yaml.dump(
        _quote_ids(metadata.as_dict()),
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=None,
        allow_unicode=True,
        width=4096,
    )
    return text.encode("utf-8")


def parse_metadata(data: bytes, source: str) -> PatchMetadata:
    """Parse and check ``metadata.yaml`` bytes; ``source`` names the file in errors."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FlagScaleError(f"{source}: not UTF-8 text") from None
    doc = validate(parse_document(text, source), "patch-metadata", source)
    metadata = PatchMetadata(
        device_type=doc["device_type"],
        backend=doc["backend"],
        flagscale_base=doc["flagscale_base"],
        backend_pin=doc["backend_pin"],
        backend_version=doc["backend_version"],
        models=tuple(doc["models"]),
        tasks=tuple(doc["tasks"]),
        contact=doc["contact"],
        tool_version=doc["tool_version"],
        patches=tuple(doc["patches"]),
        encryption=doc["encryption"],
        ci=doc.get("ci"),
    )
    _check_consistent(metadata, source)
    return metadata


def _check_consistent(metadata: PatchMetadata, source: str) -> None:
    encrypted = {bool(p["encrypted"]) for p in metadata.patches}
    if encrypted == {True} and metadata.encryption is None:
        raise FlagScaleError(f"{source}: patches are encrypted but encryption is null")
    if True not in encrypted and metadata.encryption is not None:
        raise FlagScaleError(f"{source}: encryption is set but no patch is encrypted")
    if (metadata.backend == FLAGSCALE) != (metadata.backend_pin is None):
        raise FlagScaleError(
            f"{source}: backend_pin must be null for {FLAGSCALE} and a commit for upstreams"
        )


def set_folder(device_type: str, backend: str) -> str:
    """``hardware/<device type>/<backend>``, relative to the workspace root."""
    return f"{HARDWARE}/{device_type}/{backend}"


def encryption_name(device_type: str, backend: str, file: str) -> str:
    """The name an encrypted patch file is bound to: its workspace path without ``.enc``."""
    return f"{set_folder(device_type, backend)}/{file.removesuffix('.enc')}"


# --- validation --------------------------------------------------------------------------------


def check_device_type(device_type: str) -> str:
    """``device_type`` if it is ``Vendor_Model`` (one underscore, vendor capitalised)."""
    if not DEVICE_TYPE.match(device_type or ""):
        raise FlagScaleError(
            f"device type {device_type!r} is not Vendor_Model",
            hint="one underscore, vendor capitalised, letters and digits: e.g. Metax_C550",
        )
    return device_type


def check_task(task: str) -> str:
    """``task`` if it is one of TASKS."""
    if task not in TASKS:
        raise FlagScaleError(f"unknown task {task!r}", hint=f"known tasks: {', '.join(TASKS)}")
    return task


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


# --- the four pieces ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pieces:
    backend_version: str
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


def _gather_pieces(request: PatchRequest) -> _Pieces:
    encrypting = request.key_path is not None
    ask = _ask_function(request)
    missing = [
        flag
        for flag, value in (
            ("--backend-version", request.backend_version),
            ("--models", request.models),
            ("--message", request.message),
            ("--contact", request.contact if encrypting else "optional"),
        )
        if not value
    ]
    if missing and ask is None:
        raise FlagScaleError(
            f"missing {', '.join(missing)}: stdin is not a terminal, so nothing can be asked",
            hint=f"pass {' '.join(f'{flag} ...' for flag in missing)}"
            + (" (a contact is required when encrypting)" if "--contact" in missing else ""),
        )
    version = request.backend_version or _prompt(
        ask, "Backend version (e.g. 0.16.1)", "--backend-version"
    )
    models = (
        request.models or _prompt(ask, "Models adapted (e.g. aquila llama)", "--models").split()
    )
    message = request.message or _prompt(ask, "Commit message", "--message")
    contact = request.contact
    if contact is None and ask is not None:
        label = "Contact for the key (name <mail>)" if encrypting else "Contact (optional)"
        contact = _prompt(ask, label, "--contact", required=encrypting)
    models_list = [m for value in models for m in value.replace(",", " ").split()]
    return _Pieces(
        backend_version=version.strip(),
        models=tuple(sorted(dict.fromkeys(models_list))),
        message=message.strip(),
        contact=(contact or "").strip(),
    )


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


# --- computing the patches ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Patch:
    backend: str
    pin: str | None
    data: bytes


def _flagscale_excludes(ws: Workspace) -> tuple[str, ...]:
    """What the FlagScale set leaves out: other trees, and the base layer (in its backends)."""
    layers = [path for b in ws.backends.values() for path in (b.layer, b.deletions)]
    return (*WORKTREE_EXCLUDES, DECLARATION, *layers)


@dataclass(frozen=True)
class _FlagScaleTrees:
    """FlagScale's files at the base and in the work tree (third_party/, build/, hardware/ out)."""

    base: str
    work: str


def _flagscale_patch(ws: Workspace, trees: _FlagScaleTrees) -> bytes:
    excludes = _flagscale_excludes(ws)
    old = filter_tree(ws, trees.base, excludes)
    new = filter_tree(ws, trees.work, excludes)
    return _checked_diff(ws, FLAGSCALE, old, new)


def _backend_patch(ws: Workspace, name: str, base: str) -> bytes:
    return _checked_diff(ws, name, layered_tree(ws, name, base), worktree_tree(ws, name))


def _checked_diff(ws: Workspace, backend: str, old: str, new: str) -> bytes:
    repo = scratch_repo(ws)
    for before, after in changed_entries(repo, old, new):
        where = f"{backend} patch"
        check_relative(after.path, where)
        if GITLINK in (before.mode, after.mode):
            raise FlagScaleError(
                f"{where}: {after.path} is a nested git repository (submodule)",
                hint="a patch set holds files only: remove it or add its files",
            )
    return diff_trees(repo, old, new)


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


# --- writing the sets --------------------------------------------------------------------------


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
    if key is not None:
        data = crypto.encrypt_file_bytes(data, key, name=encryption_name(device, name, file))
        file += crypto.ENCRYPTED_SUFFIX
        encryption = {"algorithm": ALGORITHM, "key_id": crypto.key_id(key)}
    metadata = PatchMetadata(
        device_type=device,
        backend=name,
        flagscale_base=base,
        backend_pin=patch.pin,
        backend_version=pieces.backend_version,
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


def _recover_interrupted(ws: Workspace, folder: Path) -> None:
    """Finish what a killed run left in ``hardware/<device>/`` (see ``_swap_in``).

    A ``.<backend>.new-*`` folder was never swapped in: dropped. A ``.<backend>.old-*`` folder
    holds the previous set (empty: there was none): if the new set was committed it is dropped,
    otherwise the previous set is put back and the new one unstaged.
    """
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith(".") and _NEW in name:
            shutil.rmtree(entry, ignore_errors=True)
        elif name.startswith(".") and _OLD in name:
            target = folder / name[1:].split(_OLD)[0]
            relative = target.relative_to(ws.root).as_posix()
            if target.exists() and not _status(ws, relative):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                git(["reset", "-q", "--", relative], ws.root, check=False)
                _swap_back(entry, target)


def _status(ws: Workspace, relative: str) -> bytes:
    return git(["status", "--porcelain", "-z", "--untracked-files=all", "--", relative], ws.root)


def _stage_folder(folder: Path, backend: str, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{backend}{_NEW}{secrets.token_hex(4)}"
    staged.mkdir()
    for name, data in sorted(files.items()):
        (staged / name).write_bytes(data)
    return staged


def _swap_in(staged: Path, target: Path) -> Path:
    """Move ``staged`` to ``target``, keeping the previous set beside it until committed."""
    old = target.parent / f".{target.name}{_OLD}{secrets.token_hex(4)}"
    if target.exists():
        os.rename(target, old)
    else:
        old.mkdir()  # an empty old folder: there was no previous set
    os.rename(staged, target)
    return old


def _swap_back(old: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    if any(old.iterdir()):
        os.rename(old, target)
    else:
        old.rmdir()


# --- committing --------------------------------------------------------------------------------

_CONTENT = ("-c", "core.autocrlf=false", "-c", "core.safecrlf=false")


def _check_filters(ws: Workspace, written: dict[str, bytes]) -> None:
    """Refuse before writing when a git filter (eol, clean) would change a set file's bytes."""
    for path, data in written.items():
        raw = git(["hash-object", "--no-filters", "--stdin"], ws.root, stdin=data)
        filtered = git([*_CONTENT, "hash-object", "--path", path, "--stdin"], ws.root, stdin=data)
        if raw != filtered:
            raise FlagScaleError(
                f"git would change the bytes of {path} when committing (an eol or filter"
                " attribute applies to it)",
                hint=f"add `{HARDWARE}/** -text -filter` to .gitattributes and run inv patch again",
            )


def _commit(ws: Workspace, paths: list[str], message: str) -> bool:
    """Commit exactly ``paths``; other staged changes stay staged. False when nothing changed."""
    git([*_CONTENT, "add", "-A", "--", *paths], ws.root)
    if not git(["diff", "--cached", "--name-only", "HEAD", "--", *paths], ws.root).strip():
        return False
    git(
        [
            *_CONTENT,
            "-c",
            "user.useConfigOnly=true",
            "commit",
            "--no-verify",
            "-q",
            "--only",
            "-m",
            message,
            "--",
            *paths,
        ],
        ws.root,
    )
    return True


def _write_and_commit(ws: Workspace, sets: dict[str, dict[str, bytes]], message: str) -> bool:
    """Swap the new sets in and commit them; on any failure put the previous sets back."""
    staged: list[tuple[Path, Path]] = []
    try:
        for folder, files in sets.items():
            target = ws.path(folder)
            staged.append((_stage_folder(target.parent, target.name, files), target))
    except BaseException:
        for temporary, _target in staged:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    head = git_text(["rev-parse", "HEAD"], ws.root)
    swapped: list[tuple[Path, Path]] = []
    try:
        for temporary, target in staged:
            swapped.append((_swap_in(temporary, target), target))
        committed = _commit(ws, list(sets), message)
    except BaseException as exc:
        if git_text(["rev-parse", "HEAD"], ws.root) != head:
            raise
        git(["reset", "-q", "--", *sets], ws.root, check=False)
        for old, target in reversed(swapped):
            _swap_back(old, target)
        for temporary, _target in staged[len(swapped) :]:
            shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(exc, GitError):
            raise FlagScaleError(
                f"could not commit the patch sets: {exc}",
                hint="the previous sets are back in place; fix that and run inv patch again",
            ) from exc
        raise
    for old, _target in swapped:
        shutil.rmtree(old, ignore_errors=True)
    return committed


# --- the flow ----------------------------------------------------------------------------------


def create_patch_sets(ws: Workspace, request: PatchRequest) -> list[Path]:
    """Write and commit the vendor patch sets of ``request``; return the folders written."""
    device = check_device_type(request.device_type)
    _check_tasks(request.tasks)
    backends = _check_backends(ws, request.backends)
    base = resolve_commit(ws, request.commit)
    check_identity(ws)
    _recover_interrupted(ws, ws.path(f"{HARDWARE}/{device}"))
    _check_device_folder_clean(ws, device)
    pieces = _gather_pieces(request)

    own = _FlagScaleTrees(
        flagscale_tree(ws, base, exclude=WORKTREE_EXCLUDES), flagscale_worktree_tree(ws)
    )
    patches = []
    for name in backends:
        pin = None if name == FLAGSCALE else pin_at(ws, name, base)
        data = _flagscale_patch(ws, own) if name == FLAGSCALE else _backend_patch(ws, name, base)
        if not data:
            raise FlagScaleError(
                f"{name}: no changes against FlagScale {base} (with its base layer)",
                hint=f"leave {name} out of --backend",
            )
        patches.append(_Patch(name, pin, data))
    _warn_left_out(ws, base, own, backends, request.report)

    key = _load_key(request)
    sets = {
        set_folder(device, patch.backend): _set_files(
            ws, patch, pieces, request, base, key, _previous_ci(ws, device, patch.backend)
        )
        for patch in patches
    }
    _check_filters(
        ws,
        {
            f"{folder}/{name}": data
            for folder, files in sets.items()
            for name, data in files.items()
        },
    )
    committed = _write_and_commit(ws, sets, pieces.message)
    for folder in sets:
        request.report(f"wrote {folder}/")
    head = git_text(["rev-parse", "HEAD"], ws.root)
    request.report(
        f"committed {head}" if committed else "patch sets unchanged: nothing new to commit"
    )
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


# --- reading sets (for builds) -----------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPatchSet:
    """A set read back: its metadata and the plaintext of each patch file, in metadata order."""

    metadata: PatchMetadata
    patches: tuple[bytes, ...]


def _read_file(ws: Workspace, path: str, commit: str | None) -> bytes | None:
    if commit is None:
        full = ws.path(path)
        return full.read_bytes() if full.is_file() else None
    if not git_ok(["cat-file", "-e", f"{commit}:{path}"], ws.root):
        return None
    return git(["cat-file", "blob", f"{commit}:{path}"], ws.root)


def read_metadata(
    ws: Workspace, device_type: str, backend: str, *, commit: str | None = None
) -> PatchMetadata:
    """The metadata of a set, from the work tree or (``commit``) from a FlagScale commit."""
    path = f"{set_folder(device_type, backend)}/{METADATA}"
    source = path if commit is None else f"{path} at {commit}"
    data = _read_file(ws, path, commit)
    if data is None:
        raise FlagScaleError(
            f"{source} does not exist: no {backend} patch set for {device_type}",
            hint="check the device type and backend, or the commit",
        )
    metadata = parse_metadata(data, source)
    if metadata.device_type != device_type or metadata.backend != backend:
        raise FlagScaleError(
            f"{source} describes {metadata.device_type}/{metadata.backend}, not its folder",
            hint="re-run inv patch for this device type",
        )
    return metadata


def load_patch_set(
    ws: Workspace,
    device_type: str,
    backend: str,
    *,
    commit: str | None = None,
    key_path: Path | None = None,
) -> LoadedPatchSet:
    """A set with its patches checked against their sha256 and decrypted (``key_path``)."""
    from flagscale.vendor import crypto

    metadata = read_metadata(ws, device_type, backend, commit=commit)
    folder = set_folder(device_type, backend)
    key = None
    if metadata.encryption is not None:
        if key_path is None:
            contact = f" (ask {metadata.contact})" if metadata.contact else ""
            raise FlagScaleError(
                f"{folder} is encrypted with key {metadata.encryption['key_id']}{contact}",
                hint="pass the key file with --key-path",
            )
        key = crypto.load_key(Path(key_path), contact=metadata.contact or None)
    patches = []
    for entry in metadata.patches:
        path = f"{folder}/{check_relative(entry['file'], f'{folder}/{METADATA}')}"
        data = _read_file(ws, path, commit)
        if data is None:
            raise FlagScaleError(f"{folder}/{METADATA} lists {entry['file']}, but it is missing")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise FlagScaleError(
                f"{path}: sha256 does not match {folder}/{METADATA}",
                hint="restore it from git or re-run inv patch",
            )
        if entry["encrypted"]:
            assert key is not None
            data = crypto.decrypt_file_bytes(
                data,
                key,
                name=encryption_name(device_type, backend, entry["file"]),
                source=path,
                key_label=str(key_path),
            )
        patches.append(data)
    return LoadedPatchSet(metadata, tuple(patches))


# --- the command -------------------------------------------------------------------------------


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
