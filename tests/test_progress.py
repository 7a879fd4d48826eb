"""Progress lines: the steps of a long operation and how much of a download has arrived."""

from __future__ import annotations

import hashlib
import io
import urllib.request
from pathlib import Path

import pytest

from flagscale.core.progress import Progress
from flagscale.core.transfer import copy_stream


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[str]:
    return [line.split(" (+")[0] for line in stream.getvalue().splitlines()]


def test_a_log_gets_a_line_at_the_start_each_quarter_and_the_end() -> None:
    log = io.StringIO()
    progress = Progress("demo", total=2, stream=log)
    meter = []
    data = bytes(5 << 20)  # five chunks of 1 MiB
    digest = copy_stream(
        io.BytesIO(data),
        io.BytesIO(),
        total=len(data),
        meter=lambda done, total: (meter.append(done), progress.transfer("getting a", done, total)),
    )
    assert digest == hashlib.sha256(data).hexdigest()
    assert meter == [0, 1 << 20, 2 << 20, 3 << 20, 4 << 20, 5 << 20]
    assert lines(log) == [
        "demo: getting a: 0 B of 5.0 MiB (0%)",
        "demo: getting a: 2.0 MiB of 5.0 MiB (40%)",
        "demo: getting a: 3.0 MiB of 5.0 MiB (60%)",
        "demo: getting a: 4.0 MiB of 5.0 MiB (80%)",
        "demo: getting a: 5.0 MiB of 5.0 MiB (100%)",
    ]


def test_an_unknown_size_is_shown_as_bytes_so_far() -> None:
    log = io.StringIO()
    progress = Progress("demo", stream=log)
    for done in (0, 1 << 20, 65 << 20, 70 << 20, 129 << 20):
        progress.transfer("getting b", done, None)
    assert lines(log) == [
        "demo: getting b: 0 B",
        "demo: getting b: 65.0 MiB",
        "demo: getting b: 129.0 MiB",
    ]


def test_a_terminal_line_is_rewritten_and_always_ends_at_100_percent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    screen = Terminal()
    progress = Progress("demo", stream=screen)
    for done in range(0, 3001, 1):
        progress.transfer("getting c", done, 3000)
    shown = screen.getvalue().split("\r\x1b[2K")[1:]
    assert "\n" not in screen.getvalue()
    assert shown[0] == "demo: getting c: 0 B of 2.9 KiB (0%)"
    assert shown[-1] == "demo: getting c: 2.9 KiB of 2.9 KiB (100%)"
    assert len(shown) < 3001  # followed, not flooded


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (3 << 20, "3.0 MiB"), (5 << 30, "5.0 GiB")],
)
def test_sizes_read_as_people_read_them(count: int, text: str) -> None:
    log = io.StringIO()
    Progress("s", stream=log).transfer("x", count, None)
    assert lines(log) == [f"s: x: {text}"]


def test_a_file_url_download_is_measured_from_its_size(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 3000)
    seen: list[tuple[int, int | None]] = []
    with urllib.request.urlopen(source.as_uri()) as reply, (tmp_path / "b").open("wb") as out:
        copy_stream(reply, out, total=3000, meter=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 3000), (3000, 3000)]
    assert (tmp_path / "b").read_bytes() == source.read_bytes()
