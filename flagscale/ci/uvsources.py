"""uv installs from where pip installs: pip's configured sources, handed to uv as its variables.

nox makes its environments with uv where uv is installed (``uv|virtualenv``, much faster than
virtualenv and pip). uv reads its own configuration, not pip's, so a machine whose pip finds
packages through ``pip.conf`` or ``PIP_*`` variables (a mirror, a local folder of wheels such as a
CPU build of torch, constraints, a company certificate) would get different packages from uv.
This module reads pip's effective settings (``python -m pip config list``, the same files and
variables pip reads) and turns the ones that say where packages come from into uv's environment
variables, so both install the same things. A ``UV_*`` variable the user set wins.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping

from flagscale.core.errors import FlagScaleError
from flagscale.core.pip_config import TRUE, pip_settings

__all__ = ["PIP_TO_UV", "uv_environment", "uv_install_environment"]

# pip setting (its long option name, as pip's config files spell it) -> uv variable, and how uv
# splits several values in that variable ("" for a single value). pip splits list settings on
# whitespace.
PIP_TO_UV: dict[str, tuple[str, str]] = {
    "index-url": ("UV_INDEX_URL", ""),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "no-index": ("UV_NO_INDEX", ""),
    "constraint": ("UV_CONSTRAINT", " "),
    "trusted-host": ("UV_INSECURE_HOST", " "),
    "cert": ("SSL_CERT_FILE", ""),
    "client-cert": ("SSL_CLIENT_CERT", ""),
    "proxy": ("HTTPS_PROXY", ""),
    "timeout": ("UV_HTTP_TIMEOUT", ""),
}
_LIST_SETTINGS = {"extra-index-url", "find-links", "constraint", "trusted-host"}
# pip, like uv's default index strategy would not, takes the best version from all sources.
_STRATEGY = ("UV_INDEX_STRATEGY", "unsafe-best-match")


def uv_environment(settings: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """uv's variables for pip's ``settings``; variables already set in ``environ`` are left out."""
    env: dict[str, str] = {}
    for name, (variable, separator) in PIP_TO_UV.items():
        value = settings.get(name, "").strip()
        if not value or variable in environ:
            continue
        if name == "no-index":
            if value.lower() in TRUE:
                env[variable] = "1"
            continue
        if name in _LIST_SETTINGS:
            env[variable] = _join(name, value.split(), separator)
        else:
            env[variable] = value
    if env.get("HTTPS_PROXY") and "HTTP_PROXY" not in environ:
        env["HTTP_PROXY"] = env["HTTPS_PROXY"]
    variable, strategy = _STRATEGY
    if variable not in environ:
        env[variable] = strategy
    return env


def _join(name: str, values: list[str], separator: str) -> str:
    for value in values:
        if separator in value:
            variable = PIP_TO_UV[name][0]
            raise FlagScaleError(
                f"pip's {name} {value!r} holds {separator!r}, which uv reads as a separator"
                f" in {variable}",
                hint=f"set {variable} yourself, or run nox with --force-venv-backend virtualenv",
            )
    return separator.join(values)


@functools.cache
def uv_install_environment(python: str = sys.executable) -> dict[str, str]:
    """The variables that make ``uv pip install`` use the sources ``python``'s pip uses."""
    return uv_environment(pip_settings("install", python), os.environ)
