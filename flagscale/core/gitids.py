"""The ids git gives objects, computed from bytes in memory without writing anything.

Patch sets read from a release bundle or from the work tree are named by the same ids a commit
holding them would give (blob ids of the files, the tree id of the set's folder), so a build's
fingerprint says exactly which bytes it used, wherever they came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["REGULAR", "EXECUTABLE", "blob_id", "flat_tree_id"]

REGULAR = "100644"
EXECUTABLE = "100755"


def blob_id(data: bytes) -> str:
    """The id git gives a blob holding ``data`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def flat_tree_id(files: Mapping[str, tuple[str, str]]) -> str:
    """The id of a tree of files only: name → (mode, blob id); sorted as git sorts them."""
    body = b"".join(
        mode.encode() + b" " + name.encode("utf-8", "surrogateescape") + b"\0" + bytes.fromhex(oid)
        for name, (mode, oid) in sorted(
            files.items(), key=lambda item: item[0].encode("utf-8", "surrogateescape")
        )
    )
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
