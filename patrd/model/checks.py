"""The validator kit: type checks for decoded JSON/TOML that name the field they refuse.

Every parser of user input (deployment specs, URLs, the daemon's config)
builds on these, so a wrong type reads the same everywhere: the field's full
path, then what it must be.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from patrd.model.errors import SpecError


def object_at(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be a JSON object")
    return value


def reject_unknown(obj: Mapping[str, Any], allowed: Collection[str], prefix: str) -> None:
    """Refuse the first key not in ``allowed``, listing what is."""
    for key in obj:
        if key not in allowed:
            raise SpecError(
                f"{prefix}{key}", f"unknown field; allowed: {', '.join(sorted(allowed))}"
            )


def str_at(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SpecError(path, "must be a string")
    return value


def bool_at(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, "must be true or false")
    return value


def int_at(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, "must be an integer")
    return int(value)
