"""Vendor patch sets and the history as committed: read from git objects, never the work tree.

Each set is read by the one reader of stored sets (``flagscale.vendor.stored_sets``), so bundles
and the matrix accept exactly what builds accept, in both layouts.

Releases (bundles) and the compatibility matrix look at one FlagScale commit, so what they report
is what others get when they check that commit out. ``hardware/`` is listed once and its blobs
are read in one ``git cat-file --batch`` call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git, git_ok, git_text
from flagscale.core.gitlisting import listed_entries
from flagscale.core.schema import validate
from flagscale.upstream.workspace import DECLARATION, Workspace
from flagscale.vendor.set_plan import Entry, SetPlan
from flagscale.vendor.stored_sets import list_paths, set_from_files

__all__ = [
    "HISTORY",
    "CommittedPatchSet",
    "CommittedState",
    "CommittedTree",
    "history_commit",
    "device_backends",
    "resolve_commit",
]

HISTORY = "hardware/patch_history.yaml"
_REGULAR = ("100644", "100755")


@dataclass(frozen=True)
class CommittedPatchSet:
    """One device type's patch set for one backend, as stored in a commit (either layout)."""

    device_type: str
    backend: str
    commit: str  # the history commit whose tree it was read from
    tasks: tuple[str, ...]  # the tasks the history records it for
    plan: SetPlan  # as the one reader of stored sets read it (flagscale.vendor.stored_sets)
    metadata_bytes: bytes
    patch_files: dict[str, bytes]  # path in the workspace → stored bytes, in the reader's order

    @property
    def folder(self) -> str:
        """``hardware/<device type>/<backend>``."""
        return self.plan.folder

    @property
    def layout(self) -> str:
        """``patch-set`` or ``legacy`` (FlagScale's ``diff.yaml`` layout)."""
        return self.plan.layout

    @property
    def metadata_path(self) -> str:
        """``metadata.yaml``, ``diff.yaml`` or ``<short commit>.yaml`` of the set."""
        return self.plan.metadata_path

    @property
    def encrypted(self) -> bool:
        """Whether any of its patch files is stored encrypted."""
        return any(f.encrypted for f in self.plan.files)

    @property
    def flagscale_base(self) -> str:
        """The FlagScale commit the set was made against."""
        return self.plan.flagscale_base

    @property
    def backend_pin(self) -> str | None:
        """The upstream commit the set records it was made against (None: not recorded)."""
        return self.plan.recorded_pin

    @property
    def backend_version(self) -> str | None:
        """The backend version the set's metadata names."""
        return self.plan.backend_version


def resolve_commit(root: Path, ref: str) -> str:
    """The full id of commit ``ref`` in the repository at ``root``."""
    if not ref or ref.startswith("-"):
        raise FlagScaleError(f"{ref!r} is not a commit")
    oid = commit_id(root, ref)
    if oid is None:
        raise FlagScaleError(f"{ref!r} is not a commit in {root}", hint="commit your work first")
    return oid


def device_backends(device_history: dict[str, Any]) -> list[str]:
    """Every backend a device type's history entry names, over all tasks, sorted."""
    names: set[str] = set()
    for backend_keys in device_history.values():
        for key in backend_keys:
            names.update(key.split("+"))
    return sorted(names)


def _device_tasks(device_history: dict[str, Any], backend: str) -> tuple[str, ...]:
    return tuple(
        sorted(
            task
            for task, keys in device_history.items()
            if any(backend in key.split("+") for key in keys)
        )
    )


class CommittedTree:
    """The files under ``hardware/`` (and the declaration) of one commit, read on demand."""

    def __init__(self, root: Path, commit: str) -> None:
        self.root = root
        self.commit = commit
        self.workspace = Workspace(root=root, backends={})
        self._entries = self._list(["hardware", DECLARATION])
        self._cache: dict[str, bytes] = {}

    def _list(self, paths: list[str]) -> dict[str, tuple[str, str]]:
        raw = git(["ls-tree", "-r", "-z", "--full-tree", self.commit, "--", *paths], self.root)
        return listed_entries(raw)

    def where(self, path: str) -> str:
        """How messages name ``path``: ``<path> at <commit>``."""
        return f"{path} at {self.commit}"

    def read(self, path: str) -> bytes | None:
        """The bytes of regular file ``path`` in the commit, or None when it is not there."""
        if path in self._cache:
            return self._cache[path]
        entry = self._entries.get(path)
        if entry is None:
            return None
        mode, oid = entry
        if mode not in _REGULAR:
            raise FlagScaleError(f"{self.where(path)} is not a regular file (mode {mode})")
        self._preload([p for p in self._entries if p.startswith("hardware/")] + [path])
        return self._cache[path]

    def _preload(self, paths: list[str]) -> None:
        wanted = [p for p in dict.fromkeys(paths) if p not in self._cache]
        wanted = [p for p in wanted if self._entries[p][0] in _REGULAR]
        if not wanted:
            return
        request = "".join(f"{self._entries[p][1]}\n" for p in wanted).encode()
        output = git(["cat-file", "--batch"], self.root, stdin=request)
        offset = 0
        for path in wanted:
            header_end = output.index(b"\n", offset)
            _oid, _kind, size = output[offset:header_end].split()
            start = header_end + 1
            self._cache[path] = output[start : start + int(size)]
            offset = start + int(size) + 1

    def history(self) -> dict[str, Any]:
        """``hardware/patch_history.yaml`` of the commit, checked against its schema."""
        blob = self.read(HISTORY)
        if blob is None:
            raise FlagScaleError(
                f"{self.where(HISTORY)} does not exist: no device type has a patch set yet",
                hint="vendors add patch sets with inv patch --device-type ...",
            )
        return validate(
            _yaml(blob, self.where(HISTORY)) or {}, "patch-history", self.where(HISTORY)
        )

    def patch_set(
        self, device: str, backend: str, device_history: dict[str, Any]
    ) -> CommittedPatchSet:
        """The committed patch set of ``device`` for ``backend``, its hashes checked."""
        folder = f"hardware/{device}/{backend}"
        files = {
            path[len(folder) + 1 :]: Entry(mode, "blob", oid, path)
            for path, (mode, oid) in self._entries.items()
            if path.startswith(f"{folder}/")
        }
        found = list_paths(self.workspace, self.commit, [folder]) if files else {}
        if folder not in found:
            raise FlagScaleError(
                f"{HISTORY} names backend {backend} for {device}, but {self.where(folder)}"
                " does not exist",
                hint="commit the patch set (inv patch) or fix the history",
            )
        texts = {e.oid: data for e in files.values() if (data := self._metadata_text(e))}
        at = f" at {self.commit}"
        plan = set_from_files(self.workspace, device, backend, found[folder].oid, files, texts, at)
        patch_files: dict[str, bytes] = {}
        for stored in plan.files:
            data = self.read(stored.path)
            assert data is not None  # the reader found it in this listing
            actual = hashlib.sha256(data).hexdigest()
            if stored.sha256 is not None and actual != stored.sha256:
                raise FlagScaleError(
                    f"{self.where(stored.path)} has sha256 {actual}, "
                    f"{plan.metadata_path} says {stored.sha256}",
                    hint="re-run inv patch for this device type and commit the result",
                )
            patch_files[stored.path] = data
        metadata_bytes = self.read(plan.metadata_path)
        assert metadata_bytes is not None
        return CommittedPatchSet(
            device_type=device,
            backend=backend,
            commit=self.commit,
            tasks=_device_tasks(device_history, backend),
            plan=plan,
            metadata_bytes=metadata_bytes,
            patch_files=patch_files,
        )

    def _metadata_text(self, entry: Entry) -> bytes | None:
        """The bytes of a file directly in a set folder (where metadata lives); None elsewhere."""
        if entry.path.count("/") != 3 or entry.mode not in _REGULAR:
            return None
        return self.read(entry.path)

    def pins(self, names: list[str]) -> dict[str, str]:
        """The pin of each named backend at this commit (release pin or submodule gitlink)."""
        blob = self.read(DECLARATION)
        if blob is None:
            raise FlagScaleError(f"{self.where(DECLARATION)} does not exist")
        declared = validate(
            _yaml(blob, self.where(DECLARATION)), "workspace", self.where(DECLARATION)
        )
        pins: dict[str, str] = {}
        for name in names:
            entry = declared["backends"].get(name)
            if entry is None:
                raise FlagScaleError(f"{self.where(DECLARATION)} does not declare backend {name}")
            if entry["source"]["kind"] == "release":
                pins[name] = entry["pin"]
            else:
                pins[name] = self._gitlink(f"third_party/{name}")
        return pins

    def _gitlink(self, path: str) -> str:
        line = git_text(["ls-tree", "--full-tree", self.commit, "--", path], self.root)
        fields = line.split()
        if len(fields) < 3 or fields[0] != "160000":
            raise FlagScaleError(f"{self.where(path)} is not a submodule: it has no pin")
        return fields[2]


def _yaml(data: bytes, source: str) -> Any:
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FlagScaleError(f"{source}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise FlagScaleError(f"{where}: not valid YAML") from None


def history_commit(root: Path, device: str, device_history: dict[str, Any], backend: str) -> str:
    """The newest history commit recorded for ``backend`` of ``device``, over all its tasks.

    Each list is oldest first. When the lists of several tasks end in different commits, the
    one that descends from all the others wins; failing that, the latest commit date.
    """
    newest = sorted(
        {
            commits[-1]
            for keys in device_history.values()
            for key, commits in keys.items()
            if backend in key.split("+")
        }
    )
    for commit in newest:
        _existing(root, commit, device, backend)
    if len(newest) == 1:
        return newest[0]
    for commit in newest:
        others = [o for o in newest if o != commit]
        if all(git_ok(["merge-base", "--is-ancestor", o, commit], root) for o in others):
            return commit
    return git_text(["rev-list", "--no-walk=sorted", *newest], root).split()[0]


def _existing(root: Path, commit: str, device: str, backend: str) -> str:
    found = git(["cat-file", "-t", commit], root, check=False).strip()
    if found != b"commit":
        raise FlagScaleError(
            f"{HISTORY}: commit {commit} recorded for {device} {backend} is not in {root}",
            hint=_missing_commit_hint(root),
        )
    return commit


def _missing_commit_hint(root: Path) -> str:
    """A shallow clone lacks history; a full one holds a stale entry (a squash-merged or closed
    pull request recorded a commit that main does not hold)."""
    if git_text(["rev-parse", "--is-shallow-repository"], root, check=False) == "true":
        return "this clone is shallow: fetch the full history (git fetch --unshallow) and try again"
    return (
        "the entry is stale: `inv check-history --repair` records the commit that holds those"
        " sets; `inv check-history --repair --drop-stale` removes an entry nothing replaces"
    )


class CommittedState:
    """The history at one commit and the patch sets it names, each read at its own commit."""

    def __init__(self, root: Path, ref: str = "HEAD") -> None:
        self.root = root
        self.head = CommittedTree(root, resolve_commit(root, ref))
        self.history = self.head.history()
        self._trees: dict[str, CommittedTree] = {self.head.commit: self.head}

    def backends(self, device: str) -> list[str]:
        """The backends the history names for ``device``."""
        return device_backends(self.history[device])

    def tasks(self, device: str, backend: str) -> tuple[str, ...]:
        """The tasks whose history entries name ``backend`` for ``device``."""
        return _device_tasks(self.history[device], backend)

    def patch_set(self, device: str, backend: str) -> CommittedPatchSet:
        """The patch set of ``device`` for ``backend`` at its newest history commit."""
        device_history = self.history[device]
        commit = history_commit(self.root, device, device_history, backend)
        if commit not in self._trees:
            self._trees[commit] = CommittedTree(self.root, commit)
        return self._trees[commit].patch_set(device, backend, device_history)
