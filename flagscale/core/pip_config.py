"""pip's effective settings, read the way pip reads them: ``python -m pip config list``.

Both uses of pip's configuration read it here: uv's sources for nox (pip's ``install`` section)
and release archives found through pip's package sources (its ``download`` section).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

__all__ = ["TRUE", "parse_config_list", "pip_settings"]

TRUE = {"1", "true", "yes", "on", "y"}  # what pip takes as "on" for a flag setting
_ALIASES = {"default-timeout": "timeout"}  # pip accepts either name for --timeout


def pip_settings(command: str, python: str = sys.executable) -> dict[str, str]:
    """pip's settings for ``pip <command>`` (``install``, ``download``), as ``python`` reads them.

    ``{"find-links": "/wheels", ...}``: the config files' ``[global]``, then their ``[<command>]``
    section, then ``PIP_*`` variables, each overriding the one before. Where ``python`` has no
    pip, only the ``PIP_*`` variables count.
    """
    try:
        result = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        result = None
    if result is None or result.returncode != 0:
        text = "\n".join(
            f":env:.{key[4:].lower().replace('_', '-')}={value!r}"
            for key, value in os.environ.items()
            if key.startswith("PIP_")
        )
        return parse_config_list(text, command)
    return parse_config_list(result.stdout, command)


def parse_config_list(text: str, command: str) -> dict[str, str]:
    """``pip config list`` output (``section.name='value'`` lines), merged for ``command``."""
    sections = ("global", command, ":env:")
    by_section: dict[str, dict[str, str]] = {section: {} for section in sections}
    for line in text.splitlines():
        key, sep, literal = line.partition("=")
        section, dot, name = key.rpartition(".")
        if not sep or not dot or section not in by_section:
            continue
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            continue
        name = name.strip().lstrip("-").lower().replace("_", "-")
        by_section[section][_ALIASES.get(name, name)] = str(value)
    merged: dict[str, str] = {}
    for section in sections:
        merged.update(by_section[section])
    return merged
