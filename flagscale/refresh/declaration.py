"""Rewriting one release backend's entry in ``backends/backends.yaml``, comments and all.

A pin move changes ``version``, ``filename``, ``sha256``, ``strip_prefix`` and ``pin`` of one
backend. The file is edited in place, value by value, at the positions YAML's composer reports,
keeping every other byte (comments, order, quoting style): moving the pin back gives the
original file back, byte for byte. A ``url:`` naming the old archive is removed (pip finds the
new one).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import parse_document, validate
from flagscale.upstream.workspace import DECLARATION, ReleaseSource

__all__ = ["ReleaseEdit", "with_release"]

_KEYS = ("version", "filename", "sha256", "strip_prefix")


@dataclass(frozen=True)
class ReleaseEdit:
    """The new text of the declaration, and notes on what else changed."""

    text: str
    notes: tuple[str, ...]


def with_release(text: str, backend: str, source: ReleaseSource, pin: str) -> ReleaseEdit:
    """``text`` (the declaration) with ``backend`` moved to ``source`` at ``pin``."""
    root = _compose(text)
    entry = _child(_child(root, "backends"), backend)
    source_node = _child(entry, "source")
    values = {
        "version": source.version,
        "filename": source.filename,
        "sha256": source.sha256,
        "strip_prefix": source.strip_prefix,
    }
    edits: list[tuple[int, int, str]] = []
    notes: list[str] = []
    for key in _KEYS:
        found = _pair(source_node, key)
        value = values[key]
        if found is None and value is not None:
            edits.append(_insertion(text, source_node, key, value))
        elif found is not None and value is None:
            edits.append(_removal(text, found))
        elif found is not None:
            edits.append(_replacement(found[1], value))
    url = _pair(source_node, "url")
    if url is not None:
        edits.append(_removal(text, url))
        notes.append(f"removed the url of the old archive ({url[1].value}); pip finds the new one")
    pin_node = _pair(entry, "pin")
    if pin_node is None:
        raise FlagScaleError(f"{DECLARATION}: backend {backend} has no pin to move")
    edits.append(_replacement(pin_node[1], pin))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    validate(parse_document(text, DECLARATION), "workspace", DECLARATION)
    return ReleaseEdit(text, tuple(notes))


def _compose(text: str) -> yaml.Node:
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise FlagScaleError(f"{DECLARATION}: not valid YAML: {exc}") from None
    if not isinstance(node, yaml.MappingNode):
        raise FlagScaleError(f"{DECLARATION}: not a mapping")
    return node


def _pair(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        raise FlagScaleError(
            f"{DECLARATION}: expected a mapping at line {node.start_mark.line + 1}"
        )
    for key_node, value_node in node.value:
        if key_node.value == key:
            return key_node, value_node
    return None


def _child(node: yaml.Node, key: str) -> yaml.Node:
    found = _pair(node, key)
    if found is None:
        raise FlagScaleError(f"{DECLARATION}: no {key!r} at line {node.start_mark.line + 1}")
    return found[1]


def _scalar(value: str, style: str | None) -> str:
    """``value`` written the way the old value was: double-quoted, single-quoted or plain."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    plain = yaml.safe_load(value) if value else None
    if style == '"' or not isinstance(plain, str) or plain != value or ":" in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _replacement(node: yaml.Node, value: str) -> tuple[int, int, str]:
    if not isinstance(node, yaml.ScalarNode):
        raise FlagScaleError(f"{DECLARATION}: line {node.start_mark.line + 1} is not a value")
    return node.start_mark.index, node.end_mark.index, _scalar(value, node.style)


def _removal(text: str, pair: tuple[yaml.Node, yaml.Node]) -> tuple[int, int, str]:
    """The whole lines of a ``key: value`` pair (block style)."""
    key, value = pair
    start = text.rfind("\n", 0, key.start_mark.index) + 1
    end = text.find("\n", value.end_mark.index)
    return start, len(text) if end < 0 else end + 1, ""


def _insertion(text: str, mapping: yaml.Node, key: str, value: str) -> tuple[int, int, str]:
    """A ``key: value`` line after the mapping's last pair, at its indentation."""
    last_key, last_value = mapping.value[-1]
    end = text.find("\n", last_value.end_mark.index)
    position = len(text) if end < 0 else end + 1
    indent = " " * last_key.start_mark.column
    return position, position, f"{indent}{key}: {_scalar(value, None)}\n"
