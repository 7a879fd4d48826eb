"""The record of what ``inv unpatch`` laid over a checkout, and the lock that guards it.

One JSON file per backend in the tool's state folder (inside ``.git``, never committed):
``<state>/overlay/<backend>.json`` (schema ``overlay-state``) beside the laid index
``<backend>.index`` and the lock ``<backend>.lock``. See docs/developer-workflow.md.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flagscale.core.atomic import write_atomically
from flagscale.core.errors import FlagScaleError
from flagscale.overlay.checkout_state import State

__all__ = [
    "MODES",
    "LaidRecord",
    "StatePaths",
    "backend_lock",
    "fingerprint",
    "state_paths",
    "well_formed",
]

MODES = ("symlink", "copy")
_REPAIR = "delete it and run `inv unpatch --force`"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class StatePaths:
    """Where one backend's private state lives: the record, the laid index, the lock, and the
    throw-away indexes a run builds trees in (rebuilding the laid index, saving edits)."""

    record: Path
    index: Path
    lock: Path

    @property
    def rebuild_index(self) -> Path:
        return self.index.with_name(self.index.name + ".new")

    @property
    def save_index(self) -> Path:
        return self.index.with_name(self.index.name + ".save")

    @property
    def layer_save_index(self) -> Path:
        return self.index.with_name(self.record.stem + ".layer-save.index")

    @property
    def indexes(self) -> tuple[Path, ...]:
        """Every git index file of this backend's state (each may hold git's ``.lock``)."""
        return (self.index, self.rebuild_index, self.save_index, self.layer_save_index)


def state_paths(state_dir: Path, backend: str) -> StatePaths:
    folder = state_dir / "overlay"
    return StatePaths(
        record=folder / f"{backend}.json",
        index=folder / f"{backend}.index",
        lock=folder / f"{backend}.lock",
    )


def fingerprint(pin: str, mode: str, entries: dict[str, State]) -> str:
    """sha256 of a run's inputs: pin, mode and the layer as laid (sorted)."""
    canonical = json.dumps([pin, mode, sorted(entries.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class LaidRecord:
    """What was laid: ``entries`` maps each path that differs from ``pin`` to its laid state.

    ``fingerprint`` is that of the inputs the entries were laid from ("" when unknown, e.g.
    after ``inv patch`` left the checkout behind the layer); ``sources`` is the stat cache of
    the layer's files; ``pending`` is (pin, entries) being laid while a run is under way.
    """

    backend: str
    pin: str
    mode: str
    entries: dict[str, State]
    fingerprint: str = ""
    sources: dict[str, list] = field(default_factory=dict)
    pending: tuple[str, dict[str, State]] | None = None

    @classmethod
    def load(cls, path: Path, backend: str) -> LaidRecord | None:
        """The record at ``path``, or None when there is none (never laid)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        where = str(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FlagScaleError(
                f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}", hint=_REPAIR
            ) from None
        if not well_formed(data):
            from flagscale.core.schema import validate

            validate(data, "overlay-state", f"{where} ({_REPAIR})")
            raise FlagScaleError(f"{where}: not a laid-state record", hint=_REPAIR)
        if data["backend"] != backend:
            raise FlagScaleError(
                f"{where}: records backend {data['backend']!r}, not {backend!r}", hint=_REPAIR
            )
        pending = data["pending"]
        return cls(
            backend=backend,
            pin=data["pin"],
            mode=data["mode"],
            entries=_states(data["entries"]),
            fingerprint=data["fingerprint"],
            sources=data["sources"],
            pending=(pending["pin"], _states(pending["entries"])) if pending else None,
        )

    def to_json(self) -> str:
        pending = None
        if self.pending is not None:
            pending = {"pin": self.pending[0], "entries": _lists(self.pending[1])}
        data = {
            "version": 1,
            "backend": self.backend,
            "pin": self.pin,
            "mode": self.mode,
            "fingerprint": self.fingerprint,
            "entries": _lists(self.entries),
            "sources": dict(sorted(self.sources.items())),
            "pending": pending,
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        """Write the record beside its place and rename it in (skipped when unchanged)."""
        text = self.to_json()
        try:
            if path.read_text(encoding="utf-8") == text:
                return
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        write_atomically(path, text.encode("utf-8"))


def _states(data: dict[str, list[str]]) -> dict[str, State]:
    return {path: (value[0], value[1]) for path, value in data.items()}


def _lists(entries: dict[str, State]) -> dict[str, list[str]]:
    return {path: [kind, value] for path, (kind, value) in sorted(entries.items())}


@contextmanager
def backend_lock(path: Path, backend: str) -> Iterator[None]:
    """Hold an exclusive lock for one backend's checkout; released even on ``kill -9``."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise FlagScaleError(
                f"{backend}: another `inv unpatch` or `inv patch` is working on third_party/"
                f"{backend}",
                hint="wait for it to finish",
            ) from None
        yield
    finally:
        os.close(descriptor)


def well_formed(data: object) -> bool:
    """The schema ``overlay-state`` checked in plain Python: a record is read on every run and
    jsonschema takes ~1 ms per entry. On False the caller asks jsonschema for the message."""
    keys = {"version", "backend", "pin", "mode", "fingerprint", "entries", "sources", "pending"}
    if not isinstance(data, dict) or set(data) != keys:
        return False
    pending = data["pending"]
    return (
        data["version"] == 1
        and type(data["version"]) is int
        and isinstance(data["backend"], str)
        and data["backend"] != ""
        and _sha1(data["pin"])
        and data["mode"] in MODES
        and isinstance(data["fingerprint"], str)
        and (data["fingerprint"] == "" or _hex(data["fingerprint"], 64))
        and _entries(data["entries"])
        and _sources(data["sources"])
        and (
            pending is None
            or (
                isinstance(pending, dict)
                and set(pending) == {"pin", "entries"}
                and _sha1(pending["pin"])
                and _entries(pending["entries"])
            )
        )
    )


def _hex(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and _HEX.issuperset(value)


def _sha1(value: object) -> bool:
    return _hex(value, 40)


def _entries(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    for item in value.values():
        if not isinstance(item, list) or len(item) != 2:
            return False
        kind, detail = item
        if kind in ("file", "exec"):
            if not _sha1(detail):
                return False
        elif kind == "link":
            if not isinstance(detail, str) or not detail:
                return False
        elif kind != "deleted" or detail != "":
            return False
    return True


def _sources(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    for item in value.values():
        if not isinstance(item, list) or len(item) != 5 or not _sha1(item[4]):
            return False
        if not all(type(number) is int for number in item[:4]):
            return False
    return True
