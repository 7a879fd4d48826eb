"""Patch sets as stored at a history commit, read from git objects only (never the work tree).

The history names a FlagScale commit; that commit's ``hardware/<V_M>/<backend>/`` folders hold
the patch sets. Each is read into a ``SetPlan`` of ids (trees, blobs) so that a build's
fingerprint costs a few git calls and no file reads. FlagScale's older layout (``diff.yaml``
with ``diff.patch`` or per-file ``*.patch``) is read by ``flagscale.vendor.legacy`` into the
same shape. A ``SetSource`` says where the history line and the sets come from: git objects
(``GIT_SETS``) or a verified release bundle (``flagscale.release.bundle_sets``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git
from flagscale.upstream.workspace import Workspace
from flagscale.vendor.set_plan import Entry, HistoryChoice, SetFile, SetPlan
from flagscale.vendor.set_results import SetResults

if TYPE_CHECKING:
    from flagscale.vendor.patchset import PatchMetadata

__all__ = [
    "GIT_SETS",
    "HISTORY",
    "Entry",
    "GitSets",
    "HistoryChoice",
    "SetFile",
    "SetPlan",
    "SetSource",
    "choose_history",
    "list_folder",
    "list_paths",
    "read_blobs",
    "read_sets",
    "check_task",
    "set_at",
    "set_from_files",
    "set_from_metadata",
    "tasks_listed",
    "tasks_listed_quiet",
]

HISTORY = "hardware/patch_history.yaml"  # flagscale.vendor.history.HISTORY
METADATA = "metadata.yaml"
_REGULAR = ("100644", "100755")


def choose_history(
    ws: Workspace,
    device_type: str,
    task: str | None,
    commit: str | None,
    backends: Sequence[str] = (),
) -> HistoryChoice:
    """The history line and commit a build uses: the newest, or ``commit`` if it is on the line."""
    from flagscale.vendor.history import entries_of, resolve

    full = _full_commit(ws, commit) if commit is not None else None
    entry = resolve(ws, device_type, task, full, list(backends) or None)
    line = [
        e.commit
        for e in entries_of(ws, device_type)
        if e.task == entry.task and e.backend_key == entry.backend_key
    ]
    return HistoryChoice(device_type, entry.task, entry.backends, entry.commit, tuple(line))


def _full_commit(ws: Workspace, commit: str) -> str:
    if not commit or commit.startswith("-"):
        raise FlagScaleError(f"--commit {commit!r} is not a commit id")
    oid = commit_id(ws.root, commit)
    if oid is None:
        raise FlagScaleError(
            f"--commit {commit}: no such commit in {ws.root}",
            hint="fetch it (git fetch) or check the id",
        )
    return oid


def list_folder(ws: Workspace, commit: str, folder: str) -> list[Entry]:
    """Every file under ``folder`` at ``commit`` (recursive; paths workspace-relative)."""
    raw = git(["ls-tree", "-r", "-z", "--full-tree", commit, "--", f"{folder}/"], ws.root)
    return [_entry(record) for record in filter(None, raw.split(b"\0"))]


def list_paths(ws: Workspace, commit: str, paths: Sequence[str]) -> dict[str, Entry]:
    """The entries (file, folder or gitlink) at exactly ``paths`` in ``commit``, if present."""
    raw = git(["ls-tree", "-z", "--full-tree", commit, "--", *paths], ws.root)
    entries = [_entry(record) for record in filter(None, raw.split(b"\0"))]
    wanted = set(paths)
    return {e.path: e for e in entries if e.path in wanted}


def _entry(record: bytes) -> Entry:
    meta, _, name = record.partition(b"\t")
    mode, kind, oid = meta.decode().split(" ")
    return Entry(mode, kind, oid, name.decode("utf-8", "surrogateescape"))


def read_blobs(ws: Workspace, oids: Sequence[str]) -> dict[str, bytes]:
    """The contents of blobs ``oids`` in one ``git cat-file --batch`` call."""
    unique = list(dict.fromkeys(oids))
    if not unique:
        return {}
    raw = git(["cat-file", "--batch"], ws.root, stdin="".join(f"{o}\n" for o in unique).encode())
    blobs: dict[str, bytes] = {}
    position = 0
    for oid in unique:
        end = raw.index(b"\n", position)
        header = raw[position:end].decode().split(" ")
        if len(header) != 3:
            raise FlagScaleError(f"object {oid} is missing from {ws.root}", hint="git fetch")
        size = int(header[2])
        blobs[oid] = raw[end + 1 : end + 1 + size]
        position = end + 1 + size + 1
    return blobs


def read_sets(ws: Workspace, choice: HistoryChoice) -> dict[str, SetPlan]:
    """Each backend's patch set in ``hardware/<V_M>/`` at the history commit."""
    device_folder = f"hardware/{choice.device_type}"
    entries = list_folder(ws, choice.commit, device_folder)
    by_backend: dict[str, list[Entry]] = {}
    for entry in entries:
        backend = entry.path[len(device_folder) + 1 :].split("/", 1)[0]
        by_backend.setdefault(backend, []).append(entry)
    texts = read_blobs(ws, [e.oid for e in entries if _is_metadata(e.path, device_folder)])
    folder_trees = list_paths(ws, choice.commit, [f"{device_folder}/{b}" for b in choice.backends])
    sets: dict[str, SetPlan] = {}
    for backend in choice.backends:
        folder = f"{device_folder}/{backend}"
        files = {e.path[len(folder) + 1 :]: e for e in by_backend.get(backend, [])}
        if not files or folder not in folder_trees:
            raise FlagScaleError(
                f"{folder} does not exist at {choice.commit}, but {HISTORY} lists"
                f" {choice.key} for {choice.device_type}/{choice.task} there",
                hint="the history entry is wrong: pick another with --commit",
            )
        at = f" at {choice.commit[:12]}"
        tree = folder_trees[folder].oid
        patch_set = set_from_files(ws, choice.device_type, backend, tree, files, texts, at)
        check_task(patch_set, choice.task)
        sets[backend] = patch_set
    return sets


def set_at(ws: Workspace, commit: str, device_type: str, backend: str) -> SetPlan | None:
    """The set stored in ``hardware/<device_type>/<backend>/`` at ``commit`` (either layout), or
    None when that commit has no such folder."""
    folder = f"hardware/{device_type}/{backend}"
    entries = list_folder(ws, commit, folder)
    found = list_paths(ws, commit, [folder]) if entries else {}
    if folder not in found or found[folder].kind != "tree":
        return None
    texts = read_blobs(
        ws, [e.oid for e in entries if _is_metadata(e.path, f"hardware/{device_type}")]
    )
    files = {e.path[len(folder) + 1 :]: e for e in entries}
    at = f" at {commit[:12]}"
    return set_from_files(ws, device_type, backend, found[folder].oid, files, texts, at)


def _is_metadata(path: str, device_folder: str) -> bool:
    """A file directly in a set folder that may be its metadata (either layout)."""
    from flagscale.vendor import legacy

    relative = path[len(device_folder) + 1 :]
    name = relative.rsplit("/", 1)[-1]
    return relative.count("/") == 1 and (name == METADATA or legacy.is_metadata_name(name))


def set_from_files(
    ws: Workspace,
    device_type: str,
    backend: str,
    tree: str,
    files: Mapping[str, Entry],
    texts: Mapping[str, bytes],
    at: str,
) -> SetPlan:
    """The one reader of a stored set: ``files`` (name in the folder → entry) and the metadata
    blobs' bytes in ``texts`` give a native set (``metadata.yaml``) or FlagScale's older layout.
    ``at`` says where, in messages (`` at <commit>``, `` in <bundle>``)."""
    from flagscale.vendor import legacy

    folder = f"hardware/{device_type}/{backend}"
    if METADATA in files:
        data = texts[files[METADATA].oid]
        where = f"{folder}/{{}}{at}"
        plan = set_from_metadata(device_type, backend, folder, tree, files, data, where)
        return replace(plan, metadata_blob=files[METADATA].oid)
    return legacy.read_legacy_set(ws, device_type, backend, folder, tree, files, texts, at)


def check_task(patch_set: SetPlan, task: str) -> None:
    """Refuse a set whose metadata does not list ``task``."""
    if task not in patch_set.tasks:
        raise FlagScaleError(
            f"{patch_set.source} is for tasks {', '.join(patch_set.tasks)}, not {task}",
            hint=f"fix {HISTORY} or the set's metadata",
        )


def set_from_metadata(
    device_type: str,
    backend: str,
    folder: str,
    tree: str,
    files: Mapping[str, Entry],
    metadata_bytes: bytes,
    where: str,
) -> SetPlan:
    """A patch set (layout ``patch-set``) from its ``metadata.yaml`` and its folder's entries."""
    from flagscale.vendor.patchset import encryption_name, parse_metadata

    source = where.format(METADATA)
    metadata = parse_metadata(metadata_bytes, source)
    if metadata.device_type != device_type or metadata.backend != backend:
        raise FlagScaleError(
            f"{source} describes {metadata.device_type}/{metadata.backend}, not its folder",
            hint="the patch set was moved or copied by hand: ask the vendor to regenerate it",
        )
    stored = []
    for item in metadata.patches:
        name = item["file"]
        entry = files.get(name)
        if entry is None or entry.mode not in _REGULAR:
            raise FlagScaleError(
                f"{source} lists {name}, but {folder}/{name} is not a file at that commit",
                hint="the patch set is incomplete: ask the vendor to regenerate it",
            )
        stored.append(
            SetFile(
                path=entry.path,
                blob=entry.oid,
                encrypted=bool(item["encrypted"]),
                scheme="fsenc" if item["encrypted"] else None,
                sha256=item["sha256"],
                name=encryption_name(device_type, backend, name),
            )
        )
    return SetPlan(
        backend=backend,
        folder=folder,
        folder_tree=tree,
        layout="patch-set",
        flagscale_base=metadata.flagscale_base,
        recorded_pin=metadata.backend_pin,
        files=tuple(stored),
        key_id=(metadata.encryption or {}).get("key_id"),
        contact=metadata.contact,
        source=source,
        device_type=device_type,
        tasks=tuple(metadata.tasks),
        metadata_path=f"{folder}/{METADATA}",
        backend_version=metadata.backend_version,
        results=_recorded_results(metadata),
    )


def tasks_listed(ws: Workspace, commit: str, device: str, backends: list[str]) -> list[str]:
    """The tasks every named set at ``commit`` lists (native metadata or FlagScale's diff.yaml)."""
    common: set[str] | None = None
    for name in backends:
        patch_set = set_at(ws, commit, device, name)
        if patch_set is None:
            raise FlagScaleError(
                f"commit {commit} does not hold hardware/{device}/{name}/ (no patch set there)",
                hint="record a commit that contains the patch set",
            )
        common = set(patch_set.tasks) if common is None else common & set(patch_set.tasks)
    return sorted(common or ())


def tasks_listed_quiet(ws: Workspace, commit: str, device: str, backends: list[str]) -> list[str]:
    try:
        return tasks_listed(ws, commit, device, backends)
    except FlagScaleError:
        return []


def _recorded_results(metadata: PatchMetadata) -> SetResults | None:
    """What the set says it produces; None for sets made before that was recorded."""
    if metadata.results_sealed is not None:
        return SetResults(dict(metadata.results_sealed), sealed=True)
    if metadata.results is not None:
        return SetResults(dict(metadata.results))
    return None


class SetSource(Protocol):
    """Where a build's history line and patch sets come from: git objects, or a verified bundle
    (``flagscale.release.bundle_sets.BundleSets``). Everything else a build needs comes from git."""

    def choose(
        self,
        ws: Workspace,
        device_type: str,
        task: str | None,
        commit: str | None,
        backends: Sequence[str],
    ) -> HistoryChoice:
        """The history line and commit to build (see ``choose_history``)."""
        ...

    def read_sets(self, ws: Workspace, choice: HistoryChoice) -> dict[str, SetPlan]:
        """Each backend's patch set of the chosen history entry (see ``read_sets``)."""
        ...


class GitSets:
    """The history in the work tree; the patch sets in the history commit's objects."""

    def choose(
        self,
        ws: Workspace,
        device_type: str,
        task: str | None,
        commit: str | None,
        backends: Sequence[str],
    ) -> HistoryChoice:
        return choose_history(ws, device_type, task, commit, backends)

    def read_sets(self, ws: Workspace, choice: HistoryChoice) -> dict[str, SetPlan]:
        return read_sets(ws, choice)


GIT_SETS = GitSets()
