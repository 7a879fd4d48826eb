"""The patch coverage page in real headless Chromium: every hunk with its status, every added
line coloured by how far it got.

Chromium comes from Debian's package (``.ci/run`` installs it when /usr/bin/chromium is absent).
Without it the test is skipped locally; in CI (``CI`` set) its absence is a failure.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepos import inv
from tests.isolation import isolated_git
from tests.test_matrix_browser import count_colour, read_png, run_chromium
from tests.trust_fixtures import DEVICE, make_coverage_workspace

pytestmark = pytest.mark.slow

COLOURS = {
    "executed": "#d8f3dc",
    "imported_only": "#fff1c2",
    "not_reached": "#ffd9d9",
    "not_measurable": "#ececec",
}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("coverage-browser")
    with isolated_git(tmp_path_factory.mktemp("coverage-browser-home")):
        root, _commit = make_coverage_workspace(tmp)
        inv(root, "build", "--device", DEVICE)
        inv(root, "coverage", "--device", DEVICE)
    return {"html": root / "logs" / "coverage" / DEVICE / "coverage.html", "tmp": tmp}


class HunkReader(HTMLParser):
    """Each hunk section of the rendered DOM: its file, status and the classes of its + lines."""

    def __init__(self) -> None:
        super().__init__()
        self.hunks: list[dict[str, Any]] = []
        self.heading = ""
        self.in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and "hunk" in (values.get("class") or ""):
            self.hunks.append(
                {"file": values["data-file"], "status": values["data-status"], "added": []}
            )
        elif tag == "tr" and self.hunks and "added" in (values.get("class") or "").split():
            self.hunks[-1]["added"].append(values["class"].split()[1])
        elif tag == "h1":
            self.in_h1 = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1":
            self.in_h1 = False

    def handle_data(self, data: str) -> None:
        if self.in_h1:
            self.heading += data


def test_chromium_shows_every_hunk_with_its_status(page: dict[str, Any]) -> None:
    result = run_chromium(page["tmp"], "--dump-dom", page["html"].as_uri())
    reader = HunkReader()
    reader.feed(result.stdout)
    assert reader.heading == f"Patch coverage: {DEVICE}"
    shown = [(h["file"].rsplit("/", 1)[-1], h["status"]) for h in reader.hunks]
    assert shown == [
        ("README.md", "not_measurable"),
        ("helpers.py", "executed"),
        ("helpers.py", "imported_only"),
        ("knobs.py", "executed"),
        ("never.py", "not_reached"),
        ("weights.bin", "not_measurable"),
    ]
    lines = {(h["file"].rsplit("/", 1)[-1], h["status"]): h["added"] for h in reader.hunks}
    assert lines[("helpers.py", "executed")] == ["executed"]
    assert lines[("helpers.py", "imported_only")] == ["imported_only"]
    assert lines[("never.py", "not_reached")] == ["not_reached"]
    assert lines[("README.md", "not_measurable")] == ["not_measurable"]


def test_screenshot_shows_the_four_colours(page: dict[str, Any]) -> None:
    shot = page["tmp"] / "coverage.png"
    run_chromium(
        page["tmp"], f"--screenshot={shot}", "--window-size=1200,1400", page["html"].as_uri()
    )
    width, height, rows = read_png(shot)
    assert (width, height) == (1200, 1400)
    counts = {status: count_colour(rows, colour) for status, colour in COLOURS.items()}
    assert all(count > 1000 for count in counts.values()), counts


def test_the_page_needs_nothing_from_outside(page: dict[str, Any]) -> None:
    text = Path(page["html"]).read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert "<link" not in text and "src=" not in text
