"""FlagScale's build system: workspaces, base layers, vendor patch sets and isolated builds."""

from __future__ import annotations

__version__ = "0.1.0"
