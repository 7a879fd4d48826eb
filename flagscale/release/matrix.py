"""The compatibility matrix: does every vendor patch set still apply, and did its smoke job pass?

For every device type × backend in the committed history the matrix answers three questions:

* on its base — does the patch set apply to the tree it was made against (the backend's pin plus
  base layer at the FlagScale commit its metadata records)?
* on current pins — does it still apply to today's tree (the pin and base layer at HEAD)? A set
  that applies on its base but not here has *drifted*: a pin bump or a base-layer change broke it.
* last smoke — the newest smoke-job result recorded for the device type, if any.

Only patches are checked, never full builds: each tree is read once into a throw-away index
(``GIT_INDEX_FILE``) in the scratch repository, and each set is checked against it with
``git apply --check --cached``. No work tree is checked out or touched. docs/matrix.md has the
user's side.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.progress import Progress
from flagscale.core.schema import validate
from flagscale.overlay import layered_trees
from flagscale.refresh.report import matrix_view
from flagscale.release.matrix_html import render_html
from flagscale.release.matrix_notes import not_clean_hint, row_notes
from flagscale.runner.latest_results import DEFAULT_RESULTS, SmokeResult, latest_smoke_results
from flagscale.upstream.sync import ensure_pin
from flagscale.upstream.workspace import FLAGSCALE, Workspace, find_workspace
from flagscale.vendor import crypto
from flagscale.vendor.committed import CommittedPatchSet, CommittedState
from flagscale.vendor.keyring import KeyRing
from flagscale.vendor.legacy_apply import LegacyApplyError, Piece, apply_like_flagscale

__all__ = [
    "SCHEMA_VERSION",
    "VERDICTS",
    "build_matrix",
    "matrix_command",
    "render_table",
    "run_matrix",
    "write_outputs",
]

SCHEMA_VERSION = 1
VERDICTS = ("clean", "drifting", "conflicting", "unknown")
APPLIES, CONFLICTS, UNKNOWN, ERROR = "applies", "conflicts", "unknown", "error"


@dataclass(frozen=True)
class Check:
    """The answer to "does the set apply on this tree?": a status, a short reason, git's words."""

    status: str
    reason: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        """The check as the matrix JSON stores it."""
        return {"status": self.status, "reason": self.reason, "detail": self.detail}


@dataclass
class _Keys:
    """Decryption keys given with --key-path: native keys found by the key id in an encrypted
    file's header; the others (FlagScale's RSA key folders or PEM files) tried on legacy files."""

    by_id: dict[str, tuple[bytes, Path]] = field(default_factory=dict)
    legacy: KeyRing = field(default_factory=lambda: KeyRing([]))

    @classmethod
    def load(cls, paths: list[Path]) -> _Keys:
        keys = cls()
        others = []
        for path in paths:
            try:
                key = crypto.load_key(Path(path))
            except FlagScaleError:
                others.append(Path(path))
                continue
            keys.by_id[crypto.key_id(key)] = (key, Path(path))
        keys.legacy = KeyRing(others)
        return keys


# --- building the matrix -----------------------------------------------------------------------


def build_matrix(
    ws: Workspace,
    *,
    results_dir: Path | None = None,
    key_paths: list[Path] | None = None,
    ref: str = "HEAD",
) -> dict[str, Any]:
    """The matrix document (schema ``matrix``) for the history committed at ``ref``."""
    state = CommittedState(ws.root, ref)
    keys = _Keys.load(list(key_paths or []))
    found = _read_sets(state)
    patch_sets = [f for f in found if isinstance(f, CommittedPatchSet)]
    # A backend the workspace does not declare gets no pin; its rows say why they fail.
    backends = sorted({p.backend for p in patch_sets if p.backend in ws.backends})
    pins = state.head.pins(backends)
    smoke = latest_smoke_results(results_dir) if results_dir else {}
    progress = Progress("matrix", total=len(patch_sets))
    head = state.head.commit
    checks: dict[int, tuple[Check, Check]] = {}
    with _TreeIndexes(ws) as indexes:
        for patch_set in patch_sets:  # each tree is built once, here, before the checks start
            indexes.prepare(_target(patch_set, patch_set.flagscale_base), _target(patch_set, head))
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            futures = {
                pool.submit(_checks, indexes, _pieces(p, keys), p, head): p for p in patch_sets
            }
            for future in as_completed(futures):
                patch_set = futures[future]
                progress.step(f"{patch_set.device_type} {patch_set.backend}")
                checks[id(patch_set)] = future.result()
    rows = [
        _row(pins, f, *checks[id(f)], smoke)
        if isinstance(f, CommittedPatchSet)
        else _unreadable_row(f, smoke)
        for f in found
    ]
    unreadable = len(found) - len(patch_sets)
    progress.finish(
        f"checked {len(patch_sets)} patch sets"
        + (f", {unreadable} not readable (see their rows)" if unreadable else "")
    )
    refresh = matrix_view(ws)
    document = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "flagscale_commit": state.head.commit,
        "pins": pins,
        "results_dir": str(results_dir) if results_dir else None,
        "rows": rows,
        "summary": {verdict: sum(r["verdict"] == verdict for r in rows) for verdict in VERDICTS},
    }
    if refresh is not None:
        _add_refresh(document, refresh)
    return validate(document, "matrix", "matrix document")


def _add_refresh(document: dict[str, Any], refresh: dict[str, Any]) -> None:
    """The refresh in progress (else the last one), on the rows of the sets it concerned."""
    document["refresh"] = {key: refresh[key] for key in ("backend", "from", "to", "status")}
    for row in document["rows"]:
        found = refresh["sets"].get(f"{row['device_type']}/{row['backend']}")
        if found is not None:
            row["refresh"] = dict(found)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _checks(
    indexes: _TreeIndexes, patch: list[Piece] | Check, patch_set: CommittedPatchSet, head: str
) -> tuple[Check, Check]:
    """(on its base, on current pins) for one set; ``patch`` is a Check when it is unreadable."""
    if isinstance(patch, Check):
        return patch, patch
    legacy = patch_set.layout == "legacy"
    on_base = indexes.check(_target(patch_set, patch_set.flagscale_base), patch, legacy=legacy)
    return on_base, indexes.check(_target(patch_set, head), patch, legacy=legacy)


@dataclass(frozen=True)
class _Target:
    """The tree a set is checked on: the backend (or FlagScale itself) as a build lays it at a
    FlagScale commit; a legacy backend set's tree is the bare pin (``recorded`` if it names one)."""

    backend: str
    commit: str
    bare: bool = False
    recorded: str | None = None


def _target(patch_set: CommittedPatchSet, commit: str) -> _Target:
    if patch_set.layout != "legacy" or patch_set.backend == FLAGSCALE:
        return _Target(patch_set.backend, commit)
    recorded = patch_set.backend_pin if commit == patch_set.flagscale_base else None
    return _Target(patch_set.backend, commit, bare=True, recorded=recorded)


@dataclass(frozen=True)
class _Unreadable:
    """A set the history names that cannot be read (a stale entry): its row says why."""

    device_type: str
    backend: str
    tasks: tuple[str, ...]
    error: FlagScaleError


def _read_sets(state: CommittedState) -> list[CommittedPatchSet | _Unreadable]:
    """Every set the history names, in the history's order; one that cannot be read is its
    row's error, not the whole matrix's."""
    found: list[CommittedPatchSet | _Unreadable] = []
    for device in sorted(state.history):
        for backend in state.backends(device):
            try:
                found.append(state.patch_set(device, backend))
            except FlagScaleError as exc:
                found.append(_Unreadable(device, backend, state.tasks(device, backend), exc))
    return found


def _unreadable_row(unreadable: _Unreadable, smoke: dict[str, SmokeResult]) -> dict[str, Any]:
    check = Check(ERROR, "set not readable", str(unreadable.error)).to_json()
    return {
        "device_type": unreadable.device_type,
        "backend": unreadable.backend,
        "tasks": list(unreadable.tasks),
        "flagscale_base": None,
        "backend_pin": None,
        "current_pin": None,
        "encrypted": False,
        "on_base": check,
        "on_current": check,
        "verdict": "unknown",
        "smoke": _smoke_cell(smoke, unreadable.device_type),
    }


def _smoke_cell(smoke: dict[str, SmokeResult], device: str) -> dict[str, Any]:
    result = smoke.get(device)
    return result.to_json() if result else {"status": "none"}


def _row(
    pins: dict[str, str],
    patch_set: CommittedPatchSet,
    on_base: Check,
    on_current: Check,
    smoke: dict[str, SmokeResult],
) -> dict[str, Any]:
    return {
        "device_type": patch_set.device_type,
        "backend": patch_set.backend,
        "tasks": list(patch_set.tasks),
        "flagscale_base": patch_set.flagscale_base,
        "backend_pin": patch_set.backend_pin,
        "current_pin": pins.get(patch_set.backend),
        "encrypted": patch_set.encrypted,
        "on_base": on_base.to_json(),
        "on_current": on_current.to_json(),
        "verdict": _verdict(on_base, on_current),
        "smoke": _smoke_cell(smoke, patch_set.device_type),
    }


def _verdict(on_base: Check, on_current: Check) -> str:
    if on_base.status == APPLIES and on_current.status == APPLIES:
        return "clean"
    if on_base.status == CONFLICTS:
        return "conflicting"
    if on_base.status == APPLIES and on_current.status == CONFLICTS:
        return "drifting"
    return "unknown"


def _pieces(patch_set: CommittedPatchSet, keys: _Keys) -> list[Piece] | Check:
    """The set's patch files, decrypted, or why they cannot be read."""
    pieces: list[Piece] = []
    for stored in patch_set.plan.files:
        data = patch_set.patch_files[stored.path]
        if stored.scheme == "legacy":
            if not keys.legacy.paths:
                return Check(UNKNOWN, "encrypted", f"{stored.path}: pass --key-path (the RSA key)")
            try:
                data = keys.legacy.decrypt(patch_set.plan, stored.path, "", "legacy", data)
            except FlagScaleError as exc:
                return Check(ERROR, "cannot decrypt", str(exc))
        elif stored.encrypted:
            key_id = crypto.encrypted_key_id(data, source=stored.path)
            if key_id not in keys.by_id:
                return Check(
                    UNKNOWN, "encrypted", f"{stored.path}: pass --key-path for key {key_id}"
                )
            key, key_path = keys.by_id[key_id]
            try:
                data = crypto.decrypt_file_bytes(
                    data, key, name=stored.name, source=stored.path, key_label=str(key_path)
                )
            except crypto.DecryptionError as exc:
                return Check(ERROR, "cannot decrypt", str(exc))
        pieces.append(Piece(stored.path, data))
    return pieces


class _TreeIndexes:
    """One throw-away index per (backend, FlagScale commit) tree, filled once, reused by checks."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.folder = Path(tempfile.mkdtemp(prefix="matrix-", dir=layered_trees.scratch_repo(ws)))
        self.indexes: dict[_Target, Path | Check] = {}

    def __enter__(self) -> _TreeIndexes:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def prepare(self, *targets: _Target) -> None:
        """Build the trees and fill the indexes of ``targets`` (one thread)."""
        for target in targets:
            self._index(target)

    def check(self, target: _Target, patch: list[Piece], *, legacy: bool) -> Check:
        """Whether ``patch`` applies to the tree of ``target`` (as FlagScale's tool applies it,
        for a ``legacy`` set)."""
        index = self._index(target)
        if isinstance(index, Check):
            return index
        if legacy:
            return _legacy_check(self.ws, index, patch)
        return _apply_check(self.ws, index, b"".join(piece.text for piece in patch))

    def _index(self, target: _Target) -> Path | Check:
        if target not in self.indexes:
            try:
                tree = _tree_for(self.ws, target)
                index = self.folder / f"index-{len(self.indexes)}"
                layered_trees.scratch_git(self.ws, ["read-tree", tree], index=index)
                self.indexes[target] = index
            except FlagScaleError as exc:
                self.indexes[target] = Check(ERROR, "tree not available", str(exc))
        return self.indexes[target]


def _tree_for(ws: Workspace, target: _Target) -> str:
    if target.backend == FLAGSCALE:
        return layered_trees.flagscale_tree(
            ws, target.commit, exclude=layered_trees.WORKTREE_EXCLUDES
        )
    backend = ws.backend(target.backend)
    recorded = target.recorded if target.bare else None
    pin = recorded or layered_trees.pin_at(ws, backend, target.commit)
    ensure_pin(ws, backend, pin, declared_at=target.commit)  # fetched or imported if missing
    if target.bare:
        return layered_trees.pin_tree(ws, backend, pin)
    return layered_trees.layered_tree(ws, target.backend, target.commit)


def _apply_check(ws: Workspace, index: Path, patch: bytes) -> Check:
    if not patch.strip():
        return Check(APPLIES, "empty patch set")
    try:
        # configuration-free: the same answer whatever the user's apply.whitespace says
        layered_trees.scratch_git(
            ws, ["apply", "--check", "--cached", "-"], stdin=patch, index=index
        )
    except FlagScaleError as exc:
        stderr = getattr(exc, "stderr", "") or str(exc)
        return Check(CONFLICTS, "", _first_error(stderr))
    return Check(APPLIES)


def _legacy_check(ws: Workspace, index: Path, pieces: list[Piece]) -> Check:
    """Apply the files one by one as FlagScale's tool does, on a copy of the tree's index."""
    scratch = index.with_name(f"{index.name}-{threading.get_ident()}")
    shutil.copyfile(index, scratch)

    def apply(args: list[str], patch: bytes) -> tuple[int, str]:
        command = ["apply", "--cached", *args, "-"]
        result = layered_trees.scratch_git_result(ws, command, stdin=patch, index=scratch)
        return result.returncode, result.stderr

    def reset() -> None:
        shutil.copyfile(index, scratch)

    try:
        applied = apply_like_flagscale(apply, reset, pieces)
    except LegacyApplyError as exc:
        return Check(CONFLICTS, "", f"{exc.piece.label}: {_first_error(exc.stderr)}")
    finally:
        scratch.unlink(missing_ok=True)
    if applied.fixed:
        return Check(APPLIES, "whitespace fixed", "; ".join(applied.fixed))
    if applied.skipped:
        return Check(APPLIES, "parts skipped", "; ".join(applied.skipped))
    return Check(APPLIES)


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    return "; ".join((errors or lines)[:2])


# --- output ------------------------------------------------------------------------------------


_COLOURS = {
    "applies": "32",
    "clean": "32",
    "passed": "32",
    "drifting": "33",
    "conflicts": "31",
    "conflicting": "31",
    "failed": "31",
    "recorded": "36",
    "error": "31",
}


def _cell_text(check: dict[str, str]) -> str:
    return f"{check['status']} ({check['reason']})" if check.get("reason") else check["status"]


def render_table(document: dict[str, Any], *, color: bool = False) -> str:
    """The matrix as an aligned text table; ANSI colours only when ``color`` is true."""
    header = ["DEVICE TYPE", "BACKEND", "BASE", "ON BASE", "ON CURRENT PINS", "VERDICT", "SMOKE"]
    refresh = document.get("refresh")
    if refresh:
        header.append("REFRESH")
    rows = [
        [
            row["device_type"],
            row["backend"],
            (row["flagscale_base"] or "-")[:12],
            _cell_text(row["on_base"]),
            _cell_text(row["on_current"]),
            row["verdict"],
            row["smoke"]["status"],
            *([row.get("refresh", {}).get("status", "-")] if refresh else []),
        ]
        for row in document["rows"]
    ]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [_format_line(header, widths, color=False)]
    lines += [_format_line(line, widths, color=color) for line in rows]
    summary = ", ".join(f"{count} {name}" for name, count in document["summary"].items())
    lines.append(f"{len(rows)} patch sets at {document['flagscale_commit']}: {summary}")
    for row in document["rows"]:
        lines += [f"  {row['device_type']}/{row['backend']}: {note}" for note in row_notes(row)]
    if refresh:
        lines.append(
            f"refresh {refresh['backend']} {refresh['from']} -> {refresh['to']}:"
            f" {refresh['status'].replace('_', ' ')}"
        )
    return "\n".join(lines) + "\n"


def _format_line(cells: list[str], widths: list[int], *, color: bool) -> str:
    padded = []
    for cell, width in zip(cells, widths, strict=True):
        text = cell.ljust(width)
        code = _COLOURS.get(cell.split(" ")[0]) if color else None
        padded.append(f"\x1b[{code}m{text}\x1b[0m" if code else text)
    return "  ".join(padded).rstrip()


def write_outputs(
    document: dict[str, Any], *, json_path: Path | None = None, html_path: Path | None = None
) -> None:
    """Write the JSON and/or HTML forms of the matrix, each all at once."""
    if json_path:
        text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        write_atomically(Path(json_path), text.encode("utf-8"))
    if html_path:
        write_atomically(Path(html_path), render_html(document).encode("utf-8"))


def run_matrix(
    ws: Workspace,
    *,
    json_path: Path | None = None,
    html_path: Path | None = None,
    results_dir: Path | None = None,
    key_paths: list[Path] | None = None,
    strict: bool = False,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """``inv matrix``: build the matrix, print the table, write the files asked for.

    With ``strict`` a set that is not clean makes the command fail after everything is written.
    """
    stream = stream or sys.stdout
    document = build_matrix(ws, results_dir=results_dir, key_paths=key_paths)
    write_outputs(document, json_path=json_path, html_path=html_path)
    color = stream.isatty() and not os.environ.get("NO_COLOR")
    stream.write(render_table(document, color=color))
    stream.flush()
    if strict:
        bad = [f"{r['device_type']}/{r['backend']} ({r['verdict']})" for r in document["rows"]]
        bad = [b for b, r in zip(bad, document["rows"], strict=True) if r["verdict"] != "clean"]
        if bad:
            raise FlagScaleError(
                f"{len(bad)} patch set(s) are not clean: {', '.join(bad)}",
                hint=not_clean_hint({r["verdict"] for r in document["rows"]}),
            )
    return document


def matrix_command(
    *,
    json_path: str | None = None,
    html_path: str | None = None,
    results_dir: str | None = None,
    key_paths: list[str] | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """``inv matrix`` in the current workspace; smoke results default to ``logs/smoke``."""
    ws = find_workspace()
    results = Path(results_dir) if results_dir else None
    if results is None and ws.path(DEFAULT_RESULTS).is_dir():
        results = ws.path(DEFAULT_RESULTS)
    return run_matrix(
        ws,
        json_path=Path(json_path) if json_path else None,
        html_path=Path(html_path) if html_path else None,
        results_dir=results,
        key_paths=[Path(k) for k in key_paths or []],
        strict=strict,
    )
