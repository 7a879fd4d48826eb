"""Where the workspace is and what it declares: the backends, their sources and their pins."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from flagscale.core.errors import FlagScaleError
from flagscale.core.gitcli import git_text
from flagscale.core.schema import load_document

__all__ = [
    "DECLARATION",
    "FLAGSCALE",
    "Backend",
    "ReleaseSource",
    "SubmoduleSource",
    "Workspace",
    "backends_at",
    "find_workspace",
]

DECLARATION = "backends/backends.yaml"
FLAGSCALE = "FlagScale"  # the pseudo-backend naming FlagScale's own files
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ReleaseSource:
    """A published source release, imported into git so the same artifact gives the same commit."""

    package: str
    version: str
    filename: str
    sha256: str
    strip_prefix: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class SubmoduleSource:
    """A real git submodule; ``url`` is the one in .gitmodules (redirect with url.<m>.insteadOf)."""

    name: str
    url: str


@dataclass(frozen=True)
class Backend:
    """One upstream backend of the workspace."""

    name: str
    source: ReleaseSource | SubmoduleSource
    declared_pin: str | None = None
    optional: bool = False

    @property
    def checkout(self) -> str:
        """Where the upstream checkout lives, relative to the workspace root."""
        return f"third_party/{self.name}"

    @property
    def layer(self) -> str:
        """Where the base layer's whole files live, relative to the workspace root."""
        return f"backends/{self.name}"

    @property
    def deletions(self) -> str:
        """The base layer's deletion list, relative to the workspace root."""
        return f"backends/{self.name}.layer.yaml"


@dataclass(frozen=True)
class Workspace:
    """A FlagScale checkout: its root folder and the backends it declares."""

    root: Path
    backends: dict[str, Backend]

    def backend(self, name: str) -> Backend:
        """The backend called ``name``, or an error listing the known ones."""
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(sorted(self.backends)) or "none"
            raise FlagScaleError(
                f"unknown backend {name!r}: {DECLARATION} declares {known}"
            ) from None

    def select(self, names: list[str] | None) -> list[Backend]:
        """The named backends in the order given, or every non-optional backend."""
        if not names:
            return [b for b in self.backends.values() if not b.optional]
        return [self.backend(name) for name in dict.fromkeys(names)]

    def path(self, relative: str) -> Path:
        """An absolute path inside the workspace."""
        return self.root / relative

    def pin(self, backend: Backend) -> str:
        """The commit a backend is used at: the declared pin, or the submodule's gitlink."""
        if isinstance(backend.source, ReleaseSource):
            assert backend.declared_pin is not None  # the schema requires it for releases
            return backend.declared_pin
        return self.gitlink(backend.checkout)

    def gitlink(self, path: str) -> str:
        """The commit recorded for a submodule path in the index (staged pin bumps count)."""
        line = git_text(["ls-files", "--stage", "--", path], self.root)
        fields = line.split()
        if len(fields) < 2 or fields[0] != "160000" or not _SHA1.match(fields[1]):
            raise FlagScaleError(
                f"{path} is not a submodule in {self.root}: no gitlink in the index",
                hint=f"add it with `git submodule add <url> {path}` or declare a release source",
            )
        return fields[1]

    @property
    def state_dir(self) -> Path:
        """Private state of the tool inside the repository's git folder (never committed)."""
        common = git_text(["rev-parse", "--git-common-dir"], self.root)
        return (self.root / common).resolve() / "flagscale"


def find_workspace(start: Path | None = None) -> Workspace:
    """Find the workspace containing ``start`` (default: the current folder) and load it."""
    origin = (start or Path.cwd()).resolve()
    for folder in (origin, *origin.parents):
        if (folder / DECLARATION).is_file() and (folder / ".git").exists():
            return load_workspace(folder)
    from flagscale.core.cli import tasks_folder

    known = [f for f in tasks_folder() if (f / DECLARATION).is_file()]
    raise FlagScaleError(
        f"not inside a FlagScale workspace: no {DECLARATION} in {origin} or its parents",
        hint=f"cd {known[0]} first; paths you pass may point anywhere"
        if known
        else "cd into your FlagScale checkout",
    )


def load_workspace(root: Path) -> Workspace:
    """Load and validate ``backends/backends.yaml`` under ``root``."""
    data = load_document(root / DECLARATION, "workspace", display=DECLARATION)
    modules = _read_gitmodules(root)
    backends = {
        name: _backend_from(name, entry, modules) for name, entry in data["backends"].items()
    }
    return Workspace(root=root, backends=backends)


def backends_at(root: Path, commit: str) -> dict[str, Backend]:
    """The backends declared in ``backends/backends.yaml`` as committed at ``commit``."""
    from flagscale.core.schema import parse_document, validate

    display = f"{DECLARATION} at {commit[:12]}"
    text = git_text(["show", f"{commit}:{DECLARATION}"], root)
    data = validate(parse_document(text, display), "workspace", display)
    modules = _read_gitmodules(root)
    return {name: _backend_from(name, entry, modules) for name, entry in data["backends"].items()}


def _backend_from(name: str, entry: dict, modules: dict[str, tuple[str, str]]) -> Backend:
    source_data = entry["source"]
    source: ReleaseSource | SubmoduleSource
    if source_data["kind"] == "release":
        source = ReleaseSource(
            package=source_data["package"],
            version=str(source_data["version"]),
            filename=source_data["filename"],
            sha256=source_data["sha256"],
            strip_prefix=source_data.get("strip_prefix"),
            url=source_data.get("url"),
        )
    else:
        path = f"third_party/{name}"
        if path not in modules:
            raise FlagScaleError(
                f"{DECLARATION}: backend {name!r} is a submodule but .gitmodules has no entry"
                f" with path {path}",
                hint=f"run `git submodule add <url> {path}`",
            )
        module_name, url = modules[path]
        source = SubmoduleSource(name=module_name, url=url)
    return Backend(
        name=name,
        source=source,
        declared_pin=entry.get("pin"),
        optional=bool(entry.get("optional", False)),
    )


def _read_gitmodules(root: Path) -> dict[str, tuple[str, str]]:
    """Map submodule path → (submodule name, url), read from .gitmodules by git itself."""
    if not (root / ".gitmodules").is_file():
        return {}
    raw = git_text(
        ["config", "-z", "--file", ".gitmodules", "--get-regexp", r"^submodule\..*\.(path|url)$"],
        root,
        check=False,
    )
    names: dict[str, dict[str, str]] = {}
    for record in filter(None, raw.split("\0")):
        key, _, value = record.partition("\n")
        name, _, field = key[len("submodule.") :].rpartition(".")
        names.setdefault(name, {})[field] = value
    return {
        fields["path"]: (name, fields.get("url", ""))
        for name, fields in names.items()
        if "path" in fields
    }
