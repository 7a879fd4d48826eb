"""docs/migrating-from-flagscale.md: every command in the guide works when pasted.

The guide's commands run in a workspace of this tool next to a FlagScale checkout
(``../FlagScale``) and a vendor's key folder (``../keys/Cambricon``), as the guide lays them out.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.flagscale_checkout import make_flagscale_checkout
from tests.gitrepos import TOOL_ROOT, make_workspace, run_git

GUIDE = TOOL_ROOT / "docs" / "migrating-from-flagscale.md"


def guide_commands() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_the_guide_has_commands_for_maintainers_and_vendors() -> None:
    commands = guide_commands()
    assert any(c.startswith("inv import-flagscale ../FlagScale --key-path") for c in commands)
    assert "inv check-history" in commands


def test_every_command_of_the_migration_guide_works(tmp_path: Path) -> None:
    make_flagscale_checkout(tmp_path / "site")  # site/FlagScale, site/keys/<Vendor>
    maintainer, _ = make_workspace(tmp_path / "origin", {"Other": {"other.py": "OTHER = 1\n"}})
    workspace = tmp_path / "site" / "workspace"
    run_git(workspace.parent, "clone", "-q", str(maintainer), str(workspace))
    invoke = f"{shlex.quote(sys.executable)} -m invoke --search-root {shlex.quote(str(TOOL_ROOT))}"
    script = [f'inv() {{ {invoke} "$@"; }}', "set -ex", *guide_commands()]

    result = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=workspace, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "new-keys" / "Cambricon.key").is_file()
    assert (workspace / "build" / "Cambricon_MLU580" / "third_party" / "Megatron-LM").is_dir()
    assert (workspace / "build" / "Iluvatar_BI150").is_dir()
