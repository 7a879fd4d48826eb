"""The symlinks of a checkout as ``inv unpatch`` lays it: the pin's, less what the base layer
deletes or replaces, plus the layer's own; checked by the one rule for links
(``flagscale.core.paths.check_links``) before anything is laid."""

from __future__ import annotations

from collections.abc import Sequence

from flagscale.core.gitcli import git
from flagscale.core.paths import check_links
from flagscale.core.treelinks import SYMLINK_MODE, blob_texts
from flagscale.overlay.checkout import Checkout
from flagscale.overlay.layer import Layer

__all__ = ["check_laid_links"]


def check_laid_links(checkout: Checkout, layer: Layer, pin: str) -> None:
    """Refuse a base layer whose laid tree would hold a symlink leading out of the checkout."""
    backend = checkout.backend
    links = {p: e.target for p, e in layer.entries.items() if e.kind == "link" and e.target}
    removed = set(layer.deletions) | set(layer.entries)
    pin_links = {
        path: oid
        for path, (mode, oid) in checkout.tree(pin).entries.items()
        if mode == SYMLINK_MODE and not _below_any(path, removed)
    }
    targets = blob_texts(_git_in(checkout), pin_links.values())
    links.update({path: targets[oid] for path, oid in pin_links.items()})

    def where(path: str) -> str:
        if path in layer.entries:
            return f"{backend.layer}/{path}"
        return f"{backend.checkout}/{path} (upstream {backend.name} at pin {pin[:12]})"

    check_links(links, where)


def _git_in(checkout: Checkout):  # type: ignore[no-untyped-def]
    def run(args: Sequence[str], stdin: bytes | None) -> bytes:
        return git(list(args), checkout.root, stdin=stdin)

    return run


def _below_any(path: str, folders: set[str]) -> bool:
    """True when ``path`` or a folder above it is in ``folders``."""
    parts = path.split("/")
    return any("/".join(parts[:depth]) in folders for depth in range(1, len(parts) + 1))
