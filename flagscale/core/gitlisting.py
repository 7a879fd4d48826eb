"""Reading git's file listings: ``git ls-tree -r -z`` and ``git ls-files -s -z``."""

from __future__ import annotations

__all__ = ["listed_entries"]

_TREE_KINDS = ("blob", "commit", "tree")


def listed_entries(raw: bytes) -> dict[str, tuple[str, str]]:
    """path → (mode, object id) of a ``-z`` listing, from ``ls-tree`` (``mode type oid``) or
    ``ls-files -s`` (``mode oid stage``); names are decoded as the file system would."""
    found: dict[str, tuple[str, str]] = {}
    for record in filter(None, raw.split(b"\0")):
        meta, _, name = record.partition(b"\t")
        fields = meta.decode().split()
        oid = fields[2] if fields[1] in _TREE_KINDS else fields[1]
        found[name.decode("utf-8", "surrogateescape")] = (fields[0], oid)
    return found
