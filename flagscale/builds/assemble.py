"""Assembling a build tree from git objects: read a tree, apply a patch to it, write files out.

Everything happens in a scratch repository through temporary index files; the objects a build
creates (patched blobs, trees) go to a private object folder inside the build's staging folder,
so decrypted vendor code never lands in a shared object store and disappears with the staging
folder. One ``git apply --cached`` applies a whole patch; one ``git checkout-index`` writes the
whole tree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from flagscale.builds.write_failures import failure_from_git
from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import GitError, GitResult, git, git_result
from flagscale.core.gitlisting import listed_entries
from flagscale.core.paths import check_relative
from flagscale.core.treelinks import tree_symlinks
from flagscale.vendor.legacy_apply import (
    WHITESPACE_FIX,
    LegacyApplyError,
    Piece,
    apply_like_flagscale,
)

__all__ = [
    "Assembler",
    "Component",
    "PatchApplyError",
    "PatchPiece",
    "describe_apply_failure",
    "patch_paths",
    "piece_for_path",
]

# Settings that keep a build independent of the user's git configuration and offline.
_NEUTRAL_CONFIG = (
    "-c", "core.autocrlf=false",
    "-c", "core.safecrlf=false",
    "-c", "core.symlinks=true",
    "-c", "filter.lfs.smudge=",
    "-c", "filter.lfs.process=",
    "-c", "filter.lfs.required=false",
)  # fmt: skip


_OWN_FILES = (".flagscale-build.json", ".flagscale-build.state")


class PatchApplyError(FlagScaleError):
    """A vendor patch does not apply to the tree it was made for."""


@dataclass(frozen=True)
class PatchPiece:
    """Patch text from one file (``label`` names it in errors: ``hardware/V_M/b/b.patch``)."""

    label: str
    text: bytes


@dataclass(frozen=True)
class Component:
    """One part of a build tree: a base tree, the patches laid over it, and where it goes.

    ``prefix`` is "" for FlagScale's own files and ``third_party/<backend>`` for a backend.
    """

    name: str
    prefix: str
    base_tree: str
    pieces: tuple[PatchPiece, ...] = ()
    legacy: bool = False  # applied as FlagScale's tools/patch applies it (vendor.legacy_apply)

    @property
    def patch(self) -> bytes:
        """All pieces as one patch (pieces are whole per-file diffs, so plain concatenation).

        Pieces of a legacy set are taken as stored: FlagScale's tool applied those bytes.
        """
        if self.legacy:
            return b"".join(piece.text for piece in self.pieces)
        return b"".join(_terminated(piece.text) for piece in self.pieces)


def _terminated(text: bytes) -> bytes:
    """``text`` ending in a newline, and in the blank line a final binary hunk needs."""
    if not text:
        return text
    if not text.endswith(b"\n"):
        text += b"\n"
    last = text.rfind(b"\ndiff --git ")
    if b"\nGIT binary patch\n" in text[last + 1 :] and not text.endswith(b"\n\n"):
        text += b"\n"
    return text


class Assembler:
    """Git work for one build, in ``git_dir`` with private index and object files in ``work``."""

    def __init__(self, git_dir: Path, work: Path) -> None:
        self.git_dir = git_dir
        self.work = work
        self.objects = work / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        # some plumbing (read-tree --prefix, checkout-index) insists on a work tree: an empty one
        self.empty = work / "empty"
        self.empty.mkdir(exist_ok=True)
        self._holds: dict[str, str] = {}  # temp index name → the tree it holds unchanged
        self.notes: list[str] = []  # what legacy sets needed (whitespace fallback, skipped parts)

    def env(self, index: str, *, work_tree: Path | None = None) -> dict[str, str]:
        """Environment pointing git at the scratch repository, a temp index and our objects."""
        env = {
            "GIT_DIR": str(self.git_dir),
            "GIT_INDEX_FILE": str(self.work / f"index-{index}"),
            "GIT_OBJECT_DIRECTORY": str(self.objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(self.git_dir / "objects"),
        }
        if work_tree is not None:
            env["GIT_WORK_TREE"] = str(work_tree)
        return env

    def run(self, args: Sequence[str], index: str, **kwargs: object) -> bytes:
        """Run git against the temp index ``index``.

        A failure to write (full disk, read-only folder) raises WriteFailure naming the path,
        never a message that would blame a patch.
        """
        work_tree = kwargs.pop("work_tree", self.empty)
        env: Mapping[str, str] = self.env(index, work_tree=work_tree)  # type: ignore[arg-type]
        cwd = kwargs.pop("cwd", work_tree)
        try:
            return git([*_NEUTRAL_CONFIG, *args], cwd, env=env, **kwargs)  # type: ignore[arg-type]
        except GitError as exc:
            failure = failure_from_git(exc.stderr, self.work.parent)
            if failure is not None:
                raise failure from None
            raise

    def symlinks(self, tree: str) -> dict[str, str]:
        """Every symlink of ``tree`` with its target."""
        return tree_symlinks(lambda args, stdin: self.run(args, "links", stdin=stdin), tree)

    def run_result(self, args: Sequence[str], index: str, *, stdin: bytes) -> GitResult:
        """Run git against the temp index ``index``; the caller reads the exit status."""
        env = self.env(index, work_tree=self.empty)
        return git_result([*_NEUTRAL_CONFIG, *args], self.empty, stdin=stdin, env=env)

    def patched_tree(self, component: Component, *, three_way: bool = False) -> str:
        """The tree of ``component`` with its patches applied; PatchApplyError names the hunk.

        With ``three_way`` a hunk that does not apply is merged from the blob the patch names
        (when that blob is available); a conflict raises PatchApplyError as well.
        """
        if not component.pieces:
            return component.base_tree
        index = f"c-{_safe(component.name)}"
        self.run(["read-tree", component.base_tree], index)
        if component.legacy and not three_way:
            return self._legacy_tree(component, index)
        patch = component.patch
        self.check_patch_paths(patch, component, read_all=not component.legacy)
        args = ["apply", "--cached", "--binary"]
        if three_way:
            args.append("--3way")
        try:
            self.run([*args, "-"], index, stdin=patch)
        except GitError as exc:
            raise PatchApplyError(describe_apply_failure(exc.stderr, component)) from None
        return self.run(["write-tree"], index).decode().strip()

    def _legacy_tree(self, component: Component, index: str) -> str:
        """The tree of a legacy component, its files applied as FlagScale's tool applies them."""
        self.check_legacy_paths(component)

        def apply(args: list[str], patch: bytes) -> tuple[int, str]:
            result = self.run_result(["apply", "--cached", *args, "-"], index, stdin=patch)
            return result.returncode, result.stderr

        def reset() -> None:
            self.run(["read-tree", component.base_tree], index)

        pieces = [Piece(piece.label, piece.text) for piece in component.pieces]
        try:
            applied = apply_like_flagscale(apply, reset, pieces)
        except LegacyApplyError as exc:
            alone = replace(component, pieces=(PatchPiece(exc.piece.label, exc.piece.text),))
            message = describe_apply_failure(exc.stderr, alone)
            raise PatchApplyError(
                f"{message} (also with {WHITESPACE_FIX}, as FlagScale's tool tries)", hint=exc.hint
            ) from None
        self.notes += applied.notes()
        return self.run(["write-tree"], index).decode().strip()

    def check_legacy_paths(self, component: Component) -> None:
        """``check_patch_paths`` for the stored files of a legacy set: all at once, or file by
        file when git cannot read them together (a file git cannot read is left to the apply)."""
        try:
            self.check_patch_paths(component.patch, component, read_all=False)
        except PatchApplyError:
            for piece in component.pieces:
                args = ["apply", "--numstat", "-z", "-"]
                numstat = self.run_result(args, "paths", stdin=piece.text)
                if numstat.returncode == 0:
                    for path in patch_paths(numstat.stdout):
                        check_relative(path, piece.label)

    def combined_tree(self, root_tree: str, parts: Mapping[str, str]) -> str:
        """One tree: ``root_tree`` with each ``prefix → tree`` of ``parts`` grafted in."""
        index = "combined"
        self.run(["read-tree", root_tree], index)
        # the root tree holds no third_party/ (trees.flagscale_tree leaves it out)
        for prefix, tree in parts.items():
            self.run(["read-tree", f"--prefix={prefix}/", tree], index)
        combined = self.run(["write-tree"], index).decode().strip()
        self._holds[index] = combined
        return combined

    def write_out(self, tree: str, destination: Path) -> None:
        """Write every file of ``tree`` under ``destination`` as plain files."""
        index = next((name for name, held in self._holds.items() if held == tree), "out")
        if index == "out":
            self.run(["read-tree", tree], index)
        # checkout.workers=0: one writer per CPU (git's parallel checkout) for big trees
        checkout = ["-c", "checkout.workers=0", "checkout-index", "-a", "-f"]
        self.run([*checkout, f"--prefix={destination}/"], index)

    def three_way(self, component: Component, destination: Path) -> list[str]:
        """Apply with ``--3way`` in a work tree at ``destination``; return the conflicted paths.

        Files that merge cleanly get the merged content; conflicted ones keep conflict markers.
        """
        index = f"w-{_safe(component.name)}"
        destination.mkdir(parents=True, exist_ok=True)
        self.run(["read-tree", component.base_tree], index)
        self.run(["checkout-index", "-a", "-f", "-u"], index, work_tree=destination)
        try:
            self.run(
                ["apply", "--3way", "--binary", "-"],
                index,
                stdin=component.patch,
                work_tree=destination,
                cwd=destination,
            )
        except GitError as exc:
            conflicted = self.unmerged(index)
            if not conflicted:
                raise PatchApplyError(describe_apply_failure(exc.stderr, component)) from None
            return conflicted
        return []

    def diff_folder(self, tree: str, folder: Path, paths: Sequence[str] | None) -> bytes:
        """The patch turning ``tree`` into what ``folder`` holds (only ``paths``, if given)."""
        index = "edits"
        self.run(["read-tree", tree], index)
        if paths is None:
            self.run(["add", "-A", "-f", "--", "."], index, work_tree=folder, cwd=folder)
        elif paths:
            payload = "".join(f"{path}\0" for path in paths).encode("utf-8", "surrogateescape")
            update = ["update-index", "--add", "--remove", "-z", "--stdin"]
            self.run(update, index, stdin=payload, work_tree=folder, cwd=folder)
        own = [f":(exclude,top){name}" for name in _OWN_FILES]
        diff = ["diff-index", "--cached", "-p", "--binary", "--full-index", "--no-renames"]
        return self.run([*diff, tree, "--", ".", *own], index, work_tree=folder, cwd=folder)

    def check_patch_paths(
        self, patch: bytes, component: Component, *, read_all: bool = True
    ) -> None:
        """Refuse a patch naming a path outside its tree (absolute, ``..``, ``.git``), and with
        ``read_all`` one with a section git could not read."""
        try:
            numstat = self.run(["apply", "--numstat", "-z", "-"], "paths", stdin=patch)
        except GitError as exc:
            raise PatchApplyError(describe_apply_failure(exc.stderr, component)) from None
        paths = patch_paths(numstat)
        for path in paths:
            try:
                check_relative(path, component.name)
            except FlagScaleError:  # name the patch file only now: finding it costs a scan
                check_relative(path, _label_for_path(component, path))
        if read_all:
            self.check_all_read(patch, paths, component)

    def check_all_read(self, patch: bytes, paths: list[str], component: Component) -> None:
        """Refuse a patch with a file section git could not read (it skips those, exit 0)."""
        headers = [line for line in patch.split(b"\n") if line.startswith(b"diff --git ")]
        if len(headers) <= len(paths):
            return
        known = set(paths)
        for header in headers:
            names = header[len(b"diff --git ") :].decode("utf-8", "surrogateescape")
            if not any(names.endswith(f" b/{path}") or _c_quote(path) in names for path in known):
                label = _label_for_header(component, header)
                raise PatchApplyError(
                    f"{label}: the change to {names.split(' b/')[-1]} is corrupt (git cannot read"
                    " it and would skip it)",
                    hint="restore the patch file from git, or ask the vendor to regenerate it",
                )

    def entries(self, tree: str) -> dict[str, tuple[str, str]]:
        """Every file of ``tree``: path → (mode, blob id)."""
        return listed_entries(self.run(["ls-tree", "-r", "-z", "--full-tree", tree], "list"))

    def unmerged(self, index: str) -> list[str]:
        """Paths with conflict stages in temp index ``index``."""
        raw = self.run(["ls-files", "-u", "-z"], index).decode("utf-8", "surrogateescape")
        return sorted({record.split("\t", 1)[1] for record in raw.split("\0") if "\t" in record})


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def patch_paths(numstat: bytes) -> list[str]:
    """Every path in ``git apply --numstat -z`` output (both sides of renames and copies)."""
    fields = numstat.decode("utf-8", "surrogateescape").split("\0")
    paths: list[str] = []
    position = 0
    while position < len(fields):
        record = fields[position]
        position += 1
        if not record:
            continue
        counts_and_path = record.split("\t", 2)
        if len(counts_and_path) == 3 and counts_and_path[2]:
            paths.append(counts_and_path[2])
        else:  # a rename or copy: "a\tb\t" then source and destination as separate fields
            paths.extend(fields[position : position + 2])
            position += 2
    return paths


_CORRUPT = re.compile(
    r"^error: corrupt (?P<what>binary patch |patch )at line (?P<line>\d+):?\s*(?P<reason>.*)$",
    re.MULTILINE,
)
_PATCH_FAILED = re.compile(r"^error: patch failed: (?P<path>.+):(?P<line>\d+)$", re.MULTILINE)
_PATH_ERROR = re.compile(r"^error: (?P<path>.+?): (?P<reason>[^:]+)$", re.MULTILINE)
_OTHER_ERROR = re.compile(r"^(?:error|fatal): (?P<reason>.+)$", re.MULTILINE)


def describe_apply_failure(stderr: str, component: Component) -> str:
    """One line naming the patch file, the target file and the hunk that did not apply."""
    where = f"{component.name}" + (f" ({component.prefix}/)" if component.prefix else "")
    corrupt = _CORRUPT.search(stderr)
    if corrupt:
        label, line = _piece_at_line(component, int(corrupt["line"]))
        reason = corrupt["reason"] or "unreadable"
        return f"{label}: corrupt {corrupt['what']}at line {line} ({reason}) for {where}"
    failed = _PATCH_FAILED.search(stderr)
    if failed:
        path, line = failed["path"], int(failed["line"])
        label, hunk = locate_hunk(component, path, line)
        return (
            f"{label}: hunk {hunk} does not apply to {path} in {where}: the file differs from"
            " the one the patch was made against; rerun with --3way to see the conflict, or ask"
            " the vendor for a patch set made against this FlagScale base"
        )
    for match in _PATH_ERROR.finditer(stderr):
        path, reason = match["path"], match["reason"]
        if reason.startswith(("patch does not apply", "patch failed")):
            continue
        label = _label_for_path(component, path)
        return f"{label}: cannot apply the change to {path} in {where}: {reason}"
    other = _OTHER_ERROR.search(stderr)
    reason = other["reason"] if other else (stderr.strip() or "git apply failed")
    label = component.pieces[0].label if len(component.pieces) == 1 else component.name
    return f"{label}: not a patch git can apply ({reason}) for {where}"


def _piece_at_line(component: Component, line: int) -> tuple[str, int]:
    """(patch file label, line in that file) for a line of the concatenated patch."""
    offset = 0
    for piece in component.pieces:
        count = _terminated(piece.text).count(b"\n")
        if line <= offset + count:
            return piece.label, line - offset
        offset += count
    return component.name, line


def locate_hunk(component: Component, path: str, old_line: int) -> tuple[str, str]:
    """(patch file label, hunk header with its line in that file) for a failed hunk."""
    for piece in component.pieces:
        lines = piece.text.decode("utf-8", "surrogateescape").splitlines()
        in_file = False
        for number, text in enumerate(lines, start=1):
            if text.startswith("diff --git "):
                in_file = _header_names(text, path)
            elif in_file and text.startswith("@@ -"):
                start = text[4:].split(",", 1)[0].split(" ", 1)[0]
                if start.isdigit() and int(start) == old_line:
                    header = text.split("@@")[1].strip()
                    return piece.label, f"@@ {header} @@ (line {number})"
    return _label_for_path(component, path), f"at line {old_line}"


def piece_for_path(component: Component, path: str) -> str | None:
    """The label of the patch file that changes ``path`` (relative to the component), if any."""
    for piece in component.pieces:
        for text in piece.text.decode("utf-8", "surrogateescape").splitlines():
            if text.startswith("diff --git ") and _header_names(text, path):
                return piece.label
    return None


def _label_for_path(component: Component, path: str) -> str:
    for piece in component.pieces:
        for text in piece.text.decode("utf-8", "surrogateescape").splitlines():
            if text.startswith("diff --git ") and _header_names(text, path):
                return piece.label
    return component.pieces[0].label if component.pieces else component.name


def _label_for_header(component: Component, header: bytes) -> str:
    for piece in component.pieces:
        if header in piece.text:
            return piece.label
    return component.name


def _header_names(header: str, path: str) -> bool:
    """Whether a ``diff --git a/X b/Y`` line is about ``path`` (plain or C-quoted names)."""
    return f" b/{path}" in header or f"a/{path} " in header or _c_quote(path) in header


def _c_quote(path: str) -> str:
    encoded = path.encode("utf-8", "surrogateescape")
    out = []
    for byte in encoded:
        char = chr(byte)
        if byte >= 0x80 or byte < 0x20:
            out.append(f"\\{byte:03o}")
        elif char in '"\\':
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)
