"""What a patch set is made to produce: the blob id of every file it touches, afterwards.

When a set is made (``flagscale.vendor.make_sets``), ``metadata.yaml`` records for each target
file the git blob id it has in the vendor's tree (``results``: path → blob id, ``null`` for a
file the set deletes). A build checks the files it writes against them
(``flagscale.builds.results_check``): a patch that "applies" but leaves a file other than the
vendor had is an error, not a silent no-op.

For an encrypted set, paths and blob ids would tell what the encrypted patch changes (and let
anyone confirm a guess of a file's content), so it records ``results_sealed`` instead: for each
target, a keyed digest of its path → a keyed digest of path and blob id, both under a key
derived from the set's key (``flagscale.vendor.crypto.keyed_digest``). Whoever holds the key
(the build decrypts with it anyway) checks them the same way; nobody else learns anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["DELETED", "SetResults", "plain_results", "seal_results", "sealed_path", "sealed_value"]

DELETED = None  # the "blob id" of a file the set deletes


@dataclass(frozen=True)
class SetResults:
    """The recorded results of one set: plain (path → blob id) or sealed (digest → digest)."""

    entries: Mapping[str, str | None]
    sealed: bool = False

    def __len__(self) -> int:
        return len(self.entries)


def plain_results(changes: Iterable[tuple[str, str | None]]) -> dict[str, str | None]:
    """``results`` from (path, blob id or None for a deletion) pairs, sorted by path."""
    return dict(sorted(changes))


def sealed_path(key: bytes, path: str) -> str:
    """The keyed digest that stands for ``path`` in ``results_sealed``."""
    from flagscale.vendor.crypto import keyed_digest

    return keyed_digest(key, b"path\0" + path.encode("utf-8", "surrogateescape"))


def sealed_value(key: bytes, path: str, blob: str | None) -> str:
    """The keyed digest that stands for ``path`` having blob ``blob`` (None: deleted)."""
    from flagscale.vendor.crypto import keyed_digest

    content = (blob or "deleted").encode("ascii")
    return keyed_digest(key, b"blob\0" + path.encode("utf-8", "surrogateescape") + b"\0" + content)


def seal_results(results: Mapping[str, str | None], key: bytes) -> dict[str, str]:
    """``results_sealed`` for plain ``results``, sorted by digest."""
    return dict(
        sorted(
            (sealed_path(key, path), sealed_value(key, path, blob))
            for path, blob in results.items()
        )
    )
