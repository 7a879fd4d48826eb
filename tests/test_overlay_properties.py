"""Round trips as a property: any sequence of edits survives ``inv patch`` + a fresh clone.

Hypothesis draws a layer mode and a sequence of edits of every kind (modify, add in new nested
folders, delete, rename, chmod +x/-x, symlink added or retargeted inside the tree, binary
content with NUL bytes, non-ASCII and space-containing names, CRLF, a folder replaced by a file
and a file by a folder), made on a real checkout laid by ``inv unpatch``. Then ``inv patch``,
a commit, a fresh ``git clone`` and ``inv unpatch --mode copy`` there must give the edited tree
byte for byte (content seen through overlay links, modes, symlink targets).

Bounded for CI: a fixed number of examples, derandomized (the same examples on every run), no
deadline (real git on a busy machine), no example database.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flagscale.core.errors import FlagScaleError
from flagscale.overlay.patch import patch
from flagscale.overlay.unpatch import unpatch
from tests.gitrepos import commit_all, run_git, snapshot
from tests.overlay_workspace import CHECKOUT, NAME, overlay_workspace

NAMES = ["a", "b c", "ü", "说明", "données du modèle", "new dir", "x"]
SUFFIXES = ["", ".py", ".txt", ".bin", ".bat"]
KINDS = [
    "modify",
    "add",
    "delete",
    "rename",
    "chmod",
    "symlink-add",
    "symlink-retarget",
    "folder-to-file",
    "file-to-folder",
]
_counter = itertools.count()

content = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30).map(
        lambda text: (text + "\n").encode("utf-8")
    ),
    st.binary(max_size=30).map(lambda data: b"\x00" + data),
    st.lists(st.text("abc é", max_size=6), min_size=1, max_size=4).map(
        lambda lines: "".join(f"{line}\r\n" for line in lines).encode("utf-8")
    ),
)


def entries(checkout: Path) -> tuple[list[str], list[str], list[str]]:
    """(regular files, symlinks, real folders) under the checkout, relative, sorted; the
    checkout's .git and .gitignore (which would change what git sees) left out."""
    files, links, folders = [], [], []
    for current, dirs, names in os.walk(checkout):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if d != ".git" and not (here / d).is_symlink())
        relative = here.relative_to(checkout).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        if prefix:
            folders.append(relative)
        for name in sorted(names) + [d for d in os.listdir(here) if (here / d).is_symlink()]:
            path = f"{prefix}{name}"
            if path in (".git", ".gitignore"):
                continue
            (links if (here / name).is_symlink() else files).append(path)
    return sorted(set(files)), sorted(set(links)), sorted(folders)


def new_path(data: st.DataObject, checkout: Path, folders: list[str]) -> str:
    """A path that does not exist yet, in an existing folder or in new nested folders."""
    parent = data.draw(st.sampled_from(["", *folders]), label="folder")
    depth = data.draw(st.integers(0, 2), label="new folders")
    parts = [data.draw(st.sampled_from(NAMES)) for _ in range(depth)]
    name = data.draw(st.sampled_from(NAMES)) + data.draw(st.sampled_from(SUFFIXES))
    path = "/".join(p for p in (parent, *parts, name) if p)
    while os.path.lexists(checkout / path) or _blocked(checkout, path):
        path = f"{path}-{next(_counter)}"
    return path


def _blocked(checkout: Path, path: str) -> bool:
    """True when a folder on the way is a file or a symlink."""
    parent = os.path.dirname(path)
    while parent:
        full = checkout / parent
        if os.path.lexists(full) and (full.is_symlink() or not full.is_dir()):
            return True
        parent = os.path.dirname(parent)
    return False


def write(checkout: Path, path: str, data: bytes) -> None:
    target = checkout / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def inside(checkout: Path, path: str) -> bool:
    """True when ``path`` (followed through links) is a regular file of the checkout or of the
    base layer (an overlay link): a place an editor may write through."""
    real = Path(os.path.realpath(checkout / path))
    workspace = checkout.parent.parent
    return real.is_file() and (
        real.is_relative_to(os.path.realpath(checkout))
        or real.is_relative_to(os.path.realpath(workspace / "backends" / NAME))
    )


def edit(data: st.DataObject, checkout: Path) -> str:
    """Make one edit drawn from KINDS; return a description (for failing examples)."""
    files, links, folders = entries(checkout)
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    if kind == "modify":
        writable = [p for p in files + links if inside(checkout, p)]
        if writable:
            path = data.draw(st.sampled_from(writable), label="path")
            (checkout / path).write_bytes(data.draw(content, label="content"))
            return f"modify {path}"
    elif kind == "add":
        path = new_path(data, checkout, folders)
        write(checkout, path, data.draw(content, label="content"))
        return f"add {path}"
    elif kind == "delete" and files + links:
        path = data.draw(st.sampled_from(files + links), label="path")
        (checkout / path).unlink()
        return f"delete {path}"
    elif kind == "rename" and files:
        path = data.draw(st.sampled_from(files), label="path")
        target = new_path(data, checkout, folders)
        (checkout / target).parent.mkdir(parents=True, exist_ok=True)
        os.rename(checkout / path, checkout / target)
        return f"rename {path} {target}"
    elif kind == "chmod" and files:
        path = data.draw(st.sampled_from(files), label="path")
        mode = os.lstat(checkout / path).st_mode
        os.chmod(checkout / path, mode ^ (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
        return f"chmod {path}"
    elif kind in ("symlink-add", "symlink-retarget") and files:
        targets = files
        if kind == "symlink-add":
            path = new_path(data, checkout, folders)
        else:
            own = [p for p in links if f"backends/{NAME}/" not in os.readlink(checkout / p)]
            if not own:
                return "nothing to retarget"
            path = data.draw(st.sampled_from(own), label="link")
            (checkout / path).unlink()
        target = data.draw(st.sampled_from(targets), label="target")
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(checkout / target, (checkout / path).parent), checkout / path)
        return f"{kind} {path} -> {target}"
    elif kind == "folder-to-file" and folders:
        path = data.draw(st.sampled_from(folders), label="folder")
        shutil.rmtree(checkout / path)
        write(checkout, path, data.draw(content, label="content"))
        return f"folder-to-file {path}"
    elif kind == "file-to-folder" and files + links:
        path = data.draw(st.sampled_from(files + links), label="path")
        (checkout / path).unlink()
        write(checkout, f"{path}/{data.draw(st.sampled_from(NAMES))}", b"in a folder now\n")
        return f"file-to-folder {path}"
    return f"{kind}: nothing to do"


def seen(checkout: Path) -> dict[str, tuple[str, bytes]]:
    """The checkout as a program sees it: overlay symlinks replaced by the file they show."""
    found = {}
    for path, (kind, value) in snapshot(checkout).items():
        if path == ".git":  # the submodule's pointer to its git folder
            continue
        if kind == "link" and f"backends/{NAME}/" in value.decode("utf-8", "surrogateescape"):
            target = checkout / path
            kind = "exec" if os.access(target, os.X_OK) else "file"
            value = target.read_bytes()
        found[path] = (kind, value)
    return found


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("property-template")


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), mode=st.sampled_from(["symlink", "copy"]))
def test_any_edits_round_trip_through_patch_and_a_fresh_clone(
    data: st.DataObject, mode: str, template: Path, tmp_path: Path
) -> None:
    example = tmp_path / f"example-{next(_counter)}"
    example.mkdir()
    root = overlay_workspace(example, template)
    checkout = root / CHECKOUT
    unpatch(root, mode=mode, echo=lambda _: None)
    steps = data.draw(st.integers(1, 8), label="number of edits")
    done = [edit(data, checkout) for _ in range(steps)]
    for step in done:
        event(step.split(" ")[0])
    edited = seen(checkout)

    try:
        patch(root, echo=lambda _: None)
    except FlagScaleError as exc:  # a path put back at the pin's exact bytes is refused
        assert "shows the pin's version" in str(exc), (done, str(exc))
        event("refused: a layer path at the pin's version")
        return

    assert seen(checkout) == edited, done
    commit_all(root, "edits")
    clone = example / "clone"
    run_git(example, "clone", "-q", str(root), str(clone))
    unpatch(clone, mode="copy", echo=lambda _: None)
    assert seen(clone / CHECKOUT) == edited, done
    shutil.rmtree(example)
