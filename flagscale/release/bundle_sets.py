"""Patch sets read from a verified release bundle instead of from git objects.

A verified bundle (``flagscale.release.bundle.verify_bundle``: signature and every hash checked,
files in memory) carries the history slice, each patch set's ``metadata.yaml`` and its patch files.
``BundleSets`` is the bundle as a ``flagscale.vendor.stored_sets.SetSource``: it chooses the history
entry from the bundle's history and reads the sets from the bundle's bytes, naming each file and
folder by the id git gives it. A build from a bundle therefore has the same inputs (and fingerprint)
whether or not the clone holds the commit the bundle was cut from; only FlagScale's files at each
set's ``flagscale_base`` and the backends' pins come from the clone. Nothing is written anywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import parse_document, validate
from flagscale.release.bundle import BundleError, VerifiedBundle, git_blob_id
from flagscale.upstream.workspace import Workspace
from flagscale.vendor.committed import HISTORY
from flagscale.vendor.stored_sets import (
    Entry,
    HistoryChoice,
    SetPlan,
    check_task,
    set_from_files,
)

__all__ = ["BundleSets", "sets_commit", "tree_id"]

_FILE_MODE = "100644"  # bundles hold regular files; patch sets are written 0644


def sets_commit(bundle: VerifiedBundle, device_type: str) -> str:
    """The one history commit the bundle's patch sets of ``device_type`` were cut from."""
    entry = bundle.manifest["device_types"].get(device_type)
    if entry is None:
        raise BundleError(
            f"{bundle.path} holds no patch sets for {device_type}; it holds "
            f"{', '.join(bundle.device_types)}"
        )
    commits = sorted({ps["commit"] for ps in entry["patch_sets"].values()})
    if len(commits) != 1:
        raise BundleError(
            f"{bundle.path}: the patch sets of {device_type} come from several commits "
            f"({', '.join(commits)}); a build uses one",
            hint="cut the bundle again after recording all of its sets in one commit",
        )
    return commits[0]


def tree_id(files: dict[str, str]) -> str:
    """The id git gives a tree of regular files (path → blob id; a ``/`` makes a subtree),
    without writing it."""
    root: dict[str, Any] = {}
    for path, oid in files.items():
        *folders, name = path.split("/")
        node = root
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = oid
    return _tree_id(root)


def _tree_id(node: dict[str, Any]) -> str:
    entries = []
    for name, value in node.items():
        raw = name.encode("utf-8", "surrogateescape")
        if isinstance(value, dict):  # git sorts a folder as if its name ended with "/"
            entries.append((raw + b"/", b"40000 " + raw + b"\0" + bytes.fromhex(_tree_id(value))))
        else:
            entries.append((raw, f"{_FILE_MODE} ".encode() + raw + b"\0" + bytes.fromhex(value)))
    body = b"".join(entry for _key, entry in sorted(entries))
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


class BundleSets:
    """A verified bundle as the source of a build's history entry and patch sets."""

    def __init__(self, bundle: VerifiedBundle) -> None:
        self.bundle = bundle
        where = f"{bundle.path}: {HISTORY}"
        if HISTORY not in bundle.files:
            raise BundleError(
                f"{where} is missing", hint="ask the release manager for a new bundle"
            )
        try:
            text = bundle.files[HISTORY].decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{where}: not UTF-8 text") from None
        self.history: dict[str, Any] = validate(
            parse_document(text, where) or {}, "patch-history", where
        )

    def choose(
        self,
        ws: Workspace,
        device_type: str,
        task: str | None,
        commit: str | None,
        backends: Sequence[str],
    ) -> HistoryChoice:
        """The bundle's history entry of ``device_type`` that records the bundled sets' commit.

        Like ``stored_sets.choose_history``: ``task`` and ``backends`` narrow the choice; of the
        entries left, the one with the widest backend key wins, else the choice is ambiguous.
        """
        recorded = sets_commit(self.bundle, device_type)
        if commit is not None and commit != recorded:
            raise BundleError(
                f"{self.bundle.path}: {device_type}'s patch sets are from {recorded}, not {commit}"
            )
        key = "+".join(sorted(set(backends))) if backends else None
        lines = [
            HistoryChoice(device_type, name, tuple(line_key.split("+")), recorded, tuple(commits))
            for name, keys in sorted(self.history.get(device_type, {}).items())
            for line_key, commits in sorted(keys.items())
            if recorded in commits and task in (None, name) and key in (None, line_key)
        ]
        if not lines:
            narrowed = "".join(
                f" {label} {value}" for label, value in (("task", task), ("backends", key)) if value
            )
            raise BundleError(
                f"{self.bundle.path}: its {HISTORY} has no entry for {device_type}{narrowed}"
                f" at {recorded}, the commit its patch sets were cut from",
                hint="drop --task/--backend, or build without --bundle",
            )
        widest = [c for c in lines if all(set(o.backends) <= set(c.backends) for o in lines)]
        if len({c.key for c in widest}) == 1:
            return widest[0]
        listed = "; ".join(f"{c.task} {c.key}" for c in lines)
        raise FlagScaleError(
            f"{device_type} has several history entries in {self.bundle.path} ({listed})",
            hint="pass --task (and --backend) to pick one",
        )

    def read_sets(self, ws: Workspace, choice: HistoryChoice) -> dict[str, SetPlan]:
        """Each backend's patch set of ``choice`` from the bundle's bytes (no git objects)."""
        bundled = self.bundle.manifest["device_types"][choice.device_type]["patch_sets"]
        sets: dict[str, SetPlan] = {}
        for backend in choice.backends:
            entry = bundled.get(backend)
            if entry is None:
                raise BundleError(
                    f"{self.bundle.path} holds no {backend} patch set for {choice.device_type},"
                    f" but its {HISTORY} lists {choice.key} for {choice.device_type}/{choice.task}",
                    hint="ask the release manager to cut the bundle again",
                )
            sets[backend] = self._set(ws, choice, backend, entry)
        return sets

    def _set(
        self, ws: Workspace, choice: HistoryChoice, backend: str, entry: dict[str, Any]
    ) -> SetPlan:
        folder = f"hardware/{choice.device_type}/{backend}"
        files = {}
        for path in [entry["metadata"], *entry["patches"]]:
            name = path[len(folder) + 1 :] if path.startswith(f"{folder}/") else ""
            if not name:
                raise BundleError(f"{self.bundle.path}: {path} is not a file of {folder}/")
            files[name] = Entry(_FILE_MODE, "blob", git_blob_id(self.bundle.files[path]), path)
        if files[entry["metadata"][len(folder) + 1 :]].path != entry["metadata"]:
            raise BundleError(f"{self.bundle.path}: {entry['metadata']} is not in {folder}/")
        tree = tree_id({name: e.oid for name, e in files.items()})
        texts = {files[name].oid: self.bundle.files[files[name].path] for name in files}
        at = f" in {self.bundle.path.name}"
        plan = set_from_files(ws, choice.device_type, backend, tree, files, texts, at)
        check_task(plan, choice.task)
        stored = tuple(replace(f, data=self.bundle.files[f.path]) for f in plan.files)
        return replace(plan, files=stored)
