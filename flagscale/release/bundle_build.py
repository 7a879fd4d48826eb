"""Building from a verified release bundle: ``inv build --device V_M --bundle PATH --trust K.pub``.

The bundle is verified first (``flagscale.release.bundle.verify_bundle``: signature, every hash,
in memory); the build then takes the history entry and the patch sets from the bundle's bytes
(``flagscale.release.bundle_sets.BundleSets``) and only FlagScale's files at the sets' base and
the pins from this clone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flagscale.builds.command import build_command
from flagscale.core.gitcli import git, git_ok
from flagscale.release.bundle import BundleError, VerifiedBundle, git_blob_id, verify_bundle
from flagscale.release.bundle_sets import BundleSets, sets_commit
from flagscale.upstream.workspace import Workspace, find_workspace

__all__ = ["build_from_bundle", "bundle_commit"]


def bundle_commit(workspace: Workspace, bundle: VerifiedBundle, device: str) -> str:
    """The history commit a bundle's patch sets of ``device`` were cut from.

    A clone that holds that commit must hold, byte for byte, the bundled files there (same git
    blob id): a bundle that disagrees with the commit it names is refused. A clone without the
    commit is fine: the build reads the sets from the bundle (``flagscale.release.bundle_sets``).
    """
    commit = sets_commit(bundle, device)
    if git_ok(["cat-file", "-e", f"{commit}^{{commit}}"], workspace.root):
        entry = bundle.manifest["device_types"][device]
        for patch_set in entry["patch_sets"].values():
            for path in [patch_set["metadata"], *patch_set["patches"]]:
                _check_same_as_commit(workspace, bundle, commit, path)
    return commit


def _check_same_as_commit(
    workspace: Workspace, bundle: VerifiedBundle, commit: str, path: str
) -> None:
    listing = git(["ls-tree", "--full-tree", commit, "--", path], workspace.root).split()
    local = listing[2].decode() if len(listing) >= 3 else None
    if local != git_blob_id(bundle.files[path]):
        state = "is missing" if local is None else "differs from the signed bundle"
        raise BundleError(
            f"{bundle.path}: {path} at FlagScale commit {commit} {state}",
            hint="this clone's patch sets are not the released ones; build without --bundle "
            "or fetch the release's FlagScale commits",
        )


def build_from_bundle(
    devices: Sequence[str],
    bundle: str | None = None,
    trust: str | None = None,
    **build_options: Any,
) -> dict[str, Path]:
    """``inv build --device V_M --bundle PATH --trust K.pub``: build from a verified bundle.

    The bundle is verified first (signature, every hash, in memory); the build then takes the
    history entry and the patch sets from the bundle's bytes (``bundle_sets.BundleSets``) and only
    FlagScale's files at the sets' base and the pins from this clone. If the clone holds the
    commit the sets were cut from, its files there must equal the bundle's (``bundle_commit``).
    ``build_options`` go to ``flagscale.builds.command.build_command``.
    """
    if not bundle:
        raise BundleError("--trust is only used with --bundle PATH")
    if not trust:
        raise BundleError(
            "--bundle needs --trust", hint="pass the release manager's public key: --trust K.pub"
        )
    if build_options.pop("commit", None):
        raise BundleError("--commit and --bundle exclude each other: the bundle names the commit")
    workspace = find_workspace(build_options.pop("start", None))
    verified = verify_bundle(Path(bundle), Path(trust))
    names = list(dict.fromkeys(devices)) or verified.device_types
    commits = {device: bundle_commit(workspace, verified, device) for device in names}
    if len(set(commits.values())) != 1:
        raise BundleError(
            f"{verified.path}: the device types come from different FlagScale commits; "
            "build them one at a time"
        )
    source = BundleSets(verified)
    print(verified.summary())
    commit = commits[names[0]]
    return build_command(names, commit=commit, start=workspace.root, source=source, **build_options)
