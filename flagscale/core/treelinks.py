"""The symlinks of a git tree (path → target), read with one ``ls-tree`` and one ``cat-file``.

Callers pass ``run(args, stdin)``: git pointed at whichever repository, index and object folder
hold the tree (a checkout, the scratch repository, a build's private objects).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

__all__ = ["GitRunner", "SYMLINK_MODE", "blob_texts", "tree_symlinks"]

SYMLINK_MODE = "120000"

GitRunner = Callable[[Sequence[str], "bytes | None"], bytes]


def tree_symlinks(run: GitRunner, tree: str) -> dict[str, str]:
    """Every symlink of ``tree`` (recursively) with its target."""
    raw = run(["ls-tree", "-r", "-z", "--full-tree", tree], None)
    oids: dict[str, str] = {}
    for record in filter(None, raw.split(b"\0")):
        meta, _, name = record.partition(b"\t")
        if meta.startswith(SYMLINK_MODE.encode()):
            oids[name.decode("utf-8", "surrogateescape")] = meta.split(b" ")[2].decode()
    texts = blob_texts(run, oids.values())
    return {path: texts[oid] for path, oid in oids.items()}


def blob_texts(run: GitRunner, oids: Iterable[str]) -> dict[str, str]:
    """The contents of blobs (symlink targets) by id, decoded as file names are."""
    wanted = list(dict.fromkeys(oids))
    if not wanted:
        return {}
    raw = run(["cat-file", "--batch"], "".join(f"{oid}\n" for oid in wanted).encode())
    texts: dict[str, str] = {}
    position = 0
    for oid in wanted:
        end = raw.index(b"\n", position)
        header = raw[position:end].split(b" ")
        size = int(header[2])
        texts[oid] = raw[end + 1 : end + 1 + size].decode("utf-8", "surrogateescape")
        position = end + 1 + size + 1
    return texts
