"""``inv import-flagscale <checkout>``: FlagScale's adaptation data, brought in and proved.

Three kinds of steps, each one commit on the current branch:

1. ``base-layer``: the backends FlagScale's history uses are declared at FlagScale's pins
   (submodules, or releases the user gives) and its base patches become whole files under
   ``backends/<backend>/`` (``base_layer``);
2. ``sets <commit>``, one per FlagScale commit the history's newest entries name: each device
   type's sets there, converted (``convert``), then built by this workspace's own build code from
   the candidate commit and compared by tree hash with what FlagScale's tool gives. Lines whose
   sets all match are kept; a set that differs is left out and reported with its files. Sets
   whose key was not given stay as FlagScale stored them, still encrypted;
3. ``history``: ``hardware/patch_history.yaml`` gains an entry per kept line.

A commit is made without touching the work tree and the branch moves to it only when it is
complete (``branch``). Each carries the trailer ``Import-FlagScale: <checkout commit> <step>``,
so a rerun after ``kill -9`` skips the steps the branch holds and finishes an interrupted move.
The FlagScale checkout is only read. Every step computes the same trees from the same inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flagscale.builds.builder import assemble_trees
from flagscale.builds.plan import plan_device
from flagscale.core.atomic import write_atomically
from flagscale.core.crashpoints import crash_point
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, git_text
from flagscale.migrate import base_layer
from flagscale.migrate.branch import (
    Change,
    Commit,
    finish_move,
    make_commit,
    move_branch,
    write_blobs,
)
from flagscale.migrate.convert import SCOPE_EXCLUDES, DeviceSets, convert_device, layout_of
from flagscale.migrate.report import ImportReport, LayerRow, SetRow, render_table, write_report
from flagscale.migrate.scratch import ImportScratch, git_tree_id
from flagscale.migrate.source import HistoryLine, SourceCheckout, upstream_backends
from flagscale.overlay.layered_trees import layered_tree
from flagscale.upstream.sync import ensure_pin
from flagscale.upstream.workspace import (
    FLAGSCALE,
    ReleaseSource,
    Workspace,
    find_workspace,
    load_workspace,
)
from flagscale.vendor.history import HISTORY, dump_history
from flagscale.vendor.keyring import KeyRing
from flagscale.vendor.set_plan import HistoryChoice
from flagscale.vendor.stored_sets import list_folder, list_paths, read_blobs, read_sets, set_at

__all__ = ["TRAILER", "ImportRequest", "import_command", "import_flagscale"]

TRAILER = "Import-FlagScale"
DEFAULT_REPORT = "build/import-flagscale.json"


@dataclass(frozen=True)
class ImportRequest:
    """What ``inv import-flagscale`` asks for."""

    checkout: Path
    releases: dict[str, Path] = field(default_factory=dict)  # backend → source release archive
    key_paths: tuple[Path, ...] = ()  # FlagScale's RSA keys (folders or private_key.pem)
    new_keys: Path | None = None  # folder for the vendors' new native keys
    report: Callable[[str], None] = print


# --- the steps on the branch ------------------------------------------------------------


class _Steps:
    """The import's steps the branch already holds, and what each of them found."""

    def __init__(self, ws: Workspace, source: SourceCheckout, lines: list[HistoryLine]) -> None:
        self.ws = ws
        self.source = source
        self.source_head = source_head = source.head
        date = source.date()
        self.lines_at: dict[tuple[str, str], list[HistoryLine]] = {}
        for line in lines:
            self.lines_at.setdefault((line.newest, line.device_type), []).append(line)
        self.folder = ws.state_dir / "import" / source_head
        self.date = date
        self.done = self._scan()

    def _scan(self) -> dict[str, str]:
        mark = f"{TRAILER}: {self.source_head} "
        raw = git_text(
            ["log", "--first-parent", "-F", f"--grep={mark}", "--format=%H%x1f%B%x1e", "HEAD"],
            self.ws.root,
            check=False,
        )
        done: dict[str, str] = {}
        for record in filter(None, (r.strip() for r in raw.split("\x1e"))):
            commit, _, body = record.partition("\x1f")
            for line in body.splitlines():
                if line.startswith(mark):
                    done.setdefault(line[len(mark) :].strip(), commit)
        return done

    def commit(self, parent: str, changes: dict, title: str, step: str) -> Commit:
        """The step's commit: dated as the FlagScale commit imported, so a rerun (or another
        clone at the same commit) makes the very same commit."""
        return make_commit(self.ws, parent, changes, self.message(title, step), date=self.date)

    def message(self, title: str, step: str) -> str:
        return f"import-flagscale: {title}\n\n{TRAILER}: {self.source_head} {step}\n"

    def save(self, step: str, data: dict) -> None:
        name = step.replace(" ", "-")
        write_atomically(self.folder / f"{name}.json", json.dumps(data, sort_keys=True).encode())

    def load(self, step: str) -> dict | None:
        path = self.folder / f"{step.replace(' ', '-')}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _advance(ws: Workspace, commit: str, label: str) -> None:
    """Move the branch from HEAD to ``commit`` (kill-safe), after the named kill point."""
    head = git_text(["rev-parse", "HEAD"], ws.root)
    crash_point(f"import:{label}:committed")
    move_branch(ws, head, commit)
    crash_point(f"import:{label}:moved")


# --- the command ----------------------------------------------------------------------------


def import_flagscale(ws: Workspace, request: ImportRequest) -> ImportReport:
    """Run (or resume) the import of ``request.checkout`` into ``ws``; return the report."""
    source = SourceCheckout(request.checkout)
    _refuse_same_repository(ws, source)
    finish_move(ws)
    _check_clean(ws)
    lines = source.history()
    submodules = source.submodules()
    names = [b for b in upstream_backends(lines) if b in submodules]
    unknown = sorted(set(request.releases) - set(names))
    if unknown:
        raise FlagScaleError(
            f"--release names {', '.join(unknown)}, which FlagScale's history does not use",
            hint=f"backends to import: {', '.join(names) or 'none'}",
        )
    if request.key_paths and request.new_keys is None:
        raise FlagScaleError(
            "--key-path opens FlagScale's encrypted sets; converted, they are encrypted again with"
            " a new key per vendor, and no folder for those keys was given",
            hint="add --new-keys <folder outside the repository> (<folder>/<Vendor>.key, 0600)",
        )
    steps = _Steps(ws, source, lines)
    scratch = ImportScratch(ws, source.object_folders())
    report = ImportReport(str(source.root), source.head)
    base = _base_layer_step(ws, scratch, source, submodules, names, request, steps)
    ws = load_workspace(ws.root)
    scratch.refresh()
    report.base_layer = _prove_layers(ws, scratch, base, steps, submodules, names)
    converter = _Converter(ws, scratch, source, submodules, base, request, steps)
    for commit, devices in _by_commit(source, lines):
        if f"sets {commit}" not in steps.done:
            converter.step(commit, devices, f"sets {commit}")
    for commit, devices in _by_commit(source, lines) if request.key_paths else ():
        for device in sorted(devices):  # kept encrypted by an earlier run: try the keys given now
            _step, found = _device_record(steps, commit, device)
            if any(line["state"] == "carried" for line in found.get("lines", [])):
                step = f"sets {commit} {device}"
                converter.step(commit, {device: devices[device]}, step, unless_carried=True)
    report.sets = _set_rows(source, lines, steps)
    if not _history_step(ws, steps, lines, source):
        request.report(f"{source.describe()}: imported already, nothing new")
    report.workspace_commit = git_text(["rev-parse", "HEAD"], ws.root)
    return report


def _device_record(steps: _Steps, commit: str, device: str) -> tuple[str, dict]:
    """(step, what it found) for ``device``'s sets at ``commit``: a later step that converted
    sets kept encrypted before wins over the first one."""
    for step in (f"sets {commit} {device}", f"sets {commit}"):
        if step not in steps.done:
            continue
        record = steps.load(step)
        if record is None:  # made in another clone: what the branch holds tells
            return step, _derived_record(steps, step, commit, device)
        if device in record["devices"]:
            return step, record["devices"][device]
    return "", {}


def _derived_record(steps: _Steps, step: str, commit: str, device: str) -> dict:
    """A step's record rebuilt from its commit: native sets there were proved identical when it
    was made, sets in FlagScale's layout were kept encrypted, absent ones were not recorded."""
    holder = steps.done[step]
    lines = steps.lines_at.get((commit, device), [])
    kinds: dict[str, str | None] = {}
    sets = {}
    for name in sorted({b for line in lines for b in line.backends}):
        ours = set_at(steps.ws, holder, device, name)
        theirs = steps.source.stored_set(commit, device, name)
        kinds[name] = ours.layout if ours else None
        before = _folder_bytes(steps.source.workspace, commit, device, name)
        sets[name] = {
            "layout": layout_of(theirs) if theirs else "unknown",
            "encrypted": bool(theirs and any(f.encrypted for f in theirs.files)),
            "bytes_before": before,
            "bytes_after": _folder_bytes(steps.ws, holder, device, name) if ours else 0,
            "reference": None,
            "fixed": [],
        }
    records = []
    for line in lines:
        found = {kinds.get(b) for b in line.backends}
        if "legacy" in found:
            state, why = "carried", "encrypted, no key given when it was imported"
        elif found == {"patch-set"}:
            state, why = "identical", ""
        else:
            state, why = "differs", f"not in {holder[:12]}: see the report of the run that made it"
        records.append(
            {"task": line.task, "key": line.key, "state": state, "reason": why}
            | {"trees": {}, "differing": {}}
        )
    return {"lines": records, "sets": sets}


def _folder_bytes(ws: Workspace, commit: str, device: str, backend: str) -> int:
    entries = list_folder(ws, commit, f"hardware/{device}/{backend}")
    return sum(len(data) for data in read_blobs(ws, [e.oid for e in entries]).values())


def _refuse_same_repository(ws: Workspace, source: SourceCheckout) -> None:
    common = Path(git_text(["rev-parse", "--path-format=absolute", "--git-common-dir"], ws.root))
    theirs = git_text(["rev-parse", "--path-format=absolute", "--git-common-dir"], source.root)
    if common.resolve() == Path(theirs).resolve():
        raise FlagScaleError(
            f"{source.root} is this workspace's own repository: the import reads a FlagScale"
            " checkout and writes here",
            hint="give the path of another clone of FlagScale",
        )


def _check_clean(ws: Workspace) -> None:
    status = git(
        [
            "status",
            "--porcelain",
            "-z",
            "--untracked-files=all",
            "--",
            ".gitmodules",
            "backends",
            "hardware",
        ],
        ws.root,
    )
    if status.strip(b"\0"):
        first = status.split(b"\0")[0].decode("utf-8", "replace")[3:]
        raise FlagScaleError(
            f"{first} has uncommitted changes; the import rewrites .gitmodules, backends/ and"
            " hardware/",
            hint="commit or stash them (git stash -u), then run the import again",
        )


# --- 1. the base layer ------------------------------------------------------------------------


def _base_layer_step(
    ws: Workspace,
    scratch: ImportScratch,
    source: SourceCheckout,
    submodules: dict,
    names: list[str],
    request: ImportRequest,
    steps: _Steps,
) -> str:
    """The commit declaring the backends and holding the base layer (made now, or found)."""
    if "base-layer" in steps.done:
        return steps.done["base-layer"]
    plans = []
    for name in names:
        release = None
        pin = submodules[name].pin
        if name in request.releases:
            release = base_layer.declared_release(name, request.releases[name])
            pin = _import_release(ws, name, release)
        plans.append(base_layer.plan_layer(scratch, source, submodules[name], release, pin))
    head = git_text(["rev-parse", "HEAD"], ws.root)
    changes = base_layer.workspace_changes(ws, scratch, plans, head)
    listed = ", ".join(names) or "no backend"
    commit = steps.commit(
        head, changes, f"FlagScale's base layer and pins ({listed})", "base-layer"
    )
    steps.save("base-layer", {"rows": [asdict(p.row) for p in plans if p.row]})
    _advance(ws, commit.id, "base-layer")
    steps.done["base-layer"] = commit.id
    request.report(f"base layer and pins of {listed}: committed {commit.id[:12]}")
    return commit.id


def _import_release(ws: Workspace, name: str, release) -> str:
    from flagscale.upstream.release_import import install_release

    checkout = ws.path(f"third_party/{name}")
    return install_release(release, checkout, workspace_root=ws.root, pin=None, label=name)


def _prove_layers(
    ws: Workspace,
    scratch: ImportScratch,
    base: str,
    steps: _Steps,
    submodules: dict,
    names: list[str],
) -> list[LayerRow]:
    """Each backend's laid tree (our pin + base layer at ``base``) against FlagScale's."""
    saved = steps.load("base-layer")
    if saved is not None:
        rows = [LayerRow(**row) for row in saved["rows"]]
    else:  # the base layer was imported in another clone: FlagScale's side is recomputed
        rows = [_layer_row(ws, scratch, steps.source, submodules[name], base) for name in names]
    for row in rows:
        backend = ws.backend(row.backend)
        ensure_pin(ws, backend, row.pin, declared_at=base)
        scratch.refresh()
        ours = layered_tree(ws, backend, base)
        row.built_tree = ours
        if ours != row.tree:
            row.status = "differs"
            row.differing = _differing(
                _entries(scratch, ours), _entries(scratch, row.tree or ""), row.backend
            )
    return rows


def _layer_row(
    ws: Workspace, scratch: ImportScratch, source: SourceCheckout, submodule, base: str
) -> LayerRow:
    backend = ws.backend(submodule.name)
    release = backend.source if isinstance(backend.source, ReleaseSource) else None
    plan = base_layer.plan_layer(scratch, source, submodule, release, ws.pin(backend))
    assert plan.row is not None
    folder = list_folder(ws, base, backend.layer)
    deletions = list_paths(ws, base, [backend.deletions]).get(backend.deletions)
    oids = [e.oid for e in folder] + ([deletions.oid] if deletions else [])
    plan.row.bytes_after = sum(len(data) for data in read_blobs(ws, oids).values())
    return plan.row


def _entries(scratch: ImportScratch, tree: str) -> dict[str, tuple[str, str]]:
    return {e.path: (e.mode, e.oid) for e in scratch.entries(tree)}


def _differing(
    built: dict[str, tuple[str, str]], wanted: dict[str, tuple[str, str]], part: str
) -> list[str]:
    paths = sorted(p for p in set(built) | set(wanted) if built.get(p) != wanted.get(p))
    return [f"{part}: {path}" for path in paths]


# --- 2. the sets ------------------------------------------------------------------------------


def _by_commit(
    source: SourceCheckout, lines: list[HistoryLine]
) -> list[tuple[str, dict[str, list[HistoryLine]]]]:
    """FlagScale commits named by the newest entries, oldest first, with their lines by device."""
    grouped: dict[str, dict[str, list[HistoryLine]]] = {}
    for line in lines:
        grouped.setdefault(line.newest, {}).setdefault(line.device_type, []).append(line)
    return [(commit, grouped[commit]) for commit in source.topo_order(list(grouped))]


class _Converter:
    """Runs set steps: convert, commit a candidate, prove it, keep what matches, move there."""

    def __init__(
        self,
        ws: Workspace,
        scratch: ImportScratch,
        source: SourceCheckout,
        submodules: dict,
        base: str,
        request: ImportRequest,
        steps: _Steps,
    ) -> None:
        self.ws, self.scratch, self.source = ws, scratch, source
        self.submodules, self.base, self.request, self.steps = submodules, base, request, steps
        self.keys = KeyRing(request.key_paths)

    def step(
        self,
        commit: str,
        devices: dict[str, list[HistoryLine]],
        step: str,
        *,
        unless_carried: bool = False,
    ) -> None:
        """Convert ``devices``' sets at ``commit`` as step ``step`` (with ``unless_carried``:
        only if the keys now open them)."""
        outcomes = [
            convert_device(
                self.ws,
                self.scratch,
                self.source,
                self.submodules,
                self.base,
                device,
                commit,
                lines,
                self.keys,
                self.request.new_keys,
            )
            for device, lines in sorted(devices.items())
        ]
        if unless_carried and all(o.carried for o in outcomes):
            return
        ws, steps = self.ws, self.steps
        head = git_text(["rev-parse", "HEAD"], ws.root)
        title = f"vendor sets of {', '.join(sorted(devices))} from FlagScale {commit[:12]}"
        candidate = steps.commit(head, _set_changes(ws, outcomes, None), title, step)
        proofs = {
            o.device: _prove(ws, self.scratch, candidate.id, o, self.request) for o in outcomes
        }
        kept = {o.device: _kept_backends(o, proofs[o.device]) for o in outcomes}
        final = candidate
        if any(set(kept[o.device]) != set(o.converted) for o in outcomes if not o.carried):
            final = steps.commit(head, _set_changes(ws, outcomes, kept), title, step)
        steps.save(step, _step_record(outcomes, proofs, kept))
        _advance(ws, final.id, "sets")
        steps.done[step] = final.id
        self.request.report(f"vendor sets of FlagScale {commit[:12]}: committed {final.id[:12]}")


def _set_changes(
    ws: Workspace, outcomes: list[DeviceSets], kept: dict[str, list[str]] | None
) -> dict[str, Change | None]:
    """The set folders to write: converted sets (those ``kept``, when given) and carried ones."""
    changes: dict[str, Change | None] = {}
    contents: list[bytes] = []
    paths: list[str] = []
    for outcome in outcomes:
        if outcome.carried:
            for name, stored in outcome.stored_bytes.items():
                changes[f"hardware/{outcome.device}/{name}"] = None
                for path, data in sorted(stored.items()):
                    paths.append(path)
                    contents.append(data)
            continue
        names = kept[outcome.device] if kept is not None else list(outcome.converted)
        for name in names:
            folder = f"hardware/{outcome.device}/{name}"
            changes[folder] = None
            for file, data in sorted(outcome.converted[name].files.items()):
                paths.append(f"{folder}/{file}")
                contents.append(data)
    for path, oid in zip(paths, write_blobs(ws, contents), strict=True):
        changes[path] = Change("100644", oid)
    return changes


class _Fixed:
    """A SetSource for one history entry not yet written down: the candidate commit's sets."""

    def __init__(self, choice: HistoryChoice) -> None:
        self.choice = choice

    def choose(self, ws, device_type, task, commit, backends) -> HistoryChoice:  # noqa: ANN001
        return self.choice

    def read_sets(self, ws: Workspace, choice: HistoryChoice):  # noqa: ANN201
        return read_sets(ws, choice)


@dataclass
class _Proof:
    """What this workspace's build of one line gives, per backend: tree hash, differing files."""

    trees: dict[str, str] = field(default_factory=dict)
    differing: dict[str, list[str]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not any(self.differing.values())


def _prove(
    ws: Workspace,
    scratch: ImportScratch,
    candidate: str,
    outcome: DeviceSets,
    request: ImportRequest,
) -> dict[tuple[str, str], _Proof]:
    """Build every converted line from ``candidate`` as ``inv build`` does; compare by tree."""
    proofs: dict[tuple[str, str], _Proof] = {}
    if outcome.carried:
        return proofs
    keys = _new_key_paths(request, outcome)
    for line in outcome.lines:
        references = outcome.references.get((line.task, line.key))
        if references is None:
            continue
        choice = HistoryChoice(outcome.device, line.task, line.backends, candidate, (candidate,))
        plan = plan_device(
            ws, outcome.device, task=line.task, backends=line.backends, source=_Fixed(choice)
        )  # the candidate's sets, read back by the one reader of stored sets
        work = Path(tempfile.mkdtemp(prefix="proof-", dir=scratch.path.parent))
        try:
            trees, assembler = assemble_trees(ws, plan, keys, work)
        except FlagScaleError as exc:
            failed = {name: [f"{name}: the build fails: {exc.message}"] for name in line.backends}
            proofs[(line.task, line.key)] = _Proof(differing=failed)
            shutil.rmtree(work, ignore_errors=True)
            continue
        try:
            proof = _Proof()
            for name in line.backends:
                if name == FLAGSCALE:
                    built = _outside(assembler.entries(trees[""]), SCOPE_EXCLUDES)
                else:
                    built = assembler.entries(trees[f"third_party/{name}"])
                proof.trees[name] = git_tree_id(built)
                wanted = _entries(scratch, references[name])
                proof.differing[name] = _differing(built, wanted, name)
            proofs[(line.task, line.key)] = proof
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return proofs


def _new_key_paths(request: ImportRequest, outcome: DeviceSets) -> list[Path]:
    from flagscale.migrate.convert import vendor_of

    if request.new_keys is None:
        return []
    key = request.new_keys / f"{vendor_of(outcome.device)}.key"
    return [key] if key.is_file() else []


def _outside(entries: dict[str, tuple[str, str]], exclude: Sequence[str]) -> dict:
    return {
        path: value
        for path, value in entries.items()
        if not any(path == x or path.startswith(f"{x}/") for x in exclude)
    }


def _kept_backends(outcome: DeviceSets, proofs: dict[tuple[str, str], _Proof]) -> list[str]:
    """The converted sets used by at least one line whose every set was proved identical."""
    kept: set[str] = set()
    for line in outcome.lines:
        proof = proofs.get((line.task, line.key))
        if proof is not None and proof.identical:
            kept.update(line.backends)
    return sorted(kept & set(outcome.converted))


def _step_record(
    outcomes: list[DeviceSets],
    proofs: dict[str, dict[tuple[str, str], _Proof]],
    kept: dict[str, list[str]],
) -> dict:
    """What the step found, kept in the state folder for the report and the history step."""
    devices = {}
    for outcome in outcomes:
        lines = []
        for line in outcome.lines:
            proof = proofs[outcome.device].get((line.task, line.key))
            if outcome.carried:
                state, why = "carried", outcome.carried
            elif (line.task, line.key) in outcome.skipped:
                state, why = "skipped", outcome.skipped[(line.task, line.key)]
            elif proof is not None and proof.identical:
                state, why = "identical", ""
            else:
                state, why = "differs", ""
            lines.append(
                {
                    "task": line.task,
                    "key": line.key,
                    "state": state,
                    "reason": why,
                    "trees": proof.trees if proof else {},
                    "differing": proof.differing if proof else {},
                }
            )
        sets = {}
        for name, plan in outcome.stored.items():
            converted = outcome.converted.get(name)
            written = outcome.carried or name in kept[outcome.device]
            sets[name] = {
                "layout": layout_of(plan),
                "encrypted": any(f.encrypted for f in plan.files),
                "bytes_before": sum(len(d) for d in outcome.stored_bytes[name].values()),
                "bytes_after": (
                    sum(len(d) for d in outcome.stored_bytes[name].values())
                    if outcome.carried
                    else sum(len(d) for d in converted.files.values())
                    if converted and written
                    else 0
                ),
                "reference": converted.reference if converted else None,
                "fixed": outcome.fixed.get(name, []),
            }
        devices[outcome.device] = {"lines": lines, "sets": sets}
    return {"devices": devices}


def _set_rows(source: SourceCheckout, lines: list[HistoryLine], steps: _Steps) -> list[SetRow]:
    """One row per set of each newest history entry, and per set of the older entries."""
    rows: list[SetRow] = []
    for commit, devices in _by_commit(source, lines):
        for device in sorted(devices):
            _step, found = _device_record(steps, commit, device)
            for name, info in sorted(found.get("sets", {}).items()):
                rows.append(_row(device, name, commit, info, found["lines"]))
    for line in lines:
        for older in line.commits[:-1]:
            for name in line.backends:
                rows.append(_older_row(source, line, older, name))
    return rows


def _row(device: str, name: str, commit: str, info: dict, lines: list[dict]) -> SetRow:
    using = [line for line in lines if name in line["key"].split("+")]
    states = {line["state"] for line in using}
    differing = sorted({p for line in using for p in line["differing"].get(name, [])})
    built = next((line["trees"][name] for line in using if name in line["trees"]), None)
    if "carried" in states:
        status, reason = "carried", using[0]["reason"]
        reason += "; kept as FlagScale stored it: rerun with its --key-path to convert it"
    elif differing:
        good = [f"{x['task']} {x['key']}" for x in using if x["state"] == "identical"]
        bad = [f"{x['task']} {x['key']}" for x in using if x["state"] == "differs"]
        status = "differs"
        reason = f"not recorded for {', '.join(bad)}" + (
            f"; recorded for {', '.join(good)}" if good else ""
        )
    elif "identical" in states:
        status, reason = "identical", ""
    elif "differs" in states:
        other = next(line for line in using if line["state"] == "differs")
        status, reason = "skipped", f"another set of {other['task']} {other['key']} differs"
    else:
        status, reason = "skipped", next((line["reason"] for line in using), "")
    return SetRow(
        device_type=device,
        backend=name,
        source_commit=commit,
        layout=info["layout"],
        encrypted=info["encrypted"],
        tasks=sorted({line["task"] for line in using}),
        status=status,
        reason=reason,
        differing=differing,
        whitespace_fixed=info["fixed"],
        tree=info["reference"],
        built_tree=built,
        bytes_before=info["bytes_before"],
        bytes_after=info["bytes_after"],
    )


def _older_row(source: SourceCheckout, line: HistoryLine, commit: str, name: str) -> SetRow:
    plan = None
    with contextlib.suppress(FlagScaleError):
        plan = source.stored_set(commit, line.device_type, name)
    return SetRow(
        device_type=line.device_type,
        backend=name,
        source_commit=commit,
        layout=layout_of(plan) if plan else "unknown",
        encrypted=bool(plan and any(f.encrypted for f in plan.files)),
        tasks=[line.task],
        status="skipped",
        reason=f"an older entry of {line.task} {line.key}: only the newest of a line is imported",
    )


# --- 3. the history ---------------------------------------------------------------------------


def _history_step(
    ws: Workspace, steps: _Steps, lines: list[HistoryLine], source: SourceCheckout
) -> bool:
    """Record each kept line at the commit of the step that wrote its sets; False when the
    branch holds this already (the same set steps were recorded before)."""
    from flagscale.core.schema import parse_document, validate

    sets_steps = sorted(step for step in steps.done if step.startswith("sets "))
    digest = hashlib.sha1("\n".join(sets_steps).encode()).hexdigest()[:12]
    step = f"history {digest}"
    if step in steps.done:
        return False
    head = git_text(["rev-parse", "HEAD"], ws.root)
    text = git_text(["show", f"{head}:{HISTORY}"], ws.root, check=False)
    history = (
        validate(parse_document(text, HISTORY) or {}, "patch-history", HISTORY) if text else {}
    )
    added = 0
    for line in lines:
        where, found = _device_record(steps, line.newest, line.device_type)
        states = [
            x for x in found.get("lines", []) if (x["task"], x["key"]) == (line.task, line.key)
        ]
        if not states or states[0]["state"] not in ("identical", "carried"):
            continue
        entry = history.setdefault(line.device_type, {}).setdefault(line.task, {})
        commits = entry.setdefault(line.key, [])
        if steps.done[where] not in commits:
            commits.append(steps.done[where])
            added += 1
    if not added:
        return False
    blob = write_blobs(ws, [dump_history(history)])[0]
    title = f"history entries for {added} imported line(s)"
    commit = steps.commit(head, {HISTORY: Change("100644", blob)}, title, step)
    _advance(ws, commit.id, "history")
    steps.done[step] = commit.id
    return True


# --- the command line -----------------------------------------------------------------------


def import_command(
    checkout: str,
    *,
    releases: Sequence[str] = (),
    key_paths: Sequence[str] = (),
    new_keys: str | None = None,
    json_path: str | None = None,
) -> ImportReport:
    """``inv import-flagscale``: import, print the table, write the JSON report; fail when a set
    or a base layer differs from FlagScale's."""
    top = git_text(["rev-parse", "--show-toplevel"], Path.cwd(), check=False)
    if top:  # a move a kill interrupted first: until then the declaration may be half written
        finish_move(Workspace(root=Path(top), backends={}))
    ws = find_workspace()
    request = ImportRequest(
        checkout=Path(checkout),
        releases=_releases(releases),
        key_paths=tuple(Path(p) for p in key_paths),
        new_keys=Path(new_keys).resolve() if new_keys else None,
    )
    report = import_flagscale(ws, request)
    path = Path(json_path) if json_path else ws.path(DEFAULT_REPORT)
    write_report(report, path)
    print(render_table(report), end="")
    print(f"report: {path}")
    if report.failed:
        raise FlagScaleError(
            f"{len(report.failed)} imported part(s) differ from FlagScale's tree and were not"
            f" recorded: {', '.join(report.failed)}",
            hint="see the files listed in the report; docs/migrating-from-flagscale.md says what"
            " to do with sets that could not be proved",
        )
    return report


def _releases(values: Sequence[str]) -> dict[str, Path]:
    found = {}
    for value in values:
        name, sep, archive = value.partition("=")
        if not sep or not name or not archive:
            raise FlagScaleError(
                f"--release {value!r} is not BACKEND=ARCHIVE",
                hint="e.g. --release Megatron-LM=/downloads/megatron_core-0.16.1.tar.gz",
            )
        found[name] = Path(archive)
    return found
