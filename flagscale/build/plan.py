"""What a device type's build is made of, read from git objects only (never the work tree).

The history names a FlagScale commit; that commit's ``hardware/<V_M>/<backend>/`` folders hold
the patch sets; their metadata names the FlagScale base and each backend's pin. A ``BuildPlan``
collects all of it as ids (commits, trees, blobs) so that its fingerprint costs a few git calls
and no file reads, and so that the build itself knows exactly which objects to use.

FlagScale's older layout (``diff.yaml`` with ``diff.patch`` or per-file ``*.patch``) is read by
``flagscale.vendor.legacy`` into the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flagscale import __version__
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git
from flagscale.upstream.workspace import DECLARATION, FLAGSCALE, Workspace

__all__ = [
    "GIT_SETS",
    "HISTORY",
    "BuildPlan",
    "Entry",
    "GitSets",
    "HistoryChoice",
    "SetFile",
    "SetPlan",
    "SetSource",
    "choose_history",
    "list_folder",
    "plan_device",
    "read_blobs",
    "read_sets",
    "set_from_metadata",
]

HISTORY = "hardware/patch_history.yaml"  # flagscale.vendor.history.HISTORY
METADATA = "metadata.yaml"
PLAN_FORMAT = 1
_REGULAR = ("100644", "100755")


@dataclass(frozen=True)
class SetFile:
    """One stored patch file of a set, as found at the history commit."""

    path: str  # workspace-relative, e.g. hardware/Metax_C550/Megatron-LM/Megatron-LM.patch.enc
    blob: str
    encrypted: bool
    scheme: str | None = None  # "fsenc" (flagscale.vendor.crypto), "legacy" (RSA + AES-CBC), or None
    sha256: str | None = None  # from metadata.yaml, checked before use
    name: str = ""  # the name an encrypted file is bound to (flagscale.vendor.crypto)
    data: bytes | None = field(default=None, repr=False, compare=False)  # None: read blob from git


@dataclass(frozen=True)
class SetPlan:
    """One backend's vendor patch set for a device type, read from the history commit."""

    backend: str
    folder: str
    folder_tree: str
    layout: str  # "patch-set" or "legacy"
    flagscale_base: str
    recorded_pin: str | None  # the pin the set says it was made against (None: not recorded)
    files: tuple[SetFile, ...]
    key_id: str | None = None
    contact: str = ""
    apply_layer: bool = True  # legacy backend patches already contain the base layer
    whitespace_fix: bool = False  # legacy sets were applied with --whitespace=fix
    source: str = ""  # the metadata file, for messages


@dataclass(frozen=True)
class HistoryChoice:
    """The history line a build uses: task, backend key and the chosen FlagScale commit."""

    device_type: str
    task: str
    backends: tuple[str, ...]
    commit: str
    commits: tuple[str, ...]  # the whole line, oldest first

    @property
    def key(self) -> str:
        """The backend key as written in the history (``FlagScale+Megatron-LM``)."""
        return "+".join(sorted(self.backends))


@dataclass
class BuildPlan:
    """Everything one device type's build is made from, as ids; ``inputs`` is fingerprinted."""

    device_type: str
    choice: HistoryChoice
    flagscale_base: str
    sets: dict[str, SetPlan]
    pins: dict[str, str]  # backend → pin used
    layers: dict[str, tuple[str | None, str | None]]  # backend → (layer tree, deletions blob)
    base_tree: str
    three_way: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def layout(self) -> str:
        """``legacy`` when any set uses FlagScale's older layout, else ``patch-set``."""
        return "legacy" if any(s.layout == "legacy" for s in self.sets.values()) else "patch-set"

    @property
    def backends(self) -> list[str]:
        """The upstream backends of the build (FlagScale itself excluded), sorted."""
        return sorted(b for b in self.choice.backends if b != FLAGSCALE)

    def inputs(self) -> dict[str, Any]:
        """The fingerprinted inputs (schema build-record, ``inputs``)."""
        components = [self._component(FLAGSCALE)] + [self._component(b) for b in self.backends]
        return {
            "format": PLAN_FORMAT,
            "tool_version": __version__,
            "device_type": self.device_type,
            "task": self.choice.task,
            "history_commit": self.choice.commit,
            "flagscale_base": self.flagscale_base,
            "layout": self.layout,
            "components": components,
            "options": {"three_way": self.three_way},
        }

    def _component(self, backend: str) -> dict[str, Any]:
        patch_set = self.sets.get(backend)
        upstream = backend != FLAGSCALE
        with_layer = upstream and (patch_set is None or patch_set.apply_layer)
        layer, deletions = self.layers.get(backend, (None, None)) if with_layer else (None, None)
        return {
            "backend": backend,
            "prefix": f"third_party/{backend}" if upstream else "",
            "tree": None if upstream else self.base_tree,
            "pin": self.pins[backend] if upstream else None,
            "base_layer": with_layer,
            "layer": layer,
            "deletions": deletions,
            "patch_set": patch_set.folder_tree if patch_set else None,
            "patches": [
                {"file": f.path, "blob": f.blob, "encrypted": f.encrypted}
                for f in (patch_set.files if patch_set else ())
            ],
            "key_id": patch_set.key_id if patch_set else None,
        }


# --- the history ------------------------------------------------------------------------------


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


# --- reading git objects ----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One ``ls-tree`` entry."""

    mode: str
    kind: str
    oid: str
    path: str


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


# --- patch sets at a commit -------------------------------------------------------------------


def read_sets(ws: Workspace, choice: HistoryChoice) -> dict[str, SetPlan]:
    """Each backend's patch set in ``hardware/<V_M>/`` at the history commit."""
    from flagscale.vendor import legacy

    device_folder = f"hardware/{choice.device_type}"
    entries = list_folder(ws, choice.commit, device_folder)
    by_backend: dict[str, list[Entry]] = {}
    for entry in entries:
        backend = entry.path[len(device_folder) + 1 :].split("/", 1)[0]
        by_backend.setdefault(backend, []).append(entry)
    documents = [
        e
        for group in by_backend.values()
        for e in group
        if e.path.count("/") == 3
        and (e.path.endswith(f"/{METADATA}") or legacy.is_metadata_name(e.path.rsplit("/", 1)[1]))
    ]
    texts = read_blobs(ws, [e.oid for e in documents])
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
        tree = folder_trees[folder].oid
        where = f"{folder}/{{}} at {choice.commit[:12]}"
        if METADATA in files:
            data = texts[files[METADATA].oid]
            sets[backend] = set_from_metadata(choice, backend, folder, tree, files, data, where)
        else:
            sets[backend] = legacy.read_legacy_set(ws, choice, backend, folder, tree, files, texts)
    return sets


def set_from_metadata(
    choice: HistoryChoice,
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
    if metadata.device_type != choice.device_type or metadata.backend != backend:
        raise FlagScaleError(
            f"{source} describes {metadata.device_type}/{metadata.backend}, not its folder",
            hint="the patch set was moved or copied by hand: ask the vendor to regenerate it",
        )
    if choice.task not in metadata.tasks:
        raise FlagScaleError(
            f"{source} is for tasks {', '.join(metadata.tasks)}, not {choice.task}",
            hint=f"fix {HISTORY} or the metadata",
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
                name=encryption_name(choice.device_type, backend, name),
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
    )


# --- where patch sets come from ---------------------------------------------------------------


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


# --- the plan ---------------------------------------------------------------------------------


def plan_device(
    ws: Workspace,
    device_type: str,
    *,
    task: str | None = None,
    commit: str | None = None,
    backends: Sequence[str] = (),
    three_way: bool = False,
    source: SetSource = GIT_SETS,
) -> BuildPlan:
    """Resolve the history, read the sets and pins: everything but the file contents.

    ``source`` says where the history line and the patch sets come from; FlagScale's files at
    the base and the pins always come from this clone.
    """
    from flagscale.vendor.patchset import check_device_type

    check_device_type(device_type)
    choice = source.choose(ws, device_type, task, commit, backends)
    for backend in choice.backends:
        if backend != FLAGSCALE:
            ws.backend(backend)  # unknown backend: one clear error
    sets = source.read_sets(ws, choice)
    base = _common_base(ws, choice, sets)
    pins, layers, base_tree = _base_facts(ws, base, choice, sets)
    return BuildPlan(
        device_type=device_type,
        choice=choice,
        flagscale_base=base,
        sets=sets,
        pins=pins,
        layers=layers,
        base_tree=base_tree,
        three_way=three_way,
    )


def _common_base(ws: Workspace, choice: HistoryChoice, sets: Mapping[str, SetPlan]) -> str:
    from flagscale.vendor import legacy

    bases = {s.flagscale_base for s in sets.values()}
    if all(s.layout == "legacy" for s in sets.values()):
        return legacy.newest_base(ws, sorted(bases), choice)
    if len(bases) != 1:
        listed = ", ".join(f"{s.backend} at {s.flagscale_base[:12]}" for s in sets.values())
        raise FlagScaleError(
            f"the patch sets of {choice.device_type} at {choice.commit[:12]} were made against"
            f" different FlagScale commits ({listed})",
            hint="ask the vendor to regenerate them against one --commit",
        )
    base = bases.pop()
    if commit_id(ws.root, base) is None:
        first = next(iter(sets.values()))
        raise FlagScaleError(
            f"{first.source}: flagscale_base {base} is not a commit in {ws.root}",
            hint=f"fetch it (git fetch {_remote(ws)} {base}) or update your clone, then retry",
        )
    return base


def _remote(ws: Workspace) -> str:
    """The remote to name in a fetch hint: ``origin`` if there is one, else the only one."""
    remotes = git(["remote"], ws.root, check=False).decode().split()
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else "<remote>"


def _base_facts(
    ws: Workspace, base: str, choice: HistoryChoice, sets: Mapping[str, SetPlan]
) -> tuple[dict[str, str], dict[str, tuple[str | None, str | None]], str]:
    """Pins, base layer ids and the FlagScale tree at ``base``, in one ``ls-tree`` call."""
    from flagscale.overlay.layered_trees import pin_at

    upstreams = sorted(b for b in choice.backends if b != FLAGSCALE)
    wanted = []
    for name in upstreams:
        backend = ws.backend(name)
        wanted += [backend.checkout, backend.layer, backend.deletions]
    found = list_paths(ws, base, wanted) if wanted else {}
    pins: dict[str, str] = {}
    layers: dict[str, tuple[str | None, str | None]] = {}
    for name in upstreams:
        backend = ws.backend(name)
        gitlink = found.get(backend.checkout)
        pin = gitlink.oid if gitlink and gitlink.mode == "160000" else pin_at(ws, backend, base)
        patch_set = sets.get(name)
        recorded = patch_set.recorded_pin if patch_set else None
        if patch_set is not None and recorded is not None and recorded != pin:
            if patch_set.layout == "legacy":
                pin = recorded  # FlagScale's older tool reset the submodule to backends_commit
            else:
                raise FlagScaleError(
                    f"{patch_set.source}: made against {name} {recorded}, but FlagScale"
                    f" {base[:12]} pins {name} at {pin} (in {backend.checkout} / {DECLARATION})",
                    hint="the patch set does not fit its recorded base: ask the vendor to"
                    " regenerate it",
                )
        pins[name] = pin
        layer = found.get(backend.layer)
        deletions = found.get(backend.deletions)
        layers[name] = (layer.oid if layer else None, deletions.oid if deletions else None)
    base_tree = git(["rev-parse", f"{base}^{{tree}}"], ws.root).decode().strip()
    return pins, layers, base_tree
