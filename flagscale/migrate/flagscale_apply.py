"""What FlagScale's own tool makes of its recorded inputs: the reference each conversion must meet.

Done the way ``tools/patch/unpatch.py`` does it, in a real work tree holding the starting tree
(``ImportScratch.work_tree``), with the git command line, one stored patch file at a time:

* base patches (``flagscale/backends/<backend>/**.patch``, walked folder by folder):
  ``git apply --check <file>`` then ``git apply <file>``; any failure stops (the tool stops too);
* vendor patch files: ``git apply --whitespace warn <file>``, and only when that fails
  ``git apply --whitespace fix <file>``; a file that applies neither way stops.

This is deliberately not the build's code path (``flagscale.vendor.legacy_apply`` on an index):
the import proves the build against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from flagscale.core.errors import FlagScaleError
from flagscale.migrate.scratch import ImportScratch, WorkTree
from flagscale.vendor.legacy_apply import skipped_sections

__all__ = ["FlagScaleToolFails", "Reference", "apply_base_patches", "apply_vendor_files"]


class FlagScaleToolFails(FlagScaleError):
    """FlagScale's own tool stops on these inputs: there is no tree to be identical to."""


@dataclass
class Reference:
    """The tree FlagScale's tool gives, and what it needed on the way."""

    tree: str
    fixed: list[str] = field(default_factory=list)  # files applied with --whitespace fix
    skipped: list[str] = field(default_factory=list)  # parts git skipped (exit 0)


def apply_base_patches(
    scratch: ImportScratch, start: str, patches: Sequence[tuple[str, bytes]]
) -> Reference:
    """``start`` (an upstream pin's tree) with FlagScale's base patches applied."""
    with scratch.work_tree(start) as work:
        for label, text in patches:
            path = _write(work, text)
            for args in (["apply", "--check", str(path)], ["apply", str(path)]):
                result = work.result(args)
                if result.returncode != 0:
                    raise FlagScaleToolFails(
                        f"{label}: git apply fails ({_first(result.stderr)}); FlagScale's"
                        " unpatch stops here too",
                        hint="fix the base patch in the FlagScale checkout, then run again",
                    )
            path.unlink()
        return Reference(work.tree())


def apply_vendor_files(
    scratch: ImportScratch, start: str, files: Sequence[tuple[str, bytes]]
) -> Reference:
    """``start`` with a vendor set's (decrypted) patch files applied as FlagScale's tool does."""
    reference = Reference("")
    with scratch.work_tree(start) as work:
        for label, text in files:
            path = _write(work, text)
            result = work.result(["apply", "--whitespace", "warn", str(path)])
            if result.returncode != 0:
                result = work.result(["apply", "--whitespace", "fix", str(path)])
                if result.returncode != 0:
                    raise FlagScaleToolFails(
                        f"{label}: FlagScale's tool cannot apply it ({_first(result.stderr)})",
                        hint="ask the vendor to regenerate the set against its recorded base",
                    )
                reference.fixed.append(label)
            reference.skipped += [f"{label}: {line}" for line in skipped_sections(result.stderr)]
            path.unlink()
        reference.tree = work.tree()
    return reference


def _write(work: WorkTree, text: bytes):
    """The patch file, outside the tree being patched (as the tool's decrypted temp files were)."""
    path = work.folder.parent / "piece.patch"
    path.write_bytes(text)
    return path


def _first(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    return "; ".join((errors or lines or ["git apply failed"])[:2])
