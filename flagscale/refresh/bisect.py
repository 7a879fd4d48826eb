"""``inv bisect-upstream``: the first upstream step where a device type's sets break.

Between a good pin (the sets apply, and train) and a bad one, the upstream steps are the commits
of a submodule (``git rev-list --ancestry-path``) or the published versions of a release (from the
package index pip is configured with). Each step tested is checked like a refresh would see it:

1. the step's pin is fetched or imported (``third_party/<b>`` gains it; its work tree stays);
2. FlagScale's base layer is carried onto it — when that needs a hand, or the pin cannot be
   had at all (no source archive), the step cannot be built and is skipped, as
   ``git bisect skip`` does;
3. the device type's set is tried on pin + layer with ``git apply --check``: a step where it no
   longer applies is bad;
4. with ``smoke``, the device type is built on throw-away commits (the refresh's own, never
   published) and its smoke jobs run: a failing job makes the step bad, a build that fails a
   skipped one.

Steps are halved like ``git bisect``; the answer names the last good and the first bad step.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, git_ok
from flagscale.core.repository_lock import repository_lock
from flagscale.core.schema import validate
from flagscale.overlay.layered_trees import scratch_git
from flagscale.refresh.carry import Step
from flagscale.refresh.chain import Put, make_commit
from flagscale.refresh.collisions import Origin
from flagscale.refresh.layer_carry import carry_layer, layer_at, overlay
from flagscale.refresh.merge3 import Labels
from flagscale.refresh.objects import Objects, sparse
from flagscale.refresh.patchfile import parse_patch
from flagscale.refresh.prove import prove_device
from flagscale.refresh.publish import head_of
from flagscale.refresh.records import device_changes, history_data, pin_changes
from flagscale.refresh.set_carry import DeviceSets, SetKeys, Trees, carry_set, read_device
from flagscale.refresh.state import refresh_dir
from flagscale.refresh.target import PinMove, commit_of
from flagscale.upstream.release_import import RELEASE_REF_PREFIX, install_release
from flagscale.upstream.sync import ensure_checkout
from flagscale.upstream.workspace import FLAGSCALE, Backend, ReleaseSource, Workspace
from flagscale.vendor.committed import CommittedState
from flagscale.vendor.history import HISTORY
from flagscale.vendor.patchset import check_device_type

__all__ = ["GOOD", "BAD", "SKIP", "Probe", "bisect_command", "bisect_upstream", "render_bisect"]

GOOD, BAD, SKIP = "good", "bad", "skip"
SCHEMA_VERSION = 1


@dataclass
class Probe:
    """One upstream step tested: its pin, the verdict and why."""

    label: str
    pin: str | None = None
    verdict: str = SKIP
    reason: str = ""
    order: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"step": self.label, "pin": self.pin, "verdict": self.verdict, "reason": self.reason}


@dataclass
class _Bisect:
    ws: Workspace
    device: str
    backend: Backend
    sets: DeviceSets
    head: str
    smoke: bool
    key_paths: list[Path]
    report: Callable[[str], None]
    pre: bool = False
    objects: Objects = field(init=False)
    probes: dict[str, Probe] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.objects = Objects(self.ws)
        self.trees = Trees(self.ws, self.objects)
        self.checkout = self.ws.path(self.backend.checkout)
        self.old_pin = self.ws.pin(self.backend)
        self.layer, self.deletions = layer_at(self.ws, self.backend, self.head, self.objects)

    # the steps -------------------------------------------------------------------------------

    def steps(self, good: str, bad: str) -> list[str]:
        if isinstance(self.backend.source, ReleaseSource):
            from flagscale.refresh.registry import versions_between

            return versions_between(self.backend.source.package, good, bad, pre=self.pre)
        return self._commits(good, bad)

    def _commits(self, good: str, bad: str) -> list[str]:
        first = commit_of(self.ws, self.backend, good)
        last = commit_of(self.ws, self.backend, bad)
        if git_ok(["merge-base", "--is-ancestor", first, last], self.checkout):
            return [first, *_rev_list(self.checkout, first, last)]
        if git_ok(["merge-base", "--is-ancestor", last, first], self.checkout):
            return [*reversed(_rev_list(self.checkout, last, first)), last]
        raise FlagScaleError(
            f"--good {good} and --bad {bad} are not on one line of {self.backend.name}'s history",
            hint="give two commits where one descends from the other",
        )

    # one step --------------------------------------------------------------------------------

    def probe(self, label: str, order: int) -> Probe:
        if label in self.probes:
            return self.probes[label]
        found = Probe(label, order=order)
        self.probes[label] = found
        try:
            found.pin = self._pin(label)
            self._judge(found)
        except FlagScaleError as exc:
            found.verdict, found.reason = SKIP, f"cannot be built: {exc}"
        self.report(f"bisect: {self._shown(found)}: {found.verdict} ({found.reason})")
        return found

    def _shown(self, probe: Probe) -> str:
        return _short(probe.label)

    def _pin(self, label: str) -> str:
        if not isinstance(self.backend.source, ReleaseSource):
            return label
        from flagscale.refresh.registry import release_source

        current = self.backend.source
        source = current if label == current.version else release_source(current.package, label)
        ref = RELEASE_REF_PREFIX + source.version
        if not git_ok(["show-ref", "--verify", "--quiet", ref], self.checkout):
            self.created.append(ref)
        return install_release(
            source, self.checkout, workspace_root=self.ws.root, pin=None, label=self.backend.name
        )

    def _judge(self, probe: Probe) -> None:
        assert probe.pin is not None
        step = Step(
            self._tree(self.old_pin),
            self._tree(probe.pin),
            Labels(ours=f"{probe.label} (step)", base="current pin", theirs="base layer"),
            Origin(label=f"{self.backend.name} -> {probe.label}"),
        )
        layer = carry_layer(self.objects, step, self.layer, self.deletions)
        if layer.conflicts:
            paths = ", ".join(c.path for c in layer.conflicts[:3])
            probe.verdict = SKIP
            probe.reason = f"cannot be built: the base layer needs a hand there ({paths})"
            return
        tree = overlay(self.objects.entries(step.new), layer.layer, layer.deletions)
        plain = self.sets.plain[self.backend.name]
        touched = [p for s in parse_patch(plain, self.backend.name) for p in s.paths]
        checked = self.objects.check(plain, sparse(tree, touched))
        if not checked.ok:
            probe.verdict, probe.reason = BAD, f"the set stops applying: {_errors(checked.stderr)}"
            return
        probe.verdict, probe.reason = GOOD, "the set applies"
        if self.smoke:
            self._smoke(probe, layer.layer, layer.deletions)

    def _tree(self, pin: str) -> str:
        return scratch_git(self.ws, ["rev-parse", f"{pin}^{{tree}}"]).decode().strip()

    def _smoke(self, probe: Probe, layer: dict, deletions: list[str]) -> None:
        assert probe.pin is not None
        source = None
        if isinstance(self.backend.source, ReleaseSource):
            from flagscale.refresh.registry import release_source

            current = self.backend.source
            same = probe.label == current.version
            source = current if same else release_source(current.package, probe.label)
        move = PinMove(
            self.backend.name,
            "release" if source else "submodule",
            self.old_pin,
            probe.pin,
            "current",
            probe.label,
            source=source,
        )
        changes, _notes = pin_changes(
            self.ws, self.objects, self.backend, self.head, move, layer, deletions
        )
        message = f"bisect-upstream: {self.backend.name} at {probe.label}\n"
        base = make_commit(self.ws, self.head, changes, message, keep=False)
        carried: dict[str, str | None] = {}
        for name in sorted(self.sets.sets):
            result = carry_set(self.ws, self.objects, self.trees, self.sets, name, base).result
            if result.status in ("conflict", "broken"):
                probe.verdict = SKIP
                probe.reason = f"cannot be built: the {name} set needs a hand there"
                return
            carried[name] = self.objects.write(result.patch) if result.patch else None
        version = probe.label if source else None
        set_changes = device_changes(
            self.ws,
            self.objects,
            self.sets,
            carried,
            parent=base,
            new_base=base,
            refreshed_backend=self.backend.name,
            new_version=version,
        )
        sets_commit = make_commit(self.ws, base, set_changes, message, keep=False)
        data = history_data(self.ws, self.head, {self.device: (self.sets.lines, sets_commit)})
        head = make_commit(
            self.ws, sets_commit, {HISTORY: Put("100644", data)}, message, keep=False
        )
        backends = sorted({n for key in self.sets.lines for n in key.split("+")} - {FLAGSCALE})
        proofs = prove_device(
            self.ws,
            head,
            self.device,
            backends=backends,
            key_paths=self.key_paths,
            report=lambda _line: None,
            folder=refresh_dir(self.ws) / "bisect-prove",
        )
        if not proofs:
            probe.reason += "; no smoke case with golden losses to run"
            return
        failed = [p for p in proofs if p.status != "passed"]
        errors = [p for p in failed if p.status == "error" and not p.losses]
        if errors:
            probe.verdict = SKIP
            probe.reason = f"cannot be built or run: {errors[0].reason}"
        elif failed:
            probe.verdict = BAD
            probe.reason = f"the set applies, smoke {failed[0].case} fails: {failed[0].reason}"
        else:
            probe.reason += f"; smoke {', '.join(p.case for p in proofs)} passed"

    def cleanup(self) -> None:
        for ref in self.created:
            git(["update-ref", "-d", ref], self.checkout, check=False)
        shutil.rmtree(refresh_dir(self.ws) / "bisect-prove", ignore_errors=True)


def _rev_list(repo: Path, older: str, newer: str) -> list[str]:
    listing = git(
        ["rev-list", "--reverse", "--topo-order", "--ancestry-path", f"{older}..{newer}"], repo
    )
    return listing.decode().split()


def _errors(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    return "; ".join((errors or lines)[:2]) or "git apply failed"


# --- halving ------------------------------------------------------------------------------------


def _search(run: _Bisect, steps: list[str]) -> dict[str, Any]:
    """Halve ``steps`` (good first, bad last) down to the first bad one, skipping as needed."""
    first = run.probe(steps[0], 0)
    if first.verdict != GOOD:
        raise FlagScaleError(
            f"--good {steps[0]} is not good: {first.reason}",
            hint="give a --good pin where the device type's sets apply (and train)",
        )
    last = run.probe(steps[-1], len(steps) - 1)
    if last.verdict == GOOD:
        return {"first_bad": None, "last_good": steps[-1], "candidates": []}
    if last.verdict == SKIP:
        raise FlagScaleError(f"--bad {steps[-1]} cannot be checked: {last.reason}")
    low, high = 0, len(steps) - 1
    while high - low > 1:
        middle = (low + high) // 2
        candidates = sorted(range(low + 1, high), key=lambda i: (abs(i - middle), i))
        verdict, index = SKIP, middle
        for index in candidates:
            verdict = run.probe(steps[index], index).verdict
            if verdict != SKIP:
                break
        if verdict == SKIP:
            return {
                "first_bad": None,
                "last_good": steps[low],
                "candidates": steps[low + 1 : high + 1],
            }
        if verdict == GOOD:
            low = index
        else:
            high = index
    return {"first_bad": steps[high], "last_good": steps[low], "candidates": [steps[high]]}


def bisect_upstream(
    ws: Workspace,
    device: str,
    good: str,
    bad: str,
    *,
    backend: str | None = None,
    smoke: bool = False,
    pre: bool = False,
    key_paths: list[Path] | None = None,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Find the first step between ``good`` and ``bad`` where ``device``'s sets break.

    ``pre`` counts pre-releases among a release backend's versions.
    """
    check_device_type(device)
    with repository_lock(ws.root, "inv bisect-upstream"):
        head = head_of(ws)
        committed = CommittedState(ws.root, head)
        if device not in committed.history:
            raise FlagScaleError(
                f"{HISTORY} at HEAD has no entry for {device}",
                hint="check the device type (inv matrix lists them)",
            )
        chosen = _backend(ws, committed, device, backend)
        keys = SetKeys(list(key_paths or []))
        found = read_device(ws, committed, device, chosen.name, keys)
        if isinstance(found, str):
            raise FlagScaleError(f"{device}: {found}")
        ensure_checkout(ws, chosen)
        run = _Bisect(ws, device, chosen, found, head, smoke, list(key_paths or []), report, pre)
        try:
            steps = run.steps(good, bad)
            outcome = _search(run, steps)
        finally:
            run.cleanup()
    probes = sorted(run.probes.values(), key=lambda p: p.order)
    document = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device_type": device,
        "backend": chosen.name,
        "kind": "release" if isinstance(chosen.source, ReleaseSource) else "submodule",
        "good": good,
        "bad": bad,
        "smoke": smoke,
        "steps": steps,
        "probes": [p.to_json() for p in probes],
        "first_bad": outcome["first_bad"],
        "last_good": outcome["last_good"],
        "candidates": outcome["candidates"],
    }
    return validate(document, "refresh-bisect", "bisect document")


def _backend(ws: Workspace, committed: CommittedState, device: str, name: str | None) -> Backend:
    names = sorted(
        {n for keys in committed.history[device].values() for k in keys for n in k.split("+")}
        - {FLAGSCALE}
    )
    if name is not None:
        if name not in names:
            raise FlagScaleError(
                f"{device} has no {name} sets in {HISTORY}",
                hint=f"its upstream backends: {', '.join(names) or 'none'}",
            )
        return ws.backend(name)
    if len(names) != 1:
        raise FlagScaleError(
            f"{device} has sets for {', '.join(names) or 'no upstream backend'}",
            hint="name one with --backend",
        )
    return ws.backend(names[0])


def render_bisect(document: dict[str, Any]) -> str:
    """The bisection as text: every step tested, then the answer."""
    kind = "versions" if document["kind"] == "release" else "commits"
    lines = [
        f"bisect-upstream {document['device_type']} {document['backend']}: {document['good']}"
        f" (good) .. {document['bad']} (bad), {len(document['steps'])} {kind}"
        + (" with smoke jobs" if document["smoke"] else "")
    ]
    rows = [["STEP", "VERDICT", "WHY"]]
    rows += [[_short(p["step"]), p["verdict"], p["reason"]] for p in document["probes"]]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines += [f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip() for r in rows]
    if document["first_bad"]:
        lines.append(
            f"first bad step: {_short(document['first_bad'])} (last good:"
            f" {_short(document['last_good'])})"
        )
    elif document["candidates"]:
        shown = ", ".join(_short(c) for c in document["candidates"])
        lines.append(
            f"the first bad step is one of {shown}: the steps between were skipped (last good:"
            f" {_short(document['last_good'])})"
        )
    else:
        lines.append(f"no step breaks the sets: {_short(document['bad'])} is good too")
    return "\n".join(lines) + "\n"


def _short(step: str) -> str:
    return step[:12] if len(step) == 40 else step


def bisect_command(
    device: str,
    good: str,
    bad: str,
    *,
    backend: str | None = None,
    smoke: bool = False,
    pre: bool = False,
    key_paths: list[str] | None = None,
    json_path: str | None = None,
    start: Path | None = None,
) -> dict[str, Any]:
    """``inv bisect-upstream``: bisect in the current workspace and print the answer."""
    from flagscale.upstream.workspace import find_workspace

    document = bisect_upstream(
        find_workspace(start),
        device,
        good,
        bad,
        backend=backend,
        smoke=smoke,
        pre=pre,
        key_paths=[Path(p).expanduser() for p in key_paths or []],
        report=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if json_path:
        import json

        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        write_atomically(Path(json_path), text.encode("utf-8"))
    sys.stdout.write(render_bisect(document))
    return document
