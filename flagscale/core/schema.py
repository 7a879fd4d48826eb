"""Reading YAML/JSON files checked against the JSON Schemas in ``schemas/``.

Errors name the file, the path inside it and the offending value, in one line.

Importing jsonschema costs about a tenth of a second, on every command. So a document found
valid is remembered in the user's cache (``<cache>/valid/<digest>``, an empty file; the digest
covers the schema's name and text and the document's data) and not checked again while both
stay the same. Only successes are remembered: an error always comes from jsonschema itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flagscale.core.cachedir import cache_dir
from flagscale.core.errors import FlagScaleError

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

__all__ = ["SCHEMA_DIR", "SchemaError", "load_document", "parse_document", "schema_for", "validate"]

# schemas/ at the repository root; flagscale/schemas links to it so that an installed copy has it.
SCHEMA_DIR = (Path(__file__).resolve().parents[1] / "schemas").resolve()


class SchemaError(FlagScaleError):
    """A document does not match its schema, or cannot be parsed."""


@cache
def _schema_text(name: str) -> str:
    path = SCHEMA_DIR / f"{name}.schema.json"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FlagScaleError(f"schema {path} is missing; reinstall the tool") from exc


@cache
def schema_for(name: str) -> dict[str, Any]:
    """The schema ``schemas/<name>.schema.json``."""
    return json.loads(_schema_text(name))


def validate(data: Any, schema_name: str, source: str) -> Any:
    """Check ``data`` against a schema; ``source`` names the file in the error. Returns data."""
    marker = _valid_marker(data, schema_name)
    if marker.exists():
        return data
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(schema_for(schema_name))
    error = best_match(validator.iter_errors(data))
    if error is not None:
        raise SchemaError(_describe_error(error, source, schema_name))
    _remember(marker)
    return data


def _valid_marker(data: Any, schema_name: str) -> Path:
    # repr tells 1, 1.0, True and "1" apart, where JSON would not tell {1: x} from {"1": x};
    # a repr that differs between runs (an object's address) only costs a fresh check.
    digest = hashlib.sha256()
    for part in ("valid-v1", schema_name, _schema_text(schema_name), repr(data)):
        digest.update(part.encode("utf-8", "backslashreplace") + b"\0")
    return cache_dir() / "valid" / digest.hexdigest()


def _remember(marker: Path) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644))
    except OSError:
        pass  # a read-only cache only means checking again next time


def parse_document(text: str, source: str) -> Any:
    """Parse YAML (a superset of JSON) safely, naming the file and line on a syntax error."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SchemaError(f"{where}: not valid YAML: {problem}") from exc


def load_document(path: Path, schema_name: str, *, display: str | None = None) -> Any:
    """Read, parse and validate a YAML or JSON file."""
    source = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SchemaError(f"{source}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{source}: not UTF-8 text") from exc
    return validate(parse_document(text, source), schema_name, source)


def _describe_error(error: ValidationError, source: str, schema_name: str) -> str:
    location = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    location = location.lstrip(".") or "(top level)"
    return f"{source}: at {location}: {_reason(error)} (schema {schema_name})"


def _reason(error: ValidationError) -> str:
    """What is wrong, naming the offending value once."""
    value = _short(error.instance)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(repr(k) for k in error.instance if k not in allowed)
        return f"unknown key {', '.join(unknown)} (allowed: {', '.join(allowed)})"
    if error.validator == "required":
        return error.message
    if error.validator == "type":
        return f"{value} should be of type {error.validator_value}"
    if error.validator == "pattern":
        return f"{value} does not match {error.validator_value}"
    message = error.message.split("\n")[0]
    return message if message.startswith(value[:20]) else f"{value} {message}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
