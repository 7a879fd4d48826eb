"""Every guide works as written: README.md and each docs/*.md, its bash blocks run in order in a
fresh clone (tests/guides.py says how). A guide that drifts from the tool fails here."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitrepos import TOOL_ROOT, make_repo
from tests.guides import GuideFailure, blocks, guide_paths, run_guide


@pytest.fixture(scope="session")
def release_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One download cache for every guide of the session (and every xdist worker): the
    declared release archives (megatron-core's) are fetched into it once."""
    from flagscale.upstream.release_import import fetch_artifact
    from flagscale.upstream.workspace import ReleaseSource, load_workspace

    shared = tmp_path_factory.getbasetemp().parent / "guides-release-cache"
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock, pytest.MonkeyPatch.context() as patch:
        fcntl.flock(lock, fcntl.LOCK_EX)
        patch.setenv("FLAGSCALE_CACHE", str(shared))
        for backend in load_workspace(TOOL_ROOT).backends.values():
            if isinstance(backend.source, ReleaseSource) and not backend.optional:
                fetch_artifact(backend.source, workspace_root=TOOL_ROOT)
        fcntl.flock(lock, fcntl.LOCK_UN)
    yield shared


@pytest.mark.parametrize(
    "guide", guide_paths(), ids=lambda path: path.relative_to(TOOL_ROOT).as_posix()
)
def test_guide_works_as_written(guide: Path, tmp_path: Path, release_cache: Path) -> None:
    run_guide(guide, tmp_path, release_cache)


# --- the runner itself ------------------------------------------------------------------------

GUIDE = """# A guide

```bash
echo one
```

<!-- guide: skip (needs a GPU) -->
```bash
nvidia-smi
```

1. A step:

   ```bash
   cd sub && pwd
   ```

<!-- guide: setup (as after docs/other.md)
touch made-by-setup
-->

```python
print("not run")
```

~~~bash
echo "tilde fence"
~~~
"""


def test_blocks_are_read_with_their_marks_and_indentation() -> None:
    found = blocks(GUIDE)
    assert found[3].setup == "as after docs/other.md"
    assert [(b.line, b.code, b.skip, b.hidden) for b in found] == [
        (3, "echo one\n", None, False),
        (8, "nvidia-smi\n", "needs a GPU", False),
        (14, "cd sub && pwd\n", None, False),
        (18, "touch made-by-setup\n", None, True),
        (26, 'echo "tilde fence"\n', None, False),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "<!-- guide: skipp (typo) -->\n```bash\nx\n```\n",
        "<!-- guide: skip () -->\n```bash\nx\n```\n",
        "<!-- guide: skip (not bash) -->\n```python\nx\n```\n",
        "<!-- guide: setup (why)\nnever closed\n",
        "<!-- guide: setup\ntrue\n-->\n",
    ],
)
def test_a_bad_mark_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="guide"):
        blocks(text, "docs/x.md")


def checkout_with(tmp: Path, guide: str) -> Path:
    """A repository holding ``docs/guide.md`` (committed) and an uncommitted file."""
    root = tmp / "checkout"
    make_repo(root, {"docs/guide.md": guide, "hardware/.keep": ""})
    (root / "uncommitted.txt").write_text("not committed\n")
    return root


def test_the_failing_block_is_named(tmp_path: Path) -> None:
    source = checkout_with(
        tmp_path, "```bash\ntrue\n```\n\n```bash\necho before\nfalse && true\n```\n"
    )
    with pytest.raises(GuideFailure) as failure:
        run_guide(source / "docs/guide.md", tmp_path / "run", tmp_path / "cache", source=source)
    message = str(failure.value)
    assert message.startswith("docs/guide.md: the bash block at line 5 failed (exit 1")
    assert "echo before\nfalse && true\n--- output ---\nbefore" in message


def test_guides_run_in_a_clone_and_leave_the_checkout_alone(tmp_path: Path) -> None:
    source = checkout_with(
        tmp_path,
        "```bash\ncat uncommitted.txt\ngit status --porcelain\n"
        'echo "$FLAGSCALE_CACHE" && touch hardware/made-by-guide\n'
        'python -c "import sys; print(sys.prefix)"\n```\n',
    )
    output = run_guide(
        source / "docs/guide.md", tmp_path / "run", tmp_path / "cache", source=source
    )
    lines = output.splitlines()
    # the checkout's uncommitted changes are committed in the clone: git status says nothing
    assert lines[1:] == [
        "not committed",
        str(tmp_path / "cache"),
        str(tmp_path / "run" / "venv"),
        "::guide-block done",
    ]
    assert not (source / "hardware" / "made-by-guide").exists()
    assert (tmp_path / "run" / "FlagScale" / "hardware" / "made-by-guide").exists()
    assert os.environ.get("VIRTUAL_ENV") != str(tmp_path / "run" / "venv")


def test_the_suite_started_from_a_guide_stops_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_atomic.py"],
        cwd=TOOL_ROOT,
        env={**os.environ, "FLAGSCALE_GUIDE": "docs/ci.md"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 4
    assert "the test suite was started by a block of docs/ci.md" in result.stdout + result.stderr
