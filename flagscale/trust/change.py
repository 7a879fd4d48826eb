"""The change between a good and a bad build of a device type, and builds of parts of it.

Both history entries are assembled exactly as ``inv build`` assembles them
(``flagscale.builds.builder.assemble_tree``), into a private object folder of the bisection:
decrypted vendor code never reaches a shared object store. The change is the diff between the
two whole build trees, split into pieces (hunks; whole files where a file cannot be split), each
credited to the patch file that carries it: the bad entry's set touching that file, else the
good one's, else the base (base layer and pin) the entries were made against.

A *candidate* is the good tree with a subset of the pieces applied (``git apply --cached``; a
subset that does not apply is unresolved). It becomes a set of ordinary patch sets against the
good entry's base — per backend the diff from its base tree to the candidate, with the results
it produces — which ``inv build`` builds like any other, in the bisection's scratch folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flagscale.builds.assemble import Assembler
from flagscale.builds.builder import assemble_tree, read_patches
from flagscale.builds.plan import BuildPlan
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import GitError
from flagscale.trust.hunks import Piece, parse_patch, pieces_of, render
from flagscale.upstream.workspace import FLAGSCALE, Workspace
from flagscale.vendor.set_plan import HistoryChoice, SetFile, SetPlan
from flagscale.vendor.set_results import SetResults

__all__ = ["Candidate", "CandidateSets", "Workbench", "blob_id"]

# The patch format of the tool's own sets (flagscale.overlay.layered_trees.diff_trees).
_DIFF = (
    "-c", "core.quotepath=true",
    "diff-tree", "-r", "-p", "--binary", "--full-index", "--no-renames", "--no-color",
    "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/", "-U3",
    "--inter-hunk-context=0", "--diff-algorithm=myers", "--indent-heuristic",
)  # fmt: skip
_ABSENT = "000000"


def blob_id(data: bytes) -> str:
    """The git blob id of ``data`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class CandidateError(FlagScaleError):
    """A subset of the change that cannot be applied to the good tree."""


@dataclass(frozen=True)
class Candidate:
    """The good build with a subset of the change: its tree and one patch set per backend."""

    tree: str
    sets: dict[str, SetPlan]


class Workbench:
    """The git work of one bisection, in ``folder`` (its private objects and index files)."""

    def __init__(self, ws: Workspace, folder: Path, key_paths: Sequence[Path] = ()) -> None:
        from flagscale.overlay.layered_trees import scratch_repo

        self.ws = ws
        self.assembler = Assembler(scratch_repo(ws), folder / "git")
        self.key_paths = tuple(key_paths)

    def tree_of(self, plan: BuildPlan, report: Callable[[str], None]) -> str:
        """The whole build tree of ``plan`` (as ``inv build`` would write it), as a tree id."""
        return assemble_tree(self.ws, plan, self.assembler, key_paths=self.key_paths, report=report)

    def change(self, good: BuildPlan, good_tree: str, bad: BuildPlan, bad_tree: str) -> list[Piece]:
        """The pieces turning ``good_tree`` into ``bad_tree``, credited to their patch files."""
        text = self.assembler.run([*_DIFF, good_tree, bad_tree], "diff")
        files = parse_patch(text)
        carriers = {**self._carriers(good), **self._carriers(bad)}  # the bad entry's first
        pieces = []
        for piece in pieces_of(files):
            label = carriers.get(piece.file.path) or _base_label(piece.file.path, good, bad)
            pieces.append(Piece(piece.file, piece.hunk, label, "", piece.key))
        return pieces

    def _carriers(self, plan: BuildPlan) -> dict[str, str]:
        """Build-tree path → the patch file of ``plan`` that changes it."""
        found: dict[str, str] = {}
        for backend, pieces in read_patches(self.ws, plan, key_paths=self.key_paths).items():
            prefix = "" if backend == FLAGSCALE else f"third_party/{backend}/"
            for patch in pieces:
                for section in parse_patch(patch.text):
                    found[prefix + section.path] = patch.label
        return found

    def candidate(
        self, good: BuildPlan, good_tree: str, pieces: Sequence[Piece], label: str
    ) -> Candidate:
        """The good tree with ``pieces`` applied, as patch sets against the good base."""
        try:
            tree = self.apply(good_tree, render(pieces))
        except GitError as exc:
            first = next((line for line in exc.stderr.splitlines() if line.strip()), str(exc))
            raise CandidateError(f"does not apply: {first}") from None
        sets = {}
        for backend, base in self._bases(good).items():
            part = self._part(tree, backend)
            patch = self.assembler.run([*_DIFF, base, part], "diff") if part != base else b""
            if patch:
                sets[backend] = self._set(good, backend, base, part, patch, label)
        return Candidate(tree, sets)

    def apply(self, tree: str, patch: bytes) -> str:
        """``tree`` with ``patch`` applied (GitError when it does not apply)."""
        self.assembler.run(["read-tree", tree], "candidate")
        if patch:
            self.assembler.run(["apply", "--cached", "--binary", "-"], "candidate", stdin=patch)
        return self.assembler.run(["write-tree"], "candidate").decode().strip()

    def _bases(self, plan: BuildPlan) -> dict[str, str]:
        """backend → the tree its set applies to (FlagScale at the base; pin + base layer)."""
        from flagscale.overlay.layered_trees import flagscale_tree, layered_tree

        bases = {FLAGSCALE: flagscale_tree(self.ws, plan.flagscale_base)}
        for backend in plan.backends:
            patch_set = plan.sets.get(backend)
            if patch_set is not None and not patch_set.apply_layer:
                raise FlagScaleError(
                    f"{patch_set.source}: sets in FlagScale's older layout cannot be bisected",
                    hint="make the sets again with `inv patch --device-type`",
                )
            bases[backend] = layered_tree(self.ws, backend, plan.flagscale_base)
        return bases

    def _part(self, tree: str, backend: str) -> str:
        """One backend's tree out of a whole build tree (FlagScale: all but third_party/)."""
        if backend != FLAGSCALE:
            return (
                self.assembler.run(["rev-parse", f"{tree}:third_party/{backend}"], "part")
                .decode()
                .strip()
            )
        self.assembler.run(["read-tree", tree], "part")
        self.assembler.run(
            ["rm", "--cached", "-r", "-q", "--ignore-unmatch", "--", "third_party"], "part"
        )
        return self.assembler.run(["write-tree"], "part").decode().strip()

    def _set(
        self, good: BuildPlan, backend: str, base: str, part: str, patch: bytes, label: str
    ) -> SetPlan:
        raw = self.assembler.run(["diff-tree", "-r", "-z", "--no-renames", base, part], "diff")
        fields = raw.split(b"\0")
        results: dict[str, str | None] = {}
        for meta, name in zip(fields[0::2], fields[1::2], strict=False):
            if meta.startswith(b":"):
                _old_mode, new_mode, _old, new, _status = meta[1:].decode().split(" ")
                path = name.decode("utf-8", "surrogateescape")
                results[path] = None if new_mode == _ABSENT else new
        folder = f"hardware/{good.device_type}/{backend}"
        blob = blob_id(patch)
        stored = SetFile(
            path=f"{folder}/{backend}.patch ({label})",
            blob=blob,
            encrypted=False,
            sha256=hashlib.sha256(patch).hexdigest(),
            data=patch,
        )
        previous = good.sets.get(backend)
        return SetPlan(
            backend=backend,
            folder=folder,
            folder_tree=blob_id(
                f"{base}\0{blob}".encode()
            ),  # names this candidate in the fingerprint
            layout="patch-set",
            flagscale_base=good.flagscale_base,
            recorded_pin=good.pins.get(backend) if backend != FLAGSCALE else None,
            files=(stored,),
            contact=previous.contact if previous else "",
            source=f"{folder} ({label})",
            results=SetResults(results),
        )


class CandidateSets:
    """A ``SetSource`` for ``inv build``: the good entry's history line, a candidate's sets."""

    def __init__(self, choice: HistoryChoice, candidate: Candidate) -> None:
        backends = tuple(sorted({*choice.backends, *candidate.sets}))
        self.choice = HistoryChoice(
            choice.device_type, choice.task, backends, choice.commit, choice.commits
        )
        self.candidate = candidate

    def choose(self, ws, device_type, task, commit, backends) -> HistoryChoice:  # noqa: ANN001
        return self.choice

    def read_sets(self, ws, choice) -> dict[str, SetPlan]:  # noqa: ANN001
        return dict(self.candidate.sets)


def _base_label(path: str, good: BuildPlan, bad: BuildPlan) -> str:
    """The carrier of a change no set makes: the base the two entries were made against."""
    moved = f"FlagScale {good.flagscale_base[:12]} → {bad.flagscale_base[:12]}"
    if path.startswith("third_party/"):
        return f"{path.split('/', 2)[1]} base layer and pin ({moved})"
    return f"FlagScale base ({moved})"
