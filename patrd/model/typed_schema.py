"""A TypedDict states itself as an OpenAPI 3.0 schema: one declaration types and documents a view.

The API's answers (patrd/model/view_shapes.py) are TypedDicts, so mypy checks
that a builder emits every required key with its type and no other; the
OpenAPI document's schemas are generated from the same classes here, so a
field added, renamed or made nullable is documented by the same edit.

How a Python type reads as a schema:

- ``str``, ``int``, ``float``, ``bool``: string, integer, number, boolean;
- ``X | None``: X's schema, ``nullable``;
- ``Literal["a", "b"]``: a string enum;
- ``list[X]``: an array of X; ``dict[str, X]``: an object of X values
  (``dict[str, Any]``: any object);
- a TypedDict: a ``$ref`` when it is a named component, else the object
  inline (``required`` are its keys not marked ``NotRequired``; its
  docstring, when it has one, is the description);
- ``Annotated[X, Doc(...)]`` adds a description and schema keywords
  (``format``, ``enum``, ``minimum``, ``example``…); ``Ref("Name")`` and
  ``Stated({...})`` replace the schema, for a value declared elsewhere
  (the stored spec, patrd/model/spec_shapes.py) or one no type says well.

Pure, standard library only.
"""

from __future__ import annotations

import copy
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

Schema = dict[str, Any]


class Doc:
    """A field's description and extra schema keywords (``Annotated`` metadata)."""

    __slots__ = ("description", "keywords")

    def __init__(self, description: str = "", **keywords: Any) -> None:
        self.description = description
        self.keywords = keywords

    def apply(self, schema: Schema) -> Schema:
        out = {**schema, **copy.deepcopy(self.keywords)}
        if self.description:
            out["description"] = self.description
        return out


class Ref:
    """The field's schema is the named component (declared elsewhere)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def apply(self, schema: Schema) -> Schema:
        return {"$ref": f"#/components/schemas/{self.name}"}


class Stated:
    """The field's schema stated as is (a value no Python type describes well)."""

    __slots__ = ("schema",)

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema

    def apply(self, schema: Schema) -> Schema:
        return copy.deepcopy(dict(self.schema))


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def is_typeddict(tp: Any) -> bool:
    return typing.is_typeddict(tp)


def fields(td: type) -> list[tuple[str, Any, bool]]:
    """``(key, type, required)`` of a TypedDict, in declaration order."""
    hints = typing.get_type_hints(td, include_extras=True)
    total = getattr(td, "__total__", True)
    out = []
    for key, hint in hints.items():
        origin = get_origin(hint)
        if origin is NotRequired:
            out.append((key, get_args(hint)[0], False))
        elif origin is Required:
            out.append((key, get_args(hint)[0], True))
        else:
            out.append((key, hint, bool(total)))
    return out


def schema_of(tp: Any, components: Mapping[type, str] | None = None) -> Schema:
    """The OpenAPI 3.0 schema of ``tp``; TypedDicts in ``components`` become ``$ref``s."""
    names = components or {}
    return _schema(tp, names, top=True)


def object_schema(
    td: type,
    components: Mapping[type, str] | None = None,
    *,
    required: tuple[str, ...] | None = None,
    closed: bool = False,
) -> Schema:
    """A TypedDict's object schema; ``required`` overrides its keys' (a request's own rules)."""
    out = _schema(td, components or {}, top=True)
    if required is not None:
        out.pop("required", None)
        if required:
            out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def _schema(tp: Any, names: Mapping[type, str], *, top: bool = False) -> Schema:
    origin = get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = get_args(tp)
        out = _schema(base, names)
        for item in meta:
            if isinstance(item, Doc | Ref | Stated):
                out = item.apply(out)
        return out
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(get_args(tp)) != 2:
            raise TypeError(f"only X | None unions are stated: {tp}")
        return {**_schema(args[0], names), "nullable": True}
    if origin is Literal:
        values = list(get_args(tp))
        if not all(isinstance(v, str) for v in values):
            raise TypeError(f"only string literals are stated: {tp}")
        return {"type": "string", "enum": values}
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": _schema(item, names)}
    if origin is dict:
        key, value = get_args(tp)
        if key is not str:
            raise TypeError(f"JSON object keys are strings: {tp}")
        if value is Any:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": _schema(value, names)}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if is_typeddict(tp):
        if not top and tp in names:
            return {"$ref": f"#/components/schemas/{names[tp]}"}
        return _object(tp, names)
    raise TypeError(f"no schema for {tp!r}")


def _object(td: type, names: Mapping[type, str]) -> Schema:
    declared = fields(td)
    out: Schema = {"type": "object"}
    doc = inspect.getdoc(td)
    if td.__doc__ and doc:
        out["description"] = " ".join(doc.split())
    required = [key for key, _, needed in declared if needed]
    if required:
        out["required"] = required
    out["properties"] = {key: _schema(hint, names) for key, hint, _ in declared}
    return out
