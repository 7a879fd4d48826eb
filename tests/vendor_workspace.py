"""A vendor's workspace for the patch-set and history tests: real repositories, every kind of edit.

``make_vendor_workspace`` builds a FlagScale superproject with a real Megatron-LM submodule and a
committed base layer, lays the layer over the checkout by relative symlinks (what ``inv unpatch``
does) and returns the base commit. ``adapt`` then makes a vendor's edits of every kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.gitrepos import Exec, Link, commit_all, make_workspace, run_git, write_files

BACKEND = "Megatron-LM"
BINARY = bytes(range(256)) * 8

UPSTREAM = {
    ".gitignore": "*.log\n",
    "megatron/core/model.py": "class Model:\n    layers = 2\n",
    "megatron/core/old_name.py": "def old():\n    return 1\n",
    "megatron/legacy.py": "LEGACY = True\n",
    "tools/run.sh": Exec(b"#!/bin/sh\necho run\n"),
    "tools/setup.py": "print('setup')\n",
    "docs/link": Link("../megatron/legacy.py"),
    "weights.bin": BINARY,
    "dropped_by_layer.py": "x = 1\n",
    "patched_by_layer.py": "base = 'upstream'\n",
}

LAYER = {
    f"backends/{BACKEND}/patched_by_layer.py": "base = 'flagscale'\n",
    f"backends/{BACKEND}/megatron/flagscale_extra.py": "EXTRA = 1\n",
    f"backends/{BACKEND}.layer.yaml": "version: 1\ndeleted:\n  - dropped_by_layer.py\n",
}


@dataclass(frozen=True)
class VendorWorkspace:
    """A FlagScale checkout as a vendor has it after ``inv unpatch``."""

    root: Path
    upstream: Path
    base: str

    @property
    def checkout(self) -> Path:
        """``third_party/Megatron-LM``."""
        return self.root / "third_party" / BACKEND


def lay_by_symlink(root: Path, backend: str) -> None:
    """Lay ``backends/<backend>`` over ``third_party/<backend>`` by relative symlinks."""
    layer = root / "backends" / backend
    checkout = root / "third_party" / backend
    for folder, _dirs, files in os.walk(layer):
        for name in files:
            source = Path(folder) / name
            relative = source.relative_to(layer)
            target = checkout / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            os.symlink(os.path.relpath(source, target.parent), target)
    (checkout / "dropped_by_layer.py").unlink()


def make_vendor_workspace(tmp: Path) -> VendorWorkspace:
    """FlagScale with a base layer committed (the base) and laid over the checkout."""
    root, upstreams = make_workspace(
        tmp,
        {BACKEND: UPSTREAM},
        extra={"flagscale/train.py": "def train():\n    pass\n", "tools/x.txt": "x\n"},
    )
    write_files(root, LAYER)
    base = commit_all(root, "base layer")
    lay_by_symlink(root, BACKEND)
    return VendorWorkspace(root, upstreams[BACKEND], base)


def adapt_backend(vendor: VendorWorkspace) -> None:
    """In-place edits of every kind inside third_party/Megatron-LM."""
    checkout = vendor.checkout
    write_files(
        checkout,
        {
            "megatron/core/model.py": "class Model:\n    layers = 4  # vendor\n",
            "megatron/core/new_name.py": "def old():\n    return 1\n",
            "megatron/vendor/kernel.py": "KERNEL = 'metax'\n",
            "tools/setup.py": Exec(b"print('setup')\n"),
            "tools/run.sh": b"#!/bin/sh\necho run on metax\n",
            "docs/vendor-link": Link("../megatron/vendor/kernel.py"),
            "weights.bin": BINARY[:-7] + b"\x00vendor",
            "données du modèle.txt": "poids\n",
            "crlf.txt": b"line one\r\nline two\r\n",
            "run.log": "ignored by the upstream .gitignore\n",
        },
    )
    (checkout / "megatron/core/old_name.py").unlink()
    (checkout / "megatron/legacy.py").unlink()
    # an edit made through an overlay symlink lands in backends/<backend>/
    (checkout / "patched_by_layer.py").write_text("base = 'flagscale+metax'\n", encoding="utf-8")


def adapt_flagscale(vendor: VendorWorkspace) -> None:
    """FlagScale edits: one committed, one modified, one untracked, one staged."""
    root = vendor.root
    write_files(root, {"flagscale/metax.py": "DEVICE = 'metax'\n"})
    run_git(root, "add", "flagscale/metax.py")
    run_git(root, "commit", "-q", "-m", "vendor: metax device")
    write_files(
        root,
        {
            "flagscale/train.py": "def train():\n    return 'metax'\n",
            "flagscale/notes é.md": "untracked note\n",
            "tools/x.txt": "x staged\n",
        },
    )
    run_git(root, "add", "tools/x.txt")


def user_state(root: Path) -> dict[str, str]:
    """What must not change under a user: status, stash, branch, staged diff, checkout index."""
    checkout = root / "third_party" / BACKEND
    gitdir = Path(run_git(checkout, "rev-parse", "--absolute-git-dir"))
    return {
        "status": run_git(root, "status", "--porcelain=v2", "-z", "--", ".", ":!hardware"),
        "stash": run_git(root, "stash", "list"),
        "branch": run_git(root, "symbolic-ref", "HEAD"),
        "staged": run_git(root, "diff", "--cached", "--binary", "--", ".", ":!hardware"),
        "unstaged": run_git(root, "diff", "--binary"),
        "checkout status": run_git(checkout, "status", "--porcelain=v2", "-z"),
        "checkout index": (gitdir / "index").read_bytes().hex(),
        "checkout head": run_git(checkout, "rev-parse", "HEAD"),
    }
