"""FlagScale-shaped checkouts: FlagScale's own ``tools/patch`` data, made by the git command line.

``make_flagscale_checkout`` builds what a FlagScale clone holds today:

* upstream repositories (Megatron-LM with an older and a current commit, vllm), added as real
  submodules at ``third_party/<backend>``;
* FlagScale's base patches, ``flagscale/backends/<backend>/<path>.patch``: one ``git diff`` per
  changed upstream file, as ``tools/patch/patch.py`` writes them;
* vendor patch sets ``hardware/<V_M>/<backend>/``: ``diff.yaml`` with one ``diff.patch``, one
  ``<path>.patch`` per changed file, or the oldest ``<short commit>.patch/.yaml``; plain or
  RSA/AES-CBC ``.encrypted``; with trailing spaces, blank lines at the end, files without a final
  newline, CRLF, binary files, renames, mode changes, non-ASCII and quoted names, deletions, 70+
  patch files in one set, tasks sharing one ``FlagScale`` folder, a set that needs the whitespace
  fallback, and ``hardware/patch_history.yaml`` with ``+``-joined keys.

The expected result of every set (and of the base patches) is computed here, independently of the
code under test: the fixture clones the upstream (or FlagScale) at the commit FlagScale's tool
starts from and runs ``git apply`` on each stored patch file exactly as FlagScale's
``tools/patch/unpatch.py`` does (``--whitespace warn``, then ``--whitespace fix`` only when that
fails; base patches with ``git apply --check`` then ``git apply``). The tree ids are git's own
(``git add -A -f`` + ``git write-tree`` in that clone): a hash over every path, mode and content.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flagscale.vendor.legacy_crypto import encrypt_legacy
from tests.gitrepos import (
    Exec,
    FileMap,
    commit_all,
    make_repo,
    run_git,
    snapshot,
    write_files,
)

MEGATRON = "Megatron-LM"
VLLM = "vllm"
FLAGSCALE = "FlagScale"
BACKENDS = (MEGATRON, VLLM)

# the device types of the fixture and what each one exercises
BIG = "Iluvatar_BI150"  # per-file, 70+ patch files, every kind of change; two FlagScale bases
SHARED = "Metax_C550"  # single diff.patch; train and inference share hardware/Metax_C550/FlagScale
SECRET = "Cambricon_MLU580"  # per-file, RSA/AES-CBC encrypted, key available
FALLBACK = "Kunlun_P800"  # needs --whitespace=fix for one file; made on an older upstream commit
LOST_KEY = "Mthreads_S4000"  # encrypted single file; the tests may withhold its key
OLDEST = "Hygon_K100"  # the oldest layout: <short commit>.patch + <short commit>.yaml
DEVICES = (BIG, SHARED, SECRET, FALLBACK, LOST_KEY, OLDEST)

CONTACT = "vendor support <support@vendor.invalid>"


def module_text(index: int, lines: int = 12) -> str:
    """Deterministic Python-looking source."""
    body = "".join(f"    value_{n} = {index * 31 + n}  # line {n}\n" for n in range(lines))
    return f'"""Layer {index}."""\n\n\ndef layer_{index}():\n{body}    return value_0\n'


MEGATRON_OLD: FileMap = {
    ".gitignore": "*.log\n",
    **{f"megatron/core/layer_{i:02d}.py": module_text(i) for i in range(80)},
    "megatron/core/fallback.py": "alpha = 1\nbeta = 2\ngamma = 3\n",
    "megatron/crlf.txt": b"one\r\ntwo\r\nthree\r\n",
    "megatron/no_eol.py": "x = 1",
    "megatron/old_name.py": module_text(100),
    "megatron/to_delete.py": "DELETE = True\n",
    "données/modèle.py": "poids = 1\n",
    "docs/with space.md": "# notes\n",
    "tools/run.sh": Exec(b"#!/bin/sh\necho run\n"),
    "tools/setup.py": "print('setup')\n",
    "weights.bin": bytes(range(256)) * 4,
    "dropped_by_base.py": "x = 1\n",
    "patched_by_base.py": "base = 'upstream'\n",
}
MEGATRON_NEWER: FileMap = {
    "NEWS.md": "Megatron-LM: a newer commit\n",
    "megatron/core/layer_79.py": module_text(79).replace("line 3", "line 3 (newer)"),
}
VLLM_FILES: FileMap = {
    "vllm/engine.py": "".join(f"engine line {i}\n" for i in range(20)),
    "vllm/worker.py": "".join(f"worker line {i}\n" for i in range(20)),
    **{f"vllm/model_{i}.py": module_text(200 + i) for i in range(5)},
}
FLAGSCALE_FILES: FileMap = {
    "README.md": "FlagScale\n",
    ".gitignore": "/build/\n",
    "flagscale/train.py": "def train():\n    return 'cuda'\n",
    "flagscale/inference.py": "def serve():\n    return 'cuda'\n",
    "flagscale/unused.py": "UNUSED = 1\n",
    # no flagscale/__init__.py: `python -m invoke` in a clone must import this tool's package
    "tools/patch/README.md": "FlagScale's tools/patch\n",
    "examples/aquila.yaml": "model: aquila\n",
}

# FlagScale's own changes to each upstream (the base patches): path → new content (None: deleted)
BASE_CHANGES: dict[str, dict[str, object]] = {
    MEGATRON: {
        "patched_by_base.py": "base = 'flagscale'\n",
        "megatron/flagscale_extra.py": "EXTRA = 1\n",
        "dropped_by_base.py": None,
        "megatron/core/layer_00.py": module_text(0).replace("line 5", "line 5 (flagscale)"),
    },
    VLLM: {
        "vllm/engine.py": "".join(f"engine line {i}\n" for i in range(20)).replace(
            "line 7", "line 7 (flagscale)"
        ),
        "vllm/flagscale_plugin.py": "PLUGIN = 1\n",
    },
}


# --- FlagScale's way of applying -----------------------------------------------------------------


def git_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def apply_like_flagscale(repo: Path, patch: Path) -> bool:
    """``tools/patch/unpatch.py``: ``git apply --whitespace warn``, and only if that fails
    ``git apply --whitespace fix``. True when the fallback was needed."""
    strict = subprocess.run(
        ["git", "apply", "--whitespace", "warn", str(patch)], cwd=repo, capture_output=True
    )
    if strict.returncode == 0:
        return False
    run_git(repo, "apply", "--whitespace", "fix", str(patch))
    return True


def apply_base_patches(repo: Path, folder: Path) -> None:
    """``tools/patch/unpatch.py`` for the base patches: walk the folder, ``git apply --check``
    then ``git apply`` each ``*.patch`` (files sorted within each folder)."""
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".patch"):
                run_git(repo, "apply", "--check", os.path.join(here, name))
                run_git(repo, "apply", os.path.join(here, name))


@dataclass(frozen=True)
class ExpectedTree:
    """A tree as git records it (id over every path, mode and content) and its files."""

    tree: str
    files: dict[str, tuple[str, bytes]]


def tree_of(work: Path, *, exclude: tuple[str, ...] = ()) -> ExpectedTree:
    """The tree ``git add -A -f`` records for ``work`` (a fresh index; ``exclude`` left out)."""
    index = Path(tempfile.mkdtemp(prefix="index-")) / "index"
    env = git_env(GIT_INDEX_FILE=str(index))
    pathspec = [".", *(f":(exclude){path}" for path in exclude)]
    subprocess.run(["git", "add", "-A", "-f", "--", *pathspec], cwd=work, env=env, check=True)
    tree = subprocess.run(
        ["git", "write-tree"], cwd=work, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    shutil.rmtree(index.parent)
    files = snapshot(work, skip=(".git", *exclude))
    return ExpectedTree(tree, files)


def scratch_clone(source: Path, commit: str, where: Path) -> Path:
    """A throw-away clone of ``source`` checked out at ``commit`` (submodules not initialised)."""
    where.parent.mkdir(parents=True, exist_ok=True)
    run_git(where.parent, "clone", "-q", "--no-checkout", str(source), str(where))
    run_git(where, "checkout", "-q", "--force", commit)
    return where


# --- writing patches as FlagScale's tools/patch/patch.py does -----------------------------------


def like_gitpython(diff: bytes) -> bytes:
    """GitPython returns command output without its final newline; the tool wrote one back."""
    return (diff[:-1] if diff.endswith(b"\n") else diff) + b"\n"


def split_per_file(diff: bytes) -> dict[str, bytes]:
    """The per-file layout: split where a line starts with ``diff --git a/`` (a quoted header,
    ``diff --git "a/...``, does not start a piece), name each piece ``<b-path>.patch`` and end it
    with one more newline."""
    text = (diff[:-1] if diff.endswith(b"\n") else diff).decode("utf-8", "surrogateescape")
    pieces: dict[str, bytes] = {}
    for piece in re.split(r"(?=^diff --git a/)", text, flags=re.MULTILINE):
        if not piece.strip():
            continue
        match = re.match(r"diff --git a/.+ b/(.+)", piece.splitlines()[0])
        if match is None:
            continue
        pieces[f"{match.group(1)}.patch"] = (piece + "\n").encode("utf-8", "surrogateescape")
    return pieces


def diff_of(
    source: Path,
    start: str,
    changes: dict[str, object],
    where: Path,
    *,
    pathspec: tuple[str, ...] = (),
) -> bytes:
    """``git diff --binary`` (renames found) from ``start`` to ``start`` with ``changes``."""
    work = scratch_clone(source, start, where)
    apply_changes(work, changes)
    run_git(work, "add", "-A", "--", ".", ":(exclude)third_party")
    result = subprocess.run(
        ["git", "diff", "--cached", "--binary", "-M", "--ignore-submodules=all", start, "--"]
        + list(pathspec or (".",)),
        cwd=work,
        capture_output=True,
        check=True,
    )
    shutil.rmtree(work)
    return result.stdout


def apply_changes(work: Path, changes: dict[str, object]) -> None:
    """Write ``changes`` (path → content; None deletes; ("rename", old) moves a file)."""
    for path, content in changes.items():
        target = work / path
        if content is None:
            target.unlink()
        elif isinstance(content, tuple) and content[0] == "rename":
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(work / content[1], target)
        else:
            write_files(work, {path: content})  # type: ignore[dict-item]


def base_patch_files(upstream: Path, pin: str, changes: dict[str, object], tmp: Path) -> FileMap:
    """FlagScale's base patches for one backend: ``<path>.patch`` per changed file.

    Modified and deleted files: ``git diff <pin> -- <path>``; added files: ``git diff --no-index
    /dev/null <path>``; each written as GitPython returned it, plus a newline.
    """
    work = scratch_clone(upstream, pin, tmp / "base-patches")
    apply_changes(work, changes)
    patches: FileMap = {}
    for path, content in changes.items():
        if content is not None and not (work / path).exists():
            continue
        tracked = subprocess.run(
            ["git", "cat-file", "-e", f"{pin}:{path}"], cwd=work, capture_output=True
        )
        if tracked.returncode == 0:
            args = ["git", "diff", pin, "--", path]
        else:
            args = ["git", "diff", "--no-index", "/dev/null", path]
        output = subprocess.run(args, cwd=work, capture_output=True).stdout
        patches[f"{path}.patch"] = like_gitpython(output)
    shutil.rmtree(work)
    return patches


# --- the checkout ------------------------------------------------------------------------------


@dataclass
class ExpectedDevice:
    """What FlagScale's ``unpatch.py --device-type`` gives for one history line."""

    device: str
    task: str
    key: str
    history_commit: str
    newest_base: str
    flagscale: ExpectedTree  # FlagScale's own files (third_party/ left out)
    backends: dict[str, ExpectedTree]  # backend → third_party/<backend>
    pins: dict[str, str]  # backend → the upstream commit the patches were applied to
    fixed: list[str] = field(default_factory=list)  # patch files that needed --whitespace=fix

    @property
    def backend_names(self) -> list[str]:
        return self.key.split("+")


@dataclass
class FlagScaleCheckout:
    """A FlagScale clone with base patches, vendor sets of every kind and their history."""

    root: Path
    upstreams: dict[str, Path]
    pins: dict[str, str]  # backend → gitlink at HEAD
    older_pin: str  # an older Megatron-LM commit (FALLBACK's backends_commit)
    bases: list[str]  # FlagScale commits the sets were made against, oldest first
    head: str
    keys: dict[str, Path]  # vendor → folder with private_key.pem and public_key.pem
    devices: dict[tuple[str, str], ExpectedDevice]  # (device, task) → expected
    unpatched: dict[str, ExpectedTree]  # backend → pin + base patches (FlagScale's unpatch)
    patch_counts: dict[tuple[str, str], int]  # (device, backend) → stored patch files
    set_commits: dict[str, str]  # device → the commit holding its sets

    def expected(self, device: str, task: str = "train") -> ExpectedDevice:
        return self.devices[(device, task)]


def rsa_key_folder(folder: Path) -> Path:
    """A key folder as FlagScale's tool made it: private_key.pem (0600) and public_key.pem."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (folder / "private_key.pem").write_bytes(private)
    (folder / "private_key.pem").chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "public_key.pem").write_bytes(public)
    return folder


def diff_yaml(device: str, commit: str, tasks: list[str], backends_commit: dict) -> str:
    data = {
        "backends_commit": backends_commit,
        "backends_version": {MEGATRON: "0.8.0", VLLM: "0.6.3", FLAGSCALE: "0.8.0"},
        "commit": commit,
        "contact": CONTACT,
        "device_type": device,
        "models": ["aquila", "llama3"],
        "task": tasks,
    }
    return yaml.dump(data, sort_keys=True, allow_unicode=True)


class _Builder:
    """Makes the checkout step by step and records what FlagScale's tool would give."""

    def __init__(self, tmp: Path, extra_files: int = 0) -> None:
        self.tmp = tmp
        self.extra_files = extra_files
        self.scratch = tmp / "scratch"
        self.counter = 0
        self.upstreams: dict[str, Path] = {}
        self.devices: dict[tuple[str, str], ExpectedDevice] = {}
        self.patch_counts: dict[tuple[str, str], int] = {}
        self.set_commits: dict[str, str] = {}
        self.keys = {
            "Cambricon": rsa_key_folder(tmp / "keys" / "Cambricon"),
            "Mthreads": rsa_key_folder(tmp / "keys" / "Mthreads"),
        }

    def place(self, name: str) -> Path:
        self.counter += 1
        return self.scratch / f"{self.counter:03d}-{name}"

    def make_upstreams(self) -> None:
        megatron = self.tmp / "upstreams" / MEGATRON
        extra = {
            f"megatron/extra/m_{i:05d}.py": module_text(1000 + i) for i in range(self.extra_files)
        }
        self.older_pin = make_repo(megatron, {**MEGATRON_OLD, **extra}, "Megatron-LM (older)")
        write_files(megatron, MEGATRON_NEWER)
        commit_all(megatron, "Megatron-LM (pinned)")
        self.upstreams[MEGATRON] = megatron
        self.upstreams[VLLM] = self.tmp / "upstreams" / VLLM
        make_repo(self.upstreams[VLLM], VLLM_FILES, "vllm")

    def make_flagscale(self) -> None:
        root = self.root = self.tmp / "FlagScale"
        make_repo(root, FLAGSCALE_FILES, "FlagScale 0.8")
        for name, path in self.upstreams.items():
            run_git(root, "submodule", "add", "-q", path.as_uri(), f"third_party/{name}")
        commit_all(root, "backends as submodules")
        self.pins = {n: run_git(root, "rev-parse", f"HEAD:third_party/{n}") for n in BACKENDS}
        for name in BACKENDS:
            patches = base_patch_files(
                self.upstreams[name], self.pins[name], BASE_CHANGES[name], self.place(name)
            )
            write_files(root, {f"flagscale/backends/{name}/{p}": d for p, d in patches.items()})
        base0 = commit_all(root, "base patches")
        write_files(root, {"flagscale/train.py": "def train():\n    return 'cuda'  # tuned\n"})
        base1 = commit_all(root, "FlagScale: train tuned")
        self.bases = [base0, base1]
        self.unpatched = {}
        for name in BACKENDS:
            work = scratch_clone(self.upstreams[name], self.pins[name], self.place(name))
            apply_base_patches(work, root / "flagscale" / "backends" / name)
            self.unpatched[name] = tree_of(work)

    # -- vendor sets --------------------------------------------------------------------------

    def backend_set(
        self,
        device: str,
        backend: str,
        changes: dict[str, object],
        *,
        layout: str,
        base: str,
        start: str | None = None,
        record_start: bool = False,
        tasks: list[str],
        key: Path | None = None,
    ) -> tuple[FileMap, dict[str, bytes], str]:
        """(files of the set folder, plaintext patch files, the commit the patches start from)."""
        start = start or self.pins[backend]
        diff = diff_of(self.upstreams[backend], start, changes, self.place(backend))
        backends_commit = {backend: start} if record_start else {}
        return self.write_set(device, backend, diff, layout, base, tasks, backends_commit, key)

    def flagscale_set(
        self,
        device: str,
        changes: dict[str, object],
        *,
        layout: str,
        base: str,
        tasks: list[str],
        key: Path | None = None,
    ) -> tuple[FileMap, dict[str, bytes], str]:
        diff = diff_of(self.root, base, changes, self.place("FlagScale"))
        return self.write_set(device, FLAGSCALE, diff, layout, base, tasks, {}, key)

    def write_set(
        self,
        device: str,
        backend: str,
        diff: bytes,
        layout: str,
        base: str,
        tasks: list[str],
        backends_commit: dict,
        key: Path | None,
    ) -> tuple[FileMap, dict[str, bytes], str]:
        plain = split_per_file(diff) if layout == "per-file" else {}
        if layout == "single":
            plain = {"diff.patch": like_gitpython(diff)}
        meta_name = "diff.yaml"
        meta = diff_yaml(device, base, tasks, backends_commit)
        if layout == "oldest":
            short = base[:7]
            plain = {f"{short}.patch": like_gitpython(diff)}
            meta_name = f"{short}.yaml"
            data = yaml.safe_load(meta)
            data.pop("commit")
            meta = yaml.dump(data, sort_keys=True, allow_unicode=True)
        stored: FileMap = {meta_name: meta}
        for name, data in plain.items():
            if key is None:
                stored[name] = data
            else:
                stored[f"{name}.encrypted"] = encrypt_legacy(data, key)
        self.patch_counts[(device, backend)] = len(plain)
        folder = f"hardware/{device}/{backend}"
        return {f"{folder}/{name}": data for name, data in stored.items()}, plain, base

    def expect(
        self,
        device: str,
        task: str,
        backends: list[str],
        plain: dict[str, dict[str, bytes]],
        bases: dict[str, str],
        starts: dict[str, str],
    ) -> ExpectedDevice:
        """Apply the plaintext patches as FlagScale's tool does, from the commits it uses."""
        order = {commit: index for index, commit in enumerate(self.bases)}
        newest = max((bases[b] for b in backends), key=lambda c: order[c])
        fixed: list[str] = []
        own = scratch_clone(self.root, newest, self.place("own"))
        if FLAGSCALE in backends:
            fixed += self.apply_all(own, device, FLAGSCALE, plain[FLAGSCALE])
        flagscale_tree = tree_of(own, exclude=("third_party",))
        trees: dict[str, ExpectedTree] = {}
        for backend in backends:
            if backend == FLAGSCALE:
                continue
            work = scratch_clone(self.upstreams[backend], starts[backend], self.place(backend))
            fixed += self.apply_all(work, device, backend, plain[backend])
            trees[backend] = tree_of(work)
        key = "+".join(sorted(backends))
        return ExpectedDevice(
            device=device,
            task=task,
            key=key,
            history_commit="",
            newest_base=newest,
            flagscale=flagscale_tree,
            backends=trees,
            pins={b: starts[b] for b in backends if b != FLAGSCALE},
            fixed=fixed,
        )

    def apply_all(self, work: Path, device: str, backend: str, plain: dict[str, bytes]) -> list:
        folder = self.place("patches")
        folder.mkdir(parents=True)
        fixed = []
        for index, (name, data) in enumerate(sorted(plain.items())):
            patch = folder / f"{index:04d}.patch"
            patch.write_bytes(data)
            if apply_like_flagscale(work, patch):
                fixed.append(f"hardware/{device}/{backend}/{name}")
        return fixed

    def commit_device(self, device: str, files: FileMap, expected: list[ExpectedDevice]) -> None:
        write_files(self.root, files)
        commit = commit_all(self.root, f"hardware: {device}")
        self.set_commits[device] = commit
        for item in expected:
            item.history_commit = commit
            self.devices[(item.device, item.task)] = item

    def write_history(self) -> str:
        history: dict = {}
        for (device, task), item in sorted(self.devices.items()):
            history.setdefault(device, {}).setdefault(task, {})[item.key] = [item.history_commit]
        text = yaml.safe_dump(history, sort_keys=True, default_flow_style=False)
        write_files(self.root, {"hardware/patch_history.yaml": text})
        return commit_all(self.root, "hardware: patch history")


def big_changes() -> dict[str, object]:
    """Every kind of change, over 70 files, on top of FlagScale's base changes."""
    changes: dict[str, object] = dict(BASE_CHANGES[MEGATRON])
    for i in range(1, 73):
        path = f"megatron/core/layer_{i:02d}.py"
        changes[path] = module_text(i).replace("line 4", "line 4 (iluvatar)")
    changes["megatron/core/layer_73.py"] = module_text(73) + "fast = True   \n"
    changes["megatron/core/layer_74.py"] = module_text(74) + "\tdone = 1\t\n"
    changes["megatron/core/layer_75.py"] = module_text(75) + "\n\n"
    changes["megatron/blank_tail.py"] = "y = 1\n\n\n"
    changes["megatron/no_eol.py"] = "x = 2"
    changes["megatron/crlf.txt"] = b"one\r\ndeux\r\nthree\r\nfour  \r\n"
    changes["weights.bin"] = bytes(range(256)) * 5
    changes["kernels/kernel.bin"] = bytes(reversed(range(256))) * 2 + b"\0"
    changes["megatron/new_name.py"] = ("rename", "megatron/old_name.py")
    changes["megatron/to_delete.py"] = None
    changes["données/modèle.py"] = "poids = 2   \n"
    changes["docs/with space.md"] = "# notes\n\nwith a space in the name  \n"
    changes["tools/setup.py"] = Exec(b"print('setup')\n")
    changes['megatron/quote"d.py'] = 'Q = "q"\n'
    changes["zz_last.py"] = "LAST = 1\n"
    return changes


def make_flagscale_checkout(tmp: Path, *, extra_files: int = 0) -> FlagScaleCheckout:
    """The FlagScale clone of the module doc, with the expected result of each history line.

    ``extra_files`` adds that many untouched files to Megatron-LM (a realistic upstream size for
    the benchmark)."""
    b = _Builder(tmp, extra_files)
    b.make_upstreams()
    b.make_flagscale()
    base0, base1 = b.bases
    pin = b.pins[MEGATRON]

    # BIG: per-file, plain; Megatron-LM made on base0 (with the base changes in it), FlagScale
    # on base1, so FlagScale's tool checks out base1
    files, mega, _ = b.backend_set(
        BIG, MEGATRON, big_changes(), layout="per-file", base=base0, tasks=["train"]
    )
    own = {
        "flagscale/train.py": "def train():\n    return 'iluvatar'   \n",
        "flagscale/iluvatar.py": "DEVICE = 'iluvatar'\n\n\n",
        "flagscale/unused.py": None,
    }
    more, fs, _ = b.flagscale_set(BIG, own, layout="per-file", base=base1, tasks=["train"])
    expected = b.expect(
        BIG,
        "train",
        [FLAGSCALE, MEGATRON],
        {MEGATRON: mega, FLAGSCALE: fs},
        {MEGATRON: base0, FLAGSCALE: base1},
        {MEGATRON: pin},
    )
    b.commit_device(BIG, {**files, **more}, [expected])

    # SHARED: one diff.patch per backend; train and inference share the FlagScale folder; the
    # Megatron-LM diff ends with a binary file (its blank line is cut, as the tool wrote it)
    tasks = ["inference", "train"]
    mega_changes = {
        "megatron/core/layer_10.py": module_text(10).replace("line 2", "line 2 (metax)"),
        "megatron/metax.py": "M = 1   \n",
        "megatron/crlf.txt": b"one\r\ntwo\r\ntrois\r\n",
        "weights.bin": bytes(range(256)) * 6,
    }
    files, mega, _ = b.backend_set(
        SHARED,
        MEGATRON,
        mega_changes,
        layout="single",
        base=base0,
        tasks=tasks,
        record_start=True,
    )
    vllm_changes = {"vllm/worker.py": VLLM_FILES["vllm/worker.py"] + "metax = True  \n"}
    more, vllm, _ = b.backend_set(
        SHARED, VLLM, vllm_changes, layout="single", base=base0, tasks=tasks
    )
    files.update(more)
    own = {
        "flagscale/inference.py": "def serve():\n    return 'metax'\n",
        "flagscale/metax/device.py": "M = 1\n",
    }
    more, fs, _ = b.flagscale_set(SHARED, own, layout="single", base=base0, tasks=tasks)
    files.update(more)
    plain = {MEGATRON: mega, VLLM: vllm, FLAGSCALE: fs}
    bases = {MEGATRON: base0, VLLM: base0, FLAGSCALE: base0}
    starts = {MEGATRON: pin, VLLM: b.pins[VLLM]}
    train = b.expect(SHARED, "train", [FLAGSCALE, MEGATRON], plain, bases, starts)
    inference = b.expect(SHARED, "inference", [FLAGSCALE, VLLM], plain, bases, starts)
    b.commit_device(SHARED, files, [train, inference])

    # SECRET: per-file, encrypted with the vendor's RSA key
    key = b.keys["Cambricon"]
    mega_changes = {
        **{
            f"megatron/core/layer_{i:02d}.py": module_text(i).replace("line 6", "line 6 (mlu)")
            for i in range(20, 25)
        },
        "megatron/mlu.py": "MLU = True\n",
    }
    files, mega, _ = b.backend_set(
        SECRET, MEGATRON, mega_changes, layout="per-file", base=base1, tasks=["train"], key=key
    )
    own = {"flagscale/train.py": "def train():\n    return 'mlu'  # tuned\n"}
    more, fs, _ = b.flagscale_set(
        SECRET, own, layout="per-file", base=base1, tasks=["train"], key=key
    )
    expected = b.expect(
        SECRET,
        "train",
        [FLAGSCALE, MEGATRON],
        {MEGATRON: mega, FLAGSCALE: fs},
        {MEGATRON: base1, FLAGSCALE: base1},
        {MEGATRON: pin},
    )
    b.commit_device(SECRET, {**files, **more}, [expected])

    # FALLBACK: made on the older Megatron-LM commit, against a fallback.py whose context lines
    # carried trailing spaces: strict git apply fails there, --whitespace=fix applies it
    files, mega = fallback_set(b, base0)
    expected = b.expect(
        FALLBACK, "train", [MEGATRON], {MEGATRON: mega}, {MEGATRON: base0},
        {MEGATRON: b.older_pin},
    )  # fmt: skip
    b.commit_device(FALLBACK, files, [expected])

    # LOST_KEY: one encrypted diff.patch for vllm, inference only
    key = b.keys["Mthreads"]
    vllm_changes = {"vllm/model_3.py": module_text(203).replace("line 1", "line 1 (musa)")}
    files, vllm, _ = b.backend_set(
        LOST_KEY, VLLM, vllm_changes, layout="single", base=base1, tasks=["inference"], key=key
    )
    expected = b.expect(
        LOST_KEY, "inference", [VLLM], {VLLM: vllm}, {VLLM: base1}, {VLLM: b.pins[VLLM]}
    )
    b.commit_device(LOST_KEY, files, [expected])

    # OLDEST: <short commit>.patch and <short commit>.yaml
    mega_changes = {"megatron/core/layer_40.py": module_text(40).replace("line 9", "line 9 (k100)")}
    files, mega, _ = b.backend_set(
        OLDEST, MEGATRON, mega_changes, layout="oldest", base=base0, tasks=["train"]
    )
    expected = b.expect(
        OLDEST, "train", [MEGATRON], {MEGATRON: mega}, {MEGATRON: base0}, {MEGATRON: pin}
    )
    b.commit_device(OLDEST, files, [expected])

    head = b.write_history()
    shutil.rmtree(b.scratch, ignore_errors=True)
    return FlagScaleCheckout(
        root=b.root,
        upstreams=b.upstreams,
        pins=b.pins,
        older_pin=b.older_pin,
        bases=b.bases,
        head=head,
        keys=b.keys,
        devices=b.devices,
        unpatched=b.unpatched,
        patch_counts=b.patch_counts,
        set_commits=b.set_commits,
    )


def fallback_set(b: _Builder, base: str) -> tuple[FileMap, dict[str, bytes]]:
    """A per-file set on the older upstream commit: ``fallback.py.patch`` was made where its
    context lines had trailing spaces (so only --whitespace=fix applies it, and fix also strips
    the spaces it adds); ``layer_30.py.patch`` adds a line with trailing spaces and applies
    strictly, so its spaces stay."""
    upstream = b.upstreams[MEGATRON]
    work = scratch_clone(upstream, b.older_pin, b.place("fallback"))
    write_files(work, {"megatron/core/fallback.py": "alpha = 1   \nbeta = 2\ngamma = 3\n"})
    run_git(work, "add", "-A")
    write_files(
        work,
        {
            "megatron/core/fallback.py": "alpha = 1   \nbeta = 20\ngamma = 3\ndelta = 4  \n",
            "megatron/core/layer_30.py": module_text(30) + "kunlun = True    \n",
        },
    )
    diff = subprocess.run(
        ["git", "diff", "--binary"], cwd=work, capture_output=True, check=True
    ).stdout
    shutil.rmtree(work)
    files, plain, _ = b.write_set(
        FALLBACK,
        MEGATRON,
        diff,
        "per-file",
        base,
        ["train"],
        {MEGATRON: b.older_pin},
        None,
    )
    return files, plain


# --- a workspace of this tool inside a FlagScale clone -----------------------------------------


def declare_in_clone(checkout: FlagScaleCheckout, destination: Path) -> Path:
    """A clone of the FlagScale checkout that declares its submodules for this tool (one commit
    adding ``backends/backends.yaml``): FlagScale's history and its legacy sets are all there."""
    run_git(destination.parent, "clone", "-q", str(checkout.root), str(destination))
    declaration = {
        "version": 1,
        "backends": {name: {"source": {"kind": "submodule"}} for name in BACKENDS},
    }
    write_files(destination, {"backends/backends.yaml": yaml.safe_dump(declaration)})
    commit_all(destination, "declare the backends for the build tool")
    return destination


def built_parts(build: Path, backends: list[str]) -> dict[str, dict[str, tuple[str, bytes]]]:
    """A build tree as {"": FlagScale's own files, backend: third_party/<backend>} snapshots."""
    own = snapshot(build, skip=(".git", "third_party"))
    for name in (".flagscale-build.json", ".flagscale-build.state"):
        own.pop(name, None)
    parts = {"": own}
    for backend in backends:
        if backend != FLAGSCALE:
            parts[backend] = snapshot(build / "third_party" / backend, skip=(".git",))
    return parts


def expected_parts(expected: ExpectedDevice) -> dict[str, dict[str, tuple[str, bytes]]]:
    parts = {"": expected.flagscale.files}
    parts.update({name: tree.files for name, tree in expected.backends.items()})
    return parts


def differing(
    built: dict[str, dict[str, tuple[str, bytes]]], wanted: dict[str, dict[str, tuple[str, bytes]]]
) -> list[str]:
    """Paths (prefixed by their part) whose kind or content differ; empty when identical."""
    found = []
    for part in sorted(set(built) | set(wanted)):
        a, b = built.get(part, {}), wanted.get(part, {})
        for path in sorted(set(a) | set(b)):
            if a.get(path) != b.get(path):
                found.append(f"{part or 'FlagScale'}: {path}")
    return found
