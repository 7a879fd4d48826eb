"""A FlagScale workspace for the overlay's safety tests: a real submodule and a committed base
layer holding each kind of entry (an override of an upstream file, a file upstream does not
have, an executable, a symlink, a deletion). Built once per session and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.gitrepos import Exec, Link, commit_all, make_workspace, write_files

NAME = "Megatron-LM"
CHECKOUT = f"third_party/{NAME}"
LAYER = f"backends/{NAME}"
DELETIONS = f"backends/{NAME}.layer.yaml"
PACKAGE_INFO = "megatron/core/package_info.py"
EXTRA = "megatron/flagscale/extra.py"

UPSTREAM = {
    "README.md": "upstream readme\n",
    PACKAGE_INFO: "VERSION = '0.16.1'\n",
    "megatron/core/utils.py": "def util():\n    return 1\n",
    "megatron/core/model.py": "class Model:\n    pass\n",
    "tools/run.sh": Exec(b"#!/bin/sh\necho run\n"),
    "docs/old.md": "old\n",
    "docs/guide.md": "guide\n",
    "latest": Link("megatron/core/model.py"),
    "data/blob.bin": b"\x00\x01\x02\xff\x00",
    ".gitignore": "*.pyc\n",
}
BASE_LAYER = {
    PACKAGE_INFO: "VERSION = '0.16.1+flagscale'\n",
    EXTRA: "EXTRA = 1\n",
    "tools/fs.sh": Exec(b"#!/bin/sh\necho flagscale\n"),
    "fs-link": Link("megatron/core/model.py"),
}
BASE_DELETIONS = "version: 1\ndeleted:\n- docs/old.md\n"

_TEMPLATE: dict[str, Path] = {}


def overlay_workspace(tmp: Path, template_dir: Path) -> Path:
    """A fresh copy of the template workspace under ``tmp``; returns the FlagScale root.

    ``template_dir`` is where the template is made the first time (it must outlive the tests:
    the copies' submodule URL points at its upstream).
    """
    if "root" not in _TEMPLATE:
        root, _ = make_workspace(template_dir, {NAME: UPSTREAM})
        write_files(root, {".gitignore": "/build/\n/.flagscale/\n"})
        write_files(root / LAYER, BASE_LAYER)
        (root / DELETIONS).write_text(BASE_DELETIONS, encoding="utf-8")
        commit_all(root, "base layer")
        _TEMPLATE["root"] = template_dir
    shutil.copytree(_TEMPLATE["root"], tmp / "ws", symlinks=True)
    return tmp / "ws" / "FlagScale"
