"""Copying a download to a file while hashing it and telling how much has arrived."""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from hashlib import sha256
from typing import BinaryIO

__all__ = ["CHUNK", "Meter", "content_length", "copy_stream"]

CHUNK = 1 << 20

Meter = Callable[[int, "int | None"], None]
"""Told (bytes so far, total bytes or None when the source does not say) after every chunk."""


def copy_stream(
    source: BinaryIO, out: BinaryIO, *, total: int | None = None, meter: Meter | None = None
) -> str:
    """Copy ``source`` to ``out`` chunk by chunk; return the sha256 of what was copied."""
    digest = sha256()
    done = 0
    if meter is not None:
        meter(done, total)
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        out.write(chunk)
        done += len(chunk)
        if meter is not None:
            meter(done, total)
    return digest.hexdigest()


def content_length(headers: Message) -> int | None:
    """The Content-Length a reply announces; None when it says none (or nonsense)."""
    value = headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None
