"""A declared shape accepts exactly what its published schema allows.

Values generated from each shape's OpenAPI schema must pass the shape's own
check (documented means accepted), and values the schema forbids at a bound
must be refused with the field's path.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema

from patrd.model import spec_shapes
from patrd.model.errors import SpecError
from patrd.model.shape import Int, Num, Obj, Raw, Str

SHAPES = ["SCALE", "RESOURCES", "PROBE", "SECURITY", "VOLUME", "JOB", "NAME", "SECRET_REF"]


def deep_check(shape: Any, value: Any, path: str) -> None:
    """The shape's check, and for an object each present field's."""
    shape.check(value, path)
    if isinstance(shape, Obj) and isinstance(value, dict):
        for key, item in value.items():
            if item is None and getattr(shape.fields[key], "nullable", False):
                continue
            deep_check(shape.fields[key], item, f"{path}.{key}")


@pytest.mark.parametrize("name", SHAPES)
def test_what_the_schema_allows_the_check_accepts(name: str) -> None:
    shape = getattr(spec_shapes, name)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(from_schema(shape.schema()))
    def accepted(value: Any) -> None:
        deep_check(shape, value, "x")

    accepted()


def _bounded(shape: Obj) -> list[tuple[str, Int | Num]]:
    return [
        (k, f) for k, f in shape.fields.items() if isinstance(f, Int | Num) and f.hi is not None
    ]


@pytest.mark.parametrize("name", ["SCALE", "RESOURCES", "PROBE", "SECURITY", "VOLUME", "JOB"])
def test_past_a_documented_bound_the_check_refuses_by_path(name: str) -> None:
    shape = getattr(spec_shapes, name)
    bounded = _bounded(shape)
    assert bounded
    for key, field in bounded:
        schema = shape.schema()["properties"][key]
        assert schema["maximum"] == field.hi
        above = schema["maximum"] + 1
        with pytest.raises(SpecError) as refused:
            shape.field({key: above}, key, "x")
        assert refused.value.field == f"x.{key}"


def test_unknown_fields_are_refused_and_undocumented() -> None:
    shape = spec_shapes.SCALE
    assert shape.schema()["additionalProperties"] is False
    with pytest.raises(SpecError) as refused:
        shape.check({"min": 1, "maxx": 2}, "scale")
    assert refused.value.field == "scale.maxx"
    assert "allowed: max, min, target_cpu" in refused.value.message


def test_documented_name_length_is_the_accepted_one() -> None:
    schema = spec_shapes.CREATE.schema()["properties"]["name"]
    assert schema["maxLength"] == spec_shapes.MAX_NAME == 57
    spec_shapes.NAME.check("a" * 57, "name")
    with pytest.raises(SpecError):
        spec_shapes.NAME.check("a" * 58, "name")


def test_raw_and_str_state_their_schema() -> None:
    assert Raw({"type": "array"}).schema() == {"type": "array"}
    assert Str("[a-z]+", max_length=3).schema() == {
        "type": "string",
        "pattern": "^(?:[a-z]+)$",
        "maxLength": 3,
    }
