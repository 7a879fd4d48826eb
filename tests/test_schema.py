"""Schema checks (flagscale/core/schema.py): errors, and remembering documents found valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagscale.core import schema
from flagscale.core.schema import SchemaError, validate
from tests.gitrepos import TOOL_ROOT

VALID = {"Metax_C550": "/builds/Metax_C550"}


def markers() -> list[Path]:
    folder = Path(os.environ["FLAGSCALE_CACHE"]) / "valid"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def validate_in_a_new_process(data: object) -> bool:
    """Validate ``data`` against hetero-map in a new interpreter; True if it imported jsonschema."""
    script = (
        "import json, sys\n"
        "from flagscale.core.schema import validate\n"
        "validate(json.loads(sys.argv[1]), 'hetero-map', 'build/hetero.json')\n"
        "print('jsonschema' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(data)],
        capture_output=True,
        text=True,
        check=True,
        cwd=TOOL_ROOT,
    )
    return result.stdout.strip() == "True"


def test_a_valid_document_is_not_checked_again_by_jsonschema() -> None:
    assert validate(VALID, "hetero-map", "build/hetero.json") is VALID
    assert len(markers()) == 1
    assert validate_in_a_new_process(VALID) is False
    assert validate_in_a_new_process({"Metax_C550": "/elsewhere"}) is True
    assert len(markers()) == 2


def test_errors_are_never_remembered() -> None:
    bad = {"metax": "/builds/metax"}
    for _ in range(2):
        with pytest.raises(SchemaError, match=r"^build/hetero.json: at \(top level\): 'metax'"):
            validate(bad, "hetero-map", "build/hetero.json")
    assert markers() == []


def test_the_same_text_of_another_type_is_checked() -> None:
    validate({"Metax_C550": "1"}, "hetero-map", "build/hetero.json")
    with pytest.raises(SchemaError, match=r"at Metax_C550: 1 should be of type string"):
        validate({"Metax_C550": 1}, "hetero-map", "build/hetero.json")
    with pytest.raises(SchemaError, match=r"at Metax_C550: True should be of type string"):
        validate({"Metax_C550": True}, "hetero-map", "build/hetero.json")


@pytest.fixture
def own_schemas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(schema, "SCHEMA_DIR", tmp_path)
    schema._schema_text.cache_clear()
    schema.schema_for.cache_clear()
    yield tmp_path
    schema._schema_text.cache_clear()
    schema.schema_for.cache_clear()


def test_a_changed_schema_checks_the_document_again(own_schemas: Path) -> None:
    path = own_schemas / "sample.schema.json"
    path.write_text('{"type": "object"}', encoding="utf-8")
    validate({"a": 1}, "sample", "sample.yaml")
    path.write_text('{"type": "object", "required": ["b"]}', encoding="utf-8")
    schema._schema_text.cache_clear()
    schema.schema_for.cache_clear()
    with pytest.raises(SchemaError, match=r"^sample.yaml: at \(top level\): 'b' is a required"):
        validate({"a": 1}, "sample", "sample.yaml")


def test_an_unwritable_cache_only_means_checking_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("FLAGSCALE_CACHE", str(blocker))
    assert validate(VALID, "hetero-map", "build/hetero.json") is VALID
    with pytest.raises(SchemaError, match="should be of type string"):
        validate({"Metax_C550": 1}, "hetero-map", "build/hetero.json")
