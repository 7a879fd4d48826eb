"""``inv refresh``: move a backend's pin and carry the base layer and every vendor set along.

The refresh is a sequence of steps, each recorded in the state file once done
(``flagscale.refresh.state``), so ``--continue`` resumes at the first step not done and a
refresh killed at any moment loses nothing:

1. **pin** — import the new release or fetch the new commit into ``third_party/<b>``
   (``flagscale.refresh.target``);
2. **layer** — carry ``backends/<b>/`` three ways (``flagscale.refresh.layer_carry``);
3. **pin commit** — the pin and the carried layer as a commit (not published yet);
4. **devices** — each device type's sets carried to that commit (``flagscale.refresh.set_carry``),
   one commit per device type;
5. **history** — the history entries ``inv record-history`` would write, as a commit;
6. **prove** — every refreshed device type with golden losses built and trained
   (``flagscale.refresh.prove``);
7. **publish** — the branch moves onto the commits, the changed paths follow
   (``flagscale.refresh.publish``).

A conflict (steps 2 and 4) stops the refresh with a scratch checkout to settle it in
(``flagscale.refresh.checkout``); a smoke job that fails stops it before publishing.
``--abort`` puts everything back as it was, at any point.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flagscale.core.crashpoints import crash_point
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, git_ok, git_text
from flagscale.core.progress import Progress
from flagscale.core.repository_lock import repository_lock
from flagscale.overlay.layered_trees import TreeEntry, diff_trees
from flagscale.refresh.carry import Conflict, FileOutcome, Step
from flagscale.refresh.chain import Put, drop_work_ref, make_commit
from flagscale.refresh.checkout import (
    ConflictCheckout,
    read_checkout,
    remove_checkout,
    write_checkout,
)
from flagscale.refresh.collisions import Origin
from flagscale.refresh.layer_carry import (
    LayerResult,
    carry_layer,
    layer_at,
    layer_from_tree,
    overlay,
)
from flagscale.refresh.merge3 import Labels
from flagscale.refresh.objects import Objects
from flagscale.refresh.preflight import (
    DEFAULT_CHECKOUT,
    check_no_operation,
    checkout_folder,
    gitlink_paths,
    preflight,
    refresh_devices,
    state_or_error,
)
from flagscale.refresh.prove import prove_device
from flagscale.refresh.publish import (
    changed_paths,
    check_clean,
    check_untouched,
    head_of,
    publish,
    unpublish,
)
from flagscale.refresh.records import device_changes, history_data, pin_changes
from flagscale.refresh.report import (
    build_report,
    counted,
    notable,
    render_report,
    write_report,
)
from flagscale.refresh.set_carry import (
    DeviceSets,
    SetKeys,
    Trees,
    carry_set,
    read_device,
    step_between,
)
from flagscale.refresh.state import clear_state, load_state, refresh_dir, save_state
from flagscale.refresh.target import PinMove, move_pin
from flagscale.upstream.release_import import RELEASE_REF_PREFIX
from flagscale.upstream.workspace import (
    FLAGSCALE,
    ReleaseSource,
    Workspace,
    find_workspace,
)
from flagscale.vendor.committed import CommittedState
from flagscale.vendor.history import HISTORY
from flagscale.vendor.make_sets import check_identity
from flagscale.vendor.patchset import HARDWARE

__all__ = [
    "DEFAULT_CHECKOUT",
    "Options",
    "abort_refresh",
    "continue_refresh",
    "refresh_command",
    "start_refresh",
]


@dataclass
class Options:
    """How a refresh runs (given again, or changed, with ``--continue``)."""

    smoke: bool = True
    record_golden: bool = False
    key_paths: list[str] = field(default_factory=list)
    json_path: Path | None = None
    report: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


class Stopped(Exception):
    """The refresh waits for a person (a conflict, a failed smoke job): state saved."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


# --- the three commands -------------------------------------------------------------------------


def start_refresh(
    ws: Workspace, backend_name: str, to: str, *, checkout: str | None, options: Options
) -> dict[str, Any]:
    """``inv refresh --backend B --to X``."""
    with repository_lock(ws.root, f"inv refresh --backend {backend_name} --to {to}"):
        existing = load_state(ws)
        if existing is not None:
            raise FlagScaleError(
                f"a refresh of {existing['backend']} to {existing['request']['to']} is in progress",
                hint="finish it with `inv refresh --continue`, or give it up with"
                " `inv refresh --abort`",
            )
        backend = ws.backend(backend_name)
        check_identity(ws)
        check_no_operation(ws)
        head = head_of(ws)
        ref = git_text(["symbolic-ref", "-q", "HEAD"], ws.root, check=False) or None
        devices = refresh_devices(ws, head, backend.name)
        folder = checkout_folder(ws, checkout)
        preflight(ws, backend, devices, folder)
        state: dict[str, Any] = {
            "backend": backend.name,
            "request": {
                "to": to,
                "checkout": str(folder),
                "key_paths": [str(Path(p).expanduser().resolve()) for p in options.key_paths],
            },
            "start": {"head": head, "ref": ref},
            "created_ref": None,
            "move": None,
            "layer": None,
            "pin_commit": None,
            "devices_head": None,
            "order": devices,
            "devices": {d: {"status": "pending", "sets": {}} for d in devices},
            "conflict": None,
            "history_commit": None,
            "proved": False,
            "golden": {},
            "final": None,
            "published": None,
            "notes": [],
        }
        save_state(ws, state)
        crash_point("refresh:started")
        return _paused_on_error(_Run(ws, state, options))


def continue_refresh(ws: Workspace, options: Options) -> dict[str, Any]:
    """``inv refresh --continue``: settle the conflict read back, then go on."""
    with repository_lock(ws.root, "inv refresh --continue"):
        state = state_or_error(ws)
        known = state["request"]["key_paths"]
        added = [str(Path(p).expanduser().resolve()) for p in options.key_paths]
        state["request"]["key_paths"] = list(dict.fromkeys(known + added))
        run = _Run(ws, state, options)
        if state["conflict"]:
            run.settle()
        return _paused_on_error(run)


def _paused_on_error(run: _Run) -> dict[str, Any]:
    """Go on with ``run``; an error once the pin moved leaves the refresh paused, and says so."""
    try:
        return run.advance()
    except FlagScaleError as exc:
        if load_state(run.ws) is None:
            raise
        hint = (exc.hint + "; " if exc.hint else "") + (
            "the refresh is paused: run `inv refresh --continue` once that is fixed, or"
            " `inv refresh --abort`"
        )
        raise FlagScaleError(exc.message, hint=hint) from exc


def abort_refresh(ws: Workspace, report: Callable[[str], None] = print) -> None:
    """``inv refresh --abort``: put everything back as it was before the refresh started."""
    with repository_lock(ws.root, "inv refresh --abort"):
        state = state_or_error(ws)
        published = state.get("published")
        if published:
            paths = published["paths"]
            check_untouched(ws, paths, (published["old"], published["new"]))
            unpublish(ws, published["old"], published["new"], paths)
            state["published"] = None
            save_state(ws, state)
        crash_point("refresh:abort")
        drop_work_ref(ws)
        created = state.get("created_ref")
        if created:
            checkout = ws.path(f"third_party/{state['backend']}")
            if checkout.is_dir():
                git(["update-ref", "-d", created], checkout, check=False)
        remove_checkout(Path(state["request"]["checkout"]))
        shutil.rmtree(refresh_dir(ws) / "prove", ignore_errors=True)
        clear_state(ws)
    target = (state.get("move") or {}).get("new_label") or state["request"]["to"]
    report(f"refresh of {state['backend']} to {target} aborted: everything is as it was")


def refresh_command(
    backend: str | None = None,
    to: str | None = None,
    *,
    resume: bool = False,
    abort: bool = False,
    checkout: str | None = None,
    key_paths: list[str] | None = None,
    smoke: bool = True,
    record_golden: bool = False,
    json_path: str | None = None,
    start: Path | None = None,
) -> dict[str, Any] | None:
    """``inv refresh``: start one (``--backend``, ``--to``), ``--continue`` it or ``--abort`` it."""
    ws = find_workspace(start)
    if resume and abort:
        raise FlagScaleError("--continue and --abort exclude each other", hint="pass one of them")
    if abort:
        if backend or to:
            raise FlagScaleError(
                "--abort takes no --backend or --to", hint="run `inv refresh --abort`"
            )
        abort_refresh(ws)
        return None
    options = Options(
        smoke=smoke,
        record_golden=record_golden,
        key_paths=list(key_paths or []),
        json_path=Path(json_path) if json_path else None,
    )
    try:
        if resume:
            if backend or to:
                raise FlagScaleError(
                    "--continue goes on with the refresh in progress: it takes no --backend"
                    " or --to",
                    hint="run `inv refresh --continue`",
                )
            return continue_refresh(ws, options)
        if not backend or not to:
            missing = " and ".join(f for f, v in (("--backend", backend), ("--to", to)) if not v)
            raise FlagScaleError(
                f"missing {missing}",
                hint="e.g. `inv refresh --backend Megatron-LM --to 0.16.0` (a version for release"
                " backends, a commit or ref for submodules)",
            )
        return start_refresh(ws, backend, to, checkout=checkout, options=options)
    except Stopped as stop:
        raise FlagScaleError(stop.message, hint=stop.hint) from None


# --- the run ------------------------------------------------------------------------------------


class _Run:
    """One invocation working through the steps of a refresh's state."""

    def __init__(self, ws: Workspace, state: dict[str, Any], options: Options) -> None:
        self.ws = ws
        self.state = state
        self.options = options
        self.backend = ws.backend(state["backend"])
        self.objects = Objects(ws)
        self.trees = Trees(ws, self.objects)
        self.progress = Progress("refresh")
        self._committed: CommittedState | None = None
        self._keys: SetKeys | None = None

    # properties ------------------------------------------------------------------------------

    @property
    def move(self) -> PinMove:
        return PinMove.from_json(self.state["move"])

    @property
    def head(self) -> str:
        return self.state["start"]["head"]

    @property
    def committed(self) -> CommittedState:
        if self._committed is None:
            self._committed = CommittedState(self.ws.root, self.head)
        return self._committed

    @property
    def keys(self) -> SetKeys:
        if self._keys is None:
            self._keys = SetKeys([Path(p) for p in self.state["request"]["key_paths"]])
        return self._keys

    def save(self) -> None:
        save_state(self.ws, self.state)

    # the steps -------------------------------------------------------------------------------

    def advance(self) -> dict[str, Any]:
        if self.state["move"] is None:
            self._pin()
        if self.state["layer"] is None:
            self._layer()
        if self.state["pin_commit"] is None:
            self._pin_commit()
        for device in self.state["order"]:
            if self.state["devices"][device]["status"] == "pending":
                self._device(device)
        if self.state["history_commit"] is None:
            self._history()
        if not self.state["proved"]:
            self._prove()
        if self.state["final"] is None:
            self._final()
        self._publish()
        return self._finish()

    def _pin(self) -> None:
        to = self.state["request"]["to"]
        self.progress.step(f"moving the {self.backend.name} pin to {to}")
        if isinstance(self.backend.source, ReleaseSource) and not self.state.get("created_ref"):
            ref = RELEASE_REF_PREFIX + to
            checkout = self.ws.path(self.backend.checkout)
            exists = checkout.is_dir() and git_ok(
                ["show-ref", "--verify", "--quiet", ref], checkout
            )
            self.state["created_ref"] = None if exists else ref
            self.save()
        try:
            move = move_pin(self.ws, self.backend, to)
        except FlagScaleError:  # nothing done yet: no refresh to continue or abort
            created = self.state.get("created_ref")
            checkout = self.ws.path(self.backend.checkout)
            if created and checkout.is_dir():
                git(["update-ref", "-d", created], checkout, check=False)
            clear_state(self.ws)
            raise
        self.state["move"] = move.to_json()
        self.save()
        crash_point("refresh:pin")

    def _layer_step(self) -> Step:
        move = self.move
        old_tree = self._pin_tree(move.old_pin)
        new_tree = self._pin_tree(move.new_pin)
        if move.kind == "submodule":
            origin = Origin(
                label=move.step,
                repo=self.ws.path(self.backend.checkout),
                old=move.old_pin,
                new=move.new_pin,
            )
        else:
            origin = Origin(label=move.step)
        labels = Labels(
            ours=f"{move.new_label} (new pin)",
            base=f"{move.old_label} (old pin)",
            theirs=f"FlagScale's base layer ({self.backend.layer}/)",
        )
        return Step(old_tree, new_tree, labels, origin)

    def _pin_tree(self, pin: str) -> str:
        from flagscale.overlay.layered_trees import scratch_git

        return scratch_git(self.ws, ["rev-parse", f"{pin}^{{tree}}"]).decode().strip()

    def _layer(self) -> None:
        self.progress.step(f"carrying the base layer {self.backend.layer}/")
        step = self._layer_step()
        files, deletions = layer_at(self.ws, self.backend, self.head, self.objects)
        result = carry_layer(self.objects, step, files, deletions)
        if result.conflicts:
            self._stop_on_conflict(
                stage="layer",
                title=f"the base layer {self.backend.layer}/ on {self.move.step}",
                base_tree=step.new,
                carried=result.tree,
                conflicts=result.conflicts,
                outcomes=result.files,
                labels=step.labels,
                extra={"layer": result.to_json()},
            )
        self.state["layer"] = result.to_json()
        self.save()
        crash_point("refresh:layer")

    def _pin_commit(self) -> None:
        self.progress.step("committing the pin and the base layer (not published yet)")
        move = self.move
        layer = self.state["layer"]
        entries = {path: TreeEntry(mode, oid, path) for path, (mode, oid) in layer["layer"].items()}
        changes, notes = pin_changes(
            self.ws, self.objects, self.backend, self.head, move, entries, layer["deletions"]
        )
        self.state["notes"] += notes
        commit = self.head
        if changes:
            message = f"refresh: {self.backend.name} {move.old_label} -> {move.new_label}:"
            message += " pin and base layer\n" + _outcome_lines(layer["files"])
            commit = make_commit(self.ws, self.head, changes, message)
        self.state["pin_commit"] = commit
        self.state["devices_head"] = commit
        self.save()
        crash_point("refresh:pin-commit")

    # devices ---------------------------------------------------------------------------------

    def _device(self, device: str) -> None:
        entry = self.state["devices"][device]
        self.progress.step(f"carrying the sets of {device}")
        found = read_device(self.ws, self.committed, device, self.backend.name, self.keys)
        if isinstance(found, str):
            self._not_refreshed(device, found)
            return
        entry["lines"] = found.lines
        new_base = self.state["pin_commit"]
        if found.base == new_base or all(
            self.trees.at(name, found.base) == self.trees.at(name, new_base) for name in found.sets
        ):
            entry.update(status="unchanged", reason="its sets already fit the new pin and layer")
            self.save()
            return
        order = sorted(found.sets, key=lambda name: (name != self.backend.name, name))
        for name in order:
            if name in entry["sets"]:
                continue
            carried = carry_set(self.ws, self.objects, self.trees, found, name, new_base)
            result = carried.result
            if result.status == "broken":
                self._not_refreshed(
                    device, f"its {name} set does not apply to its own base: {result.reason}"
                )
                return
            if result.status == "conflict":
                step = step_between(self.ws, self.trees, name, found.base, new_base, device)
                self._stop_on_conflict(
                    stage=f"{device}/{name}",
                    title=f"{device}'s {name} set on {carried.origin}",
                    base_tree=step.new,
                    carried=result.tree or step.new,
                    conflicts=result.conflicts,
                    outcomes=result.files,
                    labels=step.labels,
                    extra={"device": device, "backend": name, "origin": carried.origin},
                )
            plain = None
            if result.status == "carried":
                assert result.patch is not None
                if not result.patch.strip():
                    self._not_refreshed(device, _empty_reason(name, carried.origin))
                    return
                plain = self.objects.write(result.patch)
            entry["sets"][name] = {
                "status": result.status,
                "origin": carried.origin,
                "encrypted": found.keys.get(name) is not None,
                "plain": plain,
                "files": notable([f.to_json() for f in result.files]),
                "counts": counted([f.to_json() for f in result.files]),
            }
            self.save()
        self._device_commit(device, found)

    def _not_refreshed(self, device: str, reason: str) -> None:
        entry = self.state["devices"][device]
        entry.update(status="not_refreshed", reason=reason)
        self.save()
        self.options.report(f"{device}: not refreshed: {reason}")

    def _device_commit(self, device: str, found: DeviceSets) -> None:
        entry = self.state["devices"][device]
        parent = self.state["devices_head"]
        changes = device_changes(
            self.ws,
            self.objects,
            found,
            {name: item["plain"] for name, item in entry["sets"].items()},
            parent=parent,
            new_base=self.state["pin_commit"],
            refreshed_backend=self.backend.name,
            new_version=self.move.new_label if self.move.kind == "release" else None,
            pins={
                name: self.trees.pin(name, self.state["pin_commit"])
                for name in entry["sets"]
                if name != FLAGSCALE
            },
        )
        lines = [
            f"{name}: {item['status']} ({_summary(item['files'])})"
            for name, item in sorted(entry["sets"].items())
        ]
        message = f"refresh: {device} sets on {self.backend.name} {self.move.new_label}\n\n"
        message += "\n".join(lines) + "\n"
        commit = make_commit(self.ws, parent, changes, message)
        entry.update(status="refreshed", commit=commit)
        self.state["devices_head"] = commit
        self.save()
        crash_point("refresh:device")

    # conflicts -------------------------------------------------------------------------------

    def _stop_on_conflict(
        self,
        *,
        stage: str,
        title: str,
        base_tree: str,
        carried: str,
        conflicts: list[Conflict],
        outcomes: list[FileOutcome],
        labels: Labels,
        extra: dict[str, Any],
    ) -> None:
        folder = Path(self.state["request"]["checkout"])
        write_checkout(
            self.objects,
            folder,
            stage=stage,
            title=f"refresh: {title}",
            base_tree=base_tree,
            carried_tree=carried,
            conflicts=conflicts,
        )
        self.state["conflict"] = {
            "stage": stage,
            "title": title,
            "folder": str(folder),
            "base_tree": base_tree,
            "conflicted": [c.path for c in conflicts],
            "text": [c.path for c in conflicts if c.text],
            "labels": {"ours": labels.ours, "base": labels.base, "theirs": labels.theirs},
            "files": [o.to_json() for o in outcomes],
            **extra,
        }
        self.save()
        crash_point("refresh:stopped")
        self._report("stopped")
        shown = _display(self.ws, folder)
        count = sum(1 for o in outcomes if not o.resolved)
        raise Stopped(
            f"refresh stopped: {count} file(s) of {title} need a hand; they are in {shown}",
            hint=f"settle each (conflict markers, or `git -C {shown} checkout --theirs|--ours"
            f" <path>`), mark it with `git -C {shown} add <path>` (or `rm`), then run"
            " `inv refresh --continue`; `inv refresh --abort` gives the refresh up",
        )

    def settle(self) -> None:
        """Read the settled checkout back into the stage it stopped."""
        conflict = self.state["conflict"]
        labels = Labels(**conflict["labels"])
        checkout = ConflictCheckout(
            folder=Path(conflict["folder"]),
            stage=conflict["stage"],
            base_tree=conflict["base_tree"],
            conflicted=tuple(conflict["conflicted"]),
            text=tuple(conflict["text"]),
            labels=labels,
        )
        resolved = read_checkout(self.objects, checkout)
        crash_point("refresh:resolved")
        files = [dict(f) for f in conflict["files"]]
        for item in files:
            if not item["resolved"]:
                item["resolved"] = True
                item["detail"] = (item["detail"] + "; settled by hand").lstrip("; ")
        if conflict["stage"] == "layer":
            self._settle_layer(conflict, resolved, files)
        else:
            self._settle_set(conflict, resolved, files)
        self.state["conflict"] = None
        self.save()
        remove_checkout(checkout.folder)

    def _settle_layer(self, conflict: dict[str, Any], resolved: str, files: list[dict]) -> None:
        before = LayerResult.from_json(conflict["layer"])
        pin = self.objects.entries(conflict["base_tree"])
        layer, deletions = layer_from_tree(
            pin, self.objects.entries(resolved), before, set(conflict["conflicted"])
        )
        tree = self.objects.tree(overlay(pin, layer, deletions).values())
        self.state["layer"] = {
            "status": "carried",
            "files": files,
            "layer": {p: [e.mode, e.oid] for p, e in sorted(layer.items())},
            "deletions": deletions,
            "tree": tree,
        }

    def _settle_set(self, conflict: dict[str, Any], resolved: str, files: list[dict]) -> None:
        device, name = conflict["device"], conflict["backend"]
        patch = diff_trees(self.objects.repo, conflict["base_tree"], resolved)
        entry = self.state["devices"][device]
        if not patch.strip():
            self._not_refreshed(device, _empty_reason(name, conflict["origin"]))
            return
        entry["sets"][name] = {
            "status": "carried",
            "origin": conflict["origin"],
            "encrypted": False,
            "plain": self.objects.write(patch),
            "files": notable(files),
            "counts": counted(files),
        }
        found = read_device(self.ws, self.committed, device, self.backend.name, self.keys)
        if not isinstance(found, str):
            entry["sets"][name]["encrypted"] = found.keys.get(name) is not None

    # history, proof, publication --------------------------------------------------------------

    def _history(self) -> None:
        devices = self.state["devices"]
        refreshed = {
            d: (devices[d]["lines"], devices[d]["commit"])
            for d in self.state["order"]
            if devices[d]["status"] == "refreshed"
        }
        parent = self.state["devices_head"]
        if not refreshed:
            self.state["history_commit"] = parent
            self.save()
            return
        self.progress.step("recording the history")
        data = history_data(self.ws, self.head, refreshed)
        message = f"refresh: history of {', '.join(refreshed)} on {self.backend.name}"
        message += f" {self.move.new_label}\n"
        commit = make_commit(self.ws, parent, {HISTORY: Put("100644", data)}, message)
        self.state["history_commit"] = commit
        self.state["history_bytes"] = self.objects.write(data)
        self.save()
        crash_point("refresh:history")

    def _prove(self) -> None:
        if not self.options.smoke:
            self.state["notes"].append("the refreshed device types were not proved (--no-smoke)")
            self.state["proved"] = True
            self.save()
            return
        head = self.state["history_commit"]
        failures = []
        for device in self.state["order"]:
            entry = self.state["devices"][device]
            if entry["status"] != "refreshed" or not self._needs_proof(entry):
                continue
            self.progress.step(f"building and training {device} on the refreshed sets")
            backends = sorted({n for key in entry["lines"] for n in key.split("+")} - {FLAGSCALE})
            proofs = prove_device(
                self.ws,
                head,
                device,
                backends=backends,
                key_paths=[Path(p) for p in self.state["request"]["key_paths"]],
                record_golden=self.options.record_golden,
                report=self.options.report,
                folder=refresh_dir(self.ws) / "prove",
            )
            entry["smoke"] = [p.to_json() for p in proofs]
            entry["smoke_golden"] = self.options.record_golden
            entry["smoke_retry"] = False
            for proof in proofs:
                if proof.recorded is not None:
                    self.state["golden"][f"{HARDWARE}/{device}/smoke/{proof.case}.golden.json"] = (
                        self.objects.write(proof.recorded)
                    )
            self.save()
            crash_point("refresh:proved")
        for device in self.state["order"]:
            for proof in self.state["devices"][device].get("smoke", []):
                if proof["status"] in ("failed", "error"):
                    failures.append(f"{device}/{proof['case']} ({proof['status']})")
        if failures:
            self._report("smoke_failed")
            for device in self.state["order"]:  # a --continue runs the failed jobs again
                entry = self.state["devices"][device]
                if any(p["status"] in ("failed", "error") for p in entry.get("smoke", [])):
                    entry["smoke_retry"] = True
            self.save()
            raise Stopped(
                f"refresh stopped before publishing: smoke job(s) failed on the refreshed build:"
                f" {', '.join(failures)}",
                hint="see the losses above; `inv refresh --continue` runs them again,"
                " `inv refresh --continue --record-golden` takes the new losses as golden,"
                " `inv refresh --continue --no-smoke` publishes unproved,"
                " `inv refresh --abort` gives the refresh up",
            )
        self.state["proved"] = True
        self.save()

    def _needs_proof(self, entry: dict[str, Any]) -> bool:
        if "smoke" not in entry or entry.get("smoke_retry"):
            return True
        return self.options.record_golden and not entry.get("smoke_golden")

    def _final(self) -> None:
        golden = self.state["golden"]
        if not golden:
            self.state["final"] = self.state["history_commit"]
            self.save()
            return
        data = self.objects.read_many(golden.values())
        changes = {path: Put("100644", data[oid]) for path, oid in golden.items()}
        message = f"refresh: golden losses on {self.backend.name} {self.move.new_label}\n"
        commit = make_commit(self.ws, self.state["devices_head"], changes, message)
        history = self.state.get("history_bytes")
        if history:
            text = self.objects.read(history)
            message = f"refresh: history on {self.backend.name} {self.move.new_label}\n"
            commit = make_commit(self.ws, commit, {HISTORY: Put("100644", text)}, message)
        self.state["final"] = commit
        self.save()

    def _publish(self) -> None:
        old, new = self.head, self.state["final"]
        if old == new:
            return
        published = self.state["published"]
        if published is None:
            self.progress.step("publishing the commits")
            current = head_of(self.ws)
            ref = git_text(["symbolic-ref", "-q", "HEAD"], self.ws.root, check=False) or None
            if current != old or ref != self.state["start"]["ref"]:
                raise FlagScaleError(
                    f"HEAD moved since the refresh started ({old[:12]} on"
                    f" {self.state['start']['ref'] or 'a detached HEAD'}, now {current[:12]} on"
                    f" {ref or 'a detached HEAD'}): the refresh was made on top of {old[:12]}",
                    hint="go back to it (`git checkout` the branch and commit), or run"
                    " `inv refresh --abort` and start again",
                )
            paths = changed_paths(self.ws, old, new)
            links = gitlink_paths(self.ws, self.state)
            check_clean(self.ws, [p for p in paths if p not in links], submodules=sorted(links))
            published = {"old": old, "new": new, "paths": paths}
            self.state["published"] = published
            self.save()
        else:  # a run killed while publishing: each path holds the old or the new version
            check_untouched(self.ws, published["paths"], (published["old"], published["new"]))
        message = f"refresh: {self.backend.name} {self.move.old_label} -> {self.move.new_label}"
        publish(self.ws, published["old"], published["new"], published["paths"], message)

    def _finish(self) -> dict[str, Any]:
        if self.state["final"] == self.head:
            self.state["notes"].append("nothing to refresh: the pin, the layer and every set fit")
        drop_work_ref(self.ws)
        remove_checkout(Path(self.state["request"]["checkout"]))
        shutil.rmtree(refresh_dir(self.ws) / "prove", ignore_errors=True)
        document = self._report("done")
        clear_state(self.ws)
        self.progress.finish(f"refreshed {self.backend.name} to {self.move.new_label}")
        return document

    def _report(self, status: str) -> dict[str, Any]:
        document = build_report(self.state, status)
        write_report(self.ws, document, self.options.json_path)
        sys.stdout.write(render_report(document))
        sys.stdout.flush()
        return document


# --- helpers ------------------------------------------------------------------------------------


def _summary(files: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for item in files:
        counts[item["class"]] = counts.get(item["class"], 0) + 1
    return ", ".join(f"{n} {c.replace('_', ' ')}" for c, n in sorted(counts.items())) or "no files"


def _outcome_lines(files: list[dict[str, Any]]) -> str:
    lines = [
        f"{f['path']}: {f['class'].replace('_', ' ')}"
        + (f" ({f['detail']})" if f["detail"] else "")
        for f in files
        if f["class"] != "unchanged"
    ]
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def _empty_reason(backend: str, origin: str) -> str:
    return (
        f"every change of its {backend} set is in the new tree already ({origin}): the set would"
        " be empty; take it out of the device type's history by hand"
    )


def _display(ws: Workspace, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ws.root.resolve()))
    except ValueError:
        return str(path)
