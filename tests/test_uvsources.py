"""nox on uv: uv installs from where pip is set up to install from, and nox falls back to pip.

Real pip reads real configuration files; real uv installs a wheel that only pip's configuration
names; real nox runs the noxfile's ``validate`` session in a copy of this repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from uv import find_uv_bin

from flagscale.ci.uvsources import uv_environment
from flagscale.core.errors import FlagScaleError
from flagscale.core.pip_config import parse_config_list, pip_settings
from tests.toolcopy import copy_tool
from tests.wheels import make_wheel

UV = find_uv_bin()


@pytest.fixture
def pip_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pip configuration file of the test's own (PIP_CONFIG_FILE), no PIP_*/UV_* variables."""
    for name in list(os.environ):
        if name.startswith(("PIP_", "UV_")):
            monkeypatch.delenv(name)
    path = tmp_path / "pip.conf"
    path.write_text("")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(path))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return path


def test_pip_settings_are_what_pip_reads_files_install_section_then_variables(
    pip_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip_config.write_text(
        "[global]\nfind-links = /from/global\nextra-index-url = https://a.invalid/simple\n"
        "  https://b.invalid/simple\nindex-url = https://mirror.invalid/simple\n"
        "[install]\nfind-links = /from/install\n"
        "[download]\nfind-links = /from/download\n"
    )
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "7")
    settings = pip_settings("install")
    assert settings["find-links"] == "/from/install"
    assert settings["extra-index-url"].split() == [
        "https://a.invalid/simple",
        "https://b.invalid/simple",
    ]
    assert settings["index-url"] == "https://mirror.invalid/simple"
    assert settings["timeout"] == "7"
    monkeypatch.setenv("PIP_FIND_LINKS", "/from/variable")
    assert pip_settings("install")["find-links"] == "/from/variable"


def test_a_python_without_pip_has_only_the_variables(
    tmp_path: Path, pip_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip_config.write_text("[global]\nfind-links = /from/file\n")
    assert "find-links" not in pip_settings("install", str(tmp_path / "no-python"))  # no file
    monkeypatch.setenv("PIP_FIND_LINKS", "/from/variable")
    settings = pip_settings("download", sys.executable + "-not-there")
    assert settings["find-links"] == "/from/variable"


def test_parse_config_list_ignores_lines_it_cannot_read() -> None:
    text = (
        "global.find-links='/a'\n"
        "install.find-links='/b'\n"
        ":env:.index-url='https://i.invalid/simple'\n"
        "global.index-url='https://ignored.invalid/simple'\n"
        "download.proxy='http://ignored.invalid'\n"
        "global.cert=not-a-literal\n"
        "a line without an equals sign\n"
    )
    assert parse_config_list(text, "install") == {
        "find-links": "/b",
        "index-url": "https://i.invalid/simple",
    }


def test_uv_variables_for_each_pip_setting() -> None:
    settings = {
        "index-url": "https://mirror.invalid/simple",
        "extra-index-url": "https://a.invalid/simple\n https://b.invalid/simple",
        "find-links": "/wheels  /more-wheels",
        "no-index": "true",
        "constraint": "/c1.txt /c2.txt",
        "trusted-host": "mirror.invalid other.invalid",
        "cert": "/ca.pem",
        "client-cert": "/client.pem",
        "proxy": "http://proxy.invalid:3128",
        "timeout": "60",
        "disable-pip-version-check": "1",
    }
    assert uv_environment(settings, {}) == {
        "UV_INDEX_URL": "https://mirror.invalid/simple",
        "UV_EXTRA_INDEX_URL": "https://a.invalid/simple https://b.invalid/simple",
        "UV_FIND_LINKS": "/wheels,/more-wheels",
        "UV_NO_INDEX": "1",
        "UV_CONSTRAINT": "/c1.txt /c2.txt",
        "UV_INSECURE_HOST": "mirror.invalid other.invalid",
        "SSL_CERT_FILE": "/ca.pem",
        "SSL_CLIENT_CERT": "/client.pem",
        "HTTPS_PROXY": "http://proxy.invalid:3128",
        "HTTP_PROXY": "http://proxy.invalid:3128",
        "UV_HTTP_TIMEOUT": "60",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
    }


def test_variables_the_user_set_win_and_false_no_index_is_left_out() -> None:
    settings = {"find-links": "/wheels", "no-index": "false", "proxy": "http://p.invalid"}
    environ = {"UV_FIND_LINKS": "/mine", "UV_INDEX_STRATEGY": "first-index", "HTTP_PROXY": "x"}
    assert uv_environment(settings, environ) == {"HTTPS_PROXY": "http://p.invalid"}
    assert uv_environment({}, {}) == {"UV_INDEX_STRATEGY": "unsafe-best-match"}


def test_a_path_uv_would_split_is_a_one_line_error() -> None:
    with pytest.raises(FlagScaleError) as failure:
        uv_environment({"find-links": "/wheels/a,b"}, {})
    assert str(failure.value) == (
        "pip's find-links '/wheels/a,b' holds ',', which uv reads as a separator in"
        " UV_FIND_LINKS (set UV_FIND_LINKS yourself, or run nox with --force-venv-backend"
        " virtualenv)"
    )


def uv_install(venv: Path, requirement: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [UV, "pip", "install", "--python", str(venv), requirement],
        env={**os.environ, "UV_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_uv_installs_a_wheel_only_pips_configuration_names(
    tmp_path: Path, pip_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "only pip knows"
    make_wheel(wheels, "fs-local-only", "1.0")
    make_wheel(wheels, "fs-local-only", "2.0")
    pip_config.write_text(f"[global]\nfind-links = {wheels.as_uri()}\nno-index = yes\n")
    (tmp_path / "c.txt").write_text("fs-local-only<2\n")
    monkeypatch.setenv("PIP_CONSTRAINT", str(tmp_path / "c.txt"))
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", str(venv)], check=True, env=os.environ.copy())

    alone = uv_install(venv, "fs-local-only", {})
    assert alone.returncode != 0  # uv on its own does not read pip's configuration
    env = uv_environment(pip_settings("install"), os.environ)
    done = uv_install(venv, "fs-local-only", env)
    assert done.returncode == 0, done.stderr
    assert "+ fs-local-only==1.0" in done.stderr  # the constraint pip has, too


# --- the noxfile, for real ----------------------------------------------------------------------


def nox_validate(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nox", "-s", "validate", "-f", str(root / "noxfile.py")],
        cwd=root,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("NOX")}, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_nox_makes_its_environment_with_uv_from_pips_sources(
    tmp_path: Path, pip_config: Path
) -> None:
    root = copy_tool(tmp_path / "FlagScale")
    # A dependency only pip's configuration can find, as torch's CPU build on a local disk.
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "fs-local-only", "1.0")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "dependencies = [\n", 'dependencies = [\n  "fs-local-only",\n', 1
        )
    )
    pip_config.write_text(f"[global]\nfind-links = {wheels}\n")

    result = nox_validate(root)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "nox > Creating virtual environment (uv)" in output
    assert "nox > uv pip install -e ." in output
    assert "checked " in output


@pytest.mark.slow
def test_nox_falls_back_to_virtualenv_and_pip_without_uv(tmp_path: Path, pip_config: Path) -> None:
    root = copy_tool(tmp_path / "FlagScale")
    result = nox_validate(root, UV=str(tmp_path / "no-uv-here" / "uv"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "nox > Creating virtual environment (virtualenv)" in output
    assert "nox > python -m pip install -e ." in output
    assert "checked " in output
