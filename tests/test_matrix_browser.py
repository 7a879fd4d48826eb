"""The matrix page in real headless Chromium: what it shows, rows, statuses and their colours.

Chromium comes from Debian's package (``.ci/run`` installs it when /usr/bin/chromium is absent).
Without it the test is skipped locally; in CI (``CI`` set) its absence is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from flagscale.release.matrix import build_matrix, write_outputs
from flagscale.upstream.workspace import load_workspace
from tests.isolation import isolated_git
from tests.release_fixtures import build_scenario

pytestmark = pytest.mark.slow


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed here (apt-get install chromium); CI installs it")


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp)}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("browser")
    with isolated_git(tmp_path_factory.mktemp("browser-home")):
        scenario = build_scenario(tmp)
        document = build_matrix(
            load_workspace(scenario["rw"].root), results_dir=scenario["results"]
        )
    html = tmp / "matrix.html"
    write_outputs(document, html_path=html)
    return {"html": html, "document": document, "tmp": tmp}


class TableReader(HTMLParser):
    """The rendered DOM's matrix rows: cell texts and the status classes of each row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.cell: list[str] | None = None
        self.heading = ""
        self.in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "tr" and values.get("data-device"):
            self.rows.append({"device": values["data-device"], "cells": [], "classes": []})
        elif tag == "td" and self.rows and self.cell is None:
            self.cell = []
            self.rows[-1]["classes"].append(values.get("class") or "")
        elif tag == "h1":
            self.in_h1 = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None:
            self.rows[-1]["cells"].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.rows:
            self.cell = None
        elif tag == "h1":
            self.in_h1 = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self.in_h1:
            self.heading += data


def test_chromium_shows_every_row_with_its_statuses(page: dict[str, Any]) -> None:
    result = run_chromium(page["tmp"], "--dump-dom", page["html"].as_uri())
    assert "<table" in result.stdout
    reader = TableReader()
    reader.feed(result.stdout)
    assert reader.heading == "FlagScale compatibility matrix"
    rows = [row for row in reader.rows if row["cells"]]
    shown = [(r["cells"][0], r["cells"][1], r["cells"][6]) for r in rows]
    assert shown == [
        ("Clean_A1", "FlagScale", "clean"),
        ("Clean_A1", "Megatron-LM", "clean"),
        ("Conflict_D1", "Megatron-LM", "conflicting"),
        ("Drift_B1", "Megatron-LM", "drifting"),
        ("Drift_C1", "Megatron-LM", "drifting"),
        ("Secret_E1", "Megatron-LM", "unknown"),
    ]
    by_device = {(r["cells"][0], r["cells"][1]): r for r in rows}
    drift = by_device[("Drift_B1", "Megatron-LM")]
    assert drift["cells"][4:6] == ["applies", "conflicts"]
    assert drift["classes"][4:7] == ["status applies", "status conflicts", "status drifting"]
    assert by_device[("Secret_E1", "Megatron-LM")]["cells"][4] == "unknown (encrypted)"
    assert by_device[("Clean_A1", "Megatron-LM")]["cells"][7].startswith("passed (tiny_gpt, ")
    assert by_device[("Drift_B1", "Megatron-LM")]["cells"][7].startswith("failed")
    assert by_device[("Conflict_D1", "Megatron-LM")]["cells"][7] == "none"
    assert "patch failed: megatron/core/b.py" in result.stdout  # the detail row for the drift


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB or RGBA, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    position = 0
    for _ in range(height):
        kind, line = raw[position], bytearray(raw[position + 1 : position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(b for j, b in enumerate(line) if channels == 3 or j % 4 != 3))
        previous = line
    return width, height, rows


def count_colour(rows: list[bytes], hex_colour: str) -> int:
    rgb = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(len(re.findall(re.escape(rgb), row)) for row in rows)


def test_screenshot_shows_the_status_colours(page: dict[str, Any]) -> None:
    shot = page["tmp"] / "matrix.png"
    run_chromium(
        page["tmp"], f"--screenshot={shot}", "--window-size=1400,900", page["html"].as_uri()
    )
    width, height, rows = read_png(shot)
    assert (width, height) == (1400, 900)
    green, amber, red, grey = (
        count_colour(rows, colour) for colour in ("#d8f3dc", "#fff1c2", "#ffd9d9", "#ececec")
    )
    # Cells: clean/applies in green, drifting in amber, conflicts in red, unknown in grey.
    assert green > 2000 and amber > 1000 and red > 2000 and grey > 1000, (green, amber, red, grey)
