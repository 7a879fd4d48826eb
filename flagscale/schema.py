"""Reading YAML/JSON files checked against the JSON Schemas in ``schemas/``.

Errors name the file, the path inside it and the offending value, in one line.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from flagscale.errors import FlagScaleError

__all__ = ["SCHEMA_DIR", "SchemaError", "load_document", "parse_document", "schema_for", "validate"]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


class SchemaError(FlagScaleError):
    """A document does not match its schema, or cannot be parsed."""


@cache
def schema_for(name: str) -> dict[str, Any]:
    """The schema ``schemas/<name>.schema.json``."""
    path = SCHEMA_DIR / f"{name}.schema.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FlagScaleError(f"schema {path} is missing; reinstall the tool") from exc


def validate(data: Any, schema_name: str, source: str) -> Any:
    """Check ``data`` against a schema; ``source`` names the file in the error. Returns data."""
    validator = Draft202012Validator(schema_for(schema_name))
    error = best_match(validator.iter_errors(data))
    if error is not None:
        raise SchemaError(_describe_error(error, source, schema_name))
    return data


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
