"""CI for flow 4: the device matrix, workspace validation, and one device's unpatch_and_test.

    python -m flagscale.ci matrix                      # {"include": [{"device": ..., ...}]}
    python -m flagscale.ci validate                    # every schema-described file, checked
    python -m flagscale.ci unpatch-and-test --device V_M
    python -m flagscale.ci check-history               # the history against the repository
    python -m flagscale.ci check-sets                  # every patch set: metadata, files, sha256

What each does lives in ``flagscale.ci.devices``, ``flagscale.ci.validate``,
``flagscale.ci.unpatch_and_test``, ``flagscale.vendor.history_check`` and
``flagscale.vendor.set_check``; docs/ci.md explains. Installed, the same command is
``flagscale-ci``: the pre-commit hooks (.pre-commit-hooks.yaml, docs/pre-commit.md) run it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from flagscale.ci.devices import matrix
from flagscale.ci.unpatch_and_test import coverage_wanted, unpatch_and_test
from flagscale.ci.validate import validate_workspace
from flagscale.core.errors import FlagScaleError, os_error
from flagscale.upstream.workspace import load_workspace
from flagscale.vendor.history import HISTORY
from flagscale.vendor.history_check import check_history
from flagscale.vendor.set_check import check_sets

__all__ = ["main"]


# --- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flagscale.ci", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--root", type=Path, default=None, help="workspace (default: this one)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("matrix", help="print the device matrix as JSON")
    commands.add_parser("validate", help="check every schema-described file")
    one = commands.add_parser("unpatch-and-test", help="fresh build + smoke job of one device")
    one.add_argument("--device", required=True, help="device type, Vendor_Model")
    one.add_argument(
        "--coverage",
        action="store_true",
        help="run the smoke cases under coverage.py and write logs/coverage/<V_M>/ (also:"
        " FLAGSCALE_COVERAGE=1)",
    )
    commands.add_parser("check-history", help=f"check {HISTORY} against the repository")
    commands.add_parser("check-sets", help="check every patch set: metadata, files, sha256")
    args = parser.parse_args(argv)
    try:
        root = _root(args.root)
        if args.command == "matrix":
            print(json.dumps(matrix(load_workspace(root)), sort_keys=True))
        elif args.command == "validate":
            print(f"checked {len(validate_workspace(root))} files")
        elif args.command == "check-history":
            return _report(check_history(load_workspace(root)).problems, f"{HISTORY}: ok")
        elif args.command == "check-sets":
            return _report(check_sets(load_workspace(root)), "patch sets: ok")
        else:
            unpatch_and_test(root, args.device, coverage=coverage_wanted(args.coverage))
    except FlagScaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path and its cause, as inv says it (flagscale.core.cli)
        print(f"error: {os_error(exc)}", file=sys.stderr)
        return 1
    return 0


def _report(problems: list[str], ok: str) -> int:
    """Each problem as ``error: <line>`` and exit 1; else the ``ok`` line and exit 0."""
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(ok)
    return 0


def _root(given: Path | None) -> Path:
    from flagscale.upstream.workspace import find_workspace

    return (given or find_workspace().root).resolve()


if __name__ == "__main__":
    sys.exit(main())
