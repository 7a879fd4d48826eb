"""Smoke case files and golden files: schema and consistency errors name file, path and value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flagscale.core.errors import FlagScaleError
from flagscale.core.schema import SchemaError
from flagscale.runner.config import DEFAULT_ENTRY, Tolerance, load_config
from flagscale.runner.golden import Golden, compare, load_golden, write_golden
from tests.gitrepos import TOOL_ROOT
from tests.smoke_fixtures import case_document, write_case


def test_shipped_case_loads_with_defaults() -> None:
    config = load_config(TOOL_ROOT / "ci" / "smoke" / "gpt_tiny_tp2.yaml")
    assert config.case == "gpt_tiny_tp2"
    assert config.nproc == 2 and config.parallel == {"tensor": 2, "data": 1}
    assert config.entry == DEFAULT_ENTRY and config.backend == "Megatron-LM"
    assert config.model["position_embedding"] == "learned_absolute"
    assert config.monitors.vendor == "auto"
    assert config.job_spec()["protocol"] == 1


def test_fingerprint_follows_loss_shaping_settings_only(tmp_path: Path) -> None:
    case = write_case(tmp_path)
    first = load_config(case).fingerprint()
    write_case(tmp_path, timeout=5, description="other words")
    assert load_config(case).fingerprint() == first
    write_case(tmp_path, train={"steps": 5, "seed": 8})
    assert load_config(case).fingerprint() != first


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"nproc": 3}, "at nproc: 3 must equal parallel.tensor × parallel.data = 2"),
        (
            {
                "parallel": {"tensor": 2, "data": 1},
                "model": {**case_document()["model"], "heads": 3},
            },
            "at model.heads: 3 must be divisible by parallel.tensor = 2",
        ),
        (
            {"model": {**case_document()["model"], "hidden": 9}},
            "at model.hidden: 9 must be divisible by model.heads = 2",
        ),
        (
            {
                "parallel": {"tensor": 2, "data": 1},
                "model": {**case_document()["model"], "vocab": 15},
            },
            "at model.vocab: 15 must be divisible by parallel.tensor = 2",
        ),
        ({"data": {"generator": "arithmetic", "max_stride": 16}}, "at data.max_stride: 16 must be"),
        ({"nproc": "2"}, "at nproc: '2' should be of type integer"),
        ({"tolerance": {"relative": "1e-4", "absolute": 0}}, "at tolerance.relative: '1e-4'"),
        (
            {"train": {"steps": 0, "seed": 1}},
            ("at train.steps: 0", "is less than the minimum of 1"),
        ),
        (
            {"data": {"generator": "zipf"}},
            ("at data.generator: 'zipf'", "is not one of ['arithmetic', 'random']"),
        ),
        (
            {"monitors": {"vendor": "maybe"}},
            ("at monitors.vendor: 'maybe'", "is not one of ['auto', 'required', 'off']"),
        ),
        ({"modle": {}}, "at (top level): "),
        ({"entry": "../outside.py"}, "at entry: unsafe path '../outside.py'"),
    ],
)
def test_bad_case_files_are_refused_with_file_path_and_value(
    tmp_path: Path, overrides: dict, expected: str | tuple[str, ...]
) -> None:
    case = write_case(tmp_path, "bad", **overrides)
    with pytest.raises(FlagScaleError) as failure:
        load_config(case, display="ci/smoke/bad.yaml")
    assert str(failure.value).startswith("ci/smoke/bad.yaml: ")
    for fragment in (expected,) if isinstance(expected, str) else expected:
        assert fragment in str(failure.value)


def test_unknown_key_and_bad_yaml(tmp_path: Path) -> None:
    case = write_case(tmp_path, "bad", modle={})
    with pytest.raises(SchemaError, match=r"at \(top level\): unknown key 'modle' \(allowed: "):
        load_config(case)
    case.write_text("version: 1\nnproc: [\n")
    with pytest.raises(SchemaError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(case)


def test_tolerance_rule() -> None:
    tolerance = Tolerance(relative=1e-3, absolute=1e-6)
    assert tolerance.allows(4.0, 4.0 + 4.0e-3)
    assert not tolerance.allows(4.0, 4.0 + 4.1e-3)
    assert not tolerance.allows(4.0, float("nan"))
    assert str(tolerance) == "relative 0.001, absolute 1e-06"


def _golden(losses: tuple[float, ...]) -> Golden:
    return Golden("Generic_CPU", "tiny", "a" * 64, losses, Tolerance(1e-4, 1e-5), {"torch": "x"})


def test_golden_round_trip_is_byte_stable(tmp_path: Path) -> None:
    path = tmp_path / "hardware" / "Generic_CPU" / "smoke" / "tiny.golden.json"
    golden = _golden((4.5, 4.25, 1e-05))
    write_golden(path, golden)
    first = path.read_bytes()
    assert load_golden(path) == golden
    write_golden(path, load_golden(path))
    assert path.read_bytes() == first
    assert json.loads(first)["tolerance"] == {"absolute": 1e-05, "relative": 0.0001}
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.golden.json"]


def test_golden_refuses_non_finite_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "g.golden.json"
    with pytest.raises(FlagScaleError, match="refusing to record non-finite losses"):
        write_golden(path, _golden((1.0, float("nan"))))
    assert not path.exists()
    document = _golden((1.0, 2.0)).as_document()
    path.write_text(json.dumps({**document, "steps": 3}))
    with pytest.raises(
        SchemaError, match=r"g.golden.json: at steps: 3 does not match the 2 losses"
    ):
        load_golden(path)
    path.write_text(json.dumps({**document, "losses": [1.0, "2"]}))
    with pytest.raises(SchemaError, match=r"at losses\[1\]: '2' should be of type number"):
        load_golden(path)
    path.write_text("{not json")
    with pytest.raises(SchemaError, match=r"g.golden.json:1: not valid JSON"):
        load_golden(path)


def test_compare_finds_the_first_step_outside_tolerance() -> None:
    golden = _golden((4.0, 3.0, 2.0))
    assert compare(golden, (4.0, 3.0002, 2.0)) is None
    divergence = compare(golden, (4.0, 3.01, 2.5))
    assert divergence is not None and divergence.step == 2
    assert str(divergence) == (
        "loss diverges at step 2: expected 3, got 3.01 (|difference| 0.01;"
        " tolerance relative 0.0001, absolute 1e-05)"
    )


def test_schema_files_are_valid_2020_12() -> None:
    from jsonschema import Draft202012Validator

    for name in ("smoke-config", "golden", "smoke-result", "github-workflow"):
        schema = json.loads((TOOL_ROOT / "schemas" / f"{name}.schema.json").read_text())
        Draft202012Validator.check_schema(schema)
    assert yaml.safe_load((TOOL_ROOT / "ci" / "smoke" / "gpt_tiny_tp2.yaml").read_text())
