"""FlagScale's base patches become this workspace's base layer, at the same upstream pins.

For each backend FlagScale declares as ``third_party/<backend>``: the tree FlagScale's unpatch
gives (its pin with ``flagscale/backends/<backend>/**.patch`` applied, ``flagscale_apply``) is
compared with the pin; each added or changed file becomes a whole file under
``backends/<backend>/``, each deleted one a line of ``backends/<backend>.layer.yaml``. The
backend is declared in ``backends/backends.yaml`` as a submodule at the same pin (gitlink and
``.gitmodules`` entry), or as a release whose archive the user gives.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git, git_text
from flagscale.migrate.branch import Change, write_blobs
from flagscale.migrate.flagscale_apply import apply_base_patches
from flagscale.migrate.report import LayerRow
from flagscale.migrate.scratch import ImportScratch
from flagscale.migrate.source import SourceCheckout, Submodule
from flagscale.overlay.layer_files import deletions_text
from flagscale.overlay.layered_trees import changed_entries
from flagscale.upstream.workspace import DECLARATION, ReleaseSource, Workspace

__all__ = ["LayerPlan", "declared_release", "plan_layer", "workspace_changes"]

GITLINK = "160000"
_ARCHIVE = re.compile(r"^(?P<package>.+?)-(?P<version>\d[^/]*?)\.(?:tar\.gz|tgz|zip)$")


@dataclass
class LayerPlan:
    """One backend's base layer as converted, and how the backend is declared."""

    backend: str
    submodule: Submodule
    pin: str  # our pin: FlagScale's gitlink, or the release import's commit
    release: ReleaseSource | None
    reference: str  # FlagScale's unpatched tree (in the scratch repository)
    files: dict[str, tuple[str, str]] = field(default_factory=dict)  # path → (mode, scratch blob)
    deletions: list[str] = field(default_factory=list)
    row: LayerRow | None = None


def plan_layer(
    scratch: ImportScratch,
    source: SourceCheckout,
    submodule: Submodule,
    release: ReleaseSource | None,
    pin: str,
) -> LayerPlan:
    """The base layer of ``submodule``'s backend: FlagScale's unpatched tree against its pin."""
    backend = submodule.name
    ensure_commit(scratch, submodule.pin, submodule.url)
    patches = source.base_patches(backend)
    texts = source.blobs([oid for _path, oid in patches])
    labelled = [(f"{path} in {source.root}", texts[oid]) for path, oid in patches]
    pin_tree = scratch.tree_of(submodule.pin)
    reference = apply_base_patches(scratch, pin_tree, labelled).tree
    plan = LayerPlan(backend, submodule, pin, release, reference)
    for before, after in changed_entries(scratch.path, pin_tree, reference):
        if after.mode == "000000":
            plan.deletions.append(before.path)
        else:
            plan.files[after.path] = (after.mode, after.oid)
    plan.row = LayerRow(
        backend=backend,
        pin=pin,
        source="release" if release else "submodule",
        status="identical",
        patches=len(patches),
        files=len(plan.files),
        deletions=len(plan.deletions),
        tree=reference,
        bytes_before=sum(len(data) for _label, data in labelled),
    )
    return plan


def ensure_commit(scratch: ImportScratch, commit: str, url: str) -> None:
    """Make ``commit`` readable in the scratch repository: FlagScale's submodule clone usually
    has it; otherwise it is fetched by id from ``url`` into the scratch repository only."""
    if scratch.has(f"{commit}^{{commit}}"):
        return
    ref = f"refs/import/pins/{commit}"
    try:
        scratch.git(["fetch", "-q", "--no-tags", url, f"{commit}:{ref}"])
    except FlagScaleError as exc:
        raise FlagScaleError(
            f"upstream commit {commit} is not in the FlagScale checkout's submodule and cannot be"
            f" fetched from {url}: {exc}",
            hint="clone the submodules in the FlagScale checkout (git submodule update --init)"
            " or make the URL reachable",
        ) from None


def workspace_changes(
    ws: Workspace, scratch: ImportScratch, plans: list[LayerPlan], head: str
) -> dict[str, Change | None]:
    """The changes that declare the backends and lay their base layers, on top of ``head``."""
    changes: dict[str, Change | None] = {}
    contents: list[bytes] = []
    order: list[tuple[str, str]] = []
    for plan in plans:
        layer = f"backends/{plan.backend}"
        changes[layer] = None
        changes[f"{layer}.layer.yaml"] = None
        blobs = scratch.blobs([oid for _mode, oid in plan.files.values()])
        for path, (mode, oid) in sorted(plan.files.items()):
            order.append((f"{layer}/{path}", mode))
            contents.append(blobs[oid])
        if plan.deletions:
            order.append((f"{layer}.layer.yaml", "100644"))
            contents.append(deletions_text(plan.deletions).encode("utf-8"))
        checkout = f"third_party/{plan.backend}"
        changes[checkout] = Change(GITLINK, plan.pin) if plan.release is None else None
    order.append((DECLARATION, "100644"))
    contents.append(_declaration(ws, head, plans))
    order.append((".gitmodules", "100644"))
    contents.append(_gitmodules(ws, head, plans))
    for (path, mode), oid in zip(order, write_blobs(ws, contents), strict=True):
        changes[path] = Change(mode, oid)
    for plan in plans:
        assert plan.row is not None
        layer_bytes = [len(contents[i]) for i, (p, _m) in enumerate(order) if _in_layer(p, plan)]
        plan.row.bytes_after = sum(layer_bytes)
    return changes


def _in_layer(path: str, plan: LayerPlan) -> bool:
    layer = f"backends/{plan.backend}"
    return path.startswith(f"{layer}/") or path == f"{layer}.layer.yaml"


def _declaration(ws: Workspace, head: str, plans: list[LayerPlan]) -> bytes:
    text = git_text(["show", f"{head}:{DECLARATION}"], ws.root, check=False)
    data = yaml.safe_load(text) if text else None
    data = data if isinstance(data, dict) else {"version": 1, "backends": {}}
    backends = dict(data.get("backends") or {})
    for plan in plans:
        entry = dict(backends.get(plan.backend) or {})
        entry.pop("pin", None)
        if plan.release is None:
            entry["source"] = {"kind": "submodule"}
        else:
            entry["source"] = _release_entry(plan.release)
            entry["pin"] = plan.pin
        backends[plan.backend] = entry
    data["backends"] = backends
    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True).encode("utf-8")


def _release_entry(release: ReleaseSource) -> dict[str, str]:
    entry = {
        "kind": "release",
        "package": release.package,
        "version": release.version,
        "filename": release.filename,
        "sha256": release.sha256,
    }
    if release.strip_prefix:
        entry["strip_prefix"] = release.strip_prefix
    return entry  # no url: the archive is in the cache now, and in pip's sources elsewhere


def _gitmodules(ws: Workspace, head: str, plans: list[LayerPlan]) -> bytes:
    """``.gitmodules`` with a section per submodule backend (an existing one keeps its URL) and
    without the sections of backends now declared as releases."""
    current = git(["show", f"{head}:.gitmodules"], ws.root, check=False)
    with tempfile.TemporaryDirectory(dir=ws.state_dir) as folder:
        path = Path(folder) / "gitmodules"
        path.write_bytes(current)
        existing = _sections_by_path(path)
        for plan in plans:
            checkout = f"third_party/{plan.backend}"
            section = existing.get(checkout)
            if plan.release is not None:
                if section is not None:
                    _config(path, ["--remove-section", f"submodule.{section}"])
                continue
            if section is None:
                _config(path, [f"submodule.{checkout}.path", checkout])
                _config(path, [f"submodule.{checkout}.url", plan.submodule.url])
        return path.read_bytes()


def _sections_by_path(path: Path) -> dict[str, str]:
    raw = _config(path, ["--get-regexp", r"^submodule\..*\.path$"], check=False)
    found = {}
    for line in raw.splitlines():
        key, _, value = line.partition(" ")
        found[value] = key[len("submodule.") : -len(".path")]
    return found


def _config(path: Path, args: list[str], *, check: bool = True) -> str:
    return git_text(["config", "-f", str(path), *args], path.parent, check=check)


def declared_release(name: str, archive: Path) -> ReleaseSource:
    """The release declaration for ``archive`` (``<package>-<version>.tar.gz|.tgz|.zip``).

    Its ``url`` (the local file) serves this import only, which puts the archive into the
    cache; backends.yaml is written without it (no host or local path is committed).
    """
    from flagscale.upstream.release_import import sha256_of

    archive = archive.resolve()
    if not archive.is_file():
        raise FlagScaleError(
            f"--release {name}={archive}: no such file",
            hint="give the path of the backend's source release archive",
        )
    match = _ARCHIVE.match(archive.name)
    if match is None:
        raise FlagScaleError(
            f"--release {name}={archive}: the name is not <package>-<version>.tar.gz/.tgz/.zip",
            hint="rename the archive as the package registry names it",
        )
    top = f"{match['package']}-{match['version']}"
    return ReleaseSource(
        package=match["package"],
        version=match["version"],
        filename=archive.name,
        sha256=sha256_of(archive),
        strip_prefix=top if _single_top(archive, top) else None,
        url=archive.as_uri(),
    )


def _single_top(archive: Path, top: str) -> bool:
    """Whether every member of the archive lies under the folder ``top``."""
    import tarfile
    import zipfile

    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            names = bundle.namelist()
    else:
        with tarfile.open(archive) as tar:
            names = tar.getnames()
    return bool(names) and all(n == top or n.startswith(f"{top}/") for n in names)
