"""A FlagScale checkout as the import reads it: its committed ``HEAD``, never its work tree.

Everything here is a read-only git question asked in the checkout (``ls-tree``, ``cat-file``,
``rev-parse``, ``config --blob``): nothing in the checkout is written, not even its index.
What FlagScale's tools need from it: the submodules and their pins, the base patches
``flagscale/backends/<backend>/**.patch``, ``hardware/patch_history.yaml`` and the vendor sets
it names (read by the one reader of stored sets, both layouts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import commit_id, git, git_ok, git_text
from flagscale.upstream.workspace import FLAGSCALE, Workspace
from flagscale.vendor.patchset import DEVICE_TYPE, TASKS
from flagscale.vendor.set_plan import SetPlan
from flagscale.vendor.stored_sets import list_folder, read_blobs, set_at

__all__ = ["BASE_PATCHES", "HistoryLine", "SourceCheckout", "Submodule", "upstream_backends"]

BASE_PATCHES = "flagscale/backends"
HISTORY = "hardware/patch_history.yaml"
GITLINK = "160000"


@dataclass(frozen=True)
class Submodule:
    """One of FlagScale's backends: ``third_party/<name>`` and where it is cloned from."""

    name: str
    url: str
    pin: str  # the gitlink at the checkout's HEAD


@dataclass(frozen=True)
class HistoryLine:
    """One line of FlagScale's history: device type, task, backend key and its commits."""

    device_type: str
    task: str
    key: str
    commits: tuple[str, ...]  # as resolved in the checkout, oldest first

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self.key.split("+"))

    @property
    def newest(self) -> str:
        return self.commits[-1]


class SourceCheckout:
    """The FlagScale checkout at ``root``, read at its ``HEAD``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not (self.root / ".git").exists():
            raise FlagScaleError(
                f"{root} is not a git checkout of FlagScale",
                hint="give the path of your FlagScale clone (the folder holding hardware/)",
            )
        head = commit_id(self.root, "HEAD")
        if head is None:
            raise FlagScaleError(f"{root} has no commit at HEAD", hint="check out a branch")
        self.head = head
        self.workspace = Workspace(root=self.root, backends={})  # for the reader of stored sets

    def date(self) -> str:
        """The committer date of HEAD, as git's raw ``<seconds> <zone>``."""
        return git_text(["log", "-1", "--format=%ct +0000", self.head], self.root)

    def describe(self) -> str:
        return f"FlagScale checkout {self.root} at {self.head[:12]}"

    # --- objects -------------------------------------------------------------------------------

    def object_folders(self) -> list[str]:
        """Its object folder and those of its submodules' repositories (if cloned)."""
        folders = [_git_path(self.root, "objects")]
        modules = Path(_git_path(self.root, "modules"))
        if modules.is_dir():
            folders += sorted(str(p) for p in modules.glob("**/objects") if (p / "info").is_dir())
        return [f for f in folders if Path(f).is_dir()]

    def read(self, commit: str, path: str) -> bytes | None:
        """The bytes of ``path`` at ``commit``, or None when it is not there."""
        if not git_ok(["cat-file", "-e", f"{commit}:{path}"], self.root):
            return None
        return git(["cat-file", "blob", f"{commit}:{path}"], self.root)

    # --- backends and base patches -------------------------------------------------------------

    def submodules(self) -> dict[str, Submodule]:
        """``third_party/<name>`` submodules at HEAD, by backend name."""
        raw = git_text(
            ["config", "--blob", f"{self.head}:.gitmodules", "--get-regexp", r"^submodule\..*"],
            self.root,
            check=False,
        )
        paths: dict[str, str] = {}
        urls: dict[str, str] = {}
        for line in raw.splitlines():
            key, _, value = line.partition(" ")
            section, _, field = key.rpartition(".")
            if field == "path":
                paths[section] = value
            elif field == "url":
                urls[section] = value
        found = {}
        for section, path in paths.items():
            if not path.startswith("third_party/") or path.count("/") != 1:
                continue
            pin = self.gitlink(self.head, path)
            if pin is not None and section in urls:
                name = path.split("/", 1)[1]
                found[name] = Submodule(name, urls[section], pin)
        return found

    def gitlink(self, commit: str, path: str) -> str | None:
        """The commit a submodule path is pinned to at ``commit``."""
        line = git_text(["ls-tree", commit, "--", path], self.root, check=False)
        fields = line.split()
        return fields[2] if len(fields) >= 3 and fields[0] == GITLINK else None

    def base_patches(self, backend: str) -> list[tuple[str, str]]:
        """(path, blob) of each ``*.patch`` under ``flagscale/backends/<backend>/`` at HEAD, in
        the order FlagScale's unpatch applies them: a folder's files (sorted) before its
        sub-folders (sorted)."""
        folder = f"{BASE_PATCHES}/{backend}"
        entries = list_folder(self.workspace, self.head, folder)
        found = [(e.path, e.oid) for e in entries if e.path.endswith(".patch")]
        return sorted(found, key=lambda item: _walk_key(item[0][len(folder) + 1 :]))

    def blobs(self, oids: list[str]) -> dict[str, bytes]:
        return read_blobs(self.workspace, oids)

    # --- history and sets ----------------------------------------------------------------------

    def history(self) -> list[HistoryLine]:
        """Every line of ``hardware/patch_history.yaml`` at HEAD (commit ids resolved)."""
        data = self.read(self.head, HISTORY)
        if data is None:
            raise FlagScaleError(
                f"{self.describe()}: {HISTORY} does not exist",
                hint="give the path of a FlagScale checkout whose history records vendor sets",
            )
        where = f"{HISTORY} at {self.head[:12]} in {self.root}"
        try:
            document = yaml.load(data.decode("utf-8"), Loader=yaml.BaseLoader) or {}
        except (UnicodeDecodeError, yaml.YAMLError):
            raise FlagScaleError(f"{where}: not valid YAML") from None
        if not isinstance(document, dict):
            raise FlagScaleError(f"{where}: not a mapping of device types")
        lines = []
        for device, tasks in sorted(document.items()):
            for task, keys in sorted((tasks or {}).items()) if isinstance(tasks, dict) else ():
                for key, commits in sorted((keys or {}).items()) if isinstance(keys, dict) else ():
                    line = self._line(where, device, task, key, commits)
                    if line is not None:
                        lines.append(line)
        return lines

    def _line(
        self, where: str, device: str, task: str, key: str, commits: object
    ) -> HistoryLine | None:
        label = f"{where}: {device}.{task}.{key}"
        if not DEVICE_TYPE.match(device) or task not in TASKS:
            raise FlagScaleError(f"{label}: not a Vendor_Model device type and a known task")
        if not isinstance(commits, list) or not commits:
            return None
        resolved = []
        for text in commits:
            oid = (
                commit_id(self.root, str(text))
                if re.fullmatch(r"[0-9a-f]{4,40}", str(text))
                else None
            )
            if oid is None:
                raise FlagScaleError(
                    f"{label}: commit {text} does not exist in {self.root}",
                    hint="fetch FlagScale's full history into the checkout, then run again",
                )
            resolved.append(oid)
        return HistoryLine(device, task, key, tuple(resolved))

    def stored_set(self, commit: str, device: str, backend: str) -> SetPlan | None:
        """The set FlagScale's tool would read for ``device``/``backend`` at ``commit``."""
        return set_at(self.workspace, commit, device, backend)

    def is_ancestor(self, older: str, newer: str) -> bool:
        return git_ok(["merge-base", "--is-ancestor", older, newer], self.root)

    def topo_order(self, commits: list[str]) -> list[str]:
        """``commits`` oldest first by ancestry."""
        unique = list(dict.fromkeys(commits))
        if len(unique) < 2:
            return unique
        listing = git_text(["rev-list", "--topo-order", "--reverse", *unique], self.root).split()
        position = {oid: index for index, oid in enumerate(listing)}
        return sorted(unique, key=lambda oid: (position.get(oid, -1), oid))


def upstream_backends(lines: list[HistoryLine]) -> list[str]:
    """The upstream backends the history names (FlagScale itself left out), sorted."""
    return sorted({b for line in lines for b in line.backends if b != FLAGSCALE})


def _git_path(root: Path, name: str) -> str:
    return git_text(["rev-parse", "--path-format=absolute", "--git-path", name], root)


def _walk_key(relative: str) -> tuple[tuple[int, str], ...]:
    """Sort key of ``os.walk`` top-down order: in each folder its files, then its sub-folders."""
    parts = relative.split("/")
    return tuple((1, part) for part in parts[:-1]) + ((0, parts[-1]),)
