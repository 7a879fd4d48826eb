"""No silent no-ops: every file a patch set touches must come out of the build as the set says.

A set records what it was made to produce (``flagscale.vendor.set_results``: each target's blob
id, sealed for encrypted sets). After a component's patches are applied, one ``ls-tree`` of the
patched tree gives the blob id of every file the patch touches; a file that differs — a hunk
that applied somewhere else, a patch edited after the set was made, a change git skipped — is
one error naming the file and the set.

Sets made before results were recorded carry none: their results are computed once, from the
first build, kept in the tool's state folder (``.git/flagscale/set-results/``, sealed the same
way for encrypted sets) and said in a note; later builds of the same set check against them.
With ``--3way`` a merged file differs from the vendor's by design, so differences are notes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from flagscale.builds.assemble import Assembler, Component, patch_paths
from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitlisting import listed_entries
from flagscale.core.schema import SchemaError, parse_document, validate
from flagscale.vendor.set_results import SetResults, sealed_path, sealed_value

__all__ = ["Expectation", "ResultsMismatch", "check_results"]

CACHE_FOLDER = "set-results"
_CACHE_FORMAT = 1


class ResultsMismatch(FlagScaleError):
    """A file the build wrote is not what its patch set was made to produce."""


@dataclass(frozen=True)
class Expectation:
    """What one component's set promises, and how to check it."""

    source: str  # the set's metadata file, for messages
    results: SetResults | None  # None: an older set, results computed once
    key: bytes | None  # the set's key, for sealed results
    state_dir: Path  # where results computed for older sets are kept


def check_results(
    assembler: Assembler,
    component: Component,
    tree: str,
    expectation: Expectation,
    *,
    three_way: bool,
    report: Callable[[str], None],
) -> None:
    """Compare the files ``component``'s patch touches in ``tree`` with what its set promises."""
    touched = _touched_paths(assembler, component)
    actual = _blobs(assembler, tree, touched, component)
    recorded = expectation.results
    if recorded is None:
        recorded = _computed_once(component, tree, actual, expectation, three_way, report)
    differences = _differences(actual, recorded, expectation.key)
    if not differences:
        return
    shown = [_shown(component, path) for path in differences]
    if three_way:
        report(
            f"note: --3way merged {len(shown)} file(s) into something other than"
            f" {expectation.source} was made to produce: {', '.join(shown[:5])}"
        )
        return
    raise ResultsMismatch(
        f"{shown[0]}: the build does not have the content {expectation.source} was made to"
        " produce"
        + (f" (and {len(shown) - 1} more file(s))" if len(shown) > 1 else "")
        + f"; the patch of {component.name} no longer makes what the vendor had",
        hint="the patch file was changed after the set was made; ask the vendor to make the set"
        " again with `inv patch --device-type ...`",
    )


def _touched_paths(assembler: Assembler, component: Component) -> list[str]:
    numstat = assembler.run(["apply", "--numstat", "-z", "-"], "paths", stdin=component.patch)
    return sorted(set(patch_paths(numstat)))


def _blobs(
    assembler: Assembler, tree: str, paths: list[str], component: Component
) -> dict[str, str | None]:
    """path → blob id in ``tree`` (None where the file is absent), for ``paths``."""
    raw = assembler.run(["ls-tree", "-r", "-z", "--full-tree", tree], f"ls-{component.name}")
    listed = listed_entries(raw)
    return {path: listed[path][1] if path in listed else None for path in paths}


def _differences(
    actual: Mapping[str, str | None], recorded: SetResults, key: bytes | None
) -> list[str]:
    """Touched paths whose blob differs from the record; a sealed path is named once known."""
    if not recorded.sealed:
        paths = sorted(set(actual) | set(recorded.entries))
        return [p for p in paths if p not in actual or actual[p] != recorded.entries.get(p, "")]
    if key is None:
        return []  # unreachable: an encrypted set is only built with its key
    differing = []
    matched = 0
    for path, blob in actual.items():
        expected = recorded.entries.get(sealed_path(key, path))
        matched += expected is not None
        if expected != sealed_value(key, path, blob):
            differing.append(path)
    if not differing and matched != len(recorded.entries):
        differing.append(f"<{len(recorded.entries) - matched} file(s) the patch no longer touches>")
    return differing


def _computed_once(
    component: Component,
    tree: str,
    actual: Mapping[str, str | None],
    expectation: Expectation,
    three_way: bool,
    report: Callable[[str], None],
) -> SetResults:
    """An older set's results: from the state folder, or computed now, kept and noted."""
    key = expectation.key
    entries: dict[str, str | None] = dict(actual)
    if key is not None:
        entries = {sealed_path(key, p): sealed_value(key, p, b) for p, b in actual.items()}
    identity = hashlib.sha256(
        json.dumps(
            [
                component.base_tree,
                component.prefix,
                hashlib.sha256(component.patch).hexdigest(),
                component.legacy,
                three_way,
                key is not None,
            ],
        ).encode()
    ).hexdigest()
    path = expectation.state_dir / CACHE_FOLDER / f"{identity}.json"
    kept = _read_kept(path)
    if kept is not None:
        return SetResults(kept, sealed=key is not None)
    document = {"version": _CACHE_FORMAT, "source": expectation.source, "results": entries}
    write_atomically(path, (json.dumps(document, sort_keys=True, indent=1) + "\n").encode())
    report(
        f"note: {expectation.source} records no resulting blob ids (a set made before they were"
        f" recorded): computed them once from this build ({len(entries)} file(s)) and kept them"
        f" in {path}; making the set again with `inv patch --device-type` records them"
    )
    return SetResults(entries, sealed=key is not None)


def _read_kept(path: Path) -> dict[str, str | None] | None:
    """Results kept by an earlier build (schema set-results); None when absent or damaged."""
    try:
        text = path.read_text(encoding="utf-8")
        document = validate(parse_document(text, str(path)), "set-results", str(path))
    except (OSError, SchemaError):
        return None  # computed again (and kept again): a damaged file costs a note, not a check
    return dict(document["results"])


def _shown(component: Component, path: str) -> str:
    return f"{component.prefix}/{path}" if component.prefix and not path.startswith("<") else path
