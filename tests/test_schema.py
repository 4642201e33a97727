"""The JSON Schema is committed and in sync; example plans validate; strictness holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import tuneplan.schemas as S

ROOT = Path(__file__).resolve().parents[1]


def test_committed_schema_in_sync() -> None:
    committed = (ROOT / "schemas" / "plan.schema.json").read_text()
    assert committed == S.plan_json_schema_text(), "run `make schema` and commit schemas/plan.schema.json"


def test_every_field_documented_and_models_strict() -> None:
    seen = set()
    stack = [S.Plan, S.RunResult]
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        assert model.model_config.get("extra") == "forbid", model.__name__
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            for arg in _models_in(field.annotation):
                stack.append(arg)
    assert len(seen) > 10


def _models_in(annotation):
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").rglob("*.json")), ids=lambda p: p.name)
def test_example_plans_validate_and_reference_schema(path: Path) -> None:
    data = json.loads(path.read_text())
    assert "$schema" in data
    ref = data["$schema"]
    if ref.startswith("https://"):  # the CI recipe's plans cite the published schema id
        assert ref == S.SCHEMA_ID
    else:
        assert (path.parent / ref).resolve() == (ROOT / "schemas" / "plan.schema.json").resolve()
    S.load_plan_dict(data)


def test_hardware_is_a_discriminated_union() -> None:
    inp = S.Inputs.model_validate_json(json.dumps(_inputs_dict()))
    assert isinstance(inp.hardware, S.GPUHardware)
    bad = _inputs_dict()
    bad["hardware"]["kind"] = "tpu"
    with pytest.raises(ValidationError) as e:
        S.Inputs.model_validate(bad)
    assert "hardware" in str(e.value)


def test_unknown_keys_rejected() -> None:
    d = _inputs_dict()
    d["task"]["domain"] = "far"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        S.Inputs.model_validate(d)


def _inputs_dict() -> dict:
    from tuneplan.advisor.catalog import get_model

    return {
        "hardware": {"kind": "gpu", "name": "x", "memory_bytes": 24 * 1024**3},
        "model": get_model("gpt2").model_dump(mode="json"),
        "task": {"domain_distance": "near", "forgetting_tolerance": "low"},
    }
