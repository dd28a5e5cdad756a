"""Declared shapes: one definition of a JSON value gives its check and its schema.

A shape checks decoded JSON (``check(value, path)``, raising SpecError with
the field's full path and the same words the validator kit uses) and states
itself as an OpenAPI 3.0 schema (``schema()``). The API validates requests
with the shapes (patrd/model/spec.py) and the OpenAPI document publishes
the same shapes (patrd/api/openapi_spec.py), so a bound cannot differ
between what is documented and what is accepted.

Only what one field can know is declared here; rules between fields (a
probe's port among the deployment's ports, scale.max at least scale.min)
stay pure functions next to the parser that needs them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from patrd.model.checks import bool_at, int_at, object_at, reject_unknown, str_at
from patrd.model.errors import SpecError

Schema = dict[str, Any]


def _meta(
    schema: Schema, description: str, default: Any, nullable: bool, extra: Mapping[str, Any]
) -> Schema:
    if description:
        schema["description"] = description
    if default is not None:
        schema["default"] = default
    if nullable:
        schema["nullable"] = True
    schema.update(extra)
    return schema


@dataclass(frozen=True)
class Int:
    """An integer (never a boolean) in ``[lo, hi]``."""

    lo: int | None = None
    hi: int | None = None
    default: int | None = None
    description: str = ""
    range_message: str = ""  # default: "must be from LO to HI"
    nullable: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def check(self, value: Any, path: str) -> int:
        number = int_at(value, path)
        if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
            raise SpecError(path, self.range_message or f"must be from {self.lo} to {self.hi}")
        return number

    def schema(self) -> Schema:
        out: Schema = {"type": "integer"}
        if self.lo is not None:
            out["minimum"] = self.lo
        if self.hi is not None:
            out["maximum"] = self.hi
        return _meta(out, self.description, self.default, self.nullable, self.extra)


@dataclass(frozen=True)
class Num:
    """A number (integer or float, never a boolean) in ``[lo, hi]``."""

    lo: float
    hi: float
    default: float | None = None
    description: str = ""
    type_message: str = "must be a number"
    range_message: str = ""  # default: "must be from LO to HI" (shortest form)

    def check(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(path, self.type_message)
        if not self.lo <= value <= self.hi:
            raise SpecError(path, self.range_message or f"must be from {self.lo:g} to {self.hi:g}")
        return float(value)

    def schema(self) -> Schema:
        out: Schema = {"type": "number", "minimum": self.lo, "maximum": self.hi}
        return _meta(out, self.description, self.default, False, {})


@dataclass(frozen=True)
class Str:
    """A string, optionally matching ``pattern`` (the whole string) and within a length."""

    pattern: str = ""
    min_length: int | None = None
    max_length: int | None = None
    message: str = ""  # why a string that does not match is refused
    default: str | None = None
    description: str = ""
    nullable: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def check(self, value: Any, path: str) -> str:
        text = str_at(value, path)
        short = self.min_length is not None and len(text) < self.min_length
        long = self.max_length is not None and len(text) > self.max_length
        if short or long or (self.pattern and not re.fullmatch(self.pattern, text)):
            raise SpecError(path, self.message or "has the wrong form")
        return text

    def schema(self) -> Schema:
        out: Schema = {"type": "string"}
        if self.pattern:
            out["pattern"] = f"^(?:{self.pattern})$"
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return _meta(out, self.description, self.default, self.nullable, self.extra)


@dataclass(frozen=True)
class Bool:
    default: bool | None = None
    description: str = ""

    def check(self, value: Any, path: str) -> bool:
        return bool_at(value, path)

    def schema(self) -> Schema:
        return _meta({"type": "boolean"}, self.description, self.default, False, {})


@dataclass(frozen=True)
class Raw:
    """A schema stated as is, for values whose check is a parser of its own."""

    stated: Mapping[str, Any]

    def check(self, value: Any, path: str) -> Any:
        return value

    def schema(self) -> Schema:
        return dict(self.stated)


class Shape(Protocol):
    def check(self, value: Any, path: str) -> Any: ...

    def schema(self) -> Schema: ...


@dataclass(frozen=True)
class Obj:
    """A JSON object with known fields; unknown ones are refused, listing the known."""

    fields: Mapping[str, Shape]
    required: tuple[str, ...] = ()
    description: str = ""
    nullable: bool = False
    closed: bool = True

    def check(self, value: Any, path: str) -> Mapping[str, Any]:
        """The object itself (fields are checked by the parser, which knows defaults)."""
        obj = object_at(value, path)
        if self.closed:
            reject_unknown(obj, self.fields.keys(), "" if path == "body" else f"{path}.")
        return obj

    def field(self, obj: Mapping[str, Any], key: str, path: str) -> Any:
        """Check ``obj[key]`` against its declared shape."""
        prefix = "" if path == "body" else f"{path}."
        return self.fields[key].check(obj[key], f"{prefix}{key}")

    def schema(self) -> Schema:
        out: Schema = {
            "type": "object",
            "properties": {name: shape.schema() for name, shape in self.fields.items()},
        }
        if self.closed:
            out["additionalProperties"] = False
        if self.required:
            out["required"] = list(self.required)
        return _meta(out, self.description, None, self.nullable, {})

    def but(self, **changes: Any) -> Obj:
        """The same object with some attributes changed (a nullable or described variant)."""
        return Obj(
            fields=changes.get("fields", self.fields),
            required=changes.get("required", self.required),
            description=changes.get("description", self.description),
            nullable=changes.get("nullable", self.nullable),
            closed=changes.get("closed", self.closed),
        )
