"""A stored patch set as ids: the value types every reader of stored sets returns.

``flagscale.vendor.stored_sets`` (native layout) and ``flagscale.vendor.legacy`` (FlagScale's
older layout) read sets into these; builds, bundles and the matrix consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flagscale.vendor.set_results import SetResults

__all__ = ["Entry", "HistoryChoice", "SetFile", "SetPlan"]


@dataclass(frozen=True)
class SetFile:
    """One stored patch file of a set, as found at the history commit."""

    path: str  # workspace-relative, e.g. hardware/Metax_C550/Megatron-LM/Megatron-LM.patch.enc
    blob: str
    encrypted: bool
    scheme: str | None = (
        None  # "fsenc" (flagscale.vendor.crypto), "legacy" (RSA + AES-CBC), or None
    )
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
    source: str = ""  # the metadata file, for messages
    device_type: str = ""
    tasks: tuple[str, ...] = ()  # the tasks its metadata lists (a legacy set without: all)
    metadata_path: str = ""  # workspace-relative: metadata.yaml, diff.yaml or <short>.yaml
    metadata_blob: str = ""
    backend_version: str | None = None
    # what the set was made to produce (None: made before results were recorded)
    results: SetResults | None = field(default=None, compare=False)


@dataclass(frozen=True)
class HistoryChoice:
    """The history line a build uses: task, backend key and the chosen FlagScale commit."""

    device_type: str
    task: str
    backends: tuple[str, ...]
    commit: str
    commits: tuple[str, ...]  # the whole line, oldest first
    recorded: bool = True  # False: the sets in the work tree (inv build --work-tree), at HEAD

    @property
    def key(self) -> str:
        """The backend key as written in the history (``FlagScale+Megatron-LM``)."""
        return "+".join(sorted(self.backends))

    @property
    def described(self) -> str:
        """Where the sets come from, for messages: ``patch sets of <commit>`` or the work tree."""
        if not self.recorded:
            return "unrecorded patch sets in the work tree"
        return f"patch sets of {self.commit[:12]}"


@dataclass(frozen=True)
class Entry:
    """One ``ls-tree`` entry."""

    mode: str
    kind: str
    oid: str
    path: str
