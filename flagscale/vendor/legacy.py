"""FlagScale's existing vendor data: the ``hardware/`` layout of ``tools/patch`` (0.8 and later).

One folder per device type and backend, ``hardware/<V_M>/<backend>/``, holding

* ``diff.yaml``: ``commit`` (the FlagScale commit the set was made against), ``backends_commit``
  (backend → the upstream commit the patch was made against; may be empty), ``backends_version``,
  ``contact``, ``device_type``, ``models``, ``task``;
* the patch: one ``diff.patch``, or one ``<path>.patch`` per changed file (the folder mirrors the
  backend's tree), each possibly encrypted as ``*.patch.encrypted`` (RSA-OAEP-wrapped AES-CBC,
  ``flagscale.vendor.legacy_crypto``).

The oldest sets name the base in the file names instead (``<short commit>.patch`` and
``<short commit>.yaml`` without a ``commit`` key); those are read too.

That tool reset a backend to its commit and applied the vendor's patch files one by one
(``flagscale.vendor.legacy_apply``), without laying the base layer first (the vendor's diff
already contains it), and checked FlagScale out at the newest of the sets' base commits. This
module maps a set onto the same build pipeline as current patch sets
(``flagscale.vendor.set_plan.SetPlan``) with those semantics; docs/legacy-layout.md has the
details.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git_ok, git_text
from flagscale.core.schema import parse_document, validate
from flagscale.upstream.workspace import FLAGSCALE, Workspace
from flagscale.vendor.patchset import TASKS
from flagscale.vendor.set_plan import Entry, HistoryChoice, SetFile, SetPlan

__all__ = [
    "DIFF_YAML",
    "ENCRYPTED_SUFFIX",
    "LegacyMetadata",
    "is_metadata_name",
    "missing_history_hint",
    "newest_base",
    "parse_diff_yaml",
    "patch_files",
    "read_legacy_set",
]

DIFF_YAML = "diff.yaml"
ENCRYPTED_SUFFIX = ".encrypted"
_PATCH_SUFFIXES = (".patch", ".patch" + ENCRYPTED_SUFFIX)
_SHORT_NAME = re.compile(r"^(?P<commit>[0-9a-f]{7,40})\.yaml$")
_REGULAR = ("100644", "100755")


def is_metadata_name(name: str) -> bool:
    """Whether a file directly in a set folder is an older-layout metadata file."""
    return name == DIFF_YAML or bool(_SHORT_NAME.match(name))


class LegacyMetadata:
    """The parts of ``diff.yaml`` a build uses."""

    def __init__(self, data: Mapping[str, Any], commit: str, source: str) -> None:
        self.commit = commit
        self.source = source
        self.device_type = str(data.get("device_type", ""))
        self.tasks = tuple(str(t) for t in _as_list(data.get("task")))
        self.models = tuple(str(m) for m in _as_list(data.get("models")))
        self.contact = str(data.get("contact") or "")
        self.backends_commit = {
            str(name): _commit_text(value)
            for name, value in (data.get("backends_commit") or {}).items()
            if value
        }
        self.backends_version = {
            str(name): str(value) for name, value in (data.get("backends_version") or {}).items()
        }


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _commit_text(value: Any) -> str:
    """YAML reads an all-digit commit id as a number: turn it back into its 40 hex digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).zfill(40)
    return str(value)


def _normalise(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    fixed = dict(data)
    if "commit" in fixed and fixed["commit"] is not None:
        fixed["commit"] = _commit_text(fixed["commit"])
    if isinstance(fixed.get("backends_commit"), dict):
        fixed["backends_commit"] = {
            k: (_commit_text(v) if v is not None else None)
            for k, v in fixed["backends_commit"].items()
        }
    for key in ("models", "task"):
        if isinstance(fixed.get(key), str):
            fixed[key] = [fixed[key]]
    return fixed


def parse_diff_yaml(data: bytes, source: str, *, name_commit: str | None = None) -> LegacyMetadata:
    """Parse and check a ``diff.yaml`` (or ``<short commit>.yaml``); ``source`` names it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FlagScaleError(f"{source}: not UTF-8 text") from None
    document = validate(_normalise(parse_document(text, source)), "legacy-diff", source)
    commit = document.get("commit") or name_commit
    if not commit:
        raise FlagScaleError(
            f"{source}: no 'commit' key: the FlagScale commit the patch was made against",
            hint="add `commit: <FlagScale commit>` or ask the vendor to regenerate the set",
        )
    return LegacyMetadata(document, commit, source)


def patch_files(files: Mapping[str, Entry]) -> list[str]:
    """The patch files of a set folder (relative names, sorted): ``*.patch[.encrypted]``."""
    return sorted(name for name in files if name.endswith(_PATCH_SUFFIXES))


def read_legacy_set(
    ws: Workspace,
    device_type: str,
    backend: str,
    folder: str,
    tree: str,
    files: Mapping[str, Entry],
    texts: Mapping[str, bytes],
    at: str,
) -> SetPlan:
    """The set in ``folder`` (FlagScale's older layout) as a SetPlan; ``at`` says where."""
    metadata_name, name_commit = _metadata_file(files, folder, at)
    source = f"{folder}/{metadata_name}{at}"
    metadata = parse_diff_yaml(texts[files[metadata_name].oid], source, name_commit=name_commit)
    _check_device(metadata, device_type)
    names = patch_files(files)
    if not names:
        raise FlagScaleError(
            f"{folder}{at} has {metadata_name} but no .patch or .patch.encrypted file",
            hint="the patch set is incomplete: ask the vendor to regenerate it",
        )
    stored = []
    for name in names:
        entry = files[name]
        if entry.mode not in _REGULAR:
            raise FlagScaleError(f"{folder}/{name}{at} is not a regular file")
        encrypted = name.endswith(ENCRYPTED_SUFFIX)
        stored.append(
            SetFile(
                path=entry.path,
                blob=entry.oid,
                encrypted=encrypted,
                scheme="legacy" if encrypted else None,
            )
        )
    recorded = metadata.backends_commit.get(backend) if backend != FLAGSCALE else None
    if recorded is not None:
        recorded = _upstream_commit(recorded, source, backend)
    return SetPlan(
        backend=backend,
        folder=folder,
        folder_tree=tree,
        layout="legacy",
        flagscale_base=_base_commit(ws, metadata.commit, source),
        recorded_pin=recorded,
        files=tuple(stored),
        key_id=None,
        contact=metadata.contact,
        apply_layer=False,
        source=source,
        device_type=device_type,
        tasks=metadata.tasks or TASKS,
        metadata_path=f"{folder}/{metadata_name}",
        metadata_blob=files[metadata_name].oid,
        backend_version=metadata.backends_version.get(backend),
    )


def _metadata_file(files: Mapping[str, Entry], folder: str, at: str) -> tuple[str, str | None]:
    if DIFF_YAML in files:
        return DIFF_YAML, None
    short = [m for m in (_SHORT_NAME.match(name) for name in files if "/" not in name) if m]
    if len(short) == 1:
        return short[0].string, short[0]["commit"]
    if short:
        raise FlagScaleError(
            f"{folder}{at} holds several <commit>.yaml files"
            f" ({', '.join(m.string for m in short)})",
            hint="keep one patch set per folder",
        )
    raise FlagScaleError(
        f"{folder}{at} has neither metadata.yaml nor FlagScale's older diff.yaml",
        hint="the patch set is incomplete: ask the vendor to regenerate it",
    )


def _check_device(metadata: LegacyMetadata, device_type: str) -> None:
    if metadata.device_type and metadata.device_type != device_type:
        raise FlagScaleError(
            f"{metadata.source} is for device type {metadata.device_type}, not {device_type}",
            hint="the patch set was copied by hand: ask the vendor to regenerate it",
        )


def _upstream_commit(commit: str, source: str, backend: str) -> str:
    """A ``backends_commit`` value: only full ids can be fetched by id."""
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        return commit
    raise FlagScaleError(
        f"{source}: backends_commit for {backend} is {commit!r}, not a full commit id",
        hint="write the full 40-hex commit id",
    )


def _base_commit(ws: Workspace, commit: str, source: str) -> str:
    """The FlagScale commit a set was made against, as 40 hex digits: a full id as written (a
    build checks that it exists), a short one (the oldest sets) resolved in this clone."""
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        return commit
    oid = commit_id(ws.root, commit)
    if oid is None:
        raise FlagScaleError(
            f"{source}: FlagScale commit {commit} does not exist in {ws.root} (or is ambiguous)",
            hint=missing_history_hint(ws),
        )
    return oid


def missing_history_hint(ws: Workspace) -> str:
    """What to do when a FlagScale commit a legacy set names is not in this clone."""
    if git_text(["rev-parse", "--is-shallow-repository"], ws.root, check=False) == "true":
        return "fetch FlagScale's full history (git fetch --unshallow) and try again"
    return (
        "this clone does not hold FlagScale's history: convert the sets with"
        " `inv import-flagscale <path to a FlagScale checkout>` (docs/migrating-from-flagscale.md)"
    )


def newest_base(ws: Workspace, sets: Sequence[SetPlan], choice: HistoryChoice) -> str:
    """The base FlagScale's older tool checked out: the newest of the sets' base commits."""
    for patch_set in sets:
        base = patch_set.flagscale_base
        if not git_ok(["cat-file", "-e", f"{base}^{{commit}}"], ws.root):
            raise FlagScaleError(
                f"{patch_set.source}: FlagScale commit {base} does not exist in {ws.root}",
                hint=missing_history_hint(ws),
            )
    bases = sorted({s.flagscale_base for s in sets})
    newest = bases[0]
    for base in bases[1:]:
        if _is_ancestor(ws, newest, base):
            newest = base
        elif not _is_ancestor(ws, base, newest):
            raise FlagScaleError(
                f"hardware/{choice.device_type} at {choice.commit[:12]}: the sets' base commits"
                f" {newest[:12]} and {base[:12]} are on different branches",
                hint="ask the vendor to regenerate the patch sets against one commit",
            )
    return newest


def _is_ancestor(ws: Workspace, older: str, newer: str) -> bool:
    return git_ok(["merge-base", "--is-ancestor", older, newer], ws.root)
